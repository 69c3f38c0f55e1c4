//! The binary: `--help`, `user` subcommands, `--listen 127.0.0.1:0` with
//! its parseable address line, and SIGTERM.

use super::common::*;
use clipmesh_proto::keys::derive_keys;
use clipmesh_proto::{KdfParams, WrappedDataKey};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_clipmesh-relay");

fn relay_cmd(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--data-dir").arg(dir).env_remove("RUST_LOG");
    c
}

fn run(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = relay_cmd(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        // The command may exit without reading its input (it refused the
        // arguments first): its status and output say so.
        if let Err(e) = child.stdin.take().unwrap().write_all(s.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "stdin: {e}");
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const SMALL_KDF: [&str; 6] = ["--kdf-m-kib", "64", "--kdf-t", "1", "--kdf-p", "1"];

#[test]
fn help_lists_flags_and_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run(dir.path(), &["--help"], None);
    assert!(ok);
    for s in [
        "--listen",
        "--data-dir",
        "--config",
        "--signup",
        "--tls-cert",
        "--trusted-proxy",
        "user",
    ] {
        assert!(out.contains(s), "{s} missing from --help");
    }
    let (ok, out) = run(dir.path(), &["user", "--help"], None);
    assert!(ok);
    for s in ["list", "add", "disable", "delete", "reset-password"] {
        assert!(out.contains(s), "{s} missing from user --help");
    }
}

async fn login_with_password(
    relay: &TestRelay,
    name: &str,
    pw: &str,
) -> (u16, serde_json::Value, clipmesh_proto::Kek) {
    let pre = post(
        &format!("{}/api/v1/prelogin", relay.url),
        None,
        json!({ "username": name }),
    )
    .await
    .json();
    let salt: [u8; 16] = hex::decode(pre["salt"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let kdf: KdfParams = serde_json::from_value(pre["kdf"].clone()).unwrap();
    let (auth, kek) = derive_keys(pw.as_bytes(), &salt, &kdf).unwrap();
    let r = post(
        &format!("{}/api/v1/login", relay.url),
        None,
        json!({"username": name, "auth_key": hex::encode(auth.expose()), "device_name": "cli-test"}),
    )
    .await;
    (r.status, r.json(), kek)
}

#[tokio::test]
async fn user_subcommands_manage_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    let mut add = vec!["user", "add", "ann", "--password-stdin"];
    add.extend(SMALL_KDF);
    let (ok, out) = run(&p, &add, Some("correct horse\n"));
    assert!(ok, "{out}");
    assert!(out.contains("admin"), "first account is admin: {out}");
    let (ok, out) = run(&p, &add, Some("again\n"));
    assert!(!ok && out.contains("taken"), "{out}");
    let mut add_bob = vec!["user", "add", "bob", "--password-stdin"];
    add_bob.extend(SMALL_KDF);
    assert!(run(&p, &add_bob, Some("pw-bob\n")).0);
    let (ok, out) = run(&p, &["user", "list"], None);
    assert!(ok && out.contains("ann") && out.contains("bob"), "{out}");

    // The relay accepts the keys the CLI derived, and the wrapped data key
    // opens with the password's KEK.
    let relay = TestRelay::start_in(dir, |_| {}).await;
    let (status, body, kek) = login_with_password(&relay, "ann", "correct horse").await;
    assert_eq!(status, 200, "{body}");
    let wrapped = WrappedDataKey::from_hex(body["wrapped_data_key"].as_str().unwrap()).unwrap();
    let dk1 = kek.unwrap(&wrapped).unwrap();
    let dir = relay.stop().await;
    let p = dir.path().to_path_buf();

    let mut reset = vec!["user", "reset-password", "ann", "--password-stdin"];
    reset.extend(SMALL_KDF);
    let (ok, out) = run(&p, &reset, Some("new pw\n"));
    assert!(ok && out.contains("unreadable"), "{out}");
    assert!(run(&p, &["user", "disable", "bob"], None).0);
    let relay = TestRelay::start_in(dir, |_| {}).await;
    assert_eq!(
        login_with_password(&relay, "ann", "correct horse").await.0,
        401
    );
    let (status, body, kek) = login_with_password(&relay, "ann", "new pw").await;
    assert_eq!(status, 200);
    let wrapped = WrappedDataKey::from_hex(body["wrapped_data_key"].as_str().unwrap()).unwrap();
    assert_ne!(
        kek.unwrap(&wrapped).unwrap(),
        dk1,
        "reset makes a new data key"
    );
    assert_eq!(login_with_password(&relay, "bob", "pw-bob").await.0, 403);
    let dir = relay.stop().await;
    let p = dir.path().to_path_buf();
    assert!(run(&p, &["user", "enable", "bob"], None).0);
    // Deleting an account deletes its blob files too (bob is user 2).
    let bob_blobs = p.join("blobs").join("2");
    std::fs::create_dir_all(&bob_blobs).unwrap();
    std::fs::write(bob_blobs.join("00112233445566778899aabbccddeeff"), b"x").unwrap();
    assert!(run(&p, &["user", "delete", "bob"], None).0);
    assert!(!bob_blobs.exists());
    let (ok, out) = run(&p, &["user", "delete", "bob"], None);
    assert!(!ok && out.contains("no user"), "{out}");
    let (_, out) = run(&p, &["user", "list"], None);
    assert!(!out.contains("bob"));
}

#[test]
fn serve_prints_address_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = relay_cmd(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("clipmesh-relay listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let health = std::net::TcpStream::connect(url.trim_start_matches("http://"));
    assert!(health.is_ok());
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Bounded wait for exit.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "exit status {st}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "relay did not stop");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs the binary at trace level through signup, login, a publish and a
/// revoke, then checks that no token, auth key or envelope reached the log,
/// and no token or auth key reached the data directory.
#[tokio::test]
async fn trace_logs_and_disk_hold_no_secrets() {
    use clipmesh_proto::Frame;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("relay.log");
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--signup", "open", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("clipmesh-relay listening on ")
        .unwrap()
        .to_owned();
    let relay = TestRelay {
        handle: None,
        url,
        dir: tempfile::tempdir().unwrap(),
    };
    // The helper finds the first account's setup token in `relay.dir`.
    std::fs::copy(
        data.join("setup-token"),
        relay.dir.path().join("setup-token"),
    )
    .unwrap();
    let ann = signup(&relay, "ann").await;
    let d2 = new_device(&relay, &ann, "d2").await;
    let mut a1 = connect_dev(&relay, &ann.login.token, 0).await;
    let mut a2 = connect_dev(&relay, &d2.token, 0).await;
    let marker = b"ENVELOPE-MARKER-7f3a9c".to_vec();
    send(
        &mut a1.ws,
        &Frame::Publish {
            id: 1,
            envelope: marker.clone(),
        },
    )
    .await;
    assert!(matches!(
        next_non_presence(&mut a2.ws).await,
        Frame::Deliver { envelope, .. } if envelope == marker
    ));
    let r = http(
        "DELETE",
        &format!("{}/api/v1/devices/{}", relay.url, d2.device_id.0),
        Some(&ann.login.token),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(close_code(&mut a2.ws).await, Some(4001));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(close_code(&mut a1.ws).await, Some(1012));
    let deadline = std::time::Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "relay did not stop");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("TRACE"), "trace logging was not on");
    let marker_hex = hex::encode(&marker);
    for secret in [
        ann.login.token.as_str(),
        d2.token.as_str(),
        ann.auth_key.as_str(),
        "ENVELOPE-MARKER",
        marker_hex.as_str(),
        &ann.login.wrapped_data_key,
    ] {
        assert!(!logs.contains(secret), "secret found in the log");
    }
    // On disk: tokens and auth keys never (the envelope is stored, sealed in
    // real use; this test's envelope is a plain marker, so it is not checked).
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for secret in [
            ann.login.token.as_str(),
            d2.token.as_str(),
            ann.auth_key.as_str(),
        ] {
            assert!(!text.contains(secret), "secret found on disk");
        }
        let raw_key = hex::decode(&ann.auth_key).unwrap();
        assert!(!bytes.windows(32).any(|w| w == raw_key.as_slice()));
    }
}

/// After a crash (SIGKILL: nothing flushed), a room never hands out a
/// sequence number a device may already have seen.
#[tokio::test]
async fn sequence_numbers_survive_a_crash() {
    use clipmesh_proto::Frame;
    let dir = tempfile::tempdir().unwrap();
    let start = |data: &std::path::Path| {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--signup", "open", "--data-dir"])
            .arg(data)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("clipmesh-relay listening on ")
            .unwrap()
            .to_owned();
        (child, url)
    };
    let wait_exit = |child: &mut std::process::Child| {
        let deadline = std::time::Instant::now() + WAIT;
        while child.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "relay did not exit");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let (mut child, url) = start(dir.path());
    let relay = TestRelay {
        handle: None,
        url,
        dir: tempfile::tempdir().unwrap(),
    };
    // The helper finds the first account's setup token in `relay.dir`.
    std::fs::copy(
        dir.path().join("setup-token"),
        relay.dir.path().join("setup-token"),
    )
    .unwrap();
    let ann = signup(&relay, "ann").await;
    let mut d = connect_dev(&relay, &ann.login.token, 0).await;
    let mut last = 0;
    for id in 1..=3 {
        send(
            &mut d.ws,
            &Frame::Publish {
                id,
                envelope: vec![1],
            },
        )
        .await;
        match next_non_presence(&mut d.ws).await {
            Frame::Ack { seq, .. } => last = seq,
            other => panic!("expected Ack, got {other:?}"),
        }
    }
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    wait_exit(&mut child);

    let (mut child, url) = start(dir.path());
    let relay = TestRelay { url, ..relay };
    let mut d = connect_dev(&relay, &ann.login.token, last).await;
    send(
        &mut d.ws,
        &Frame::Publish {
            id: 9,
            envelope: vec![2],
        },
    )
    .await;
    match next_non_presence(&mut d.ws).await {
        Frame::Ack { seq, .. } => assert!(seq > last, "seq {seq} reused after crash (last {last})"),
        other => panic!("expected Ack, got {other:?}"),
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    wait_exit(&mut child);
}
