//! Secrets and clipboard contents never reach logs or the relay's disk.
//!
//! A full sync (signup, login, two daemons, text and HTML both ways, a
//! `send`) at `RUST_LOG=trace` for the relay and every client, then every
//! byte of every log file and of every file under the relay's data
//! directory is searched for the plaintexts, the password, the data key
//! and the clip key (raw, hex, upper-case hex, base64) and the device
//! tokens; for protocol v2, also each device's X25519 and Ed25519 secrets
//! and the account's OPAQUE export key and the key it derives (the test
//! learns the export key by logging in with OPAQUE itself: it is the same
//! at every login of one registration).

use crate::world::{unique, World};
use clipmesh_proto::opaque::{ClientLogin, ExportKey, LoginResponseBytes};
use clipmesh_proto::{DataKey, KdfParams};
use clipmesh_tests::wait::STEP;
use clipmesh_tests::xvfb::xclip_set;
use clipmesh_tests::SelectionOwner;
use std::path::{Path, PathBuf};

const TRACE: &str = "trace";

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let ty = entry.file_type().unwrap();
        if ty.is_dir() {
            files_under(&entry.path(), out);
        } else if ty.is_file() {
            out.push(entry.path());
        }
    }
}

/// Where `needle` occurs in `haystack`, if it does.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Up to 100 bytes before offset `at` (the secret itself is not shown), to
/// say which log line leaked.
fn context(haystack: &[u8], at: usize) -> String {
    let start = haystack[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1)
        .max(at.saturating_sub(100));
    String::from_utf8_lossy(&haystack[start..at]).into_owned()
}

/// The account's OPAQUE export key, from a login of the test's own (the
/// relay's answer to KE1 and KE3 over loopback HTTP).
fn export_key(relay_url: &str, user: &str, password: &str) -> ExportKey {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let (c, ke1) = ClientLogin::start(&mut rand::rngs::OsRng, password.as_bytes()).unwrap();
    let start: serde_json::Value = agent
        .post(format!("{relay_url}/api/v2/login/start"))
        .send_json(serde_json::json!({"username": user, "request": ke1.to_hex()}))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let ke2 = LoginResponseBytes::from_hex(start["response"].as_str().unwrap()).unwrap();
    let kdf: KdfParams = serde_json::from_value(start["kdf"].clone()).unwrap();
    let out = c.finish(password.as_bytes(), user, &ke2, &kdf).unwrap();
    let r = agent
        .post(format!("{relay_url}/api/v2/login/finish"))
        .send_json(serde_json::json!({
            "login_id": start["login_id"], "finish": out.finish.to_hex(), "device_name": "leak-check",
        }))
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "the test's own v2 login");
    out.export_key
}

/// A device's v2 secrets (X25519 secret ‖ Ed25519 seed) from secrets.json.
fn device_secrets(config_dir: &Path) -> Vec<u8> {
    let raw = std::fs::read_to_string(config_dir.join("secrets.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let d = hex::decode(v["device"].as_str().expect("a v2 device has key pairs")).unwrap();
    assert_eq!(d.len(), 64);
    d
}

#[test]
fn no_plaintext_or_keys_in_logs_or_relay_data() {
    let mut w = World::new(TRACE).unwrap();
    let password = unique("correct horse battery");
    let mut a = w.desk("alice-a", "alice", &password, true).unwrap();
    let mut b = w.desk("alice-b", "alice", &password, false).unwrap();

    let t1 = unique("leak canary text one");
    xclip_set(&a.display(), &t1).unwrap();
    b.watcher.wait_for_text(&t1, STEP).unwrap();
    let t2 = unique("leak canary text two");
    xclip_set(&b.display(), &t2).unwrap();
    a.watcher.wait_for_text(&t2, STEP).unwrap();
    let html = format!("<i>{}</i>", unique("leak canary html"));
    let alt = unique("leak canary alt");
    {
        let owner = SelectionOwner::connect(&a.display()).unwrap();
        owner
            .set(&[
                ("text/html", html.as_bytes()),
                ("UTF8_STRING", alt.as_bytes()),
            ])
            .unwrap();
        b.watcher.wait_for_text(&alt, STEP).unwrap();
    }
    let t3 = unique("leak canary sent");
    a.device.send(&t3, TRACE).unwrap();
    b.watcher.wait_for_text(&t3, STEP).unwrap();

    let (token_a, key) = a.device.secrets().unwrap();
    let (token_b, key_b) = b.device.secrets().unwrap();
    assert_eq!(key, key_b, "both devices hold the account's data key");
    let key_arr: [u8; 32] = key.as_slice().try_into().unwrap();
    let clip_key = DataKey::from_bytes(key_arr).clip_key().expose().to_vec();
    // Protocol v2: the clips are signed envelopes under the epoch's clip
    // key (a new account starts at epoch 1).
    let epoch_clip_key = clipmesh_proto::EpochKey::from_bytes(key_arr)
        .clip_key(clipmesh_proto::Epoch(1))
        .expose()
        .to_vec();
    let export = export_key(&w.relay.url(), "alice", &password);
    let export_kek = export.kek().expose().to_vec();
    let export = export.expose().to_vec();
    let dev_a = device_secrets(&a.device.config_dir);
    let dev_b = device_secrets(&b.device.config_dir);

    // Stop everything so every log and database page is on disk.
    a.daemon.stop().unwrap();
    b.daemon.stop().unwrap();
    w.relay.stop().unwrap();

    use base64::Engine as _;
    let b64 = |k: &[u8]| {
        [
            base64::engine::general_purpose::STANDARD.encode(k),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k),
        ]
    };
    let mut needles: Vec<(String, Vec<u8>)> = vec![
        ("plaintext one".into(), t1.clone().into_bytes()),
        ("plaintext two".into(), t2.clone().into_bytes()),
        ("html".into(), html.clone().into_bytes()),
        ("html alt text".into(), alt.clone().into_bytes()),
        ("sent text".into(), t3.clone().into_bytes()),
        ("password".into(), password.clone().into_bytes()),
        ("device token a".into(), token_a.clone().into_bytes()),
        ("device token b".into(), token_b.clone().into_bytes()),
    ];
    let secret_keys = [
        ("data key", key.clone()),
        ("clip key", clip_key),
        ("epoch 1 clip key", epoch_clip_key),
        ("export key", export),
        ("export kek", export_kek),
        ("device a x25519 secret", dev_a[..32].to_vec()),
        ("device a ed25519 seed", dev_a[32..].to_vec()),
        ("device b x25519 secret", dev_b[..32].to_vec()),
        ("device b ed25519 seed", dev_b[32..].to_vec()),
    ];
    for (name, k) in &secret_keys {
        needles.push((format!("{name} (raw)"), k.clone()));
        needles.push((format!("{name} (hex)"), hex::encode(k).into_bytes()));
        needles.push((format!("{name} (HEX)"), hex::encode_upper(k).into_bytes()));
        for (i, e) in b64(k).into_iter().enumerate() {
            needles.push((format!("{name} (base64 #{i})"), e.into_bytes()));
        }
    }

    let mut files = Vec::new();
    files_under(&w.logs, &mut files);
    let n_logs = files.len();
    files_under(&w.relay.data_dir, &mut files);
    assert!(
        n_logs >= 5,
        "expected relay and client logs, found {n_logs}"
    );
    assert!(files.len() > n_logs, "relay data directory is empty");
    // The trace logs must actually contain trace output, or the test proves
    // nothing.
    let relay_log = std::fs::read_to_string(w.logs.join("relay.log")).unwrap();
    assert!(relay_log.contains("TRACE"), "relay log has no trace lines");
    let run_log = std::fs::read_to_string(&a.daemon.log).unwrap();
    assert!(run_log.contains("TRACE"), "daemon log has no trace lines");

    let mut leaks = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for (name, needle) in &needles {
            if let Some(at) = find(&bytes, needle) {
                leaks.push(format!(
                    "{name} in {} after: {:?}",
                    f.display(),
                    context(&bytes, at)
                ));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets found:\n{}", leaks.join("\n"));
}
