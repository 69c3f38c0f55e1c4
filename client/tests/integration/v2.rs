//! Protocol v2 from the client: OPAQUE signup and login, device keys in
//! the secret store, safety numbers in `clipmesh devices`, a relay that
//! swaps a device's public key, and the v1 → v2 upgrade of a v1 account
//! and v1 device dirs from the previous release (`fixtures/v1/`).

use crate::support::*;
use clipmesh::secrets::{self, StoreKind};
use clipmesh_proto::{DeviceId, DeviceSecrets, Epoch, EpochKey, UserId};
use clipmesh_relay::SignupPolicy;
use rand::rngs::OsRng;

fn secrets_of(dir: &std::path::Path) -> clipmesh::secrets::Secrets {
    secrets::load(dir, StoreKind::File).unwrap()
}

/// A hostile relay operator rewrites a device's public key (and, as well as
/// it can, its certificate) straight in the relay's database.
fn swap_key_in_db(relay: &TestRelay, user: u64, device: u64) {
    let db =
        clipmesh_relay::store::Db::open(&relay.data.path().join(clipmesh_relay::config::DB_FILE))
            .unwrap();
    let evil = DeviceSecrets::generate(&mut OsRng).public();
    let forged = EpochKey::generate(&mut OsRng).certify(Epoch(1), DeviceId(device), &evil);
    assert!(db
        .set_device_key(UserId(user), DeviceId(device), &evil.to_bytes(), 1, &forged)
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_accounts_sync_show_safety_numbers_and_refuse_a_swapped_key() {
    let relay = TestRelay::start(SignupPolicy::Open).await;
    let (a_dir, b_dir) = (device_dir(), device_dir());
    let ok = |o: Out| assert!(o.status.success(), "{o:?}");
    ok(auth("signup", a_dir.path(), &relay.url, "ann", PASSWORD, "a").await);
    ok(auth("login", b_dir.path(), &relay.url, "ann", PASSWORD, "b").await);

    // Both devices are v2: their own key pairs, the same epoch-1 key.
    let (sa, sb) = (secrets_of(a_dir.path()), secrets_of(b_dir.path()));
    assert_eq!((sa.epoch, sb.epoch), (Some(1), Some(1)));
    assert_eq!(
        sa.data_key, sb.data_key,
        "the export key opened the same epoch key"
    );
    let (pa, pb) = (
        sa.device.as_ref().unwrap().public(),
        sb.device.as_ref().unwrap().public(),
    );
    assert_ne!(pa, pb);
    let pins = clipmesh::pins::Pins::load(b_dir.path()).unwrap();
    assert!(pins.get_v2(&relay.url, "ann").is_some(), "pinned to v2");

    // They sync.
    let a = TestDaemon::start(a_dir.path());
    let mut b = TestDaemon::start(b_dir.path());
    a.copy("hello over v2").await;
    assert_eq!(b.next_applied().await, "hello over v2");
    // A's daemon announced B (it joined while A was not running) in its
    // status, with B's safety number, and B's clip was signed by that key.
    // The announcement comes from A's key listing, which A fetches off its
    // loop after joining: it may land after the clip went through.
    let st = tokio::time::timeout(STEP, async {
        loop {
            let st = a.status().await.unwrap();
            if !st.new_devices.is_empty() {
                break st;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(
        st.new_devices,
        vec![clipmesh::control::AnnouncedDevice {
            id: device_id(b_dir.path()),
            name: "b".into(),
            fingerprint: pb.fingerprint().to_string(),
        }]
    );
    b.stop().await.unwrap();
    a.stop().await.unwrap();

    // `clipmesh devices` on A: both safety numbers; B was announced once
    // already (by the daemon), so not again.
    let devices = |dir: &std::path::Path| {
        let mut c = clipmesh(dir);
        c.arg("devices");
        run(c, None)
    };
    let out = devices(a_dir.path()).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains(&pa.fingerprint().to_string()),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&pb.fingerprint().to_string()),
        "{}",
        out.stdout
    );
    let out = devices(a_dir.path()).await;
    assert!(out.status.success());
    assert!(
        !out.stderr.contains("new device"),
        "announced once: {}",
        out.stderr
    );

    // The relay swaps B's key: refused with one line, non-zero exit.
    let user = clipmesh::Config::load(a_dir.path())
        .unwrap()
        .account
        .unwrap()
        .user_id;
    swap_key_in_db(&relay, user, device_id(b_dir.path()));
    let out = devices(a_dir.path()).await;
    assert!(!out.status.success());
    assert!(
        out.stderr.contains(&format!(
            "refused: the relay lists a different key for device {} \"b\"",
            device_id(b_dir.path())
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("REFUSED (key changed)"),
        "{}",
        out.stdout
    );

    // A device that never saw B's key checks the certificate instead: the
    // relay cannot make one.
    let c_dir = device_dir();
    ok(auth("login", c_dir.path(), &relay.url, "ann", PASSWORD, "c").await);
    let out = devices(c_dir.path()).await;
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains("that no device of this account certified"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains(&pa.fingerprint().to_string()));

    // Logging in again (a new session) starts a fresh roster: only the
    // device's own new key is pinned, never another session's pins.
    ok(auth("login", c_dir.path(), &relay.url, "ann", PASSWORD, "c2").await);
    let r = clipmesh::roster::Roster::load(c_dir.path()).unwrap();
    assert!(r.get(DeviceId(device_id(a_dir.path()))).is_none());
    let me = secrets_of(c_dir.path()).device.unwrap().public();
    assert_eq!(r.get(DeviceId(device_id(c_dir.path()))), Some(me));
}

/// Where the v1 fixture lives: a relay data directory and two device
/// config directories written by the previous release (see its README).
fn fixture_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

/// The relay URL the fixture's device dirs were made against.
const FIXTURE_URL: &str = "http://127.0.0.1:47311";

/// Copies `from` into a fresh temporary directory, replacing the fixture's
/// relay URL with `url` in every text file (config, pins).
fn copy_fixture(from: &std::path::Path, url: &str) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        let bytes = match String::from_utf8(bytes) {
            Ok(s) => s.replace(FIXTURE_URL, url).into_bytes(),
            Err(e) => e.into_bytes(),
        };
        let dst = to.path().join(e.file_name());
        std::fs::write(&dst, bytes).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_account_and_v1_devices_upgrade_in_place_and_sync_with_v2() {
    let root = fixture_root();
    // The relay on the previous release's database (migrated at start).
    let data = copy_fixture(&root.join("relay"), "");
    let cfg = relay_config(
        data.path(),
        "127.0.0.1:0".parse().unwrap(),
        SignupPolicy::Closed,
    );
    let handle = clipmesh_relay::Relay::bind(cfg).await.unwrap();
    let url = handle.url();
    let _relay = TestRelay {
        addr: handle.local_addr(),
        handle: Some(handle),
        data,
        url: url.clone(),
        signup: SignupPolicy::Closed,
    };
    let a_dir = copy_fixture(&root.join("device-a"), &url);
    let b_dir = copy_fixture(&root.join("device-b"), &url);
    assert!(secrets_of(a_dir.path()).device.is_none(), "a v1 device dir");

    // A v2 client logs a new device in: v2 fails (no record yet), v1
    // works, and the account is upgraded; the v1 data key is epoch 0.
    let c_dir = device_dir();
    let out = auth("login", c_dir.path(), &url, "ann", PASSWORD, "c").await;
    assert!(out.status.success(), "{out:?}");
    let sc = secrets_of(c_dir.path());
    assert_eq!(sc.epoch, Some(0));
    assert_eq!(sc.data_key, secrets_of(a_dir.path()).data_key);
    assert!(sc.device.is_some());
    let pins = clipmesh::pins::Pins::load(c_dir.path()).unwrap();
    assert!(pins.get_v2(&url, "ann").is_some());

    // The next device logs in with v2 alone.
    let d_dir = device_dir();
    let out = auth("login", d_dir.path(), &url, "ann", PASSWORD, "d").await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(secrets_of(d_dir.path()).epoch, Some(0));
    // And v1 login is gone for the account: a client that only speaks v1
    // (here: this client, on a device pinned to nothing, against the v1
    // endpoint directly) is refused.
    let pre: serde_json::Value = ureq_post(
        &url,
        "/api/v1/prelogin",
        serde_json::json!({"username": "ann"}),
    )
    .await;
    let v1 = clipmesh_proto::keys::derive_keys(
        PASSWORD.as_bytes(),
        &hex::decode(pre["salt"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap(),
        &serde_json::from_value(pre["kdf"].clone()).unwrap(),
    )
    .unwrap()
    .0;
    let r = ureq_post(
        &url,
        "/api/v1/login",
        serde_json::json!({"username": "ann", "auth_key": hex::encode(v1.expose()), "device_name": "old"}),
    )
    .await;
    assert_eq!(r["error"], "invalid_credentials", "{r}");

    // The v1 device dirs keep their sessions and sync with the v2 devices.
    let a = TestDaemon::start(a_dir.path());
    let mut b = TestDaemon::start(b_dir.path());
    let mut c = TestDaemon::start(c_dir.path());
    a.copy("from the v1 device").await;
    assert_eq!(after_fixture_clip(&mut c).await, "from the v1 device");
    assert_eq!(after_fixture_clip(&mut b).await, "from the v1 device");
    c.copy("from the upgraded v2 device").await;
    assert_eq!(b.next_applied().await, "from the upgraded v2 device");
    c.stop().await.unwrap();
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

/// The next clip a daemon applies, after the fixture's stored clip if that
/// comes first: a device joining with no state gets the room's newest clip,
/// which it applies only while it is younger than the clip TTL (so, for
/// this fixture, only on the day it was made).
async fn after_fixture_clip(d: &mut TestDaemon) -> String {
    let first = d.next_applied().await;
    if first == "a clip sealed by v1" {
        d.next_applied().await
    } else {
        first
    }
}

/// A JSON POST to the relay (any status), its body.
async fn ureq_post(url: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let url = format!("{url}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .post(url)
            .send_json(body)
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap_or(serde_json::Value::Null)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_moves_to_a_new_record_and_keeps_the_epoch_key() {
    let relay = TestRelay::start(SignupPolicy::Open).await;
    let (a_dir, b_dir) = (device_dir(), device_dir());
    let ok = |o: Out| assert!(o.status.success(), "{o:?}");
    ok(auth("signup", a_dir.path(), &relay.url, "ann", PASSWORD, "a").await);
    ok(auth("login", b_dir.path(), &relay.url, "ann", PASSWORD, "b").await);
    let change = |input: &'static str| {
        let mut c = clipmesh(a_dir.path());
        c.args(["password", "--password-stdin", "--end-other-sessions"]);
        run(c, Some(input))
    };
    let out = change("not the password\nnew secret words\n").await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("wrong password"), "{}", out.stderr);
    let out = change("correct horse battery staple\nnew secret words\n").await;
    assert!(out.status.success(), "{out:?}");

    // The old password no longer logs in; the new one opens the same key.
    let c_dir = device_dir();
    let out = auth("login", c_dir.path(), &relay.url, "ann", PASSWORD, "c").await;
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("wrong username or password"),
        "{}",
        out.stderr
    );
    let out = auth(
        "login",
        c_dir.path(),
        &relay.url,
        "ann",
        "new secret words",
        "c",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        secrets_of(c_dir.path()).data_key,
        secrets_of(a_dir.path()).data_key
    );
    // B was logged out.
    let mut c = clipmesh(b_dir.path());
    c.arg("devices");
    let out = run(c, None).await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("revoked"), "{}", out.stderr);
}
