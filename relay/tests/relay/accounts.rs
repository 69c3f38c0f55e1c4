//! HTTP API: signup, prelogin, login, throttling, devices, password,
//! admin, bad input, operational endpoints.

use super::common::*;
use clipmesh_relay::SignupPolicy;
use serde_json::json;

#[tokio::test]
async fn signup_policy_first_makes_admin_then_closes() {
    let relay = TestRelay::start_with(|c| c.signup = SignupPolicy::First).await;
    let a = signup(&relay, "ann").await;
    assert!(a.login.is_admin);
    assert_eq!(a.login.token.len(), 43);
    let r = post(
        &format!("{}/api/v1/signup", relay.url),
        None,
        signup_body("bob", &rand_hex(32), "x"),
    )
    .await;
    assert_eq!((r.status, r.error().as_str()), (403, "signup_closed"));
}

#[tokio::test]
async fn signup_open_duplicate_and_closed() {
    let relay = TestRelay::start().await;
    let a = signup(&relay, "ann").await;
    let b = signup(&relay, "bob").await;
    assert!(a.login.is_admin && !b.login.is_admin);
    let r = post(
        &format!("{}/api/v1/signup", relay.url),
        None,
        signup_body("ann", &rand_hex(32), "x"),
    )
    .await;
    assert_eq!((r.status, r.error().as_str()), (409, "username_taken"));

    let closed = TestRelay::start_with(|c| c.signup = SignupPolicy::Closed).await;
    let r = post(
        &format!("{}/api/v1/signup", closed.url),
        None,
        signup_body("ann", &rand_hex(32), "x"),
    )
    .await;
    assert_eq!((r.status, r.error().as_str()), (403, "signup_closed"));
}

#[tokio::test]
async fn prelogin_real_and_fake_salts() {
    let relay = TestRelay::start().await;
    let a = signup(&relay, "ann").await;
    let pre = |name: &str| {
        let url = format!("{}/api/v1/prelogin", relay.url);
        let body = json!({ "username": name });
        async move { post(&url, None, body).await }
    };
    let r = pre("ann").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["salt"], a.login.salt);
    let f1 = pre("nobody").await.json();
    let f2 = pre("nobody").await.json();
    let f3 = pre("somebody").await.json();
    assert_eq!(f1, f2, "fake salt must be deterministic");
    assert_ne!(f1["salt"], f3["salt"]);
    assert_eq!(f1["salt"].as_str().unwrap().len(), 32);
    // Same shape as a real answer, default parameters.
    assert_eq!(
        f1["kdf"],
        json!({"alg": "argon2id", "version": 19, "m_kib": 65536, "t": 3, "p": 4})
    );
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&f1), keys(&r.json()));
}

#[tokio::test]
async fn login_logout_devices_and_revoke() {
    let relay = TestRelay::start().await;
    let a = signup(&relay, "ann").await;
    let d2 = new_device(&relay, &a, "laptop").await;
    assert_eq!(d2.user_id, a.login.user_id);
    assert_eq!(d2.wrapped_data_key, a.login.wrapped_data_key);
    assert_ne!(d2.token, a.login.token);

    // Wrong key → 401 invalid_credentials; unknown user too.
    let bad = Account {
        name: "ann".into(),
        auth_key: rand_hex(32),
        login: a.login.clone(),
    };
    let r = login(&relay, &bad, "x").await;
    assert_eq!((r.status, r.error().as_str()), (401, "invalid_credentials"));
    let ghost = Account {
        name: "ghost".into(),
        ..bad
    };
    assert_eq!(login(&relay, &ghost, "x").await.status, 401);

    let devs = http(
        "GET",
        &format!("{}/api/v1/devices", relay.url),
        Some(&a.login.token),
        None,
    )
    .await;
    assert_eq!(devs.status, 200);
    let list = devs.json()["devices"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert!(list
        .iter()
        .any(|d| d["current"] == true && d["id"] == a.login.device_id.0));

    // Revoke d2 from the first device; its token stops working.
    let r = http(
        "DELETE",
        &format!("{}/api/v1/devices/{}", relay.url, d2.device_id.0),
        Some(&a.login.token),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    let r = http(
        "GET",
        &format!("{}/api/v1/devices", relay.url),
        Some(&d2.token),
        None,
    )
    .await;
    assert_eq!((r.status, r.error().as_str()), (401, "unauthorized"));
    // Unknown device → 404; another user's device → 404.
    let b = signup(&relay, "bob").await;
    let r = http(
        "DELETE",
        &format!("{}/api/v1/devices/{}", relay.url, b.login.device_id.0),
        Some(&a.login.token),
        None,
    )
    .await;
    assert_eq!(r.status, 404);

    // Logout ends the session.
    let r = http(
        "POST",
        &format!("{}/api/v1/logout", relay.url),
        Some(&a.login.token),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    let r = http(
        "GET",
        &format!("{}/api/v1/devices", relay.url),
        Some(&a.login.token),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn missing_or_bad_token_is_401() {
    let relay = TestRelay::start().await;
    for tok in [None, Some("nope"), Some(&*"A".repeat(43))] {
        let r = http("GET", &format!("{}/api/v1/devices", relay.url), tok, None).await;
        assert_eq!((r.status, r.error().as_str()), (401, "unauthorized"));
        assert_eq!(ws_connect(&relay, tok).await.err(), Some(401));
    }
    assert!(metric(&relay, "clipmesh_relay_auth_failures_total").await >= 6.0);
}

#[tokio::test]
async fn password_change_rewraps_and_ends_other_sessions() {
    let relay = TestRelay::start().await;
    let a = signup(&relay, "ann").await;
    let other = new_device(&relay, &a, "other").await;
    let mut other_ws = connect_dev(&relay, &other.token, 0).await;
    let new_key = rand_hex(32);
    let new_wrapped = rand_hex(72);
    let body = json!({
        "current_auth_key": a.auth_key,
        "new_salt": rand_hex(16),
        "new_kdf": {"alg": "argon2id", "version": 19, "m_kib": 65536, "t": 3, "p": 4},
        "new_auth_key": new_key,
        "new_wrapped_data_key": new_wrapped,
        "end_other_sessions": true,
    });
    // Wrong current key first.
    let mut wrong = body.clone();
    wrong["current_auth_key"] = json!(rand_hex(32));
    let r = post(
        &format!("{}/api/v1/password", relay.url),
        Some(&a.login.token),
        wrong,
    )
    .await;
    assert_eq!(r.status, 401);
    let r = post(
        &format!("{}/api/v1/password", relay.url),
        Some(&a.login.token),
        body,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(close_code(&mut other_ws.ws).await, Some(4001));
    assert_eq!(login(&relay, &a, "x").await.status, 401);
    let a2 = Account {
        auth_key: new_key,
        ..a
    };
    let l = new_device(&relay, &a2, "y").await;
    assert_eq!(l.wrapped_data_key, new_wrapped);
    // The device that changed the password stays logged in.
    let r = http(
        "GET",
        &format!("{}/api/v1/devices", relay.url),
        Some(&a2.login.token),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn login_is_throttled_with_retry_after() {
    let relay = TestRelay::start_with(|c| {
        c.auth.throttle_free_failures = 2;
        c.auth.throttle_base_s = 60;
    })
    .await;
    let a = signup(&relay, "ann").await;
    let bad = Account {
        auth_key: rand_hex(32),
        name: a.name.clone(),
        login: a.login.clone(),
    };
    for _ in 0..3 {
        assert_eq!(login(&relay, &bad, "x").await.status, 401);
    }
    let r = login(&relay, &bad, "x").await;
    assert_eq!((r.status, r.error().as_str()), (429, "rate_limited"));
    let secs: u64 = r.retry_after.unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs));
    // Even the right key waits now (per account and per IP).
    assert_eq!(login(&relay, &a, "x").await.status, 429);
}

#[tokio::test]
async fn bad_json_is_400_and_huge_body_413() {
    let relay = TestRelay::start().await;
    let url = format!("{}/api/v1/login", relay.url);
    let cases = [
        json!({"username": 5, "auth_key": "00", "device_name": "x"}),
        json!({"username": "ann"}),
        json!({"username": "ann", "auth_key": "00", "device_name": "x", "extra": 1}),
        json!({"username": "a".repeat(65), "auth_key": rand_hex(32), "device_name": "x"}),
        json!({"username": "ann", "auth_key": "zz", "device_name": "x"}),
        json!({"username": "a\u{1}b", "auth_key": rand_hex(32), "device_name": "x"}),
        json!([1, 2, 3]),
    ];
    for c in cases {
        let r = post(&url, None, c.clone()).await;
        assert_eq!(
            (r.status, r.error().as_str()),
            (400, "bad_request"),
            "{c} → {}",
            r.body
        );
    }
    let r = http("POST", &url, None, Some("{not json".into())).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("JSON"));
    let huge = json!({"username": "a".repeat(200_000), "auth_key": "00", "device_name": "x"});
    let r = post(&url, None, huge).await;
    assert_eq!((r.status, r.error().as_str()), (413, "payload_too_large"));
    // Unknown route: JSON 404.
    let r = http("GET", &format!("{}/api/v1/nope", relay.url), None, None).await;
    assert_eq!((r.status, r.error().as_str()), (404, "not_found"));
}

#[tokio::test]
async fn admin_endpoints_and_disable_delete_close_sockets() {
    let relay = TestRelay::start().await;
    let admin = signup(&relay, "root").await;
    let bob = signup(&relay, "bob").await;
    let carol = signup(&relay, "carol").await;
    let users_url = format!("{}/api/v1/admin/users", relay.url);
    let r = http("GET", &users_url, Some(&bob.login.token), None).await;
    assert_eq!((r.status, r.error().as_str()), (403, "forbidden"));
    let r = http("GET", &users_url, Some(&admin.login.token), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["users"].as_array().unwrap().len(), 3);

    let mut bob_ws = connect_dev(&relay, &bob.login.token, 0).await;
    let r = http(
        "POST",
        &format!("{users_url}/{}/disable", bob.login.user_id.0),
        Some(&admin.login.token),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(close_code(&mut bob_ws.ws).await, Some(4001));
    let r = login(&relay, &bob, "x").await;
    assert_eq!((r.status, r.error().as_str()), (403, "account_disabled"));
    assert_eq!(
        ws_connect(&relay, Some(&bob.login.token)).await.err(),
        Some(401)
    );

    let mut carol_ws = connect_dev(&relay, &carol.login.token, 0).await;
    let r = http(
        "DELETE",
        &format!("{users_url}/{}", carol.login.user_id.0),
        Some(&admin.login.token),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(close_code(&mut carol_ws.ws).await, Some(4001));
    assert_eq!(login(&relay, &carol, "x").await.status, 401);
    let r = http(
        "DELETE",
        &format!("{users_url}/{}", carol.login.user_id.0),
        Some(&admin.login.token),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    // An admin cannot lock themselves out here.
    let r = http(
        "DELETE",
        &format!("{users_url}/{}", admin.login.user_id.0),
        Some(&admin.login.token),
        None,
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn health_ready_metrics() {
    let relay = TestRelay::start().await;
    let r = http("GET", &format!("{}/healthz", relay.url), None, None).await;
    assert_eq!(r.status, 200);
    let r = http("GET", &format!("{}/readyz", relay.url), None, None).await;
    assert_eq!(r.status, 200);
    let r = http("GET", &format!("{}/metrics", relay.url), None, None).await;
    for m in [
        "clipmesh_relay_connections",
        "clipmesh_relay_rooms_active",
        "clipmesh_relay_frames_relayed_total",
        "clipmesh_relay_bytes_relayed_total",
        "clipmesh_relay_signals_total",
        "clipmesh_relay_auth_failures_total",
    ] {
        assert!(r.body.contains(&format!("# TYPE {m} ")), "{m}");
    }
}
