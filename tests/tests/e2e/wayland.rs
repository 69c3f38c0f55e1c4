//! The native Wayland clipboard (data-control): daemons on headless sway
//! compositors, one per device, without any X display. `wl-copy` and
//! `wl-paste` (wl-clipboard) drive and read the clipboards from outside,
//! and `wl-paste --watch` counts every clipboard change.

use crate::world::{encode, sample, unique, World, LOG};
use clipmesh_tests::procstat::ctxt_switches;
use clipmesh_tests::sway::{require_wayland_tools, ClipWatch, Sway};
use clipmesh_tests::wait::{poll_until, STEP};
use clipmesh_tests::wlfake::FakeCompositor;
use clipmesh_tests::wloffer::WlOwner;
use clipmesh_tests::{Daemon, Device};
use image::{ImageFormat, Rgba, RgbaImage};
use std::time::{Duration, Instant};

const FRAMES: &str = "clipmesh_relay_frames_relayed_total";
/// How long to wait for a change that must not come.
const QUIET: Duration = Duration::from_millis(1500);

/// A device whose daemon runs on its own Wayland compositor. Field order
/// matters for drop: the daemon and watcher before their compositor.
struct WlDesk {
    daemon: Daemon,
    watch: ClipWatch,
    _device: Device,
    sway: Sway,
}

fn wl_desk(w: &World, name: &str, signup: bool) -> WlDesk {
    wl_desk_with(w, name, signup, &[])
}

/// Like [`wl_desk`], with `sync` lines (`key = value`) in the `[sync]`
/// section of config.toml.
fn wl_desk_with(w: &World, name: &str, signup: bool, sync: &[&str]) -> WlDesk {
    wl_desk_log(w, name, signup, sync, LOG)
}

/// Like [`wl_desk_with`], with `log` as the daemon's `RUST_LOG`.
fn wl_desk_log(w: &World, name: &str, signup: bool, sync: &[&str], log: &str) -> WlDesk {
    let pw = "alice pass phrase";
    let device = w.device(name).unwrap();
    if signup {
        device.signup(&w.relay.url(), "alice", pw, LOG).unwrap();
    } else {
        device.login(&w.relay.url(), "alice", pw, LOG).unwrap();
    }
    if !sync.is_empty() {
        let path = device.config_dir.join("config.toml");
        let mut cfg = std::fs::read_to_string(&path).unwrap();
        if !cfg.contains("[sync]") {
            cfg.push_str("\n[sync]\n");
        }
        for line in sync {
            let key = line.split('=').next().unwrap_or_default().trim();
            let existing = cfg
                .lines()
                .find(|l| l.split('=').next().map(str::trim) == Some(key))
                .map(str::to_owned);
            cfg = match existing {
                Some(old) => cfg.replacen(&old, line, 1),
                None => cfg.replacen("[sync]\n", &format!("[sync]\n{line}\n"), 1),
            };
        }
        std::fs::write(&path, cfg).unwrap();
    }
    let sway = Sway::start().unwrap();
    let watch = sway.watch().unwrap();
    let daemon = device.run_env(&sway.env(), log).unwrap();
    if let Err(e) = device.wait_connected(STEP) {
        let log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
        panic!("{e:#}; daemon log:\n{log}");
    }
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    assert!(
        log.contains("clipboard: Wayland"),
        "the daemon did not use the native Wayland backend:\n{log}"
    );
    WlDesk {
        daemon,
        watch,
        _device: device,
        sway,
    }
}

#[test]
fn wayland_text_syncs_both_ways_exactly_once() {
    require_wayland_tools().unwrap();
    let w = World::new(LOG).unwrap();
    let mut a = wl_desk(&w, "alice-a", true);
    let mut b = wl_desk(&w, "alice-b", false);
    let frames_before = w.relay.metric(FRAMES).unwrap();

    let t1 = unique("wayland a to b");
    let _copy_a = a.sway.wl_copy(None, t1.as_bytes()).unwrap();
    assert_eq!(b.watch.wait_for_text(&t1, STEP).unwrap(), 1);
    assert_eq!(
        b.sway.wl_paste(Some("text/plain")).unwrap().as_deref(),
        Some(t1.as_bytes())
    );
    // The second copy is a barrier for echoes of the first: a daemon that
    // re-published or re-set t1 would have done it before this.
    let t2 = unique("wayland b to a");
    let _copy_b = b.sway.wl_copy(None, t2.as_bytes()).unwrap();
    assert_eq!(a.watch.wait_for_text(&t2, STEP).unwrap(), 2, "A: t1, t2");
    assert_eq!(
        a.sway.wl_paste(None).unwrap().as_deref(),
        Some(t2.as_bytes())
    );
    assert_eq!(b.watch.wait_for_text(&t2, STEP).unwrap(), 1);
    // Echoes of the last copy have no later copy to order them against:
    // a bounded window for them to show up (expected to time out).
    for d in [&mut a, &mut b] {
        assert_eq!(d.watch.next(QUIET).unwrap(), None, "late clipboard change");
        d.daemon.check_running().unwrap();
    }
    // Two copies, one receiver each.
    let frames = w.relay.metric(FRAMES).unwrap() - frames_before;
    assert_eq!(frames, 2, "Deliver frames relayed");
    // Idle, the clipboard threads sleep in the kernel: no context switch
    // of the Wayland loop or the command bridge while nothing happens (the
    // window is a wait for a change that does not come).
    let before = clipboard_thread_switches(a.daemon.pid());
    assert_eq!(a.watch.next(QUIET).unwrap(), None);
    let after = clipboard_thread_switches(a.daemon.pid());
    assert_eq!(before.len(), 2, "threads: {before:?}");
    assert_eq!(before, after, "idle clipboard threads woke up");
    // Both daemons stop promptly on SIGTERM (B still serves t2: its data
    // source and paste threads end with it).
    a.daemon.stop().unwrap();
    b.daemon.stop().unwrap();
}

/// Context switches (voluntary, involuntary) of the daemon's Wayland loop
/// and command bridge threads, by thread name and id.
fn clipboard_thread_switches(pid: u32) -> Vec<(String, u64, u64)> {
    let mut threads = ctxt_switches(pid).unwrap();
    // `clipmesh-clip-watch` and `clipmesh-clip-writer`, cut to the kernel's
    // 15 bytes (paste writers, `clipmesh-clip-send`, come and go with
    // pastes).
    threads.retain(|(name, ..)| name.starts_with("clipmesh-clip-w ("));
    threads
}

#[test]
fn wayland_trace_logs_hold_no_clipboard_content() {
    require_wayland_tools().unwrap();
    let w = World::new(LOG).unwrap();
    let mut a = wl_desk_log(&w, "alice-a", true, &[], "trace");
    let mut b = wl_desk_log(&w, "alice-b", false, &[], "trace");
    let text = unique("wayland trace secret text");
    let _copy = a.sway.wl_copy(None, text.as_bytes()).unwrap();
    assert_eq!(b.watch.wait_for_text(&text, STEP).unwrap(), 1);
    let html = format!("<i>{}</i>", unique("wayland trace html"));
    let alt = unique("wayland trace alt");
    let _owner = WlOwner::set(
        &b.sway,
        &[
            ("text/html", html.as_bytes()),
            ("text/plain;charset=utf-8", alt.as_bytes()),
        ],
    )
    .unwrap();
    assert_eq!(
        a.watch.wait_for_text(&alt, STEP).unwrap(),
        2,
        "A: text, alt"
    );
    // Stopped, so every line is written.
    a.daemon.stop().unwrap();
    b.daemon.stop().unwrap();
    for d in [&a, &b] {
        let log = std::fs::read_to_string(&d.daemon.log).unwrap();
        // The Wayland backend's own trace lines are there: one read, one set.
        assert!(log.contains("clipboard change"), "no read traced");
        assert!(log.contains("clipboard set"), "no apply traced");
        for secret in [&text, &html, &alt] {
            assert!(
                !log.contains(secret.as_str()),
                "clipboard content in {}",
                d.daemon.log.display()
            );
        }
    }
}

#[test]
fn wayland_primary_selection_syncs_when_enabled() {
    require_wayland_tools().unwrap();
    let w = World::new(LOG).unwrap();
    let a = wl_desk_with(&w, "alice-a", true, &["primary = true"]);
    let mut b = wl_desk_with(&w, "alice-b", false, &["primary = true"]);
    // Selecting text on A (primary only) reaches B's clipboard and primary.
    let t = unique("selected with the mouse");
    let _copy = a.sway.wl_copy_to(true, None, t.as_bytes()).unwrap();
    assert_eq!(b.watch.wait_for_text(&t, STEP).unwrap(), 1);
    assert_eq!(
        b.sway.wl_paste_from(true, None).unwrap().as_deref(),
        Some(t.as_bytes())
    );
}

#[test]
fn wayland_file_list_arrives_as_files_on_the_clipboard() {
    require_wayland_tools().unwrap();
    let w = World::new(LOG).unwrap();
    let downloads = w.root.join("downloads-b");
    let dl = format!("download_dir = {:?}", downloads.to_str().unwrap());
    let a = wl_desk_with(&w, "alice-a", true, &["files = true"]);
    let b = wl_desk_with(&w, "alice-b", false, &["files = true", &dl]);

    let src = w.root.join("source files");
    std::fs::create_dir_all(&src).unwrap();
    let data = unique("file body").into_bytes();
    let path = src.join("a b.txt");
    std::fs::write(&path, &data).unwrap();
    let list = format!("file://{}/a%20b.txt\r\n", src.display()).replace(' ', "%20");
    let _copy = a
        .sway
        .wl_copy(Some("text/uri-list"), list.as_bytes())
        .unwrap();

    let got = poll_until(
        "the file list on B",
        STEP,
        Duration::from_millis(100),
        || {
            let Some(l) = b.sway.wl_paste(Some("text/uri-list"))? else {
                return Ok(None);
            };
            let l = String::from_utf8_lossy(&l).into_owned();
            Ok(l.lines()
                .find_map(|u| u.trim_end().strip_prefix("file://"))
                .map(|p| std::path::PathBuf::from(p.replace("%20", " "))))
        },
    )
    .unwrap();
    assert!(got.starts_with(&downloads), "{got:?}");
    assert_eq!(got.file_name().unwrap().to_str().unwrap(), "a b.txt");
    assert_eq!(std::fs::read(&got).unwrap(), data);
    let types = b.sway.list_types().unwrap();
    assert!(
        types.iter().any(|t| t == "x-special/gnome-copied-files"),
        "types: {types:?}"
    );
}

#[test]
fn wayland_large_image_goes_through_the_blob_store_intact() {
    require_wayland_tools().unwrap();
    let w = World::new(LOG).unwrap();
    let a = wl_desk(&w, "alice-a", true);
    let b = wl_desk(&w, "alice-b", false);
    // Noise does not compress: a few MiB of PNG, far above the 64 KiB
    // inline threshold and the 64 KiB pipe buffer on both sides.
    let img = RgbaImage::from_fn(1024, 768, |x, y| {
        let v =
            (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)).wrapping_mul(2_246_822_519);
        Rgba([(v >> 24) as u8, (v >> 16) as u8, (v >> 8) as u8, v as u8])
    });
    let png = encode(&img, ImageFormat::Png);
    assert!(png.len() > 2 * 1024 * 1024, "{} bytes", png.len());
    let _copy = a.sway.wl_copy(Some("image/png"), &png).unwrap();
    let got = wait_for_png(&b.sway, &img);
    assert_eq!(got.len(), png.len());
    assert!(got == png, "PNG bytes changed on the way");
}

#[test]
fn wayland_sensitive_items_stay_local_and_html_keeps_its_alt_text() {
    require_wayland_tools().unwrap();
    let w = World::new(LOG).unwrap();
    let a = wl_desk(&w, "alice-a", true);
    let mut b = wl_desk(&w, "alice-b", false);
    let frames_before = w.relay.metric(FRAMES).unwrap();

    // KeePassXC style: the text next to the KDE hint with value "secret".
    let secret1 = unique("password one");
    let owner = WlOwner::set(
        &a.sway,
        &[
            ("text/plain;charset=utf-8", secret1.as_bytes()),
            ("x-kde-passwordManagerHint", b"secret"),
        ],
    )
    .unwrap();
    // A's daemon reads the hint and A's watcher the text: two pastes.
    owner.wait_served(2, STEP).unwrap();
    // nspasteboard.org style: a presence marker (nothing needs reading).
    let secret2 = unique("password two");
    let owner = WlOwner::set(
        &a.sway,
        &[
            ("text/plain;charset=utf-8", secret2.as_bytes()),
            ("org.nspasteboard.ConcealedType", b""),
        ],
    )
    .unwrap();
    owner.wait_served(1, STEP).unwrap();
    // HTML with its text alternative.
    let html = format!("<b>{}</b>", unique("bold"));
    let alt = unique("alt text");
    let _owner = WlOwner::set(
        &a.sway,
        &[
            ("text/html", html.as_bytes()),
            ("text/plain;charset=utf-8", alt.as_bytes()),
        ],
    )
    .unwrap();

    // B's clipboard changes exactly once, to the HTML item.
    assert_eq!(b.watch.wait_for_text(&alt, STEP).unwrap(), 1);
    assert_eq!(
        b.sway.wl_paste(Some("text/html")).unwrap().as_deref(),
        Some(html.as_bytes())
    );
    assert_eq!(b.watch.next(QUIET).unwrap(), None, "late clipboard change");
    let frames = w.relay.metric(FRAMES).unwrap() - frames_before;
    assert_eq!(frames, 1, "only the HTML item was relayed");
    // A's daemon did look at (and skip) the hinted secret.
    let log = std::fs::read_to_string(&a.daemon.log).unwrap();
    assert!(
        log.contains("skipped a clipboard item marked sensitive"),
        "A's daemon log:\n{log}"
    );
    for s in [&secret1, &secret2] {
        assert!(!log.contains(s.as_str()), "a secret reached the log");
    }
}

#[test]
fn wayland_a_hung_source_does_not_hold_up_a_newer_copy() {
    require_wayland_tools().unwrap();
    let w = World::new(LOG).unwrap();
    let a = wl_desk(&w, "alice-a", true);
    let mut b = wl_desk(&w, "alice-b", false);
    let hung = WlOwner::hang(&a.sway, &[("text/plain;charset=utf-8", b"never sent")]).unwrap();
    // A's daemon and A's watcher both wait on it now.
    hung.wait_served(2, STEP).unwrap();
    let t = unique("after the hung source");
    let _copy = a.sway.wl_copy(None, t.as_bytes()).unwrap();
    assert_eq!(b.watch.wait_for_text(&t, STEP).unwrap(), 1);
    // The newer copy ended the read at once: it did not run into the
    // daemon's read timeout (which logs the skipped item).
    let log = std::fs::read_to_string(&a.daemon.log).unwrap();
    assert!(
        !log.contains("skipped a clipboard item that could not be read"),
        "A's daemon log:\n{log}"
    );
    drop(hung);
}

/// Waits until `sway`'s clipboard serves an `image/png` with `want`'s pixels.
fn wait_for_png(sway: &Sway, want: &RgbaImage) -> Vec<u8> {
    poll_until(
        "the image on the other compositor",
        STEP * 3,
        Duration::from_millis(100),
        || {
            if !sway.list_types()?.iter().any(|t| t == "image/png") {
                return Ok(None);
            }
            let Some(png) = sway.wl_paste(Some("image/png"))? else {
                return Ok(None);
            };
            let Ok(img) = image::load_from_memory_with_format(&png, ImageFormat::Png) else {
                return Ok(None);
            };
            Ok((img.to_rgba8() == *want).then_some(png))
        },
    )
    .unwrap()
}

#[test]
fn wayland_images_arrive_byte_for_byte_and_bmp_as_png() {
    require_wayland_tools().unwrap();
    let w = World::new(LOG).unwrap();
    let a = wl_desk(&w, "alice-a", true);
    let b = wl_desk(&w, "alice-b", false);

    // A PNG is served on the other side byte for byte.
    let img = sample(1);
    let png = encode(&img, ImageFormat::Png);
    let _copy = a.sway.wl_copy(Some("image/png"), &png).unwrap();
    let got = wait_for_png(&b.sway, &img);
    assert_eq!(got, png, "PNG bytes changed on the way");
    let types = b.sway.list_types().unwrap();
    assert!(types.iter().any(|t| t == "image/bmp"), "types: {types:?}");

    // A source that offers only BMP arrives as PNG with the same pixels.
    let img2 = sample(2);
    let _copy2 = b
        .sway
        .wl_copy(Some("image/bmp"), &encode(&img2, ImageFormat::Bmp))
        .unwrap();
    wait_for_png(&a.sway, &img2);
}

#[test]
fn wayland_and_x11_devices_sync_with_each_other() {
    require_wayland_tools().unwrap();
    let w = World::new(LOG).unwrap();
    let mut a = wl_desk(&w, "alice-a", true);
    let mut x = w
        .desk("alice-x", "alice", "alice pass phrase", false)
        .unwrap();

    let t1 = unique("from wayland");
    let _copy = a.sway.wl_copy(None, t1.as_bytes()).unwrap();
    assert_eq!(x.watcher.wait_for_text(&t1, STEP).unwrap(), 1);
    let t2 = unique("from x11");
    clipmesh_tests::xvfb::xclip_set(&x.display(), &t2).unwrap();
    assert_eq!(a.watch.wait_for_text(&t2, STEP).unwrap(), 2, "A: t1, t2");
    assert_eq!(
        a.sway.wl_paste(None).unwrap().as_deref(),
        Some(t2.as_bytes())
    );
    a.daemon.check_running().unwrap();
    x.daemon.check_running().unwrap();
}

/// Runs `clipmesh run` with `env` until it exits (bounded); returns
/// (success, stderr).
fn run_to_exit(dev: &Device, env: &[(&str, std::ffi::OsString)]) -> (bool, String) {
    let mut cmd = dev.command().unwrap();
    cmd.arg("run")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("clipmesh run kept running on a compositor without data-control");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.success(), err)
}

#[test]
fn compositor_without_data_control_gives_one_clear_line_or_x11() {
    let w = World::new(LOG).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCompositor::start(dir.path()).unwrap();
    let dev = w.device("nodc").unwrap();
    dev.signup(&w.relay.url(), "nodc", "a pass phrase", LOG)
        .unwrap();

    // Wayland only: one line naming both protocols.
    let (ok, err) = run_to_exit(&dev, &fake.env());
    assert!(!ok);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("clipmesh:")).collect();
    assert_eq!(
        lines,
        [
            "clipmesh: clipboard: the Wayland compositor offers no clipboard access for \
          background programs (neither ext-data-control-v1 nor wlr-data-control-unstable-v1); \
          use a compositor that offers one, or XWayland with DISPLAY set"
        ],
        "stderr: {err}"
    );
    // Forcing X11 without an X display says so.
    let mut env = fake.env();
    env.push(("CLIPMESH_CLIPBOARD", "x11".into()));
    let (ok, err) = run_to_exit(&dev, &env);
    assert!(!ok);
    assert!(
        err.contains("clipmesh: clipboard: no display"),
        "stderr: {err}"
    );

    // With an X display as well (XWayland): the daemon falls back to X11.
    let x = clipmesh_tests::Xvfb::start().unwrap();
    let mut env = fake.env();
    env.push(("DISPLAY", x.display().into()));
    let daemon = dev.run_env(&env, LOG).unwrap();
    dev.wait_connected(STEP).unwrap();
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    assert!(
        log.contains("native Wayland clipboard unavailable; using X11 through DISPLAY"),
        "daemon log:\n{log}"
    );
}
