//! ClipCascade compatibility end to end: two scripted ClipCascade-style
//! clients (one sending text frames with 16-byte nonces like the desktop
//! client, one binary frames with 12-byte nonces like the Android app) and
//! a real `clipmesh run` on the ClipCascade profile, on its own Xvfb
//! display, all through one clipmesh-relay. The scripted client
//! (`clipmesh_tests::clipcascade`) is written from the protocol description
//! and shares no code with the profile.

use crate::world::{encode, paths_of, sample, unique, uri, wait_for_pixels, Desk, World, LOG};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clipmesh_tests::clipcascade::{CcClient, CcKey, Clip, NonceLen, Stomp, DEFAULT_ITERATIONS};
use clipmesh_tests::wait::{poll_until, STEP};
use clipmesh_tests::xvfb::{xclip_get, xclip_offer, xclip_set};
use clipmesh_tests::{SelectionWatcher, Xvfb};
use image::ImageFormat;
use std::path::Path;
use std::time::Duration;

const USER: &str = "ann";
const PASSWORD: &str = "ann pass phrase";
/// The profile daemon's log line once its subscription is live.
const SUBSCRIBED: &str = "subscribed to ClipCascade messages";
/// How long to wait for a message that must not come.
const QUIET: Duration = Duration::from_millis(1500);

/// An account with ClipCascade compatibility on (signed up from a clipmesh
/// device that runs no daemon).
fn compat_account(w: &World) {
    let native = w.device("ann-native").unwrap();
    native
        .signup_clipcascade_compat(&w.relay.url(), USER, PASSWORD, LOG)
        .unwrap();
}

/// A device logged in with `--profile clipcascade`, its `[sync]` set to
/// `sync_toml`, running `clipmesh run` on a fresh display; returned once
/// its subscription is live.
fn profile_desk(w: &World, name: &str, sync_toml: &str) -> Desk {
    let device = w.device(name).unwrap();
    device
        .login_clipcascade(&w.relay.url(), USER, PASSWORD, LOG)
        .unwrap();
    std::fs::write(
        device.config_dir.join("config.toml"),
        format!("[sync]\n{sync_toml}\n"),
    )
    .unwrap();
    let x = Xvfb::start().unwrap();
    let watcher = SelectionWatcher::connect(&x.display()).unwrap();
    let mut daemon = device.run(&x.display(), LOG).unwrap();
    daemon.wait_log(SUBSCRIBED, 1, STEP).unwrap();
    Desk {
        daemon,
        watcher,
        device,
        x,
    }
}

fn key() -> CcKey {
    CcKey::derive(USER, PASSWORD, "", DEFAULT_ITERATIONS)
}

fn text(c: &Clip) -> String {
    assert_eq!(c.kind, "text", "{c:?}");
    String::from_utf8(c.plain.clone()).unwrap()
}

/// The next clip on each of `sessions` is `want` (type and plaintext).
fn all_get(sessions: &mut [&mut Stomp], key: &CcKey, kind: &str, want: &[u8]) {
    for (i, s) in sessions.iter_mut().enumerate() {
        let c = s.next_clip(key, STEP).unwrap();
        assert_eq!(c.kind, kind, "session {i}");
        assert!(c.plain == want, "session {i}: another {kind} arrived");
    }
}

#[test]
fn scripted_clients_and_a_profile_daemon_sync_text_images_and_files() {
    let w = World::new(LOG).unwrap();
    compat_account(&w);
    let downloads = w.root.join("downloads-cc");
    let mut d = profile_desk(
        &w,
        "ann-cc",
        &format!("download_dir = {:?}", downloads.to_str().unwrap()),
    );
    let key = key();
    let c1 = CcClient::login(&w.relay.url(), USER, PASSWORD).unwrap();
    let c2 = CcClient::login(&w.relay.url(), USER, PASSWORD).unwrap();
    assert_ne!(c1.cookie, c2.cookie);
    let mut desktop = c1.stomp(false).unwrap();
    let mut android = c2.stomp(true).unwrap();

    // 1. Text from the desktop-style client: on the daemon's display, at
    //    the Android-style client, and back at the sender (its echo).
    let t1 = unique("from the scripted desktop client");
    desktop
        .send(&key, NonceLen::Desktop, "text", t1.as_bytes())
        .unwrap();
    let changes = d.watcher.wait_for_text(&t1, STEP).unwrap();
    assert_eq!(changes, 1, "the daemon's display changed {changes} times");
    assert_eq!(
        xclip_get(&d.display(), None).unwrap().as_deref(),
        Some(t1.as_str())
    );
    all_get(
        &mut [&mut desktop, &mut android],
        &key,
        "text",
        t1.as_bytes(),
    );

    // 2. Copied on the daemon's display: both scripted clients open it.
    let t2 = unique("copied next to the profile daemon");
    xclip_set(&d.display(), &t2).unwrap();
    for s in [&mut desktop, &mut android] {
        assert_eq!(text(&s.next_clip(&key, STEP).unwrap()), t2);
    }
    d.watcher.drain().unwrap();

    // 3. Text from the Android-style client (binary frames, 12-byte nonce).
    let t3 = unique("from the scripted android client");
    android
        .send(&key, NonceLen::Android, "text", t3.as_bytes())
        .unwrap();
    d.watcher.wait_for_text(&t3, STEP).unwrap();
    all_get(
        &mut [&mut desktop, &mut android],
        &key,
        "text",
        t3.as_bytes(),
    );

    // 4. An image from a scripted client: base64 of a PNG.
    let img1 = sample(11);
    let png1 = encode(&img1, ImageFormat::Png);
    let b64 = B64.encode(&png1);
    desktop
        .send(&key, NonceLen::Desktop, "image", b64.as_bytes())
        .unwrap();
    let got = wait_for_pixels(&d.display(), &img1).unwrap();
    assert_eq!(got, png1, "a PNG is put on the clipboard unchanged");
    all_get(
        &mut [&mut desktop, &mut android],
        &key,
        "image",
        b64.as_bytes(),
    );

    // 5. An image copied on the daemon's display reaches both as a PNG.
    let img2 = sample(12);
    xclip_offer(&d.display(), "image/png", &encode(&img2, ImageFormat::Png)).unwrap();
    for s in [&mut desktop, &mut android] {
        let c = s.next_clip(&key, STEP).unwrap();
        assert_eq!(c.kind, "image");
        let png = B64.decode(&c.plain).unwrap();
        let got = image::load_from_memory_with_format(&png, ImageFormat::Png).unwrap();
        assert_eq!(got.to_rgba8(), img2);
    }

    // 6. Files from a scripted client, one with a hostile name: written
    //    under the download folder with sanitised names, and offered as a
    //    file list.
    let files = serde_json::json!({
        "../../escape attempt.txt": B64.encode(b"first file\n"),
        "data.bin": B64.encode((0..=255u8).collect::<Vec<u8>>()),
    })
    .to_string();
    android
        .send(&key, NonceLen::Android, "files", files.as_bytes())
        .unwrap();
    let got = poll_until(
        "the file list on the daemon's display",
        STEP,
        Duration::from_millis(100),
        || {
            Ok(xclip_get(&d.display(), Some("text/uri-list"))?
                .map(|l| paths_of(&l))
                .filter(|p| p.len() == 2))
        },
    )
    .unwrap();
    let mut by_content = Vec::new();
    for p in &got {
        assert!(p.starts_with(&downloads), "{p:?} outside {downloads:?}");
        assert_eq!(
            p.parent().unwrap().parent().unwrap(),
            downloads,
            "{p:?}: one folder per item, nothing deeper"
        );
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(!name.contains('/') && name != "..", "{name}");
        by_content.push((std::fs::read(p).unwrap(), name.to_owned()));
    }
    by_content.sort();
    assert_eq!(by_content[0].0, (0..=255u8).collect::<Vec<u8>>());
    assert_eq!(by_content[0].1, "data.bin");
    assert_eq!(by_content[1].0, b"first file\n");
    assert!(by_content[1].1.contains("escape attempt.txt"));
    all_get(
        &mut [&mut desktop, &mut android],
        &key,
        "files",
        files.as_bytes(),
    );

    // 7. A file copied on the daemon's display: `{"name": base64}`.
    let src = w.root.join("to send");
    std::fs::create_dir_all(&src).unwrap();
    let report = src.join("report 1.txt");
    std::fs::write(&report, b"quarterly numbers\n").unwrap();
    xclip_offer(
        &d.display(),
        "text/uri-list",
        format!("{}\r\n", uri(&report)).as_bytes(),
    )
    .unwrap();
    for s in [&mut desktop, &mut android] {
        let c = s.next_clip(&key, STEP).unwrap();
        assert_eq!(c.kind, "files");
        let v: serde_json::Value = serde_json::from_slice(&c.plain).unwrap();
        let body = v["report 1.txt"].as_str().expect("the file by its name");
        assert_eq!(B64.decode(body).unwrap(), b"quarterly numbers\n");
        assert_eq!(v.as_object().unwrap().len(), 1);
    }

    // 8. No echo from the daemon: a last text is the next message both
    //    clients see (a daemon that re-published anything it applied would
    //    have done so before), and nothing follows it.
    let last = unique("barrier");
    desktop
        .send(&key, NonceLen::Desktop, "text", last.as_bytes())
        .unwrap();
    d.watcher.wait_for_text(&last, STEP).unwrap();
    all_get(
        &mut [&mut desktop, &mut android],
        &key,
        "text",
        last.as_bytes(),
    );
    for s in [&mut desktop, &mut android] {
        let extra = s.quiet_for(QUIET).unwrap();
        assert!(extra.is_none(), "unexpected frame: {extra:?}");
    }
    d.daemon.check_running().unwrap();
}

#[test]
fn profile_sessions_survive_a_relay_restart_without_a_new_login() {
    let mut w = World::new(LOG).unwrap();
    compat_account(&w);
    let mut d = profile_desk(&w, "ann-cc", "");
    let profile = |dev: &Path| {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dev.join("clipcascade.json")).expect("the profile file"),
        )
        .unwrap();
        v["cookie"].as_str().unwrap().to_owned()
    };
    let cookie_before = profile(&d.device.config_dir);
    let key = key();
    let c = CcClient::login(&w.relay.url(), USER, PASSWORD).unwrap();
    let mut s = c.stomp(false).unwrap();
    let t1 = unique("before the restart");
    s.send(&key, NonceLen::Desktop, "text", t1.as_bytes())
        .unwrap();
    d.watcher.wait_for_text(&t1, STEP).unwrap();

    // Same port and data directory; the daemon keeps running.
    drop(s);
    w.restart_relay().unwrap();
    d.daemon.wait_log(SUBSCRIBED, 2, STEP * 2).unwrap();
    // The scripted client's cookie is still good: no new login.
    assert_eq!(c.get("/validate-session").unwrap(), (200, "OK".into()));
    let mut s = c.stomp(true).unwrap();

    let t2 = unique("after the restart, from the daemon's display");
    xclip_set(&d.display(), &t2).unwrap();
    assert_eq!(text(&s.next_clip(&key, STEP).unwrap()), t2);
    let t3 = unique("after the restart, to the daemon");
    s.send(&key, NonceLen::Android, "text", t3.as_bytes())
        .unwrap();
    d.watcher.wait_for_text(&t3, STEP).unwrap();

    // The daemon reconnected with its stored session, without logging in.
    assert_eq!(profile(&d.device.config_dir), cookie_before);
    let log = std::fs::read_to_string(&d.daemon.log).unwrap();
    assert!(
        !log.contains("logged in to the ClipCascade server again"),
        "the daemon logged in again"
    );
    d.daemon.check_running().unwrap();
}
