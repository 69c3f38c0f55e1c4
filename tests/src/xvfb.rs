//! A private Xvfb display per device.
//!
//! `Xvfb -displayfd 1` picks a free display number itself and writes it to
//! its standard output once it accepts connections, so there is no race on
//! display numbers and no waiting for the socket to appear.

use crate::INSTALL_HINT;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long Xvfb may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running Xvfb server, killed on drop.
#[derive(Debug)]
pub struct Xvfb {
    child: Child,
    /// The display number (`:N`).
    pub number: u32,
}

impl Xvfb {
    /// Starts a server on a free display.
    pub fn start() -> Result<Self> {
        Self::start_sized(320, 240)
    }

    /// Starts a server on a free display with a `width`×`height` screen
    /// (windows, trays).
    pub fn start_sized(width: u32, height: u32) -> Result<Self> {
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1", "-nolisten", "tcp", "-noreset"])
            .args(["-screen", "0", &format!("{width}x{height}x24")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    anyhow::anyhow!("Xvfb is not installed: {INSTALL_HINT}")
                } else {
                    anyhow::anyhow!("cannot start Xvfb: {e}")
                }
            })?;
        let stdout = child.stdout.take().context("Xvfb stdout")?;
        // Read the display number on a helper thread so the wait is bounded.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("Xvfb did not report a display within {START_TIMEOUT:?}");
            }
        };
        let number: u32 = match line.trim().parse() {
            Ok(n) => n,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("Xvfb exited before reporting a display (got {line:?})");
            }
        };
        Ok(Self { child, number })
    }

    /// The `DISPLAY` value, e.g. `:3`.
    pub fn display(&self) -> String {
        format!(":{}", self.number)
    }

    /// Process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails with the install hint when `xclip` is missing.
pub fn require_xclip() -> Result<()> {
    match Command::new("xclip").arg("-version").output() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("xclip is not installed: {INSTALL_HINT}")
        }
        Err(e) => bail!("cannot run xclip: {e}"),
    }
}

/// Sets the CLIPBOARD selection of `display` to `text` with xclip. xclip
/// forks a server process that keeps ownership until someone else takes
/// the selection (it exits by itself then).
pub fn xclip_set(display: &str, text: &str) -> Result<()> {
    xclip_set_target(display, text, None)
}

/// Like [`xclip_set`], offering the data as `target` (e.g. `text/html`).
pub fn xclip_set_target(display: &str, text: &str, target: Option<&str>) -> Result<()> {
    xclip_set_selection(display, "clipboard", text, target)
}

/// Sets `selection` (`clipboard` or `primary`) of `display` with xclip.
pub fn xclip_set_selection(
    display: &str,
    selection: &str,
    text: &str,
    target: Option<&str>,
) -> Result<()> {
    xclip_input(display, selection, target, text.as_bytes())
}

/// Offers `bytes` as `target` (e.g. `image/png`) on the CLIPBOARD of
/// `display` with xclip.
pub fn xclip_offer(display: &str, target: &str, bytes: &[u8]) -> Result<()> {
    xclip_input(display, "clipboard", Some(target), bytes)
}

fn xclip_input(display: &str, selection: &str, target: Option<&str>, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut cmd = Command::new("xclip");
    cmd.args(["-selection", selection, "-i"]);
    if let Some(t) = target {
        cmd.args(["-t", t]);
    }
    let mut child = cmd
        .env("DISPLAY", display)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("xclip: {INSTALL_HINT}"))?;
    child
        .stdin
        .take()
        .context("xclip stdin")?
        .write_all(bytes)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("xclip -i failed on {display}: {status}");
    }
    Ok(())
}

/// Reads the CLIPBOARD selection of `display` with `xclip -o` (as `target`
/// when given). `None` when the selection is empty or refuses the target.
pub fn xclip_get(display: &str, target: Option<&str>) -> Result<Option<String>> {
    xclip_get_selection(display, "clipboard", target)
}

/// Reads `selection` (`clipboard` or `primary`) of `display` with xclip.
pub fn xclip_get_selection(
    display: &str,
    selection: &str,
    target: Option<&str>,
) -> Result<Option<String>> {
    Ok(xclip_output(display, selection, target)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// Reads `target` (e.g. `image/png`) from the CLIPBOARD of `display` as
/// bytes. `None` when the selection is empty or refuses the target.
pub fn xclip_read(display: &str, target: &str) -> Result<Option<Vec<u8>>> {
    xclip_output(display, "clipboard", Some(target))
}

fn xclip_output(display: &str, selection: &str, target: Option<&str>) -> Result<Option<Vec<u8>>> {
    let mut cmd = Command::new("xclip");
    cmd.args(["-selection", selection, "-o"]);
    if let Some(t) = target {
        cmd.args(["-t", t]);
    }
    let out = cmd
        .env("DISPLAY", display)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("xclip: {INSTALL_HINT}"))?;
    Ok(out.status.success().then_some(out.stdout))
}
