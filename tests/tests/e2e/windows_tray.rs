//! The Windows tray app (`clipmesh-tray.exe`) under Wine on Xvfb, next to
//! an XEmbed tray (trayer) on the same display, against a relay on
//! 127.0.0.1: Wine docks the program's notification-area icon into trayer.
//!
//! The device signs up with the Windows `clipmesh.exe`; then the tray
//! starts for its config directory, its engine connects (the log says the
//! icon shows "connected"), its icon is found docked in trayer's panel and
//! a screenshot is kept (`target/tmp/desktop-test/windows-tray.png`), and a
//! second start says it already runs. Its menu cannot be opened under Wine
//! 8 (see the end of the test), so it is ended by PID.
//!
//! Needs `clipmesh.exe` and `clipmesh-tray.exe` (`scripts/build-windows`);
//! without them the test says so and passes without running.
//! `scripts/test.d/20-windows.sh` builds them and runs this test.

use crate::world::{World, LOG};
use clipmesh_tests::wait::poll_until;
use clipmesh_tests::wine::{win_path, windows_exe, WinePrefix};
use clipmesh_tests::xtray::{embedded_icon, grab, screenshot, Trayer};
use clipmesh_tests::{Device, Xvfb};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

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
fn windows_tray_under_wine_docks_its_icon_connects_and_runs_once() {
    let Some((cli, tray)) = tray_exe() else {
        eprintln!(
            "SKIPPED windows_tray_*: no Windows clipmesh-tray.exe (build it with \
             scripts/build-windows); scripts/test.d/20-windows.sh builds it and runs this test"
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

    // Wine 8's Shell_NotifyIconGetRect is a stub (E_NOTIMPL), and
    // tray-icon drops a click on the icon when it cannot get the icon's
    // rectangle: under Wine the menu does not open, so Quit cannot be
    // chosen here. The tray is ended by PID, then the prefix.
    assert!(child.0.try_wait().unwrap().is_none(), "{}", read(&log));
    drop(child);
    drop(prefix);
}
