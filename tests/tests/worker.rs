#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Stock `clipmesh run` daemons through the relay on Cloudflare Workers
//! (the Worker bundle under a local workerd, `procs::WorkerRelay`).
//!
//! Ignored in a plain `cargo test`: it needs the wasm32 Worker bundle, which
//! `scripts/test.d/50-workers.sh` builds and then runs this with
//! `CLIPMESH_WORKER_BUNDLE` set and `--ignored`. Like the other end-to-end
//! tests it needs Xvfb and xclip.

use anyhow::Result;
use clipmesh_tests::wait::{poll_until, STEP};
use clipmesh_tests::xvfb::{require_xclip, xclip_offer, xclip_read, xclip_set};
use clipmesh_tests::{Daemon, Device, SelectionWatcher, WorkerRelay, Xvfb};
use image::{ImageFormat, Rgba, RgbaImage};
use std::io::Cursor;
use std::path::Path;
use std::time::Duration;

const LOG: &str = "info,clipmesh=debug";

/// A device whose daemon runs on its own display. Field order: the daemon
/// stops before its display.
struct Desk {
    daemon: Daemon,
    watcher: SelectionWatcher,
    device: Device,
    x: Xvfb,
}

fn desk(root: &Path, logs: &Path, url: &str, name: &str, signup: bool) -> Result<Desk> {
    let device = Device::new(root, logs, name)?;
    if signup {
        device.signup(url, "alice", "alice pass phrase", LOG)?;
    } else {
        device.login(url, "alice", "alice pass phrase", LOG)?;
    }
    let x = Xvfb::start()?;
    let watcher = SelectionWatcher::connect(&x.display())?;
    let daemon = device.run_mode(&x.display(), "relay", LOG)?;
    device.wait_connected(STEP)?;
    Ok(Desk {
        daemon,
        watcher,
        device,
        x,
    })
}

/// A noisy image; `w`×`h` pixels, different per seed.
fn noise(seed: u32, w: u32, h: u32) -> Vec<u8> {
    let mut img = RgbaImage::new(w, h);
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    for p in img.pixels_mut() {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        let [a, b, c, _] = s.to_le_bytes();
        *p = Rgba([a, b, c, 255]);
    }
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn wait_for_png(display: &str, want: &[u8]) -> Result<()> {
    poll_until(
        "the image on the other display",
        STEP * 3,
        Duration::from_millis(100),
        || Ok((xclip_read(display, "image/png")?.as_deref() == Some(want)).then_some(())),
    )
}

#[test]
#[ignore = "needs the Worker bundle: run by scripts/test.d/50-workers.sh"]
fn stock_daemons_sync_through_the_worker_and_resume_after_its_restart() {
    let bundle = WorkerRelay::bundle_from_env().unwrap();
    require_xclip().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let logs = root.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let state = root.join("worker-state");
    let mut worker = WorkerRelay::start(&bundle, &state, &logs.join("worker-1.log"), 0).unwrap();
    let url = worker.url();

    let a = desk(root, &logs, &url, "alice-a", true).unwrap();
    let mut b = desk(root, &logs, &url, "alice-b", false).unwrap();

    // Text, A to B.
    let text = format!("through the worker {}", std::process::id());
    xclip_set(&a.x.display(), &text).unwrap();
    b.watcher.wait_for_text(&text, STEP).unwrap();

    // A small image (inline in the envelope), B to A.
    let small = noise(1, 96, 64);
    assert!(small.len() < 64 * 1024, "{} bytes", small.len());
    xclip_offer(&b.x.display(), "image/png", &small).unwrap();
    wait_for_png(&a.x.display(), &small).unwrap();

    // A large image (a blob on R2: over the inline threshold), A to B.
    let large = noise(2, 700, 500);
    assert!(large.len() > 1 << 20, "{} bytes", large.len());
    xclip_offer(&a.x.display(), "image/png", &large).unwrap();
    wait_for_png(&b.x.display(), &large).unwrap();

    // Restart the runtime on the same state: accounts and sessions survive,
    // and both daemons reconnect with their stored tokens (no login).
    worker.stop().unwrap();
    worker = WorkerRelay::start(&bundle, &state, &logs.join("worker-2.log"), worker.port).unwrap();
    a.device.wait_connected(STEP * 3).unwrap();
    b.device.wait_connected(STEP * 3).unwrap();
    let text = format!("after the restart {}", std::process::id());
    xclip_set(&a.x.display(), &text).unwrap();
    b.watcher.wait_for_text(&text, STEP).unwrap();

    let mut a = a;
    a.daemon.check_running().unwrap();
    b.daemon.check_running().unwrap();
    drop(a);
    drop(b);
    worker.stop().unwrap();
}
