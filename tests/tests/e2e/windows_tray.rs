//! The Windows tray app (`clipmesh-tray.exe`) under Wine on Xvfb, next to
//! an XEmbed tray (trayer) on the same display, against a relay on
//! 127.0.0.1: Wine docks the program's notification-area icon into trayer.
//!
//! The device signs up with the Windows `clipmesh.exe`; then the tray
//! starts for its config directory, its engine connects (the log says the
//! icon shows "connected"), its icon is found docked in trayer's panel and
//! a screenshot is kept (`target/tmp/desktop-test/windows-tray.png`), and a
//! second start says it already runs. Before the tray starts, its login
//! window (`clipmesh-tray.exe login`) logs a second device of the account
//! in, typed into with xdotool: a wrong password first shows the error
//! (picture kept: `windows-login-error.png`). Then its menu is opened with a right
//! click on the docked icon (xdotool), "Pause syncing" is clicked (the icon
//! turns to paused), the menu is opened again and "Quit clipmesh" ends the
//! program with success; pictures of both menus are kept
//! (`windows-tray-menu.png`, `windows-tray-menu-paused.png`). The tray,
//! trayer and Xvfb are ended by PID, the prefix with `wineserver -k`.
//!
//! Needs `clipmesh.exe` and `clipmesh-tray.exe` (`scripts/build-windows`);
//! without them the test says so and passes without running.
//! `scripts/test --only 55` builds them and runs this test.

use crate::world::{World, LOG};
use clipmesh_tests::wait::poll_until;
use clipmesh_tests::wine::{win_path, windows_exe, WinePrefix};
use clipmesh_tests::xtray::{
    click_at, embedded_icon, grab, mapped_top_levels, screen_rect, screenshot, Trayer,
};
use clipmesh_tests::{Device, Xvfb};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PASSWORD: &str = "tray pass phrase";
/// One step through Wine (slow to start on a loaded machine).
const WSTEP: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(100);

/// The Windows `clipmesh-tray.exe` next to `clipmesh.exe`, if built.
fn tray_exe() -> Option<(PathBuf, PathBuf)> {
    let cli = windows_exe()?;
    let tray = cli.with_file_name("clipmesh-tray.exe");
    tray.is_file().then_some((cli, tray))
}

/// A process ended by PID on drop (the prefix's `wineserver -k` follows).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn keep(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("desktop-test");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn windows_tray_under_wine_login_window_dock_single_instance_menu_pause_and_quit() {
    let Some((cli, tray)) = tray_exe() else {
        eprintln!(
            "SKIPPED windows_tray_*: no Windows clipmesh-tray.exe (build it with \
             scripts/build-windows); scripts/test --only 55 builds it and runs this test"
        );
        return;
    };
    let w = World::with_mode(LOG, "relay").unwrap();
    // Dropped in reverse: the tray, the prefix (wineserver -k), trayer,
    // the display.
    let x = Xvfb::start_sized(800, 600).unwrap();
    let d = x.display();
    let _trayer = Trayer::start(&d, WSTEP).unwrap();
    let prefix = WinePrefix::create(&w.root.join("wine"), &d).unwrap();
    let dev = Device::new_wine(&w.root, &w.logs, "wintray", prefix.exe(&cli)).unwrap();
    dev.signup(&w.relay.url(), "tess", PASSWORD, LOG).unwrap();

    // The login window, for a second device of the account.
    login_window(&prefix, &tray, &d, &w.root.join("winlogin"), &w.relay.url());

    let start = || {
        let mut c = prefix.exe(&tray).command();
        c.arg("--config-dir")
            .arg(win_path(&dev.config_dir))
            .env("DISPLAY", &d)
            .env("CLIPMESH_SECRET_STORE", "file")
            .env("CLIPMESH_P2P_BIND", "127.0.0.1")
            .env("RUST_LOG", "clipmesh_tray=info,clipmesh=info,warn")
            .stdin(Stdio::null());
        c
    };
    let stderr = w.logs.join("wintray-stderr.log");
    let mut child = Killed(
        start()
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = dev.config_dir.join("tray.log");
    poll_until("the tray to connect", WSTEP, POLL, || {
        if let Some(s) = child.0.try_wait()? {
            anyhow::bail!(
                "clipmesh-tray.exe exited: {s}\n{}\n{}",
                read(&log),
                read(&stderr)
            );
        }
        Ok(read(&log)
            .contains("tray icon state=connected")
            .then_some(()))
    })
    .unwrap();

    // The icon, docked in trayer's panel, shows a picture (not one flat
    // colour).
    let (panel, icon) = embedded_icon(&d, WSTEP).unwrap();
    assert_ne!(panel, icon);
    poll_until("the icon's picture", WSTEP, POLL, || {
        let (px, _, _) = grab(&d, Some(icon))?;
        let first = &px[..4];
        Ok(px.chunks_exact(4).any(|p| p != first).then_some(()))
    })
    .unwrap();
    screenshot(&d, None, &keep("windows-tray.png")).unwrap();

    // A second start for the same config directory says it runs and exits.
    let out = start().output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("already running"), "{said}");

    // The menu, opened by a right click on the docked icon (the tray opens
    // it itself: tray-icon's own handling needs Shell_NotifyIconGetRect,
    // a stub in Wine 8). "Pause syncing" pauses the engine.
    let (ix, iy, iw, ih) = screen_rect(&d, icon).unwrap();
    let (cx, cy) = (ix + i32::from(iw) / 2, iy + i32::from(ih) / 2);
    let (menu, bands) = open_menu(&d, (cx, cy), &keep("windows-tray-menu.png"));
    // Status line, Pause, Mode, Recent, Devices, Open download folder,
    // Open log, Start at login, Log out, Quit.
    assert_eq!(bands.len(), 10, "menu rows {bands:?}");
    click_at(&d, bands[1].0, bands[1].1, 1).unwrap();
    poll_until("the tray to pause", WSTEP, POLL, || {
        Ok(read(&log).contains("tray icon state=paused").then_some(()))
    })
    .unwrap();
    wait_menu_closed(&d, menu);

    // "Quit clipmesh" ends the program, successfully.
    let (_, bands) = open_menu(&d, (cx, cy), &keep("windows-tray-menu-paused.png"));
    assert_eq!(bands.len(), 10, "menu rows {bands:?}");
    click_at(&d, bands[9].0, bands[9].1, 1).unwrap();
    let status = poll_until("the tray to quit", WSTEP, POLL, || {
        Ok(child.0.try_wait()?)
    })
    .unwrap();
    assert!(status.success(), "{status}\n{}", read(&log));
    assert!(
        read(&log).contains("clipmesh-tray stopped"),
        "{}",
        read(&log)
    );
    drop(prefix);
}

/// Runs xdotool on `d` and returns what it printed.
fn xdotool(d: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("xdotool")
        .args(args)
        .env("DISPLAY", d)
        .stdin(Stdio::null())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "xdotool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The lines `out` prints, as they come.
fn lines(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line of `rx` that contains `needle` (within [`WSTEP`]).
fn expect_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(WSTEP) {
            Ok(l) if l.contains(needle) => return l,
            Ok(l) => seen.push(l),
            Err(_) => panic!("no line with {needle:?} within {WSTEP:?}; saw {seen:?}"),
        }
    }
}

/// `clipmesh-tray.exe login` (egui on Wine's OpenGL, on Xvfb) for a new
/// config directory `dir`, typed into with xdotool: a wrong password shows
/// "Wrong username or password." (printed, and drawn in red: a picture is
/// kept as `windows-login-error.png`), the right one logs the device in
/// (its config and secrets are written) and the window exits with success.
fn login_window(prefix: &WinePrefix, tray: &Path, d: &str, dir: &Path, server: &str) {
    let mut login = Killed(
        prefix
            .exe(tray)
            .command()
            .arg("--config-dir")
            .arg(win_path(dir))
            .arg("login")
            .env("DISPLAY", d)
            .env("CLIPMESH_SECRET_STORE", "file")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = lines(login.0.stdout.take().unwrap());
    let win = poll_until("the login window", WSTEP, POLL, || {
        let found = xdotool(
            d,
            &["search", "--onlyvisible", "--name", "^clipmesh: log in$"],
        )
        .unwrap_or_default();
        Ok(found.lines().next().map(str::to_owned))
    })
    .unwrap();
    let type_ = |text: &str| xdotool(d, &["type", "--delay", "30", text]).unwrap();
    xdotool(d, &["windowfocus", "--sync", &win]).unwrap();
    // The server field has focus; Tab moves to username, then password.
    type_(server);
    xdotool(d, &["key", "Tab"]).unwrap();
    type_("tess");
    xdotool(d, &["key", "Tab"]).unwrap();
    type_("not the password");
    xdotool(d, &["key", "Return"]).unwrap();
    let line = expect_line(&out, "login: error:");
    assert!(line.ends_with("Wrong username or password."), "{line}");
    let id: u32 = win.trim().parse().unwrap();
    poll_until("the error text on screen", WSTEP, POLL, || {
        let (px, _, _) = grab(d, Some(id))?;
        Ok(px
            .chunks_exact(4)
            .any(|p| p[0] > 200 && p[1] < 90 && p[2] < 90)
            .then_some(()))
    })
    .unwrap();
    screenshot(d, Some(id), &keep("windows-login-error.png")).unwrap();
    // The password field has focus again, emptied.
    type_(PASSWORD);
    xdotool(d, &["key", "Return"]).unwrap();
    let line = expect_line(&out, "login: ok:");
    assert!(line.contains("Logged in as tess"), "{line}");
    let status = poll_until("the login window to exit", WSTEP, POLL, || {
        Ok(login.0.try_wait()?)
    })
    .unwrap();
    assert!(status.success(), "login window exited with {status}");
    let config = read(&dir.join("config.toml"));
    assert!(config.contains("username = \"tess\""), "{config}");
    assert!(dir.join("secrets.json").is_file());
}

/// The menu window Wine maps for the tray's popup menu: a new mapped
/// top-level window (none of `before`) at least 40 px high.
fn menu_window(d: &str, before: &[u32]) -> anyhow::Result<Option<u32>> {
    for w in mapped_top_levels(d)? {
        if before.contains(&w) {
            continue;
        }
        if screen_rect(d, w)?.3 >= 40 {
            return Ok(Some(w));
        }
    }
    Ok(None)
}

/// Right-clicks the icon at `at`, waits for the menu, keeps a picture of it
/// and returns the menu's window and the screen centre of each row of text
/// in it, top to bottom.
///
/// The rows are found in the menu's pixels: Wine draws a popup menu on
/// white with dark text and one-pixel grey separator lines, so a text row
/// is a run of pixel rows that have dark pixels in the left half (the
/// submenu arrows sit at the right edge) and are not a separator (a line
/// across most of the width), with gaps of at most 2 blank rows.
fn open_menu(d: &str, at: (i32, i32), picture: &Path) -> (u32, Vec<(i32, i32)>) {
    let before = mapped_top_levels(d).unwrap();
    click_at(d, at.0, at.1, 3).unwrap();
    // A click can be lost while Wine is busy (seen once, with other tests
    // loading the machine): click again if no menu came within 15 s.
    let mut clicked = Instant::now();
    let menu = poll_until("the tray menu to open", WSTEP, POLL, || {
        let menu = menu_window(d, &before)?;
        if menu.is_none() && clicked.elapsed() >= Duration::from_secs(15) {
            click_at(d, at.0, at.1, 3)?;
            clicked = Instant::now();
        }
        Ok(menu)
    })
    .unwrap();
    let (mx, my, _, _) = screen_rect(d, menu).unwrap();
    // Drawn once its text rows stop changing between two grabs.
    let mut last = Vec::new();
    let rows = poll_until("the menu to be drawn", WSTEP, POLL, || {
        let (px, w, h) = grab(d, Some(menu))?;
        let rows = text_rows(&px, usize::from(w), usize::from(h));
        let same = !rows.is_empty() && rows == last;
        last = rows.clone();
        Ok(same.then_some(rows))
    })
    .unwrap();
    screenshot(d, Some(menu), picture).unwrap();
    let rows = rows
        .into_iter()
        .map(|(x, y)| (mx + x as i32, my + y as i32))
        .collect();
    (menu, rows)
}

/// The centres (x, y) of the text rows in a menu's RGBA pixels.
fn text_rows(px: &[u8], w: usize, h: usize) -> Vec<(usize, usize)> {
    let dark = |x: usize, y: usize| {
        let p = &px[(y * w + x) * 4..][..3];
        p.iter().all(|&c| c < 150)
    };
    let inked = |x: usize, y: usize| {
        let p = &px[(y * w + x) * 4..][..3];
        p.iter().any(|&c| c < 235)
    };
    let margin = 4;
    // Runs of text rows (top, bottom), then the runs less than 3 rows
    // apart joined (a glyph's descender can leave a blank row); rows of
    // different items are at least 4 rows apart.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for y in margin..h.saturating_sub(margin) {
        let line =
            (margin..w - margin).filter(|&x| inked(x, y)).count() * 10 >= (w - 2 * margin) * 9;
        if line || !(margin..w / 2).any(|x| dark(x, y)) {
            continue;
        }
        match runs.last_mut() {
            Some((_, bottom)) if y - *bottom <= 3 => *bottom = y,
            _ => runs.push((y, y)),
        }
    }
    runs.into_iter()
        .map(|(top, bottom)| (w / 4, (top + bottom) / 2))
        .collect()
}

/// Waits until the menu's window is no longer mapped.
fn wait_menu_closed(d: &str, menu: u32) {
    poll_until("the menu to close", WSTEP, POLL, || {
        Ok((!mapped_top_levels(d)?.contains(&menu)).then_some(()))
    })
    .unwrap();
}
