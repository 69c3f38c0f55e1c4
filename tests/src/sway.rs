//! A private headless Wayland compositor per device: sway on wlroots'
//! headless backend, with wlr-data-control, plus the `wl-clipboard` tools
//! (`wl-copy`, `wl-paste`) that drive its clipboard from outside.
//!
//! Each [`Sway`] has its own `XDG_RUNTIME_DIR` (a temp dir), so its socket
//! and its clipboard are its own. sway refuses to run as root (it checks
//! that it cannot regain root after dropping it): as root, the helper
//! starts it through `setpriv` as the unprivileged `nobody` user (65534)
//! and hands it the runtime dir. Clients (the daemon, `wl-copy`) connect as
//! they are.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long sway may take to create its socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `wl-paste` may take.
const PASTE_TIMEOUT: Duration = Duration::from_secs(20);
/// The uid and gid sway runs as when the tests run as root.
const NOBODY: u32 = 65534;

/// What to tell a developer whose machine lacks sway or wl-clipboard.
pub const WAYLAND_HINT: &str =
    "run scripts/test, which installs sway and wl-clipboard (apt-get install -y sway wl-clipboard)";

/// sway's configuration: nothing but a headless output, no XWayland, no bar.
const CONFIG: &str = "xwayland disable\noutput HEADLESS-1 resolution 640x480\n";

/// A running headless sway, killed on drop.
#[derive(Debug)]
pub struct Sway {
    child: Child,
    /// The socket name (`WAYLAND_DISPLAY`), relative to [`Sway::runtime_dir`].
    pub socket: String,
    /// Keeps the runtime dir alive; dropped after the child.
    runtime: tempfile::TempDir,
}

impl Sway {
    /// Starts sway and waits until its socket accepts connections.
    pub fn start() -> Result<Self> {
        let runtime = tempfile::Builder::new().prefix("clipmesh-wl").tempdir()?;
        let dir = runtime.path().to_owned();
        let config = dir.join("sway.config");
        std::fs::write(&config, CONFIG)?;
        let root = rustix::process::geteuid().is_root();
        let mut cmd = if root {
            // sway's config must stay readable (0644) and the dir writable.
            std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY))?;
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "sway",
            ]);
            c
        } else {
            Command::new("sway")
        };
        let mut child = cmd
            .arg("-c")
            .arg(&config)
            .env("XDG_RUNTIME_DIR", &dir)
            .env("WLR_BACKENDS", "headless")
            .env("WLR_LIBINPUT_NO_DEVICES", "1")
            .env("WLR_RENDERER", "pixman")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    anyhow::anyhow!("sway is not installed: {WAYLAND_HINT}")
                } else {
                    anyhow::anyhow!("cannot start sway: {e}")
                }
            })?;
        // sway has no readiness signal: wait (bounded) for its socket to
        // accept a connection. It creates the socket after its globals.
        let deadline = Instant::now() + START_TIMEOUT;
        let socket = loop {
            if let Some(st) = child.try_wait()? {
                bail!("sway exited at start ({st}); is it installed? {WAYLAND_HINT}");
            }
            if let Some(name) = find_socket(&dir)? {
                if std::os::unix::net::UnixStream::connect(dir.join(&name)).is_ok() {
                    break name;
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("sway did not create its socket within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(Self {
            child,
            socket,
            runtime,
        })
    }

    /// The runtime dir holding the socket (`XDG_RUNTIME_DIR`).
    pub fn runtime_dir(&self) -> &Path {
        self.runtime.path()
    }

    /// The environment a client of this compositor needs.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("WAYLAND_DISPLAY", OsString::from(&self.socket)),
            ("XDG_RUNTIME_DIR", self.runtime_dir().as_os_str().to_owned()),
        ]
    }

    /// A command for a client of this compositor (no X display).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.envs(self.env()).env_remove("DISPLAY");
        c
    }

    /// Copies `bytes` (as `mime`, or as text) with `wl-copy`, which serves
    /// them until something else is copied; the returned guard kills it.
    pub fn wl_copy(&self, mime: Option<&str>, bytes: &[u8]) -> Result<WlCopy> {
        self.wl_copy_to(false, mime, bytes)
    }

    /// Like [`Sway::wl_copy`], to the primary selection when `primary`.
    pub fn wl_copy_to(&self, primary: bool, mime: Option<&str>, bytes: &[u8]) -> Result<WlCopy> {
        let mut cmd = self.command("wl-copy");
        cmd.arg("--foreground");
        if primary {
            cmd.arg("--primary");
        }
        if let Some(m) = mime {
            cmd.args(["--type", m]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("wl-copy: {WAYLAND_HINT}"))?;
        let mut stdin = child.stdin.take().context("wl-copy stdin")?;
        stdin.write_all(bytes)?;
        drop(stdin);
        Ok(WlCopy { child })
    }

    /// Reads the clipboard with `wl-paste` (as `mime` when given). `None`
    /// when it is empty or does not offer the type.
    pub fn wl_paste(&self, mime: Option<&str>) -> Result<Option<Vec<u8>>> {
        self.wl_paste_from(false, mime)
    }

    /// Like [`Sway::wl_paste`], from the primary selection when `primary`.
    pub fn wl_paste_from(&self, primary: bool, mime: Option<&str>) -> Result<Option<Vec<u8>>> {
        let mut cmd = self.command("wl-paste");
        cmd.arg("--no-newline");
        if primary {
            cmd.arg("--primary");
        }
        if let Some(m) = mime {
            cmd.args(["--type", m]);
        }
        let out = run_bounded(cmd, PASTE_TIMEOUT)?;
        Ok(out.0.then_some(out.1))
    }

    /// The MIME types on the clipboard (`wl-paste --list-types`).
    pub fn list_types(&self) -> Result<Vec<String>> {
        let mut cmd = self.command("wl-paste");
        cmd.arg("--list-types");
        let (ok, out) = run_bounded(cmd, PASTE_TIMEOUT)?;
        if !ok {
            return Ok(Vec::new());
        }
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// Starts a watcher that reports every clipboard change (from outside
    /// every daemon): `wl-paste --watch`, one line per change.
    pub fn watch(&self) -> Result<ClipWatch> {
        let mut cmd = self.command("wl-paste");
        // base64 keeps one change on one line whatever the text holds.
        cmd.args(["--no-newline", "--watch", "sh", "-c", "base64 -w0; echo"]);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("wl-paste: {WAYLAND_HINT}"))?;
        let stdout = child.stdout.take().context("wl-paste stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut w = ClipWatch { child, rx };
        // wl-paste reports nothing while the clipboard is empty and has no
        // readiness signal: copy a marker and wait for its report, so no
        // later change can be missed. Killing the marker's wl-copy clears
        // the clipboard, which wl-paste does not report.
        let marker = b"clipmesh: wl-paste watcher ready";
        let copy = self.wl_copy(None, marker)?;
        let deadline = Instant::now() + START_TIMEOUT;
        let mut ready = false;
        for _ in 0..100 {
            let left = deadline.saturating_duration_since(Instant::now());
            match w.next(left)? {
                Some(b) if b == marker => {
                    ready = true;
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        if !ready {
            bail!("wl-paste --watch did not report the marker within {START_TIMEOUT:?}");
        }
        drop(copy);
        Ok(w)
    }
}

impl Drop for Sway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first `wayland-N` socket in `dir`.
fn find_socket(dir: &Path) -> Result<Option<String>> {
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with("wayland-") && !name.ends_with(".lock") {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Runs `cmd` to the end (at most `timeout`), returning (success, stdout).
fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<(bool, Vec<u8>)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("{cmd:?}: {WAYLAND_HINT}"))?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
        let _ = tx.send(buf);
    });
    let Ok(out) = rx.recv_timeout(timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{cmd:?} did not finish within {timeout:?}");
    };
    let status = child.wait()?;
    Ok((status.success(), out))
}

/// A running `wl-copy --foreground`, killed on drop (it exits by itself
/// once something else is copied).
#[derive(Debug)]
pub struct WlCopy {
    child: Child,
}

impl Drop for WlCopy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `wl-paste --watch`: one report per clipboard change.
#[derive(Debug)]
pub struct ClipWatch {
    child: Child,
    rx: mpsc::Receiver<String>,
}

impl ClipWatch {
    /// The next change (its text content), waiting at most `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        use base64::Engine;
        match self.rx.recv_timeout(timeout) {
            Ok(line) => Ok(Some(
                base64::engine::general_purpose::STANDARD.decode(line.trim())?,
            )),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("wl-paste --watch exited"),
        }
    }

    /// Waits until the clipboard holds `text`; returns how many changes
    /// that took (1 when it was the next change).
    pub fn wait_for_text(&mut self, text: &str, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        for n in 1..=1000 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left)? {
                Some(b) if b == text.as_bytes() => return Ok(n),
                Some(_) => {}
                None => {
                    bail!("the clipboard did not change to the expected text within {timeout:?}")
                }
            }
        }
        bail!("too many clipboard changes while waiting for the expected text")
    }

    /// The changes already reported and not consumed.
    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Ok(Some(b)) = self.next(Duration::ZERO) {
            out.push(b);
        }
        out
    }
}

impl Drop for ClipWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails with the install hint when sway or wl-clipboard is missing.
pub fn require_wayland_tools() -> Result<()> {
    for tool in ["sway", "wl-copy", "wl-paste"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            bail!("{tool} is not installed: {WAYLAND_HINT}");
        }
    }
    Ok(())
}
