//! Secrets and clipboard contents never reach logs or the relay's disk.
//!
//! A full sync (signup, login, two daemons, text and HTML both ways, a
//! `send`) at `RUST_LOG=trace` for the relay and every client, then every
//! byte of every log file and of every file under the relay's data
//! directory is searched for the plaintexts, the password, the data key
//! and the clip key (raw, hex, upper-case hex, base64) and the device
//! tokens.

use crate::world::{unique, World};
use clipmesh_proto::DataKey;
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
    for (name, k) in [("data key", &key), ("clip key", &clip_key)] {
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
