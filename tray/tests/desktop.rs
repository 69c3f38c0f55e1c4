//! The tray app and its login window on real X displays (Xvfb), against a
//! real relay on 127.0.0.1, as a user would meet them:
//!
//! - the tray's icon appears in an XEmbed tray (trayer), follows the
//!   connection, and a second start says it already runs;
//! - the login window is typed into with xdotool: a wrong password shows
//!   the error, the right one logs the device in;
//! - start at login writes and removes the XDG autostart entry.
//!
//! Screenshots are kept in `target/tmp/desktop-test/`. Every process started
//! here is ended by its PID (the helpers' drop guards, or [`Proc`]).

use anyhow::{anyhow, bail, Context, Result};
use clipmesh_tests::wait::poll_until;
use clipmesh_tests::{Device, Relay, Xvfb};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat, Window};
use x11rb::rust_connection::RustConnection;

/// Deadline for one step (a window appearing, a login).
const STEP: Duration = Duration::from_secs(60);
const PASSWORD: &str = "correct horse battery staple";

/// Where screenshots are kept.
fn keep_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("desktop-test");
    let _ = std::fs::create_dir_all(&d);
    d
}

fn tray_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_clipmesh-tray"))
}

/// A child process ended by PID (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    child: Child,
    what: &'static str,
}

impl Proc {
    fn spawn(what: &'static str, cmd: &mut Command) -> Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("start {what} (scripts/test installs it)"))?;
        Ok(Self { child, what })
    }

    /// Waits for the process to exit by itself, at most `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                bail!("{} did not exit within {timeout:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Lines of a child's stdout, on a channel.
fn lines(child: &mut Child) -> Result<mpsc::Receiver<String>> {
    let out = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Waits for a line containing `needle`; returns it.
fn expect_line(
    rx: &mpsc::Receiver<String>,
    needle: &str,
    seen: &mut Vec<String>,
) -> Result<String> {
    let deadline = Instant::now() + STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                seen.push(l.clone());
                if l.contains(needle) {
                    return Ok(l);
                }
            }
            Err(_) => bail!("no line with {needle:?} within {STEP:?}; saw {seen:?}"),
        }
    }
}

/// Runs xdotool on `display` and checks it succeeded.
fn xdotool(display: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("xdotool")
        .args(args)
        .env("DISPLAY", display)
        .stdin(Stdio::null())
        .output()
        .context("xdotool (scripts/test installs it)")?;
    if !out.status.success() {
        bail!(
            "xdotool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The id of the window named exactly `name`, once it is mapped.
fn wait_window(display: &str, name: &str) -> Result<String> {
    poll_until(
        &format!("window {name:?}"),
        STEP,
        Duration::from_millis(100),
        || {
            let out = Command::new("xdotool")
                .args(["search", "--onlyvisible", "--name", &format!("^{name}$")])
                .env("DISPLAY", display)
                .output()?;
            Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .map(str::to_owned))
        },
    )
}

/// The pixels of `window` as RGBA, with its size.
fn grab(display: &str, window: Option<Window>) -> Result<(Vec<u8>, u16, u16)> {
    let (conn, screen) = RustConnection::connect(Some(display))?;
    let root = conn.setup().roots[screen].root;
    let win = window.unwrap_or(root);
    let geo = conn.get_geometry(win)?.reply()?;
    let img = conn
        .get_image(ImageFormat::Z_PIXMAP, win, 0, 0, geo.width, geo.height, !0)?
        .reply()?;
    if img.data.len() != geo.width as usize * geo.height as usize * 4 {
        bail!("unexpected image format (depth {})", img.depth);
    }
    // ZPixmap at depth 24/32 on Xvfb is BGRX, little-endian.
    let mut rgba = Vec::with_capacity(img.data.len());
    for px in img.data.chunks_exact(4) {
        rgba.extend_from_slice(&[px[2], px[1], px[0], 255]);
    }
    Ok((rgba, geo.width, geo.height))
}

/// The pixels of `window` as RGBA.
fn pixels(display: &str, window: Window) -> Result<Vec<u8>> {
    Ok(grab(display, Some(window))?.0)
}

/// Saves a screenshot of `window` (the root when None) as PNG.
fn screenshot(display: &str, window: Option<Window>, file: &Path) -> Result<()> {
    let (rgba, width, height) = grab(display, window)?;
    image::save_buffer(
        file,
        &rgba,
        width.into(),
        height.into(),
        image::ExtendedColorType::Rgba8,
    )?;
    Ok(())
}

/// The tray selection owner (`_NET_SYSTEM_TRAY_S0`), once there is one.
fn tray_manager(display: &str) -> Result<Window> {
    let (conn, _) = RustConnection::connect(Some(display))?;
    let atom = conn
        .intern_atom(false, b"_NET_SYSTEM_TRAY_S0")?
        .reply()?
        .atom;
    poll_until(
        "trayer to own _NET_SYSTEM_TRAY_S0",
        STEP,
        Duration::from_millis(50),
        || {
            let owner = conn.get_selection_owner(atom)?.reply()?.owner;
            Ok((owner != x11rb::NONE).then_some(owner))
        },
    )
}

/// Every window under `top`, with its parent, depth first.
fn descendants(conn: &RustConnection, top: Window, out: &mut Vec<(Window, Window)>) -> Result<()> {
    for w in conn.query_tree(top)?.reply()?.children {
        out.push((top, w));
        descendants(conn, w, out)?;
    }
    Ok(())
}

/// Windows with their names, under the root.
fn window_names(display: &str) -> Result<Vec<(Window, Window, String)>> {
    let (conn, screen) = RustConnection::connect(Some(display))?;
    let root = conn.setup().roots[screen].root;
    let mut all = Vec::new();
    descendants(&conn, root, &mut all)?;
    let mut named = Vec::new();
    for (parent, w) in all {
        let name = conn
            .get_property(
                false,
                w,
                x11rb::protocol::xproto::AtomEnum::WM_NAME,
                x11rb::protocol::xproto::AtomEnum::ANY,
                0,
                256,
            )?
            .reply()
            .map(|r| String::from_utf8_lossy(&r.value).into_owned())
            .unwrap_or_default();
        named.push((parent, w, name));
    }
    Ok(named)
}

fn tray_command(display: &str, dir: &Path) -> Command {
    let mut c = Command::new(tray_bin());
    c.arg("--config-dir")
        .arg(dir)
        .env("DISPLAY", display)
        .env_remove("WAYLAND_DISPLAY")
        // No session bus: the icon uses the XEmbed fallback, notifications
        // are logged as not shown, and nothing is auto-launched.
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .env("CLIPMESH_SECRET_STORE", "file")
        .env("CLIPMESH_P2P_BIND", "127.0.0.1")
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .env("RUST_LOG", "clipmesh_tray=info,clipmesh=info,warn")
        .stdin(Stdio::null());
    c
}

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    relay: Relay,
}

fn world() -> Result<World> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().to_owned();
    let relay = Relay::start(&root.join("relay"), &root.join("relay.log"), 0, "info")?;
    Ok(World {
        _tmp: tmp,
        root,
        relay,
    })
}

#[test]
fn login_window_wrong_then_right_password() -> Result<()> {
    let w = world()?;
    let logs = w.root.join("logs");
    let first = Device::new(&w.root, &logs, "first")?;
    first.signup(&w.relay.url(), "ann", PASSWORD, "warn")?;
    let x = Xvfb::start_sized(800, 600)?;
    let display = x.display();
    let dir = w.root.join("tray-device");
    let mut cmd = tray_command(&display, &dir);
    cmd.arg("login")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut login = Proc::spawn("clipmesh-tray login", &mut cmd)?;
    let out = lines(&mut login.child)?;
    let win = wait_window(&display, "clipmesh: log in")?;
    xdotool(&display, &["windowfocus", "--sync", win.trim()])?;
    let mut seen = Vec::new();
    // The server field has focus; Tab moves to username, then password.
    xdotool(&display, &["type", "--delay", "30", &w.relay.url()])?;
    xdotool(&display, &["key", "Tab"])?;
    xdotool(&display, &["type", "--delay", "30", "ann"])?;
    xdotool(&display, &["key", "Tab"])?;
    xdotool(&display, &["type", "--delay", "30", "not the password"])?;
    xdotool(&display, &["key", "Return"])?;
    let line = expect_line(&out, "login: error:", &mut seen)?;
    assert!(line.ends_with("Wrong username or password."), "{line}");
    let id: Window = win.trim().parse()?;
    // The error line is drawn in egui's error colour (red): wait until the
    // window shows it, then keep the picture.
    poll_until(
        "the error text on screen",
        STEP,
        Duration::from_millis(100),
        || {
            let px = pixels(&display, id)?;
            Ok(px
                .chunks_exact(4)
                .any(|p| p[0] > 200 && p[1] < 90 && p[2] < 90)
                .then_some(()))
        },
    )?;
    screenshot(&display, Some(id), &keep_dir().join("login-error.png"))?;
    // The password field has focus again, emptied.
    xdotool(&display, &["type", "--delay", "30", PASSWORD])?;
    xdotool(&display, &["key", "Return"])?;
    let line = expect_line(&out, "login: ok:", &mut seen)?;
    assert!(line.contains("Logged in as ann"), "{line}");
    let status = login.wait_exit(STEP)?;
    assert!(status.success(), "login window exited with {status}");
    // The device is logged in: its config and secrets are there.
    let config = std::fs::read_to_string(dir.join("config.toml"))?;
    assert!(config.contains("username = \"ann\""), "{config}");
    assert!(dir.join("secrets.json").is_file());
    Ok(())
}

#[test]
fn tray_icon_in_xembed_tray_follows_connection() -> Result<()> {
    let mut w = world()?;
    let logs = w.root.join("logs");
    let dev = Device::new(&w.root, &logs, "desk")?;
    dev.signup(&w.relay.url(), "bob", PASSWORD, "warn")?;
    let x = Xvfb::start_sized(640, 120)?;
    let display = x.display();
    let mut trayer_cmd = Command::new("trayer");
    trayer_cmd
        .args([
            "--edge",
            "top",
            "--align",
            "left",
            "--widthtype",
            "pixel",
            "--width",
            "200",
        ])
        .args([
            "--height",
            "40",
            "--SetDockType",
            "false",
            "--transparent",
            "false",
        ])
        .env("DISPLAY", &display)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _trayer = Proc::spawn("trayer", &mut trayer_cmd)?;
    tray_manager(&display)?;

    let mut cmd = tray_command(&display, &dev.config_dir);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut tray = Proc::spawn("clipmesh-tray", &mut cmd)?;
    let log = dev.config_dir.join("tray.log");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    poll_until(
        "tray icon connected",
        STEP,
        Duration::from_millis(100),
        || {
            if let Some(s) = tray.child.try_wait()? {
                return Err(anyhow!("clipmesh-tray exited: {s}\n{}", read_log()));
            }
            Ok(read_log()
                .contains("tray icon state=connected")
                .then_some(()))
        },
    )?;
    // The icon is a window embedded in trayer's panel.
    let (panel, icon) = poll_until(
        "the icon's window inside trayer",
        STEP,
        Duration::from_millis(100),
        || {
            let names = window_names(&display)?;
            let panel = names
                .iter()
                .find(|(_, _, n)| n == "panel")
                .map(|(_, w, _)| *w);
            let Some(panel) = panel else { return Ok(None) };
            let (conn, _) = RustConnection::connect(Some(&display))?;
            let mut inside = Vec::new();
            descendants(&conn, panel, &mut inside)?;
            // An embedded client that is mapped and has some size.
            for (_, w) in inside {
                let a = conn.get_window_attributes(w)?.reply()?;
                let g = conn.get_geometry(w)?.reply()?;
                if a.map_state == x11rb::protocol::xproto::MapState::VIEWABLE
                    && g.width >= 8
                    && g.height >= 8
                {
                    return Ok(Some((panel, w)));
                }
            }
            Ok(None)
        },
    )?;
    assert_ne!(panel, icon);
    screenshot(&display, None, &keep_dir().join("tray.png"))?;
    let connected = grab(&display, None)?.0;

    // A second instance for the same config dir says so and exits.
    let out = tray_command(&display, &dev.config_dir)
        .stdout(Stdio::piped())
        .output()?;
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already running"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The relay goes away: the icon shows reconnecting.
    w.relay.stop()?;
    poll_until(
        "tray icon connecting",
        STEP,
        Duration::from_millis(100),
        || {
            Ok(read_log()
                .contains("tray icon state=connecting")
                .then_some(()))
        },
    )?;
    // ...and the picture in the tray changes with it.
    poll_until(
        "the tray to show another icon",
        STEP,
        Duration::from_millis(100),
        || Ok((grab(&display, None)?.0 != connected).then_some(())),
    )?;
    screenshot(&display, None, &keep_dir().join("tray-connecting.png"))?;
    drop(tray);
    Ok(())
}

#[test]
fn autostart_on_and_off() -> Result<()> {
    let home = tempfile::tempdir()?;
    let run = |arg: Option<&str>| -> Result<String> {
        let mut c = Command::new(tray_bin());
        c.arg("autostart")
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME");
        if let Some(a) = arg {
            c.arg(a);
        }
        let out = c.output()?;
        if !out.status.success() {
            bail!(
                "autostart {arg:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let entry = home.path().join(".config/autostart/clipmesh-tray.desktop");
    assert_eq!(run(None)?, "start at login: off");
    assert_eq!(run(Some("on"))?, "start at login: on");
    let text = std::fs::read_to_string(&entry)?;
    assert!(text.contains("Exec="), "{text}");
    assert!(text.contains("clipmesh-tray"), "{text}");
    assert_eq!(run(Some("off"))?, "start at login: off");
    assert!(!entry.exists());
    Ok(())
}
