//! Without a usable display the daemon stops at once with one clear line.

use crate::world::{World, LOG};
use std::time::{Duration, Instant};

/// Runs `clipmesh run` with `env` and returns (success, stderr), bounded.
fn run_without_x(w: &World, name: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dev = w.device(name).unwrap();
    dev.signup(&w.relay.url(), name, "a pass phrase", LOG)
        .unwrap();
    let mut cmd = dev.command().unwrap();
    cmd.arg("run")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "clipmesh run kept running without a display"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.success(), err)
}

#[test]
fn daemon_without_display_says_what_to_do() {
    let w = World::new(LOG).unwrap();
    let (ok, err) = run_without_x(&w, "nodisplay", &[]);
    assert!(!ok);
    assert!(
        err.contains("no display: set WAYLAND_DISPLAY or DISPLAY, or run under Xvfb"),
        "stderr: {err}"
    );
    let (ok, err) = run_without_x(&w, "waylandonly", &[("WAYLAND_DISPLAY", "wayland-0")]);
    assert!(!ok);
    assert!(
        err.contains("cannot connect to the Wayland display (WAYLAND_DISPLAY)"),
        "stderr: {err}"
    );
    let (ok, err) = run_without_x(&w, "deadx", &[("DISPLAY", ":999")]);
    assert!(!ok);
    assert!(
        err.contains("cannot connect to the X display"),
        "stderr: {err}"
    );
}
