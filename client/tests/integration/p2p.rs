//! Direct links: two daemon libraries with fake clipboards, a real relay,
//! WebRTC data channels on 127.0.0.1. The relay's `/metrics` tell which
//! path a clip took: `clipmesh_relay_frames_relayed_total` counts `Deliver`
//! frames the relay sent, `clipmesh_relay_signals_total` the `Signal` frames
//! it forwarded.

use crate::support::*;
use clipmesh::control::{self, Request, Status};
use clipmesh::daemon::Transport;
use clipmesh::p2p::Mode;
use clipmesh::Device;
use clipmesh_proto::ClipContent;
use clipmesh_relay::SignupPolicy;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A daemon on `dir` with transport `mode`.
fn peer(dir: &Path, mode: Mode) -> TestDaemon {
    peer_with(dir, mode, None)
}

fn peer_with(dir: &Path, mode: Mode, idle_close: Option<Duration>) -> TestDaemon {
    let transport = Transport {
        mode,
        bind: "127.0.0.1:0".into(),
        idle_close,
    };
    TestDaemon::start_with(dir, transport)
}

impl TestDaemon {
    /// Waits (bounded, polling the control socket) until `ok` holds.
    async fn wait_status(&self, what: &str, ok: impl Fn(&Status) -> bool) -> Status {
        let mut last = None;
        let r = tokio::time::timeout(STEP * 2, async {
            loop {
                if let Some(st) = self.status().await {
                    if ok(&st) {
                        return st;
                    }
                    last = Some(st);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        match r {
            Ok(st) => st,
            Err(_) => panic!("{what}: not reached in time; last status {last:?}"),
        }
    }

    async fn wait_link_open(&self) -> Status {
        self.wait_status("direct link open", |st| {
            st.peers.len() == 1 && st.peers[0].path == "p2p" && st.peers[0].link == "open"
        })
        .await
    }
}

/// One counter from the relay's `/metrics`.
async fn metric(relay: &TestRelay, name: &str) -> u64 {
    let url = format!("{}/metrics", relay.url);
    let body = tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    })
    .await
    .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
}

async fn two_devices(relay: &TestRelay) -> (tempfile::TempDir, tempfile::TempDir) {
    let a = device_dir();
    let b = device_dir();
    for (dir, cmd, name) in [(&a, "signup", "a"), (&b, "login", "b")] {
        let out = auth(cmd, dir.path(), &relay.url, "ann", PASSWORD, name).await;
        assert!(out.status.success(), "{out:?}");
    }
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_mode_syncs_both_ways_and_the_relay_carries_no_clip() {
    let relay = TestRelay::start(SignupPolicy::Open).await;
    let (a_dir, b_dir) = two_devices(&relay).await;
    let mut a = peer(a_dir.path(), Mode::P2p);
    let mut b = peer(b_dir.path(), Mode::P2p);
    let st = a.wait_link_open().await;
    assert_eq!((st.mode.as_str(), st.path.as_str()), ("p2p", "p2p"));
    b.wait_link_open().await;

    a.copy("from a over the direct link").await;
    assert_eq!(b.next_applied().await, "from a over the direct link");
    b.copy("from b over the direct link").await;
    assert_eq!(a.next_applied().await, "from b over the direct link");

    // The relay forwarded the (sealed) offer and answer, and not one clip.
    assert!(metric(&relay, "clipmesh_relay_signals_total").await >= 2);
    assert_eq!(
        metric(&relay, "clipmesh_relay_frames_relayed_total").await,
        0
    );
    assert_eq!(
        metric(&relay, "clipmesh_relay_bytes_relayed_total").await,
        0
    );

    // B leaves: A tears the link down and, in p2p mode, reports that B
    // would not get clips (no peer at all once presence drops it).
    b.stop().await.unwrap();
    a.wait_status("peer gone", |st| {
        st.peers.is_empty() && st.online.len() == 1
    })
    .await;
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_delivers_once_over_both_paths() {
    let relay = TestRelay::start(SignupPolicy::Open).await;
    let (a_dir, b_dir) = two_devices(&relay).await;
    let a = peer(a_dir.path(), Mode::Auto);
    let mut b = peer(b_dir.path(), Mode::Auto);
    let st = a.wait_link_open().await;
    assert_eq!((st.mode.as_str(), st.path.as_str()), ("auto", "relay+p2p"));
    b.wait_link_open().await;

    a.copy("first").await;
    assert_eq!(b.next_applied().await, "first");
    // The relay carried it as well (for devices without a link and for
    // the stored newest clip).
    let relayed = tokio::time::timeout(STEP, async {
        loop {
            if metric(&relay, "clipmesh_relay_frames_relayed_total").await >= 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(relayed.is_ok(), "the relay did not deliver the clip");
    a.copy("second").await;
    // The relay's copy of "first" is a duplicate: the next thing on B's
    // clipboard is "second" (a late "first" has a lower sequence number
    // and cannot be applied after it either).
    assert_eq!(b.next_applied().await, "second");
    assert!(b.applied.try_recv().is_err());
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_mode_without_a_peer_refuses_the_clip_and_relay_mode_opens_no_link() {
    let relay = TestRelay::start(SignupPolicy::Open).await;
    let (a_dir, b_dir) = two_devices(&relay).await;
    let a = peer(a_dir.path(), Mode::P2p);
    // B runs in relay mode: it never answers A's offer.
    let b = peer(b_dir.path(), Mode::Relay);
    let st = a
        .wait_status("peer listed", |st| {
            st.online.len() == 2 && st.peers.len() == 1
        })
        .await;
    assert_eq!(st.peers[0].path, "none");
    let stb = b.wait_status("b connected", |st| st.connected).await;
    assert_eq!((stb.mode.as_str(), stb.path.as_str()), ("relay", "relay"));
    assert!(stb.peers.is_empty());
    // `clipmesh send` through A's daemon: refused with one line.
    let resp = control::request(
        a.dir.as_path(),
        &Request::Send {
            text: "nobody to send to".into(),
        },
    )
    .await
    .unwrap();
    assert!(!resp.ok);
    let err = resp.error.unwrap();
    assert!(
        err.contains("no other device has an open direct link"),
        "{err}"
    );
    assert_eq!(
        metric(&relay, "clipmesh_relay_frames_relayed_total").await,
        0
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Everything the `clipmesh` crate logs at debug level in this test binary
/// (one global subscriber; tests only search it for their own lines).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        #[derive(Clone)]
        struct W(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = W(buf.clone());
        let sub = tracing_subscriber::fmt()
            .with_env_filter("clipmesh=debug")
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        let _ = tracing::subscriber::set_global_default(sub);
        buf
    })
    .clone()
}

fn logs_contain(logs: &Arc<Mutex<Vec<u8>>>, needle: &str) -> bool {
    String::from_utf8_lossy(&logs.lock().unwrap()).contains(needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_signalling_is_rejected_and_the_link_keeps_working() {
    let logs = captured_logs();
    let relay = TestRelay::start(SignupPolicy::Open).await;
    let (a_dir, b_dir) = two_devices(&relay).await;
    let c_dir = device_dir();
    let out = auth("login", c_dir.path(), &relay.url, "ann", PASSWORD, "c").await;
    assert!(out.status.success(), "{out:?}");
    let a_id = device_id(a_dir.path());
    let a = peer(a_dir.path(), Mode::P2p);
    let mut b = peer(b_dir.path(), Mode::P2p);
    a.wait_link_open().await;

    // C is a device of the same user that speaks the protocol by hand: it
    // sends A an "offer" that is not sealed under the account's signal key
    // (what a relay forging a fingerprint would have to do).
    let c = Device::load(c_dir.path()).unwrap();
    let (handle, commands) = clipmesh::link::channel();
    let (etx, mut erx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let link = tokio::spawn(clipmesh::link::run(
        clipmesh::LinkConfig {
            server: relay.url.clone(),
            token: c.secrets.token.clone().into(),
            last_seen: 0,
            seed: 7,
            roots: c.roots().unwrap(),
        },
        commands,
        etx,
        cancel.clone(),
    ));
    let connected = tokio::time::timeout(STEP, async {
        while let Some(ev) = erx.recv().await {
            if matches!(ev, clipmesh::LinkEvent::Connected { .. }) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(connected, Ok(true));
    let forged = b"v=0\r\na=fingerprint:sha-256 00:11:22 forged".to_vec();
    assert!(handle.signal(
        clipmesh_proto::DeviceId(a_id),
        clipmesh_proto::SignalKind::Offer,
        forged
    ));
    let rejected = tokio::time::timeout(STEP, async {
        loop {
            if logs_contain(&logs, "signalling message rejected: could not open") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(rejected.is_ok(), "no rejection line in the log");
    // Nothing of the forged payload reached the log.
    assert!(!logs_contain(&logs, "00:11:22 forged"));

    // C seals an offer properly (it holds the account's signal key) but
    // does not sign it, as a device passing itself off would: A pinned
    // C's signing key, so it refuses the unsigned payload.
    let mut codec = clipmesh_proto::SignalCodec::new(
        c.secrets.data_key.signal_key(),
        clipmesh_proto::DeviceId(c.account.device_id),
        1,
    );
    let unsigned = codec.seal(&clipmesh_proto::SignalMsg {
        kind: clipmesh_proto::SignalKind::Offer,
        target: clipmesh_proto::DeviceId(a_id),
        session: 9,
        body: "v=0 unsigned".into(),
    });
    assert!(handle.signal(
        clipmesh_proto::DeviceId(a_id),
        clipmesh_proto::SignalKind::Offer,
        unsigned
    ));
    let rejected = tokio::time::timeout(STEP, async {
        loop {
            if logs_contain(
                &logs,
                "signalling message rejected: unsigned, from a device that signs",
            ) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(rejected.is_ok(), "no rejection line for the unsigned offer");

    // A is unharmed: the direct link to B still carries clips.
    a.copy("still direct").await;
    assert_eq!(b.next_applied().await, "still direct");
    cancel.cancel();
    let _ = tokio::time::timeout(STEP, link).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_mode_sends_large_images_inline_up_to_its_limit() {
    let relay = TestRelay::start(SignupPolicy::Open).await;
    let (a_dir, b_dir) = two_devices(&relay).await;
    let a = peer(a_dir.path(), Mode::P2p);
    let mut b = peer(b_dir.path(), Mode::P2p);
    a.wait_link_open().await;
    b.wait_link_open().await;

    // 1 MiB: far above the 64 KiB inline threshold (auto and relay mode
    // would use the blob store); it crosses the link in 16 KiB chunks.
    let png: Vec<u8> = (0..(1u32 << 20) + 123)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    a.copy_content(ClipContent::Image {
        width: 1024,
        height: 768,
        png: png.clone(),
    })
    .await;
    match tokio::time::timeout(STEP, b.applied.recv()).await {
        Ok(Some(ClipContent::Image {
            width,
            height,
            png: got,
        })) => {
            assert_eq!((width, height), (1024, 768));
            assert!(got == png, "image bytes differ");
        }
        other => panic!(
            "no image applied: {:?}",
            other.map(|c| c.map(|c| c.kind_name()))
        ),
    }

    // Over the limit: refused with one line, nothing sent.
    let huge = vec![1u8; clipmesh::p2p::MAX_INLINE_IMAGE + 1];
    a.copy_content(ClipContent::Image {
        width: 1,
        height: 1,
        png: huge,
    })
    .await;
    let st = a
        .wait_status("refusal reported", |st| {
            st.last_error
                .as_deref()
                .is_some_and(|e| e.contains("--mode p2p sends images inline"))
        })
        .await;
    assert!(!st.last_error.unwrap().contains('\n'));
    assert_eq!(
        metric(&relay, "clipmesh_relay_frames_relayed_total").await,
        0
    );
    // The link still works after the refusal.
    a.copy("after the refusal").await;
    assert_eq!(b.next_applied().await, "after the refusal");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_closes_an_idle_link_and_the_next_clip_reopens_it() {
    let relay = TestRelay::start(SignupPolicy::Open).await;
    let (a_dir, b_dir) = two_devices(&relay).await;
    let idle = Some(Duration::from_secs(1));
    let a = peer_with(a_dir.path(), Mode::Auto, idle);
    let mut b = peer_with(b_dir.path(), Mode::Auto, idle);
    a.wait_link_open().await;
    // No clip for the idle time: both sides close the link and go dormant;
    // clips take the relay.
    for p in [&a, &b] {
        let st = p
            .wait_status("link dormant", |st| {
                st.peers.len() == 1 && st.peers[0].link == "dormant"
            })
            .await;
        assert_eq!(
            (st.path.as_str(), st.peers[0].path.as_str()),
            ("relay", "relay")
        );
    }
    // B (the higher id, which never offers on its own) copies: the clip
    // arrives through the relay and B's offer brings the link back.
    b.copy("wakes the link").await;
    let mut a = a;
    assert_eq!(a.next_applied().await, "wakes the link");
    a.wait_link_open().await;
    b.wait_link_open().await;
    a.copy("over the reopened link").await;
    assert_eq!(b.next_applied().await, "over the reopened link");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_links_open_under_a_new_epochs_signalling_key() {
    let relay = TestRelay::start(SignupPolicy::Open).await;
    let (a_dir, b_dir) = two_devices(&relay).await;
    let mut a = peer(a_dir.path(), Mode::P2p);
    let b = peer(b_dir.path(), Mode::P2p);
    b.wait_link_open().await;

    // A new epoch (a password change on A) while both run: both adopt it.
    let mut c = clipmesh(a_dir.path());
    c.args(["password", "--password-stdin"]);
    let out = run(c, Some(&format!("{PASSWORD}\nanother password\n"))).await;
    assert!(out.status.success(), "{out:?}");
    for d in [&a, &b] {
        d.wait_status("moved to epoch 2", |st| st.key_epoch == Some(2))
            .await;
    }
    // B restarts: it starts with epoch 2's signalling key, which A switched
    // to when it moved; the new link opens and carries a clip (p2p mode:
    // the relay carries none).
    b.stop().await.unwrap();
    a.wait_status("peer gone", |st| st.peers.is_empty()).await;
    let b = peer(b_dir.path(), Mode::P2p);
    b.wait_link_open().await;
    a.wait_link_open().await;
    b.copy("over a link signalled under epoch 2").await;
    assert_eq!(
        a.next_applied().await,
        "over a link signalled under epoch 2"
    );
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}
