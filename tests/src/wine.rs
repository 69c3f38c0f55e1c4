//! Windows programs under Wine: a fresh `WINEPREFIX` per test, the
//! `ProcessPrng` shim, and commands that run the Windows `clipmesh.exe`.
//!
//! - [`WinePrefix::create`] makes a new prefix under the test's directory,
//!   initialises it (`wineboot --init`, bounded) with `DISPLAY` set to the
//!   display the Windows device uses — Wine bridges its clipboard to that
//!   display's CLIPBOARD — and compiles `tests/wine/bcryptprimitives.c`
//!   into its `system32` (Wine 8 lacks `ProcessPrng`, which Rust's std
//!   imports; real Windows has it, so it is never shipped).
//! - Dropping it runs `wineserver -k` for that prefix only, which ends every
//!   Windows process of the prefix; the test's own children are killed by
//!   PID before that (see [`crate::procs`]).
//!
//! The Windows executable is `target/x86_64-pc-windows-gnu/release/clipmesh.exe`
//! (`scripts/build-windows --no-msi` builds it) or [`ENV_WINDOWS_EXE`].

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the Windows `clipmesh.exe` to test.
pub const ENV_WINDOWS_EXE: &str = "CLIPMESH_WINDOWS_EXE";
/// How long `wineboot --init` may take (slow on a loaded 2-core machine).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// How long `wineserver -k` and other helper commands may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// The Windows `clipmesh.exe`, if it was built.
pub fn windows_exe() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(ENV_WINDOWS_EXE) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let p = root.join("target/x86_64-pc-windows-gnu/release/clipmesh.exe");
    p.is_file().then_some(p)
}

/// The Windows spelling of a Unix path: Wine maps `/` to drive `Z:`.
pub fn win_path(p: &Path) -> String {
    format!("Z:{}", p.display()).replace('/', "\\")
}

fn first_existing(candidates: &[&str]) -> Result<PathBuf> {
    for c in candidates {
        let p = Path::new(c);
        if p.is_file() {
            return Ok(p.to_owned());
        }
    }
    bail!(
        "{} not found: install Wine (apt-get install -y wine wine64; scripts/test --only 55 does)",
        candidates[0]
    )
}

/// Waits for `child` at most `timeout` (killing it when the time is up);
/// fails unless it exits successfully.
pub fn wait_bounded(child: &mut Child, timeout: Duration, what: &str) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("{what} failed: {status}");
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How to run a Windows program in one prefix (cheap to clone).
#[derive(Clone, Debug)]
pub struct WineExe {
    /// `wine64`.
    pub wine: PathBuf,
    /// The prefix.
    pub prefix: PathBuf,
    /// The Windows program.
    pub exe: PathBuf,
}

impl WineExe {
    /// `wine64 EXE` with the prefix's environment (no Wine debug output
    /// unless `CLIPMESH_WINEDEBUG` asks for it, no Mono or Gecko installers).
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.wine);
        c.arg(&self.exe)
            .env("WINEPREFIX", &self.prefix)
            // CLIPMESH_WINEDEBUG (e.g. +timestamp,+clipboard) turns Wine's
            // own tracing on, for looking into a slow or lost update.
            .env(
                "WINEDEBUG",
                std::env::var_os("CLIPMESH_WINEDEBUG").unwrap_or_else(|| "-all".into()),
            )
            .env("WINEDLLOVERRIDES", "mscoree=;mshtml=");
        c
    }
}

/// A fresh Wine prefix, ended with `wineserver -k` on drop.
#[derive(Debug)]
pub struct WinePrefix {
    /// The prefix directory.
    pub path: PathBuf,
    wine: PathBuf,
    wineserver: PathBuf,
}

impl WinePrefix {
    /// Creates and initialises a prefix at `path` (which must not exist
    /// yet) for a device on `display`, with the `ProcessPrng` shim.
    pub fn create(path: &Path, display: &str) -> Result<Self> {
        let wine = first_existing(&["/usr/lib/wine/wine64", "/usr/bin/wine64"])?;
        let wineserver = first_existing(&[
            "/usr/lib/wine/wineserver64",
            "/usr/lib/wine/wineserver",
            "/usr/bin/wineserver",
        ])?;
        std::fs::create_dir_all(path)?;
        let this = Self {
            path: path.to_owned(),
            wine,
            wineserver,
        };
        let mut boot = this
            .exe(Path::new("wineboot"))
            .command()
            .arg("--init")
            .env("DISPLAY", display)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start wineboot")?;
        wait_bounded(&mut boot, BOOT_TIMEOUT, "wineboot --init")?;
        this.install_shim()?;
        Ok(this)
    }

    /// Runs `exe` (a Unix path to a Windows program) in this prefix.
    pub fn exe(&self, exe: &Path) -> WineExe {
        WineExe {
            wine: self.wine.clone(),
            prefix: self.path.clone(),
            exe: exe.to_owned(),
        }
    }

    fn install_shim(&self) -> Result<()> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("wine");
        let out = self
            .path
            .join("drive_c/windows/system32/bcryptprimitives.dll");
        let mut cc = Command::new("x86_64-w64-mingw32-gcc")
            .args(["-shared", "-O2", "-o"])
            .arg(&out)
            .arg(src.join("bcryptprimitives.c"))
            .arg(src.join("bcryptprimitives.def"))
            .arg("-ladvapi32")
            .stdin(Stdio::null())
            .spawn()
            .context("x86_64-w64-mingw32-gcc (apt-get install -y gcc-mingw-w64-x86-64)")?;
        wait_bounded(&mut cc, HELPER_TIMEOUT, "compiling the ProcessPrng shim")
    }

    /// `wineserver -k` for this prefix: ends all its Windows processes.
    pub fn kill(&self) -> Result<()> {
        let mut k = Command::new(&self.wineserver)
            .arg("-k")
            .env("WINEPREFIX", &self.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("wineserver -k")?;
        // Exits non-zero when no server runs for the prefix: fine.
        let deadline = Instant::now() + HELPER_TIMEOUT;
        while k.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                let _ = k.kill();
                let _ = k.wait();
                bail!("wineserver -k did not finish within {HELPER_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for WinePrefix {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            eprintln!("{e:#}");
        }
    }
}
