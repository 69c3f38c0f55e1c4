//! Protocol v2 key epochs and signed envelopes end to end (`docs/crypto.md`,
//! "Key epochs" and "The v2 envelope"): a revoke starts an epoch the
//! revoked device cannot open (the test reads its stored secrets from its
//! config dir and tries), an offline device picks the new epoch up when it
//! joins, a password change starts a new epoch that running daemons adopt,
//! and a clip one device forges as another (delivered by a hostile relay)
//! is refused with one line and nothing applied; a flood of clips from a
//! sender the listing does not vouch for costs a few listing fetches, not
//! one per clip.

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

/// A loopback TCP proxy to `to` (the relay) that counts the requests for
/// the account's key listing passing through it. Its task (and the
/// connections it holds) ends when the returned handle is aborted.
async fn counting_proxy(
    to: std::net::SocketAddr,
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const NEEDLE: &[u8] = b"GET /api/v2/device-keys";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((inbound, _)) = listener.accept().await {
            let counted = counted.clone();
            conns.spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let (mut ri, mut wi) = inbound.into_split();
                let (mut ro, mut wo) = outbound.into_split();
                let up = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    // The end of what came before, so a request line split
                    // across two reads is still seen.
                    let mut seen: Vec<u8> = Vec::new();
                    loop {
                        let n = match ri.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        seen.extend_from_slice(&buf[..n]);
                        let hits = seen.windows(NEEDLE.len()).filter(|w| *w == NEEDLE).count();
                        counted.fetch_add(hits, Ordering::SeqCst);
                        let keep = seen.len().min(NEEDLE.len() - 1);
                        seen.drain(..seen.len() - keep);
                        if wo.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = wo.shutdown().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut ro, &mut wi).await;
                    let _ = wi.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (url, count, task)
}

/// An account whose relay listing does not vouch for device B (B's
/// certificate is not one any device of the account made); A and C are
/// ordinary devices.
struct Unvouched {
    relay: TestRelay,
    a_dir: tempfile::TempDir,
    b_dir: tempfile::TempDir,
    c_dir: tempfile::TempDir,
    b_id: DeviceId,
}

async fn unvouched_sender() -> Unvouched {
    let mut relay = TestRelay::start(SignupPolicy::Open).await;
    let (a_dir, b_dir, c_dir) = (device_dir(), device_dir(), device_dir());
    ok(auth("signup", a_dir.path(), &relay.url, "ann", PASSWORD, "a").await);
    ok(auth("login", b_dir.path(), &relay.url, "ann", PASSWORD, "b").await);
    ok(auth("login", c_dir.path(), &relay.url, "ann", PASSWORD, "c").await);
    let user = user_of(a_dir.path());
    let b_id = DeviceId(device_id(b_dir.path()));
    let b_public = secrets_of(b_dir.path()).device.unwrap().public();
    relay.stop().await;
    assert!(db(&relay)
        .set_device_key(
            user,
            b_id,
            &b_public.to_bytes(),
            1,
            &[7u8; clipmesh_proto::epoch::CERT_LEN]
        )
        .unwrap());
    relay.restart().await;
    Unvouched {
        relay,
        a_dir,
        b_dir,
        c_dir,
        b_id,
    }
}

/// B publishes `n` clips it signs with its own key and waits for the
/// relay's `Ack` of each.
async fn flood_from(b_dir: &Path, relay_url: &str, n: u64) {
    let b = Device::load(b_dir).unwrap();
    let b_keys = clipkeys::for_device(b_dir, &b).unwrap();
    let (handle, commands) = clipmesh::link::channel();
    let (events, mut _events) = tokio::sync::mpsc::channel(256);
    let cancel = tokio_util::sync::CancellationToken::new();
    let cfg = clipmesh::link::LinkConfig {
        server: relay_url.to_owned(),
        token: clipmesh::token::TokenCell::new(b.secrets.token.clone()),
        last_seen: 0,
        seed: 1,
        roots: b.roots().unwrap(),
    };
    let link = tokio::spawn(clipmesh::link::run(cfg, commands, events, cancel.clone()));
    let mut acks = Vec::new();
    for seq in 1..=n {
        let item = ClipItem {
            timestamp_ms: clipmesh::clock::now_ms(),
            content: ClipContent::Text(format!("from b {seq}")),
        };
        acks.push(handle.publish(b_keys.seal(seq, &item)).await.unwrap());
    }
    for ack in acks {
        tokio::time::timeout(STEP, ack)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    cancel.cancel();
    tokio::time::timeout(STEP, link).await.unwrap().unwrap();
}

/// A sender the relay's listing does not vouch for floods a running daemon
/// with 20 clips: the daemon fetches the listing once for them and refuses
/// the rest without fetching again (before, every clip fetched it, inside
/// the daemon's loop). Counted at a proxy in front of the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_a_sender_the_listing_does_not_vouch_for_costs_few_listing_fetches() {
    use std::sync::atomic::Ordering;
    let Unvouched {
        mut relay,
        a_dir,
        b_dir,
        b_id,
        ..
    } = unvouched_sender().await;

    // A's daemon talks to the relay through the counting proxy.
    let (proxy, fetches, proxy_task) = counting_proxy(relay.addr).await;
    let mut device = Device::load(a_dir.path()).unwrap();
    device.account.server = proxy;
    let transport = clipmesh::daemon::Transport {
        mode: clipmesh::p2p::Mode::Relay,
        bind: String::new(),
        idle_close: None,
    };
    let mut a = TestDaemon::start_as(a_dir.path(), device, transport);
    wait_online(&a, 1).await;

    flood_from(b_dir.path(), &relay.url, 20).await;
    // A refuses them, with a few fetches (A's join, B's presence, the
    // first clip), not one per clip.
    let line = tokio::time::timeout(STEP, async {
        loop {
            let n = fetches.load(Ordering::SeqCst);
            assert!(n <= 4, "{n} listing fetches for 20 clips");
            if let Some(e) = a.status().await.and_then(|s| s.last_error) {
                if e.contains(&format!("clip from device {b_id} refused")) {
                    break e;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert!(line.contains("roster"), "{line}");
    // And no more come (the old loop fetched once per clip).
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let n = fetches.load(Ordering::SeqCst);
    assert!((1..=4).contains(&n), "{n} listing fetches for 20 clips");
    assert!(a.applied.try_recv().is_err(), "nothing applied");

    a.stop().await.unwrap();
    proxy_task.abort();
    let _ = proxy_task.await;
    relay.stop().await;
}

/// The same flood reaches `clipmesh watch`: it fetches the listing once
/// for the unvouched sender and refuses its later clips without fetching
/// again (before, each clip fetched the listing and the watcher waited for
/// it), then still prints a clip from an ordinary device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_fetches_the_listing_once_for_a_flood_from_an_unvouched_sender() {
    use std::sync::atomic::Ordering;
    let Unvouched {
        mut relay,
        a_dir,
        b_dir,
        c_dir,
        ..
    } = unvouched_sender().await;
    let (proxy, fetches, proxy_task) = counting_proxy(relay.addr).await;
    let mut device = Device::load(a_dir.path()).unwrap();
    device.account.server = proxy;

    let (clips_tx, mut clips) = tokio::sync::mpsc::unbounded_channel();
    let cancel = tokio_util::sync::CancellationToken::new();
    let dir = a_dir.path().to_path_buf();
    let watcher = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            clipmesh::watch::watch(&dir, &device, cancel, |clip| {
                let _ = clips_tx.send(clip.content);
                false
            })
            .await
        }
    });
    flood_from(b_dir.path(), &relay.url, 20).await;
    // C's clip comes after B's 20 in the room's order: when the watcher
    // prints it, it has handled all of them.
    let c = Device::load(c_dir.path()).unwrap();
    clipmesh::oneshot::publish_once(c_dir.path(), &c, ClipContent::Text("from c".into()), STEP)
        .await
        .unwrap();
    let got = tokio::time::timeout(STEP, clips.recv()).await.unwrap();
    assert_eq!(
        got,
        Some(ClipContent::Text("from c".into())),
        "B's clips are refused"
    );
    tokio::time::timeout(STEP, watcher)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let n = fetches.load(Ordering::SeqCst);
    assert!((1..=2).contains(&n), "{n} listing fetches for 20 clips");

    cancel.cancel();
    proxy_task.abort();
    let _ = proxy_task.await;
    relay.stop().await;
}
