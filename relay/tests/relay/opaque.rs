//! Protocol v2 accounts over real HTTP: OPAQUE signup, login, password
//! change, the v1 → v2 upgrade (after which v1 login stops working), fake
//! answers for unknown and v1-only names, single-use logins, device keys.

use super::common::*;
use clipmesh_proto::opaque::{
    ClientLogin, ClientRegistration, ExportKey, LoginResponseBytes, RegistrationResponseBytes,
};
use clipmesh_proto::{DeviceSecrets, Epoch, EpochKey, ExportWrappedKey, KdfParams};
use rand::rngs::OsRng;
use serde_json::{json, Value};

fn kdf() -> KdfParams {
    KdfParams::default()
}

/// Registration for `user`: `start` is the path of step 1 (with `token`
/// for the caller's own account). Returns the record hex and export key.
async fn register(
    relay: &TestRelay,
    user: &str,
    pw: &[u8],
    token: Option<&str>,
) -> (String, ExportKey) {
    let (c, req) = ClientRegistration::start(&mut OsRng, pw).unwrap();
    let r = match token {
        None => {
            post(
                &format!("{}/api/v2/signup/start", relay.url),
                None,
                json!({"username": user, "request": req.to_hex()}),
            )
            .await
        }
        Some(t) => {
            post(
                &format!("{}/api/v2/register/start", relay.url),
                Some(t),
                json!({"request": req.to_hex()}),
            )
            .await
        }
    };
    assert_eq!(r.status, 200, "register start: {}", r.body);
    let resp = RegistrationResponseBytes::from_hex(r.json()["response"].as_str().unwrap()).unwrap();
    let (rec, ek) = c.finish(&mut OsRng, pw, user, &resp, &kdf()).unwrap();
    (rec.to_hex(), ek)
}

/// Signs `user` up on v2; returns the answer and the epoch-1 key.
async fn signup_v2(relay: &TestRelay, user: &str, pw: &[u8]) -> (Value, EpochKey) {
    let (record, ek) = register(relay, user, pw, None).await;
    let key = EpochKey::generate(&mut OsRng);
    let wrap = ek.kek().wrap(Epoch(1), &key);
    let mut body = json!({
        "username": user, "record": record, "kdf": kdf(), "epoch": 1,
        "export_wrap": wrap.to_hex(), "device_name": "laptop",
    });
    if let Some(t) = setup_token(relay) {
        body["setup_token"] = json!(t);
    }
    let r = post(&format!("{}/api/v2/signup/finish", relay.url), None, body).await;
    assert_eq!(r.status, 200, "signup finish: {}", r.body);
    (r.json(), key)
}

/// A v2 login: `Ok(answer, export key)` or `Err((status, error code))`.
async fn login_v2(
    relay: &TestRelay,
    user: &str,
    pw: &[u8],
) -> Result<(Value, ExportKey), (u16, String)> {
    let (c, ke1) = ClientLogin::start(&mut OsRng, pw).unwrap();
    let r = post(
        &format!("{}/api/v2/login/start", relay.url),
        None,
        json!({"username": user, "request": ke1.to_hex()}),
    )
    .await;
    if r.status != 200 {
        return Err((r.status, r.error()));
    }
    let start = r.json();
    let ke2 = LoginResponseBytes::from_hex(start["response"].as_str().unwrap()).unwrap();
    let kdf: KdfParams = serde_json::from_value(start["kdf"].clone()).unwrap();
    let out = c
        .finish(pw, user, &ke2, &kdf)
        .map_err(|e| (0, e.to_string()))?;
    let url = format!("{}/api/v2/login/finish", relay.url);
    let finish = |id: &Value| {
        post(
            &url,
            None,
            json!({"login_id": id, "finish": out.finish.to_hex(), "device_name": "phone"}),
        )
    };
    let r = finish(&start["login_id"]).await;
    if r.status != 200 {
        return Err((r.status, r.error()));
    }
    // The same KE3 again (a replay by whoever saw it) finds nothing.
    let again = finish(&start["login_id"]).await;
    assert_eq!(
        (again.status, again.error().as_str()),
        (401, "invalid_credentials")
    );
    Ok((r.json(), out.export_key))
}

#[tokio::test]
async fn v2_signup_login_and_unknown_names_look_alike() {
    let relay = TestRelay::start().await;
    let (first, key) = signup_v2(&relay, "ann", b"pw one").await;
    assert!(first["is_admin"].as_bool().unwrap());
    let (l, ek) = login_v2(&relay, "ann", b"pw one").await.unwrap();
    assert_eq!(l["epoch"], 1);
    assert_eq!(l["user_id"], first["user_id"]);
    let wrap = ExportWrappedKey::from_hex(l["export_wrap"].as_str().unwrap()).unwrap();
    let got = ek.kek().unwrap(Epoch(1), &wrap).unwrap();
    assert_eq!(
        got.expose(),
        key.expose(),
        "the export key opens the epoch key"
    );

    // Wrong password, unknown name: the client cannot finish (its KE3
    // would need the right export key), and both look alike at start.
    assert_eq!(
        login_v2(&relay, "ann", b"wrong").await.unwrap_err(),
        (0, "login failed".to_owned())
    );
    assert_eq!(
        login_v2(&relay, "nobody", b"pw one").await.unwrap_err(),
        (0, "login failed".to_owned())
    );
    let start = |name: &str| {
        let (_, ke1) = ClientLogin::start(&mut OsRng, b"x").unwrap();
        let url = format!("{}/api/v2/login/start", relay.url);
        let body = json!({"username": name, "request": ke1.to_hex()});
        async move { post(&url, None, body).await.json() }
    };
    let (real, fake) = (start("ann").await, start("nobody").await);
    let keys = |v: &Value| {
        let mut k: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&real), keys(&fake));
    assert_eq!(
        real["response"].as_str().unwrap().len(),
        fake["response"].as_str().unwrap().len()
    );
    // A forged KE3 for a started login is refused, as is an unknown id.
    let r = post(
        &format!("{}/api/v2/login/finish", relay.url),
        None,
        json!({"login_id": real["login_id"], "finish": rand_hex(64), "device_name": "x"}),
    )
    .await;
    assert_eq!((r.status, r.error().as_str()), (401, "invalid_credentials"));
    let r = post(
        &format!("{}/api/v2/login/finish", relay.url),
        None,
        json!({"login_id": rand_hex(16), "finish": rand_hex(64), "device_name": "x"}),
    )
    .await;
    assert_eq!(r.status, 401);
    // v1 prelogin of a v2 account answers like an unknown name, and v1
    // login does not work for it.
    let pre = post(
        &format!("{}/api/v1/prelogin", relay.url),
        None,
        json!({"username": "ann"}),
    )
    .await;
    assert_eq!(pre.status, 200);
    let r = post(
        &format!("{}/api/v1/login", relay.url),
        None,
        json!({"username": "ann", "auth_key": rand_hex(32), "device_name": "x"}),
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn v2_signup_refuses_weak_parameters_and_junk_records() {
    let relay = TestRelay::start().await;
    let (record, ek) = register(&relay, "bob", b"pw", None).await;
    let wrap = ek.kek().wrap(Epoch(1), &EpochKey::generate(&mut OsRng));
    let body = |record: &str, kdf: Value| {
        json!({
            "username": "bob", "record": record, "kdf": kdf, "epoch": 1,
            "export_wrap": wrap.to_hex(), "device_name": "laptop",
            "setup_token": setup_token(&relay),
        })
    };
    let weak = json!({"alg": "argon2id", "version": 19, "m_kib": 19456, "t": 2, "p": 1});
    let r = post(
        &format!("{}/api/v2/signup/finish", relay.url),
        None,
        body(&record, weak),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post(
        &format!("{}/api/v2/signup/finish", relay.url),
        None,
        body(&"ff".repeat(192), serde_json::to_value(kdf()).unwrap()),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test]
async fn v1_account_upgrades_in_place_and_v1_login_then_stops() {
    let relay = TestRelay::start().await;
    let a = signup(&relay, "carol").await;
    let v1 = new_device(&relay, &a, "old").await;
    // Before the upgrade, v2 login for the name fails like a wrong password.
    assert_eq!(
        login_v2(&relay, "carol", b"pw").await.unwrap_err().1,
        "login failed"
    );
    let (record, ek) = register(&relay, "carol", b"pw", Some(&v1.token)).await;
    let data_key = EpochKey::generate(&mut OsRng);
    let wrap = ek.kek().wrap(Epoch(0), &data_key);
    let url = format!("{}/api/v2/upgrade", relay.url);
    let upgrade = |proof: String| {
        post(
            &url,
            Some(&v1.token),
            json!({"current_auth_key": proof, "record": record, "kdf": kdf(),
                   "export_wrap": wrap.to_hex()}),
        )
    };
    let r = upgrade(rand_hex(32)).await;
    assert_eq!((r.status, r.error().as_str()), (401, "invalid_credentials"));
    let r = upgrade(a.auth_key.clone()).await;
    assert_eq!(r.status, 204, "{}", r.body);
    // v1 login, v1 password change and a second upgrade no longer work.
    assert_eq!(login(&relay, &a, "again").await.status, 401);
    assert_eq!(upgrade(a.auth_key.clone()).await.status, 401);
    let r = post(
        &format!("{}/api/v1/password", relay.url),
        Some(&v1.token),
        json!({"current_auth_key": a.auth_key, "new_salt": rand_hex(16), "new_kdf": kdf(),
               "new_auth_key": rand_hex(32), "new_wrapped_data_key": rand_hex(72)}),
    )
    .await;
    assert_eq!(r.status, 401);
    // v1 prelogin no longer shows the account's salt.
    let pre = post(
        &format!("{}/api/v1/prelogin", relay.url),
        None,
        json!({"username": "carol"}),
    )
    .await;
    assert_ne!(pre.json()["salt"], a.login.salt);
    // The existing session keeps working; v2 login opens epoch 0.
    let (l, ek2) = login_v2(&relay, "carol", b"pw").await.unwrap();
    assert_eq!(
        (l["epoch"].as_u64(), l["user_id"].as_u64()),
        (Some(0), Some(a.login.user_id.0))
    );
    let wrap = ExportWrappedKey::from_hex(l["export_wrap"].as_str().unwrap()).unwrap();
    assert_eq!(
        ek2.kek().unwrap(Epoch(0), &wrap).unwrap().expose(),
        data_key.expose()
    );
    let devs = http(
        "GET",
        &format!("{}/api/v1/devices", relay.url),
        Some(&v1.token),
        None,
    )
    .await;
    assert_eq!(devs.status, 200);
}

#[tokio::test]
async fn v2_password_change_needs_the_current_password() {
    let relay = TestRelay::start().await;
    let (first, key) = signup_v2(&relay, "dan", b"old pw").await;
    let token = first["token"].as_str().unwrap().to_owned();
    let (other, _) = login_v2(&relay, "dan", b"old pw").await.unwrap();

    let change = |current: &'static [u8], epoch: u32| {
        let relay = &relay;
        let token = token.clone();
        let key = &key;
        async move {
            let (lc, ke1) = ClientLogin::start(&mut OsRng, current).unwrap();
            let (rc, reg) = ClientRegistration::start(&mut OsRng, b"new pw").unwrap();
            let r = post(
                &format!("{}/api/v2/password/start", relay.url),
                Some(&token),
                json!({"login": ke1.to_hex(), "registration": reg.to_hex()}),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.body);
            let st = r.json();
            let ke2 = LoginResponseBytes::from_hex(st["response"].as_str().unwrap()).unwrap();
            let regr =
                RegistrationResponseBytes::from_hex(st["registration"].as_str().unwrap()).unwrap();
            let (rec, ek) = rc
                .finish(&mut OsRng, b"new pw", "dan", &regr, &kdf())
                .unwrap();
            // With the wrong current password the client cannot make KE3:
            // send a forged one, as an attacker holding the token would.
            let finish = match lc.finish(current, "dan", &ke2, &kdf()) {
                Ok(o) => o.finish.to_hex(),
                Err(_) => rand_hex(64),
            };
            post(
                &format!("{}/api/v2/password/finish", relay.url),
                Some(&token),
                json!({"login_id": st["login_id"], "finish": finish, "record": rec.to_hex(),
                       "kdf": kdf(), "epoch": epoch,
                       "export_wrap": ek.kek().wrap(Epoch(epoch), key).to_hex(),
                       "end_other_sessions": true}),
            )
            .await
        }
    };
    let r = change(b"not it", 1).await;
    assert_eq!((r.status, r.error().as_str()), (401, "invalid_credentials"));
    let r = change(b"old pw", 5).await;
    assert_eq!(r.status, 400, "an epoch jump is refused: {}", r.body);
    let r = change(b"old pw", 1).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        login_v2(&relay, "dan", b"old pw").await.unwrap_err().1,
        "login failed"
    );
    let (l, ek) = login_v2(&relay, "dan", b"new pw").await.unwrap();
    let wrap = ExportWrappedKey::from_hex(l["export_wrap"].as_str().unwrap()).unwrap();
    assert_eq!(
        ek.kek().unwrap(Epoch(1), &wrap).unwrap().expose(),
        key.expose()
    );
    // end_other_sessions logged the other device out.
    let r = http(
        "GET",
        &format!("{}/api/v1/devices", relay.url),
        other["token"].as_str(),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn device_keys_are_published_once_per_device() {
    let relay = TestRelay::start().await;
    let (first, key) = signup_v2(&relay, "eve", b"pw").await;
    let token = first["token"].as_str().unwrap();
    let dev = clipmesh_proto::DeviceId(first["device_id"].as_u64().unwrap());
    let me = DeviceSecrets::generate(&mut OsRng).public();
    let cert = key.certify(Epoch(1), dev, &me);
    let url = format!("{}/api/v2/device-key", relay.url);
    let put = |public: String, epoch: u32| {
        http(
            "PUT",
            &url,
            Some(token),
            Some(
                json!({"public_key": public, "epoch": epoch, "cert": hex::encode(cert)})
                    .to_string(),
            ),
        )
    };
    assert_eq!(put(me.to_hex(), 2).await.status, 400, "future epoch");
    assert_eq!(put(me.to_hex(), 1).await.status, 204);
    assert_eq!(
        put(me.to_hex(), 1).await.status,
        204,
        "same key again is fine"
    );
    let other = DeviceSecrets::generate(&mut OsRng).public();
    assert_eq!(
        put(other.to_hex(), 1).await.status,
        409,
        "a swap is refused"
    );
    let r = http(
        "GET",
        &format!("{}/api/v2/device-keys", relay.url),
        Some(token),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["epoch"], 1);
    assert_eq!(
        v["devices"][0]["public_key"].as_str(),
        Some(me.to_hex().as_str())
    );
    assert_eq!(
        v["devices"][0]["cert"].as_str(),
        Some(hex::encode(cert).as_str())
    );

    // A v1 account has no device keys.
    let a = signup(&relay, "frank").await;
    let r = http(
        "PUT",
        &format!("{}/api/v2/device-key", relay.url),
        Some(&a.login.token),
        Some(json!({"public_key": me.to_hex(), "epoch": 0, "cert": hex::encode(cert)}).to_string()),
    )
    .await;
    assert_eq!(r.status, 400);
}

/// A password change by the device holding `token` (password "pw" both
/// ways), with `extra` fields merged into `password/finish`.
async fn change_with(
    relay: &TestRelay,
    user: &str,
    token: &str,
    epoch: u32,
    key: &EpochKey,
    extra: Value,
) -> Resp {
    let (lc, ke1) = ClientLogin::start(&mut OsRng, b"pw").unwrap();
    let (rc, reg) = ClientRegistration::start(&mut OsRng, b"pw").unwrap();
    let r = post(
        &format!("{}/api/v2/password/start", relay.url),
        Some(token),
        json!({"login": ke1.to_hex(), "registration": reg.to_hex()}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let st = r.json();
    let ke2 = LoginResponseBytes::from_hex(st["response"].as_str().unwrap()).unwrap();
    let regr = RegistrationResponseBytes::from_hex(st["registration"].as_str().unwrap()).unwrap();
    let (rec, ek) = rc.finish(&mut OsRng, b"pw", user, &regr, &kdf()).unwrap();
    let finish = lc
        .finish(b"pw", user, &ke2, &kdf())
        .unwrap()
        .finish
        .to_hex();
    let mut body = json!({"login_id": st["login_id"], "finish": finish, "record": rec.to_hex(),
        "kdf": kdf(), "epoch": epoch,
        "export_wrap": ek.kek().wrap(Epoch(epoch), key).to_hex()});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    post(
        &format!("{}/api/v2/password/finish", relay.url),
        Some(token),
        body,
    )
    .await
}

#[tokio::test]
async fn a_new_epoch_checks_its_wraps_and_revokes_and_hands_each_device_its_wrap() {
    use clipmesh_proto::{DeviceId, DeviceWrappedKey};
    let relay = TestRelay::start().await;
    let (first, k1) = signup_v2(&relay, "gus", b"pw").await;
    let (b, _) = login_v2(&relay, "gus", b"pw").await.unwrap();
    let (c, _) = login_v2(&relay, "gus", b"pw").await.unwrap();
    let devs: Vec<(String, DeviceId, DeviceSecrets)> = [&first, &b, &c]
        .iter()
        .map(|v| {
            (
                v["token"].as_str().unwrap().to_owned(),
                DeviceId(v["device_id"].as_u64().unwrap()),
                DeviceSecrets::generate(&mut OsRng),
            )
        })
        .collect();
    for (token, id, secrets) in &devs {
        let p = secrets.public();
        let r = http(
            "PUT",
            &format!("{}/api/v2/device-key", relay.url),
            Some(token),
            Some(
                json!({"public_key": p.to_hex(), "epoch": 1,
                       "cert": hex::encode(k1.certify(Epoch(1), *id, &p))})
                .to_string(),
            ),
        )
        .await;
        assert_eq!(r.status, 204, "{}", r.body);
    }
    let (a_tok, a, a_sec) = &devs[0];
    let (b_tok, b, b_sec) = &devs[1];
    let (c_tok, c, _) = &devs[2];
    let wrap_url = format!("{}/api/v2/epoch-wrap", relay.url);
    let get_wrap = |token: String| {
        let url = wrap_url.clone();
        async move { http("GET", &url, Some(&token), None).await }
    };
    let r = get_wrap(b_tok.clone()).await;
    assert_eq!((r.status, r.json()["wrap"].clone()), (200, Value::Null));

    let k2 = EpochKey::generate(&mut OsRng);
    let wrap_to = |id: DeviceId, s: &DeviceSecrets| {
        k2.wrap_to_device(&mut OsRng, Epoch(2), (*a, a_sec), (id, &s.public()))
            .unwrap()
            .to_hex()
    };
    let wraps = json!([{"device": a, "wrap": wrap_to(*a, a_sec)}, {"device": b, "wrap": wrap_to(*b, b_sec)}]);
    let certs = json!([
        {"device": a, "cert": hex::encode(k2.certify(Epoch(2), *a, &a_sec.public()))},
        {"device": b, "cert": hex::encode(k2.certify(Epoch(2), *b, &b_sec.public()))}]);
    let sender_cert = hex::encode(k1.certify(Epoch(1), *a, &a_sec.public()));
    let bad = [
        (1, json!({"revoke": [c]}), "a revoke without a new epoch"),
        (2, json!({"revoke": [a]}), "revoking oneself"),
        (2, json!({"revoke": [999_999]}), "an unknown device"),
        (
            2,
            json!({"revoke": [c], "wraps": [{"device": c, "wrap": wrap_to(*c, a_sec)}],
                   "sender_cert": sender_cert}),
            "a wrap to the revoked device",
        ),
        (2, json!({"wraps": wraps}), "wraps without sender_cert"),
        (
            2,
            json!({"wraps": [{"device": b, "wrap": "00"}], "sender_cert": sender_cert}),
            "a short wrap",
        ),
        (
            2,
            json!({"wraps": [{"device": b, "wrap": wrap_to(*b, b_sec)}, {"device": b, "wrap": wrap_to(*b, b_sec)}],
                   "sender_cert": sender_cert}),
            "a repeated device",
        ),
        (
            2,
            json!({"certs": [{"device": 999_999, "cert": hex::encode([0u8; 32])}]}),
            "a cert for an unknown device",
        ),
    ];
    for (epoch, extra, what) in bad {
        let r = change_with(&relay, "gus", a_tok, epoch, &k2, extra).await;
        assert_eq!(r.status, 400, "{what}: {}", r.body);
    }
    let r = change_with(
        &relay,
        "gus",
        a_tok,
        2,
        &k2,
        json!({"revoke": [c], "wraps": wraps, "certs": certs, "sender_cert": sender_cert}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);

    // C is gone; B gets its wrap, signed by A, which opens to the new key.
    let r = http(
        "GET",
        &format!("{}/api/v2/device-keys", relay.url),
        Some(c_tok),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    let r = get_wrap(b_tok.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let w = r.json()["wrap"].clone();
    assert_eq!(
        (w["epoch"].as_u64(), w["sender"].as_u64()),
        (Some(2), Some(a.0))
    );
    assert_eq!(
        w["sender_public"].as_str(),
        Some(a_sec.public().to_hex().as_str())
    );
    assert_eq!(w["sender_cert"].as_str(), Some(sender_cert.as_str()));
    let opened = DeviceWrappedKey::from_hex(w["wrap"].as_str().unwrap())
        .unwrap()
        .open(Epoch(2), (*a, &a_sec.public()), (*b, b_sec))
        .unwrap();
    assert_eq!(opened.expose(), k2.expose());
    let v = http(
        "GET",
        &format!("{}/api/v2/device-keys", relay.url),
        Some(b_tok),
        None,
    )
    .await
    .json();
    assert_eq!(v["epoch"], 2);
    let listed: Vec<u64> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["epoch"], 2, "re-certified: {d}");
            d["id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(listed, vec![a.0, b.0]);
}

#[tokio::test]
async fn v2_login_starts_count_as_guesses_until_one_succeeds() {
    // A guesser never needs to send KE3 (KE2 alone tells it whether its
    // guess opened the envelope), so each start counts.
    let relay = TestRelay::start().await;
    signup_v2(&relay, "gus", b"pw").await;
    let start = || {
        let (_, ke1) = ClientLogin::start(&mut OsRng, b"guess").unwrap();
        let url = format!("{}/api/v2/login/start", relay.url);
        let body = json!({"username": "gus", "request": ke1.to_hex()});
        async move { post(&url, None, body).await }
    };
    let mut limited = None;
    for i in 0..20 {
        let r = start().await;
        if r.status == 429 {
            assert!(r.retry_after.is_some());
            limited = Some(i);
            break;
        }
        assert_eq!(r.status, 200);
    }
    let n = limited.expect("unfinished v2 login starts must be throttled");
    assert!(n <= 6, "throttled only after {n} starts");
}

#[tokio::test]
async fn a_successful_v2_login_clears_the_count() {
    let relay = TestRelay::start().await;
    signup_v2(&relay, "hal", b"pw").await;
    for _ in 0..10 {
        login_v2(&relay, "hal", b"pw").await.unwrap();
    }
}

#[tokio::test]
async fn v2_logins_survive_a_relay_restart() {
    // The OPAQUE setup is kept in the data directory: a restarted relay
    // answers with the same OPRF keys, so records stay valid.
    let relay = TestRelay::start().await;
    let (_, key) = signup_v2(&relay, "ivy", b"pw").await;
    let setup = std::fs::read(
        relay
            .dir
            .path()
            .join(clipmesh_relay::opaque::OPAQUE_SETUP_FILE),
    )
    .unwrap();
    let dir = relay.stop().await;
    let relay = TestRelay::start_in(dir, |_| {}).await;
    let again = std::fs::read(
        relay
            .dir
            .path()
            .join(clipmesh_relay::opaque::OPAQUE_SETUP_FILE),
    )
    .unwrap();
    assert_eq!(setup, again, "the setup is not replaced at start");
    let (l, ek) = login_v2(&relay, "ivy", b"pw").await.unwrap();
    let wrap = ExportWrappedKey::from_hex(l["export_wrap"].as_str().unwrap()).unwrap();
    assert_eq!(
        ek.kek().unwrap(Epoch(1), &wrap).unwrap().expose(),
        key.expose()
    );
}
