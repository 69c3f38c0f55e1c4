//! The `clipmesh` binary against a real relay: accounts, send, watch,
//! devices, logout, revocation, and the one-line errors.

use crate::support::*;
use clipmesh_relay::SignupPolicy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_login_send_watch_devices_revoke_logout() {
    let relay = TestRelay::start(SignupPolicy::Open).await;
    let a = device_dir();
    let b = device_dir();

    let out = auth("signup", a.path(), &relay.url, "ann", PASSWORD, "laptop").await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("signed up"), "{out:?}");
    let out = auth("login", b.path(), &relay.url, "ann", PASSWORD, "server").await;
    assert!(out.status.success(), "{out:?}");
    let id_a = device_id(a.path());
    let id_b = device_id(b.path());
    assert_ne!(id_a, id_b);

    // Secrets went to a private file; the config holds no secret.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(a.path().join("secrets.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let cfg = std::fs::read_to_string(a.path().join("config.toml")).unwrap();
    assert!(!cfg.contains(&token(a.path())));

    // B watches; A sends without a daemon.
    let mut w = {
        let mut c = clipmesh(b.path());
        c.args(["watch", "--json"]);
        Running::spawn(c)
    };
    w.stderr_until("watching").await;
    let mut c = clipmesh(a.path());
    c.args(["send", "hello from ann"]);
    let out = run(c, None).await;
    assert!(out.status.success(), "{out:?}");
    let line = w.next_stdout().await;
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["kind"], "text");
    assert_eq!(v["text"], "hello from ann");
    assert_eq!(v["from_device"], id_a);
    assert!(v["received_at"].as_u64().unwrap() > 0);

    // Text from standard input, and a second send gets a fresh sequence.
    let mut c = clipmesh(a.path());
    c.arg("send");
    let out = run(c, Some("line one\nline two\n")).await;
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&w.next_stdout().await).unwrap();
    assert_eq!(v["text"], "line one\nline two\n");

    // Devices: both listed, B online (watching), A marked current.
    let mut c = clipmesh(a.path());
    c.arg("devices");
    let out = run(c, None).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains("laptop") && out.stdout.contains("server"),
        "{}",
        out.stdout
    );

    // A revokes B: the watcher stops with the revocation message.
    let mut c = clipmesh(a.path());
    c.args(["devices", "--revoke", &id_b.to_string(), "--password-stdin"]);
    let out = run(
        c,
        Some(&format!("{PASSWORD}\nthe password after the revoke\n")),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let st = w.wait().await;
    assert!(!st.success());
    let err = w.rest_of_stderr().await;
    assert!(
        err.contains("this device's session was revoked; run `clipmesh login` again"),
        "{err}"
    );
    // B's other commands say the same, in one line.
    let revoked = "clipmesh: this device's session was revoked; run `clipmesh login` again";
    let mut c = clipmesh(b.path());
    c.arg("devices");
    let out = run(c, None).await;
    assert!(!out.status.success());
    assert_eq!(out.stderr.trim(), revoked);
    // A standalone send is refused at the WebSocket upgrade (HTTP 401) and
    // stops at once instead of retrying.
    let mut c = clipmesh(b.path());
    c.env("RUST_LOG", "off").args(["send", "x"]);
    let out = run(c, None).await;
    assert!(!out.status.success());
    assert_eq!(out.stderr.trim(), revoked);

    // Logout removes local secrets; the session is gone on the relay too.
    let tok = token(a.path());
    let mut c = clipmesh(a.path());
    c.arg("logout");
    let out = run(c, None).await;
    assert!(out.status.success(), "{out:?}");
    assert!(!a.path().join("secrets.json").exists());
    let mut c = clipmesh(a.path());
    c.args(["send", "x"]);
    let out = run(c, None).await;
    assert!(!out.status.success());
    assert_eq!(
        out.stderr.trim(),
        "clipmesh: not logged in: run `clipmesh login` first"
    );
    let status = ureq::get(&format!("{}/api/v1/devices", relay.url))
        .header("Authorization", &format!("Bearer {tok}"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_clear_line() {
    let relay = TestRelay::start(SignupPolicy::First).await;
    let a = device_dir();
    let out = auth("signup", a.path(), &relay.url, "root", PASSWORD, "a").await;
    assert!(out.status.success(), "{out:?}");

    fn one_line(out: &Out) -> &str {
        assert!(!out.status.success(), "{out:?}");
        let e = out.stderr.trim();
        assert_eq!(e.lines().count(), 1, "{e}");
        e
    }

    // Signup closed after the first account.
    let b = device_dir();
    let out = auth("signup", b.path(), &relay.url, "bob", PASSWORD, "b").await;
    assert!(one_line(&out).contains("signup is closed"), "{out:?}");

    // Wrong password.
    let out = auth("login", b.path(), &relay.url, "root", "not it", "b").await;
    assert!(
        one_line(&out).contains("wrong username or password"),
        "{out:?}"
    );
    // Unknown user looks the same.
    let out = auth("login", b.path(), &relay.url, "nobody", PASSWORD, "b").await;
    assert!(
        one_line(&out).contains("wrong username or password"),
        "{out:?}"
    );

    // Relay unreachable.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = auth(
        "login",
        b.path(),
        &format!("http://127.0.0.1:{port}"),
        "root",
        PASSWORD,
        "b",
    )
    .await;
    assert!(one_line(&out).contains("relay unreachable"), "{out:?}");

    // Not logged in.
    let mut c = clipmesh(b.path());
    c.arg("devices");
    let out = run(c, None).await;
    assert!(one_line(&out).contains("not logged in"), "{out:?}");

    // No display to watch (`clipmesh()` clears DISPLAY and
    // WAYLAND_DISPLAY): `run` says what to set instead of starting.
    let mut c = clipmesh(a.path());
    c.args(["run", "--mode", "p2p"]);
    let out = run(c, None).await;
    assert!(
        one_line(&out).contains("clipboard: no display: set WAYLAND_DISPLAY or DISPLAY"),
        "{out:?}"
    );

    // Status without a daemon.
    let mut c = clipmesh(a.path());
    c.arg("status");
    let out = run(c, None).await;
    assert!(one_line(&out).contains("not running"), "{out:?}");
    let mut c = clipmesh(a.path());
    c.args(["status", "--json"]);
    let out = run(c, None).await;
    assert_eq!(out.stdout.trim(), r#"{"running":false}"#);

    // Account disabled: the admin disables a second account, whose login
    // then fails with its own message.
    let admin_token = token(a.path());
    let relay2 = TestRelay::start(SignupPolicy::Open).await;
    let c1 = device_dir();
    let c2 = device_dir();
    assert!(auth("signup", c1.path(), &relay2.url, "adm", PASSWORD, "x")
        .await
        .status
        .success());
    assert!(auth("signup", c2.path(), &relay2.url, "eve", PASSWORD, "y")
        .await
        .status
        .success());
    let _ = admin_token;
    let adm = token(c1.path());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let users: serde_json::Value = agent
        .get(&format!("{}/api/v1/admin/users", relay2.url))
        .header("Authorization", &format!("Bearer {adm}"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let eve = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "eve")
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let st = agent
        .post(&format!("{}/api/v1/admin/users/{eve}/disable", relay2.url))
        .header("Authorization", &format!("Bearer {adm}"))
        .send_empty()
        .unwrap()
        .status();
    assert!(st.is_success(), "{st}");
    let out = auth("login", c2.path(), &relay2.url, "eve", PASSWORD, "y").await;
    assert!(one_line(&out).contains("disabled"), "{out:?}");
}

/// A full send → watch round at trace level: the plaintext, the token and
/// the data key appear in no log, and the plaintext nowhere in the relay's
/// data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_and_relay_disk_hold_no_secrets() {
    let mut relay = TestRelay::start(SignupPolicy::Open).await;
    let a = device_dir();
    let b = device_dir();
    let mut logs = String::new();
    let out = auth("signup", a.path(), &relay.url, "ann", PASSWORD, "a").await;
    assert!(out.status.success(), "{out:?}");
    logs += &out.stderr;
    let out = auth("login", b.path(), &relay.url, "ann", PASSWORD, "b").await;
    assert!(out.status.success(), "{out:?}");
    logs += &out.stderr;

    // The HTTP API at trace level: a login (auth key in the body, token in
    // the answer) and an authenticated call (token in a header).
    let c_dir = device_dir();
    let mut c = clipmesh(c_dir.path());
    c.env("RUST_LOG", "trace").args([
        "login",
        "--server",
        &relay.url,
        "--username",
        "ann",
        "--password-stdin",
        "--device-name",
        "c",
    ]);
    let out = run(c, Some(&format!("{PASSWORD}\n"))).await;
    assert!(out.status.success(), "{out:?}");
    logs += &out.stderr;
    let mut c = clipmesh(c_dir.path());
    c.env("RUST_LOG", "trace").arg("devices");
    let out = run(c, None).await;
    assert!(out.status.success(), "{out:?}");
    logs += &out.stderr;

    let secret_text = "PLAINTEXT-canary-7f3a9c";
    let mut w = {
        let mut c = clipmesh(b.path());
        c.env("RUST_LOG", "trace").args(["watch", "--json"]);
        Running::spawn(c)
    };
    logs += &w.stderr_until("watching").await;
    let mut c = clipmesh(a.path());
    c.env("RUST_LOG", "trace").args(["send", secret_text]);
    let out = run(c, None).await;
    assert!(out.status.success(), "{out:?}");
    logs += &out.stderr;
    let line = w.next_stdout_draining(&mut logs).await;
    assert!(line.contains(secret_text), "the clip did arrive: {line}");
    w.child.start_kill().unwrap();
    w.wait().await;
    logs += &w.rest_of_stderr().await;

    // A password change at trace level: a new epoch key, wrapped to each
    // device and certified (protocol v2).
    let new_password = "NEWPASSWORD-canary-51c2";
    let mut c = clipmesh(a.path());
    c.env("RUST_LOG", "trace")
        .args(["password", "--password-stdin"]);
    let out = run(c, Some(&format!("{PASSWORD}\n{new_password}\n"))).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("new key epoch 2"), "{}", out.stdout);
    logs += &out.stderr;

    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "trace logging was on"
    );
    let mut secrets = vec![
        secret_text.to_owned(),
        PASSWORD.to_owned(),
        new_password.to_owned(),
    ];
    // The auth key the logins sent (password-equivalent for the relay).
    let url = relay.url.clone();
    let auth_key = tokio::task::spawn_blocking(move || {
        let pre = clipmesh::Api::new(&url).prelogin("ann").unwrap();
        let salt: [u8; 16] = hex::decode(&pre.salt).unwrap().try_into().unwrap();
        let (auth, _) =
            clipmesh_proto::keys::derive_keys(PASSWORD.as_bytes(), &salt, &pre.kdf).unwrap();
        hex::encode(auth.expose())
    })
    .await
    .unwrap();
    secrets.push(auth_key);
    relay.stop().await;
    for dir in [a.path(), b.path(), c_dir.path()] {
        let raw = std::fs::read_to_string(dir.join("secrets.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
        secrets.push(v["token"].as_str().unwrap().to_owned());
        secrets.push(v["data_key"].as_str().unwrap().to_owned());
        // v2: the device's X25519 and Ed25519 secrets, and the epoch's
        // clip and signalling keys.
        let device = v["device"].as_str().unwrap().to_owned();
        secrets.push(device[..64].to_owned());
        secrets.push(device[64..].to_owned());
        let s = clipmesh::secrets::load(dir, clipmesh::secrets::StoreKind::File).unwrap();
        let epoch_key = clipmesh_proto::EpochKey::from_bytes(*s.data_key.expose());
        let epoch = clipmesh_proto::Epoch(s.epoch.unwrap());
        secrets.push(hex::encode(epoch_key.clip_key(epoch).expose()));
        secrets.push(hex::encode(s.data_key.signal_key().expose()));
    }
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "a secret reached the logs");
    }
    // The relay's disk: every file in its data directory, checked for the
    // text forms above and the raw data key bytes.
    let mut needles: Vec<Vec<u8>> = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
    for dir in [a.path(), b.path(), c_dir.path()] {
        let raw = std::fs::read_to_string(dir.join("secrets.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
        needles.push(hex::decode(v["data_key"].as_str().unwrap()).unwrap());
        needles.push(hex::decode(v["device"].as_str().unwrap()).unwrap()[..32].to_vec());
        needles.push(hex::decode(v["device"].as_str().unwrap()).unwrap()[32..].to_vec());
    }
    let mut stack = vec![relay.data.path().to_path_buf()];
    let mut files = 0;
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                files += 1;
                let bytes = std::fs::read(e.path()).unwrap();
                for s in &needles {
                    assert!(
                        !bytes.windows(s.len()).any(|w| w == s.as_slice()),
                        "a secret is on the relay's disk in {:?}",
                        e.file_name()
                    );
                }
            }
        }
    }
    assert!(files > 0);
}

/// Whether the relay stores a ClipCascade verifier for `user`.
fn has_clipcascade_verifier(relay: &TestRelay, user: &str) -> bool {
    let db =
        clipmesh_relay::Db::open(&relay.data.path().join(clipmesh_relay::config::DB_FILE)).unwrap();
    db.cc_account(user).unwrap().unwrap().verifier.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clipcascade_compat_flag_stores_the_verifier() {
    let relay = TestRelay::start(SignupPolicy::Open).await;
    let (a, b) = (device_dir(), device_dir());
    let out = auth("signup", a.path(), &relay.url, "ann", PASSWORD, "laptop").await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        !has_clipcascade_verifier(&relay, "ann"),
        "off unless asked for"
    );
    let mut c = clipmesh(b.path());
    c.args([
        "login",
        "--server",
        &relay.url,
        "--username",
        "ann",
        "--password-stdin",
        "--device-name",
        "desk",
        "--clipcascade-compat",
    ]);
    let out = run(c, Some(&format!("{PASSWORD}\n"))).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains("ClipCascade clients may now log in"),
        "{out:?}"
    );
    assert!(has_clipcascade_verifier(&relay, "ann"));
    // The verifier is a hash: neither the password nor its SHA3 hex is on
    // the relay's disk.
    let hex = clipmesh::clipcascade::login_hash(PASSWORD.as_bytes());
    for f in std::fs::read_dir(relay.data.path()).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(PASSWORD) && !text.contains(hex.as_str()),
                "{p:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_the_clipcascade_profile() {
    let relay = TestRelay::start(SignupPolicy::Open).await;
    let (a, b) = (device_dir(), device_dir());
    let mut c = clipmesh(a.path());
    c.args([
        "signup",
        "--server",
        &relay.url,
        "--username",
        "ann",
        "--password-stdin",
        "--device-name",
        "laptop",
        "--clipcascade-compat",
    ]);
    let out = run(c, Some(&format!("{PASSWORD}\n"))).await;
    assert!(out.status.success(), "{out:?}");
    let login = |pw: &str, dir: &std::path::Path| {
        let input = format!("{pw}\n");
        let mut c = clipmesh(dir);
        c.args([
            "login",
            "--profile",
            "clipcascade",
            "--server",
            &relay.url,
            "--username",
            "ann",
            "--password-stdin",
        ]);
        async move { run(c, Some(&input)).await }
    };
    let out = login("wrong password", b.path()).await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("wrong username or password"), "{out:?}");
    let out = login(PASSWORD, b.path()).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("ClipCascade profile"), "{out:?}");
    let file = b.path().join(clipmesh::clipcascade::daemon::PROFILE_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(PASSWORD));
    let p = clipmesh::clipcascade::daemon::Profile::load(b.path())
        .unwrap()
        .unwrap();
    let want = clipmesh::clipcascade::CcKey::derive(
        "ann",
        PASSWORD.as_bytes(),
        "",
        clipmesh::clipcascade::DEFAULT_ITERATIONS,
    );
    assert_eq!(p.cc_key().unwrap().expose(), want.expose());
    // The stored session is live on the relay.
    let r = ureq::get(&format!("{}/validate-session", relay.url))
        .header("Cookie", &format!("JSESSIONID={}", p.cookie))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert_eq!(r, "OK");
    // No signup on the profile.
    let mut c = clipmesh(b.path());
    c.args([
        "signup",
        "--profile",
        "clipcascade",
        "--server",
        &relay.url,
        "--username",
        "x",
        "--password-stdin",
    ]);
    let out = run(c, Some("pw\n")).await;
    assert!(!out.status.success());
}
