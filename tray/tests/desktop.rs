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
use clipmesh_tests::dbus::SessionBus;
use clipmesh_tests::sway::Sway;
use clipmesh_tests::wait::poll_until;
use clipmesh_tests::xtray::{embedded_icon, grab, screenshot, Trayer};
use clipmesh_tests::{Device, Relay, Xvfb};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use x11rb::protocol::xproto::Window;

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
        let _ = clipmesh_tests::procs::terminate_within(&mut self.child, Duration::from_secs(5));
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

/// The pixels of `window` as RGBA.
fn pixels(display: &str, window: Window) -> Result<Vec<u8>> {
    Ok(grab(display, Some(window))?.0)
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
    let _trayer = Trayer::start(&display, STEP)?;

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
    let (panel, icon) = embedded_icon(&display, STEP)?;
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

/// `gdbus call` on the session bus at `bus`; its output.
fn gdbus(bus: &str, dest: &str, path: &str, method: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("gdbus")
        .args(["call", "--session", "--dest", dest, "--object-path", path])
        .args(["--method", method])
        .args(args)
        .env("DBUS_SESSION_BUS_ADDRESS", bus)
        .stdin(Stdio::null())
        .output()
        .context("gdbus (libglib2.0-bin)")?;
    if !out.status.success() {
        bail!(
            "gdbus {method}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The StatusNotifier items the host's watcher has registered:
/// `BUS_NAME/OBJECT_PATH` each.
fn registered_items(bus: &str) -> Result<Vec<String>> {
    let out = gdbus(
        bus,
        "org.kde.StatusNotifierWatcher",
        "/StatusNotifierWatcher",
        "org.freedesktop.DBus.Properties.Get",
        &[
            "org.kde.StatusNotifierWatcher",
            "RegisteredStatusNotifierItems",
        ],
    )?;
    Ok(out
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect())
}

/// The dbusmenu id of the entry labelled `label` in the menu at `path`.
fn menu_entry(bus: &str, dest: &str, path: &str, label: &str) -> Result<i32> {
    let layout = gdbus(
        bus,
        dest,
        path,
        "com.canonical.dbusmenu.GetLayout",
        &["0", "int32 -1", "[]"],
    )?;
    // Entries print as `(ID, {'label': <'LABEL'>, ...}, [...])`.
    let needle = format!("'label': <'{label}'>");
    let at = layout
        .find(&needle)
        .with_context(|| format!("no {label:?} in the menu: {layout}"))?;
    let open = layout[..at]
        .rfind('(')
        .context("malformed dbusmenu layout")?;
    let id = layout[open + 1..at]
        .split(',')
        .next()
        .unwrap_or_default()
        .trim();
    id.parse()
        .with_context(|| format!("dbusmenu id {id:?} in {layout}"))
}

/// Clicks the dbusmenu entry `id`, as a StatusNotifier host does.
fn menu_click(bus: &str, dest: &str, path: &str, id: i32) -> Result<()> {
    gdbus(
        bus,
        dest,
        path,
        "com.canonical.dbusmenu.Event",
        &[&id.to_string(), "clicked", "<0>", "0"],
    )?;
    Ok(())
}

/// The notifications dunst has received: their summaries. `dunstctl
/// close-all` first moves the ones on screen into the history, which
/// `dunstctl history` prints.
fn dunst_history(bus: &str, sway: &Sway) -> Result<Vec<String>> {
    let close = sway
        .command("dunstctl")
        .arg("close-all")
        .env("DBUS_SESSION_BUS_ADDRESS", bus)
        .stdin(Stdio::null())
        .output()
        .context("dunstctl (dunst)")?;
    if !close.status.success() {
        bail!(
            "dunstctl close-all: {}",
            String::from_utf8_lossy(&close.stderr).trim()
        );
    }
    let out = sway
        .command("dunstctl")
        .arg("history")
        .env("DBUS_SESSION_BUS_ADDRESS", bus)
        .stdin(Stdio::null())
        .output()
        .context("dunstctl (dunst)")?;
    if !out.status.success() {
        bail!(
            "dunstctl history: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["data"][0]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["summary"]["data"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// The StatusNotifier path, on headless sway with a private session bus:
/// waybar's tray module (a StatusNotifier host) registers the tray's item
/// and draws its icon (screenshot kept); pause and resume are clicked in
/// the real menu over dbusmenu, as a host does, and the device's daemon
/// stops answering, then answers connected again; dunst, the notification
/// server on the bus, receives one "Connection lost" once the relay has
/// been gone for 30 s, and one "Connection restored" once it is back for
/// 10 s.
#[test]
fn status_notifier_host_menu_clicks_and_notifications() -> Result<()> {
    let mut w = world()?;
    let logs = w.root.join("logs");
    let dev = Device::new(&w.root, &logs, "sni")?;
    dev.signup(&w.relay.url(), "cat", PASSWORD, "warn")?;
    let busdir = w.root.join("dbus");
    std::fs::create_dir_all(&busdir)?;
    // Dropped in reverse: the tray, dunst, waybar, sway, the bus.
    let bus = SessionBus::start(&busdir)?;
    let sway = Sway::start()?;
    let wb_dir = w.root.join("waybar");
    std::fs::create_dir_all(&wb_dir)?;
    std::fs::write(
        wb_dir.join("config.json"),
        r#"{"layer": "top", "position": "top", "height": 32, "modules-right": ["tray"], "tray": {"icon-size": 24, "spacing": 4}}"#,
    )?;
    std::fs::write(
        wb_dir.join("style.css"),
        "window#waybar { background: #202020; }\n",
    )?;
    let mut wb = sway.command("waybar");
    wb.arg("-c")
        .arg(wb_dir.join("config.json"))
        .arg("-s")
        .arg(wb_dir.join("style.css"))
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _waybar = Proc::spawn("waybar", &mut wb)?;
    poll_until(
        "waybar's StatusNotifier watcher",
        STEP,
        Duration::from_millis(100),
        || Ok(registered_items(&bus.address).ok().map(|_| ())),
    )?;
    let mut dn = sway.command("dunst");
    dn.env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _dunst = Proc::spawn("dunst", &mut dn)?;
    poll_until("dunst", STEP, Duration::from_millis(100), || {
        Ok(dunst_history(&bus.address, &sway).ok().map(|_| ()))
    })?;

    let mut cmd = Command::new(tray_bin());
    cmd.arg("--config-dir")
        .arg(&dev.config_dir)
        .envs(sway.env())
        .env_remove("DISPLAY")
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .env("CLIPMESH_SECRET_STORE", "file")
        .env("CLIPMESH_P2P_BIND", "127.0.0.1")
        .env("RUST_LOG", "clipmesh_tray=info,clipmesh=info,warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
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

    // The host registered the tray's item.
    let item = poll_until(
        "the tray's item registered with waybar",
        STEP,
        Duration::from_millis(100),
        || Ok(registered_items(&bus.address)?.into_iter().next()),
    )?;
    let (dest, path) = item
        .split_once('/')
        .map(|(d, p)| (d.to_owned(), format!("/{p}")))
        .context("item name")?;
    // ...and draws its icon in the bar: the bar's right end is no longer
    // all background.
    let shot = keep_dir().join("waybar-tray.png");
    poll_until(
        "the icon drawn in waybar",
        STEP,
        Duration::from_millis(200),
        || {
            let _ = std::fs::remove_file(&shot);
            let out = sway
                .command("grim")
                .args(["-g", "440,0 200x32"])
                .arg(&shot)
                .stdin(Stdio::null())
                .output()?;
            if !out.status.success() {
                bail!("grim: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            let img = image::open(&shot)?.to_rgba8();
            let drawn = img
                .pixels()
                .filter(|p| p.0[..3] != [0x20, 0x20, 0x20])
                .count();
            Ok((drawn > 20).then_some(()))
        },
    )?;
    let full = keep_dir().join("waybar.png");
    let _ = sway
        .command("grim")
        .arg(&full)
        .stdin(Stdio::null())
        .status();

    // Pause and resume, clicked in the item's real menu (dbusmenu).
    let menu = gdbus(
        &bus.address,
        &dest,
        &path,
        "org.freedesktop.DBus.Properties.Get",
        &["org.kde.StatusNotifierItem", "Menu"],
    )?;
    let menu = menu
        .split('\'')
        .nth(1)
        .context("the item's Menu path")?
        .to_owned();
    let pause = menu_entry(&bus.address, &dest, &menu, "Pause syncing")?;
    menu_click(&bus.address, &dest, &menu, pause)?;
    poll_until("tray icon paused", STEP, Duration::from_millis(100), || {
        Ok(read_log().contains("tray icon state=paused").then_some(()))
    })?;
    // The sync loop stopped: its control socket no longer answers.
    poll_until(
        "the daemon to stop answering",
        STEP,
        Duration::from_millis(200),
        || Ok(dev.status().is_err().then_some(())),
    )?;
    let pause = menu_entry(&bus.address, &dest, &menu, "Pause syncing")?;
    menu_click(&bus.address, &dest, &menu, pause)?;
    dev.wait_connected(STEP)?;

    // Notifications: nothing while the link is up; the relay goes away.
    assert!(
        dunst_history(&bus.address, &sway)?
            .iter()
            .all(|s| !s.starts_with("Connection")),
        "a connection notification before any outage"
    );
    w.relay.stop()?;
    let lost_after = clipmesh_tray::notify::LOST_AFTER + STEP;
    poll_until(
        "\"Connection lost\" in dunst",
        lost_after,
        Duration::from_millis(500),
        || {
            Ok(dunst_history(&bus.address, &sway)?
                .iter()
                .any(|s| s == "Connection lost")
                .then_some(()))
        },
    )?;
    w.relay.restart(&w.root.join("relay2.log"), "info")?;
    poll_until(
        "\"Connection restored\" in dunst",
        clipmesh_tray::notify::RESTORED_AFTER + STEP,
        Duration::from_millis(500),
        || {
            Ok(dunst_history(&bus.address, &sway)?
                .iter()
                .any(|s| s == "Connection restored")
                .then_some(()))
        },
    )?;
    let shown = dunst_history(&bus.address, &sway)?;
    let count = |s: &str| shown.iter().filter(|x| *x == s).count();
    assert_eq!(count("Connection lost"), 1, "{shown:?}");
    assert_eq!(count("Connection restored"), 1, "{shown:?}");
    drop(tray);
    Ok(())
}
