//! Runs the relay conformance suite against a relay's base URL (loopback
//! only), e.g. the Worker under `scripts/worker-dev`:
//!
//! ```text
//! clipmesh-conformance --url http://127.0.0.1:8787
//! ```

use anyhow::{bail, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = match args.as_slice() {
        [flag, url] if flag == "--url" => url.clone(),
        _ => bail!("usage: clipmesh-conformance --url http://127.0.0.1:PORT"),
    };
    clipmesh_tests::conformance::run(&url)?;
    println!("conformance: all checks passed against {url}");
    Ok(())
}
