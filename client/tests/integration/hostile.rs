//! A relay that turns hostile: it re-delivers an old envelope after a
//! daemon restart, or offers weaker KDF parameters than the device pinned.
//! Each attack fails with one clear line (or silently as a duplicate) and
//! nothing is applied or sent.

use crate::support::*;
use clipmesh::account::{login, Credentials};
use clipmesh::pins::Pins;
use clipmesh_proto::KdfParams;
use clipmesh_relay::SignupPolicy;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// Makes the relay believe the device has seen nothing, as a hostile relay
/// that ignores `last_seen` would: on the next connect it re-delivers the
/// newest stored envelope.
fn forget_last_seen(dir: &std::path::Path) {
    let p = dir.join("state.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["last_seen"] = 0.into();
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_envelope_after_a_restart_is_not_applied() {
    let relay = TestRelay::start(SignupPolicy::Open).await;
    let a_dir = device_dir();
    let b_dir = device_dir();
    let ok = |o: Out| assert!(o.status.success());
    ok(auth("signup", a_dir.path(), &relay.url, "ann", PASSWORD, "a").await);
    ok(auth("login", b_dir.path(), &relay.url, "ann", PASSWORD, "b").await);
    let a = TestDaemon::start(a_dir.path());
    let mut b = TestDaemon::start(b_dir.path());
    a.copy("old password").await;
    assert_eq!(b.next_applied().await, "old password");
    b.stop().await.unwrap();

    // Restart with the relay replaying: the persisted replay state makes it
    // a duplicate. A's next clip is the first thing applied.
    forget_last_seen(b_dir.path());
    let mut b = TestDaemon::start(b_dir.path());
    // Give the replay time to arrive before A's clip: wait until B is
    // connected (the relay delivers the stored clip as part of the join).
    wait_online(&b, 2).await;
    a.copy("fresh").await;
    assert_eq!(b.next_applied().await, "fresh");
    b.stop().await.unwrap();

    // The same replay without the persisted state is applied again, which
    // is what the test above guards against.
    forget_last_seen(b_dir.path());
    std::fs::remove_file(b_dir.path().join(clipmesh::replay::REPLAY_FILE)).unwrap();
    let mut b = TestDaemon::start(b_dir.path());
    assert_eq!(b.next_applied().await, "fresh");
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

async fn wait_online(d: &TestDaemon, n: usize) {
    tokio::time::timeout(STEP, async {
        loop {
            if let Some(st) = d.status().await {
                if st.connected && st.online.len() == n {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("daemon did not connect in time");
}

/// A relay on 127.0.0.1 that answers every prelogin with `kdf` and records
/// the path of every request. Serves `max` connections, then stops. With
/// `v2`, it also answers the v2 `login/start` with `kdf` (and a KE2 that
/// would never verify); without, `/api/v2` is 404 as on a v1 relay.
fn hostile_prelogin(kdf: KdfParams, max: usize) -> (String, Arc<Mutex<Vec<String>>>) {
    hostile_relay(kdf, max, false)
}

fn hostile_relay(kdf: KdfParams, max: usize, v2: bool) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let paths = Arc::new(Mutex::new(Vec::new()));
    let seen = paths.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut s) = stream else { break };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let path = line.split(' ').nth(1).unwrap_or("").to_owned();
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).unwrap();
            seen.lock().unwrap().push(path.clone());
            let (status, json) = if path == "/api/v1/prelogin" {
                let body = serde_json::json!({"salt": "00".repeat(16), "kdf": kdf}).to_string();
                ("200 OK", body)
            } else if v2 && path == "/api/v2/login/start" {
                let body = serde_json::json!({
                    "login_id": "00".repeat(16), "response": "00".repeat(320), "kdf": kdf,
                })
                .to_string();
                ("200 OK", body)
            } else {
                ("404 Not Found", "{}".to_owned())
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                json.len()
            );
        }
    });
    (url, paths)
}

#[test]
fn login_refuses_parameters_below_the_floor_or_the_pin() {
    // Below the floor (OWASP's 19 MiB / t = 2, accepted before v2).
    let owasp = KdfParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
        ..KdfParams::default()
    };
    // A relay without v2 (404), so the client tries v1.
    let (url, paths) = hostile_prelogin(owasp, 2);
    let dir = device_dir();
    let creds = Credentials {
        server: &url,
        username: "ann",
        password: PASSWORD.as_bytes(),
        device_name: "a",
        ca_file: None,
        insecure_http: false,
        setup_token: None,
    };
    let err = login(dir.path(), &creds).unwrap_err().to_string();
    assert_eq!(
        err,
        "the relay asked for unsafe key-derivation parameters \
         (kdf parameters below the security floor); refusing to log in"
    );
    assert_eq!(
        *paths.lock().unwrap(),
        ["/api/v2/login/start", "/api/v1/prelogin"]
    );

    // Above the floor but below what an earlier login pinned.
    let (url, paths) = hostile_prelogin(KdfParams::default(), 2);
    let pinned = KdfParams {
        m_kib: 128 * 1024,
        ..KdfParams::default()
    };
    Pins::load(dir.path())
        .unwrap()
        .pin(&url, "ann", pinned)
        .unwrap();
    let creds = Credentials {
        server: &url,
        ..creds
    };
    let err = login(dir.path(), &creds).unwrap_err().to_string();
    assert_eq!(
        err,
        "the relay asked for unsafe key-derivation parameters \
         (kdf parameters weaker than the ones pinned for this account); refusing to log in"
    );
    // Only the prelogin: no auth key left the device, nothing was stored.
    assert_eq!(
        *paths.lock().unwrap(),
        ["/api/v2/login/start", "/api/v1/prelogin"]
    );
    assert!(!dir.path().join("secrets.json").exists());
}

#[test]
fn v2_login_refuses_weak_parameters_before_stretching_and_never_falls_back() {
    let owasp = KdfParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
        ..KdfParams::default()
    };
    let (url, paths) = hostile_relay(owasp, 1, true);
    let dir = device_dir();
    let creds = Credentials {
        server: &url,
        username: "ann",
        password: PASSWORD.as_bytes(),
        device_name: "a",
        ca_file: None,
        insecure_http: false,
        setup_token: None,
    };
    let err = login(dir.path(), &creds).unwrap_err().to_string();
    assert_eq!(
        err,
        "the relay asked for unsafe key-derivation parameters \
         (kdf parameters below the security floor); refusing to log in"
    );
    // Nothing after KE1: no KE3, no v1 prelogin, no auth key.
    assert_eq!(*paths.lock().unwrap(), ["/api/v2/login/start"]);

    // An account this device used with v2 never falls back to v1, even
    // when the relay pretends to have no v2 (or fails the v2 login).
    let (url, paths) = hostile_relay(KdfParams::default(), 2, false);
    Pins::load(dir.path())
        .unwrap()
        .pin_v2(&url, "ann", KdfParams::default())
        .unwrap();
    let creds = Credentials {
        server: &url,
        ..creds
    };
    let err = login(dir.path(), &creds).unwrap_err().to_string();
    assert!(err.contains("refusing to fall back to v1 login"), "{err}");
    assert_eq!(*paths.lock().unwrap(), ["/api/v2/login/start"]);
    assert!(!dir.path().join("secrets.json").exists());
}
