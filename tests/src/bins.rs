//! Locating the `clipmesh` and `clipmesh-relay` binaries.
//!
//! Cargo exposes `CARGO_BIN_EXE_*` only for binaries of the crate under
//! test, so the end-to-end tests find the other crates' binaries in the
//! target directory instead: the test executable lives in
//! `target/<profile>/deps/`, the binaries in `target/<profile>/`.
//! `CLIPMESH_BIN_DIR` overrides the directory (e.g. to test release builds).

use anyhow::{bail, Result};
use std::path::PathBuf;

/// Environment variable naming the directory holding the binaries.
pub const ENV_BIN_DIR: &str = "CLIPMESH_BIN_DIR";

/// The relay binary's name.
pub const RELAY: &str = "clipmesh-relay";
/// The client binary's name.
pub const CLIENT: &str = "clipmesh";

/// Path of the built binary `name`, or an error saying how to build it.
pub fn bin(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os(ENV_BIN_DIR) {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe()?;
            let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        }
    };
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        bail!(
            "{} not found: build the binaries first with `cargo build --workspace --bins` \
             (scripts/test does), or set {ENV_BIN_DIR}",
            path.display()
        );
    }
    Ok(path)
}
