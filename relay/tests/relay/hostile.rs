//! Findings of the hostile-network review (issue 15), one test each that
//! fails without its fix: enumeration, hasher saturation, lockout, the
//! first-account race.

use super::common::*;
use clipmesh_relay::SignupPolicy;
use serde_json::json;

async fn post_from(relay: &TestRelay, path: &str, xff: &str, body: serde_json::Value) -> Resp {
    post_from_url(&relay.url, path, xff, body).await
}

async fn post_from_url(base: &str, path: &str, xff: &str, body: serde_json::Value) -> Resp {
    let (url, xff) = (format!("{base}{path}"), xff.to_owned());
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent
            .post(&url)
            .header("X-Forwarded-For", &xff)
            .content_type("application/json")
            .send(body.to_string())
            .unwrap();
        Resp {
            status: resp.status().as_u16(),
            retry_after: resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
            body: resp.body_mut().read_to_string().unwrap_or_default(),
        }
    })
    .await
    .unwrap()
}

fn login_body(a: &Account, key: &str) -> serde_json::Value {
    json!({"username": a.name, "auth_key": key, "device_name": "d"})
}

#[tokio::test]
async fn prelogin_does_not_single_out_accounts_with_unusual_kdf() {
    let relay = TestRelay::start().await;
    let odd = json!({"alg": "argon2id", "version": 19, "m_kib": 70000, "t": 4, "p": 2});
    let mut body = signup_body("ann", &rand_hex(32), "d");
    body["kdf"] = odd.clone();
    body["setup_token"] = json!(setup_token(&relay).unwrap());
    let r = post(&format!("{}/api/v1/signup", relay.url), None, body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let pre = |name: &'static str| {
        let url = format!("{}/api/v1/prelogin", relay.url);
        async move { post(&url, None, json!({ "username": name })).await.json() }
    };
    assert_eq!(pre("ann").await["kdf"], odd);
    // The only account has unusual parameters, so every name shows them.
    for name in ["nobody", "somebody", "x"] {
        assert_eq!(pre(name).await["kdf"], odd, "{name}");
    }
}

#[tokio::test]
async fn failures_from_one_network_do_not_lock_out_the_account() {
    let relay = TestRelay::start_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.auth.throttle_free_failures = 2;
        c.auth.throttle_base_s = 600;
    })
    .await;
    let a = signup(&relay, "ann").await;
    let attacker = "203.0.113.5";
    for _ in 0..3 {
        let r = post_from(
            &relay,
            "/api/v1/login",
            attacker,
            login_body(&a, &rand_hex(32)),
        )
        .await;
        assert_eq!(r.status, 401);
    }
    let r = post_from(
        &relay,
        "/api/v1/login",
        attacker,
        login_body(&a, &a.auth_key),
    )
    .await;
    assert_eq!(r.status, 429, "the attacker's network waits");
    let r = post_from(
        &relay,
        "/api/v1/login",
        "198.51.100.7",
        login_body(&a, &a.auth_key),
    )
    .await;
    assert_eq!(
        r.status, 200,
        "the owner elsewhere still logs in: {}",
        r.body
    );
}

#[tokio::test]
async fn rotating_ipv6_addresses_in_one_64_is_throttled() {
    let relay = TestRelay::start_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.auth.throttle_free_failures = 2;
        c.auth.throttle_base_s = 600;
    })
    .await;
    let a = signup(&relay, "ann").await;
    for i in 1..=3 {
        let ip = format!("2001:db8:7:7::{i:x}");
        let r = post_from(&relay, "/api/v1/login", &ip, login_body(&a, &rand_hex(32))).await;
        assert_eq!(r.status, 401);
    }
    let fresh = "2001:db8:7:7:ffff:1:2:3";
    let r = post_from(
        &relay,
        "/api/v1/login",
        fresh,
        login_body(&a, &rand_hex(32)),
    )
    .await;
    assert_eq!(r.status, 429);
}

#[tokio::test]
async fn refused_signups_cost_no_hash() {
    let relay = TestRelay::start_with(|c| c.signup = SignupPolicy::First).await;
    signup(&relay, "ann").await;
    let before = metric(&relay, "clipmesh_relay_hashes_total").await;
    for i in 0..5 {
        let r = post(
            &format!("{}/api/v1/signup", relay.url),
            None,
            signup_body(&format!("u{i}"), &rand_hex(32), "d"),
        )
        .await;
        assert_eq!((r.status, r.error().as_str()), (403, "signup_closed"));
    }
    assert_eq!(metric(&relay, "clipmesh_relay_hashes_total").await, before);
}

#[tokio::test]
async fn signup_is_throttled_per_network() {
    let relay = TestRelay::start_with(|c| {
        c.auth.signup_free_per_ip = 2;
        c.auth.signup_backoff_s = 600;
    })
    .await;
    signup(&relay, "ann").await;
    signup(&relay, "bob").await;
    let r = post(
        &format!("{}/api/v1/signup", relay.url),
        None,
        signup_body("carol", &rand_hex(32), "d"),
    )
    .await;
    assert_eq!((r.status, r.error().as_str()), (429, "rate_limited"));
    assert!(r.retry_after.is_some());
}

#[tokio::test]
async fn a_full_hash_queue_answers_503_at_once() {
    let relay = TestRelay::start_with(|c| {
        c.auth.hash_m_kib = 16 * 1024;
        c.auth.hash_t = 4;
        c.auth.max_concurrent_hashes = 1;
        c.auth.max_queued_hashes = 0;
    })
    .await;
    let a = signup(&relay, "ann").await;
    let calls = (0..8).map(|_| login(&relay, &a, "d"));
    let answers = futures_util::future::join_all(calls).await;
    let busy: Vec<_> = answers.iter().filter(|r| r.status == 503).collect();
    assert!(!busy.is_empty(), "8 logins at once with room for 1");
    assert!(busy.iter().all(|r| r.retry_after.as_deref() == Some("1")));
    assert!(answers.iter().all(|r| r.status == 503 || r.status == 200));
}

#[tokio::test]
async fn first_account_needs_the_setup_token() {
    let relay = TestRelay::start_with(|c| c.signup = SignupPolicy::First).await;
    let token = setup_token(&relay).expect("a fresh relay writes its setup token");
    let url = format!("{}/api/v1/signup", relay.url);
    let r = post(&url, None, signup_body("mallory", &rand_hex(32), "d")).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (403, "setup_token_required")
    );
    let mut wrong = signup_body("mallory", &rand_hex(32), "d");
    wrong["setup_token"] = json!("A".repeat(43));
    let r = post(&url, None, wrong).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (403, "setup_token_required")
    );
    let mut right = signup_body("owner", &rand_hex(32), "d");
    right["setup_token"] = json!(token);
    let r = post(&url, None, right).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["is_admin"], json!(true));
    assert!(setup_token(&relay).is_none(), "the used token is deleted");
}

/// Signup below the KDF floor is refused: every later login would refuse
/// those parameters, and they make a stolen database cheap to attack.
#[tokio::test]
async fn signup_below_the_kdf_floor_is_refused() {
    let relay = TestRelay::start().await;
    let mut body = signup_body("weakling", &rand_hex(32), "dev1");
    body["kdf"] = json!({"alg": "argon2id", "version": 19, "m_kib": 19456, "t": 2, "p": 1});
    if let Some(t) = setup_token(&relay) {
        body["setup_token"] = json!(t);
    }
    let r = post(&format!("{}/api/v1/signup", relay.url), None, body).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("kdf"), "{}", r.body);
    relay.stop().await;
}

/// The data directory the relay creates is its user's only, whatever the
/// umask (it holds the database, the server secret and the setup token).
#[cfg(unix)]
#[tokio::test]
async fn data_dir_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("fresh").join("data");
    let mut c = test_config(&dir);
    c.data_dir = Some(dir.clone());
    let handle = clipmesh_relay::Relay::bind(c).await.unwrap();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    handle.stop().await;
    assert_eq!(mode, 0o700, "data dir mode {mode:o}");
}

/// `GET /metrics` with an optional `X-Forwarded-For`: the status code.
async fn metrics_status(relay: &TestRelay, xff: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = relay.url.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let fwd = xff.map_or(String::new(), |x| format!("X-Forwarded-For: {x}\r\n"));
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{fwd}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[9..12]).parse().unwrap()
}

/// `/metrics` is for this machine only by default: a request forwarded by a
/// (local) reverse proxy gets 404; `metrics_public` serves everyone.
#[tokio::test]
async fn metrics_are_loopback_only_unless_public() {
    let relay = TestRelay::start().await;
    assert_eq!(metrics_status(&relay, None).await, 200);
    assert_eq!(metrics_status(&relay, Some("203.0.113.9")).await, 404);
    relay.stop().await;
    let relay = TestRelay::start_with(|c| c.metrics_public = true).await;
    assert_eq!(metrics_status(&relay, Some("203.0.113.9")).await, 200);
    relay.stop().await;
}

/// The WebSocket join re-checks the session once the room knows the socket
/// (a revoke racing the join). When that check cannot be made — the
/// database answers with an error — the join fails closed (1013, the device
/// retries later) instead of letting a possibly revoked session in.
#[tokio::test]
async fn ws_join_fails_closed_when_the_session_recheck_errors() {
    let relay = TestRelay::start().await;
    let a = signup(&relay, "ann").await;
    // The token check at the upgrade passes; the re-check after `Hello`
    // reads `sessions`, which a second connection then hides.
    let mut ws = ws_connect(&relay, Some(&a.login.token)).await.unwrap();
    let db =
        rusqlite::Connection::open(relay.dir.path().join(clipmesh_relay::config::DB_FILE)).unwrap();
    db.busy_timeout(WAIT).unwrap();
    db.execute_batch("ALTER TABLE sessions RENAME TO sessions_hidden")
        .unwrap();
    send(&mut ws, &clipmesh_proto::Frame::Hello { last_seen: 0 }).await;
    let code = close_code(&mut ws).await;
    db.execute_batch("ALTER TABLE sessions_hidden RENAME TO sessions")
        .unwrap();
    assert_eq!(code, Some(1013), "the join must fail closed");
    // With the database back, the same session joins.
    let dev = connect_dev(&relay, &a.login.token, 0).await;
    assert_eq!(dev.user, a.login.user_id);
    relay.stop().await;
}

/// A flood of wrong logins against a user's name from many networks fills
/// the hasher's queue; the user's own login from a network it logged in
/// from before takes the known lane and still gets in (without it: 503).
#[tokio::test]
async fn a_login_flood_from_elsewhere_does_not_queue_out_the_owner() {
    let relay = TestRelay::start_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.auth.hash_m_kib = 8 * 1024;
        c.auth.hash_t = 2;
        c.auth.max_concurrent_hashes = 2;
        c.auth.max_queued_hashes = 4;
        c.auth.throttle_free_failures = 100_000;
    })
    .await;
    let a = signup(&relay, "ann").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for i in 0..24 {
        let (relay_url, stop) = (relay.url.clone(), stop.clone());
        let name = a.name.clone();
        flood.push(tokio::spawn(async move {
            let ip = format!("203.0.113.{}", i + 1);
            let mut busy = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = json!({"username": name, "auth_key": rand_hex(32), "device_name": "x"});
                let r = post_from_url(&relay_url, "/api/v1/login", &ip, body).await;
                assert!(r.status == 401 || r.status == 503, "{}", r.status);
                busy += u32::from(r.status == 503);
            }
            busy
        }));
    }
    // The flood fills the queue: some of its logins are refused as busy.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for i in 0..5 {
        let r = post_from(
            &relay,
            "/api/v1/login",
            "127.0.0.1",
            login_body(&a, &a.auth_key),
        )
        .await;
        assert_eq!(r.status, 200, "owner login {i}: {}", r.body);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut busy = 0;
    for f in flood {
        busy += f.await.unwrap();
    }
    assert!(busy > 0, "the flood never filled the hasher's queue");
    relay.stop().await;
}
