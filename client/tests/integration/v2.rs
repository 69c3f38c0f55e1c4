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
    b.stop().await.unwrap();
    a.stop().await.unwrap();

    // `clipmesh devices` on A: both safety numbers; B is announced once.
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
    assert!(
        out.stderr.contains(&format!(
            "new device in this account: {} \"b\", safety number {}",
            device_id(b_dir.path()),
            pb.fingerprint()
        )),
        "{}",
        out.stderr
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
}
