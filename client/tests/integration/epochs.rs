//! Protocol v2 key epochs and signed envelopes end to end (`docs/crypto.md`,
//! "Key epochs" and "The v2 envelope"): a revoke starts an epoch the
//! revoked device cannot open (the test reads its stored secrets from its
//! config dir and tries), an offline device picks the new epoch up when it
//! joins, a password change starts a new epoch that running daemons adopt,
//! and a clip one device forges as another (delivered by a hostile relay)
//! is refused with one line and nothing applied.

use crate::support::*;
use clipmesh::clipkeys::{self, Opened};
use clipmesh::secrets::{self, StoreKind};
use clipmesh::Device;
use clipmesh_proto::content::ClipContent;
use clipmesh_proto::{
    ClipItem, DeviceId, DeviceSecrets, DeviceWrappedKey, EnvelopeKind, Epoch, EpochKey,
    SignedEnvelope, SignedHeader, UserId,
};
use clipmesh_relay::store::{Db, RoomRecord};
use clipmesh_relay::SignupPolicy;
use rand::rngs::OsRng;
use std::path::Path;

const NEW_PASSWORD: &str = "a new password after the revoke";

fn secrets_of(dir: &Path) -> secrets::Secrets {
    secrets::load(dir, StoreKind::File).unwrap()
}

fn user_of(dir: &Path) -> UserId {
    UserId(
        clipmesh::Config::load(dir)
            .unwrap()
            .account
            .unwrap()
            .user_id,
    )
}

fn db(relay: &TestRelay) -> Db {
    Db::open(&relay.data.path().join(clipmesh_relay::config::DB_FILE)).unwrap()
}

fn ok(o: Out) {
    assert!(o.status.success(), "{o:?}");
}

/// Waits until the daemon reports `n` devices online.
async fn wait_online(d: &TestDaemon, n: usize) {
    tokio::time::timeout(STEP, async {
        loop {
            if d.status()
                .await
                .is_some_and(|s| s.connected && s.online.len() == n)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_starts_an_epoch_the_revoked_device_cannot_open() {
    let mut relay = TestRelay::start(SignupPolicy::Open).await;
    let (a_dir, b_dir, c_dir) = (device_dir(), device_dir(), device_dir());
    ok(auth("signup", a_dir.path(), &relay.url, "ann", PASSWORD, "a").await);
    ok(auth("login", b_dir.path(), &relay.url, "ann", PASSWORD, "b").await);
    ok(auth("login", c_dir.path(), &relay.url, "ann", PASSWORD, "c").await);
    let (a_id, b_id, c_id) = (
        DeviceId(device_id(a_dir.path())),
        DeviceId(device_id(b_dir.path())),
        DeviceId(device_id(c_dir.path())),
    );
    let c_before = secrets_of(c_dir.path());
    assert_eq!(c_before.epoch, Some(1));

    // A revokes C while B is offline: the password changes and epoch 2
    // starts.
    let mut cmd = clipmesh(a_dir.path());
    cmd.args([
        "devices",
        "--revoke",
        &c_id.0.to_string(),
        "--password-stdin",
    ]);
    let out = run(cmd, Some(&format!("{PASSWORD}\n{NEW_PASSWORD}\n"))).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("new key epoch 2"), "{}", out.stdout);
    // A had never seen B: B gets the new key, and is announced on the way.
    let pb_before = secrets_of(b_dir.path()).device.unwrap().public();
    assert!(
        out.stderr.contains(&format!(
            "new device in this account: {} \"b\", safety number {}",
            b_id.0,
            pb_before.fingerprint()
        )),
        "{}",
        out.stderr
    );
    let sa = secrets_of(a_dir.path());
    assert_eq!(sa.epoch, Some(2));
    assert_ne!(sa.data_key, c_before.data_key, "a fresh epoch key");

    // B was offline: it picks epoch 2 up when its daemon joins, and syncs
    // with A both ways under it.
    let mut a = TestDaemon::start(a_dir.path());
    let mut b = TestDaemon::start(b_dir.path());
    wait_online(&b, 2).await;
    a.copy("sealed after the revoke").await;
    assert_eq!(b.next_applied().await, "sealed after the revoke");
    let sb = secrets_of(b_dir.path());
    assert_eq!(sb.epoch, Some(2), "B stored the new epoch key");
    assert_eq!(sb.data_key, sa.data_key);
    assert_eq!(b.status().await.unwrap().key_epoch, Some(2));
    b.copy("and back").await;
    assert_eq!(a.next_applied().await, "and back");
    b.stop().await.unwrap();
    a.stop().await.unwrap();

    // The newest clip the relay holds was sealed by B under epoch 2.
    relay.stop().await;
    let db = db(&relay);
    let user = user_of(a_dir.path());
    let env = db.load_room(user).unwrap().unwrap().envelope.unwrap();
    let h = SignedEnvelope::peek_header(&env).unwrap();
    assert_eq!((h.sender, h.epoch), (b_id, Epoch(2)));
    let pb = sb.device.as_ref().unwrap().public();
    assert!(SignedEnvelope::open(
        &EpochKey::from_bytes(*sb.data_key.expose()).clip_key(Epoch(2)),
        &pb,
        &env
    )
    .is_ok());

    // What the revoked device kept (read from its config dir, as a thief
    // would) opens none of it.
    let c = secrets_of(c_dir.path());
    assert_eq!(c.epoch, Some(1));
    let c_key = EpochKey::from_bytes(*c.data_key.expose());
    for e in [1, 2] {
        assert!(SignedEnvelope::open(&c_key.clip_key(Epoch(e)), &pb, &env).is_err());
    }
    let c_keys = clipkeys::for_device(c_dir.path(), &Device::load(c_dir.path()).unwrap()).unwrap();
    assert!(matches!(c_keys.open(b_id, &env, true), Opened::Refused(_)));
    // No wrap of epoch 2 for C, and B's does not open with C's secrets.
    assert!(db.epoch_wrap(user, c_id).unwrap().is_none());
    let wb = db.epoch_wrap(user, b_id).unwrap().unwrap();
    assert_eq!((wb.epoch, wb.sender), (2, a_id));
    let wrap = DeviceWrappedKey::from_slice(&wb.wrap).unwrap();
    let pa = sa.device.as_ref().unwrap().public();
    let c_dev = c.device.as_ref().unwrap();
    assert!(wrap.open(Epoch(2), (a_id, &pa), (c_id, c_dev)).is_err());
    assert!(wrap.open(Epoch(2), (a_id, &pa), (b_id, c_dev)).is_err());
    assert_eq!(
        wrap.open(Epoch(2), (a_id, &pa), (b_id, sb.device.as_ref().unwrap()))
            .unwrap()
            .expose(),
        sa.data_key.expose(),
        "B's wrap holds the epoch key"
    );
    drop(db);

    // C's session is gone, and the old password logs nobody in.
    relay.restart().await;
    let mut cmd = clipmesh(c_dir.path());
    cmd.arg("devices");
    let out = run(cmd, None).await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("revoked"), "{}", out.stderr);
    let d_dir = device_dir();
    let out = auth("login", d_dir.path(), &relay.url, "ann", PASSWORD, "d").await;
    assert!(!out.status.success(), "{out:?}");
    ok(auth("login", d_dir.path(), &relay.url, "ann", NEW_PASSWORD, "d").await);
    let sd = secrets_of(d_dir.path());
    assert_eq!((sd.epoch, &sd.data_key), (Some(2), &sa.data_key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_starts_an_epoch_that_running_daemons_adopt() {
    let relay = TestRelay::start(SignupPolicy::Open).await;
    let (a_dir, b_dir) = (device_dir(), device_dir());
    ok(auth("signup", a_dir.path(), &relay.url, "ann", PASSWORD, "a").await);
    ok(auth("login", b_dir.path(), &relay.url, "ann", PASSWORD, "b").await);
    let mut a = TestDaemon::start(a_dir.path());
    let mut b = TestDaemon::start(b_dir.path());
    wait_online(&a, 2).await;
    a.copy("epoch one").await;
    assert_eq!(b.next_applied().await, "epoch one");

    // The password changes on A (from the command line, daemons running).
    let mut cmd = clipmesh(a_dir.path());
    cmd.args(["password", "--password-stdin"]);
    let out = run(cmd, Some(&format!("{PASSWORD}\n{NEW_PASSWORD}\n"))).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("new key epoch 2"), "{}", out.stdout);

    // The relay makes both daemons reconnect; each fetches its wrap of
    // epoch 2 on join and seals under it from then on.
    for d in [&a, &b] {
        tokio::time::timeout(STEP, async {
            while d.status().await.and_then(|s| s.key_epoch) != Some(2) {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
    }
    wait_online(&b, 2).await;
    b.copy("epoch two").await;
    assert_eq!(a.next_applied().await, "epoch two");
    a.copy("epoch two, back").await;
    assert_eq!(b.next_applied().await, "epoch two, back");
    let (sa, sb) = (secrets_of(a_dir.path()), secrets_of(b_dir.path()));
    assert_eq!((sa.epoch, sb.epoch), (Some(2), Some(2)));
    assert_eq!(sa.data_key, sb.data_key);
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clip_forged_as_another_device_is_refused() {
    let mut relay = TestRelay::start(SignupPolicy::Open).await;
    let (a_dir, b_dir, c_dir) = (device_dir(), device_dir(), device_dir());
    ok(auth("signup", a_dir.path(), &relay.url, "ann", PASSWORD, "a").await);
    ok(auth("login", b_dir.path(), &relay.url, "ann", PASSWORD, "b").await);
    ok(auth("login", c_dir.path(), &relay.url, "ann", PASSWORD, "c").await);
    let a_id = DeviceId(device_id(a_dir.path()));
    let user = user_of(a_dir.path());
    let a = TestDaemon::start(a_dir.path());
    let mut c = TestDaemon::start(c_dir.path());
    wait_online(&c, 2).await;
    a.copy("genuine").await;
    assert_eq!(c.next_applied().await, "genuine");
    c.stop().await.unwrap();
    a.stop().await.unwrap();

    // Forgeries a hostile relay delivers to C as A's newest clip (the
    // relay's own room state, rewritten in its database):
    // 1. by B, a device of the account: it holds the epoch key, so the
    //    seal is right, but it can sign only with its own key;
    // 2. by the relay alone: no epoch key and no device key;
    // 3. by B again, as an unsigned v1 envelope under the v1-style key of
    //    the epoch (a downgrade).
    let sb = secrets_of(b_dir.path());
    let b_key = EpochKey::from_bytes(*sb.data_key.expose());
    let header = SignedHeader {
        kind: EnvelopeKind::Clip,
        sender: a_id,
        seq: 1_000_000,
        epoch: Epoch(1),
    };
    let item = |t: &str| {
        ClipItem {
            timestamp_ms: clipmesh::clock::now_ms(),
            content: ClipContent::Text(t.into()),
        }
        .encode()
    };
    let by_b = SignedEnvelope::seal(
        &b_key.clip_key(Epoch(1)),
        sb.device.as_ref().unwrap(),
        &header,
        &item("forged by B"),
    );
    let by_relay = SignedEnvelope::seal(
        &EpochKey::generate(&mut OsRng).clip_key(Epoch(1)),
        &DeviceSecrets::generate(&mut OsRng),
        &header,
        &item("forged by the relay"),
    );
    let downgrade = clipmesh_proto::seal_clip(
        &clipmesh_proto::DataKey::from_bytes(*sb.data_key.expose()).clip_key(),
        a_id,
        1_000_001,
        &ClipItem {
            timestamp_ms: clipmesh::clock::now_ms(),
            content: ClipContent::Text("unsigned, forged by B".into()),
        },
    );
    for (seq, (forged, why)) in (101..).zip([
        (by_b, "does not verify with the key pinned for it"),
        (by_relay, "does not verify with the key pinned for it"),
        (downgrade, "unsigned (v1) envelope"),
    ]) {
        relay.stop().await;
        db(&relay)
            .save_room(
                user,
                &RoomRecord {
                    seq,
                    from: a_id,
                    envelope: Some(forged),
                    stored_at: clipmesh::clock::now_ms() as i64 / 1000,
                },
            )
            .unwrap();
        relay.restart().await;
        // C joins as if it had seen nothing: the relay delivers the forgery.
        let p = c_dir.path().join("state.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        v["last_seen"] = 0.into();
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        let mut c = TestDaemon::start(c_dir.path());
        let line = tokio::time::timeout(STEP, async {
            loop {
                if let Some(e) = c.status().await.and_then(|s| s.last_error) {
                    if e.contains("refused") {
                        break e;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        assert!(
            line.contains(&format!("clip from device {a_id} refused")) && line.contains(why),
            "{line}"
        );
        assert!(c.applied.try_recv().is_err(), "nothing applied");
        c.stop().await.unwrap();
    }
}
