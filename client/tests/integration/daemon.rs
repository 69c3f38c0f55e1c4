//! The daemon library with a fake clipboard against a real relay: sync both
//! ways, echo suppression, control socket, relay restart, missed clips,
//! revocation.

use crate::support::*;
use clipmesh::control::{self, Request, Status};
use clipmesh::daemon::{run_daemon, DaemonError};
use clipmesh::Device;
use clipmesh_proto::DeviceId;
use clipmesh_relay::SignupPolicy;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

impl TestDaemon {
    /// Waits (bounded) until the daemon reports a live link with `n`
    /// devices online.
    async fn wait_connected(&self, n: usize) -> Status {
        let r = tokio::time::timeout(STEP, async {
            loop {
                if let Some(st) = self.status().await {
                    if st.connected && st.online.len() == n {
                        return st;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        r.expect("daemon did not connect in time")
    }
}

/// The password after A revokes B (a revoke starts a new epoch).
const NEW_PASSWORD: &str = "the password after the revoke";
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_sync_survive_restart_and_stop_on_revocation() {
    let mut relay = TestRelay::start(SignupPolicy::Open).await;
    let a_dir = device_dir();
    let b_dir = device_dir();
    let c_dir = device_dir();
    assert!(
        auth("signup", a_dir.path(), &relay.url, "ann", PASSWORD, "a")
            .await
            .status
            .success()
    );
    // Another user's device must see nothing.
    assert!(
        auth("signup", c_dir.path(), &relay.url, "cat", PASSWORD, "c")
            .await
            .status
            .success()
    );
    // B logs in last, so it holds the highest device id.
    assert!(
        auth("login", b_dir.path(), &relay.url, "ann", PASSWORD, "b")
            .await
            .status
            .success()
    );

    let mut a = TestDaemon::start(a_dir.path());
    let mut b = TestDaemon::start(b_dir.path());
    let mut c = TestDaemon::start(c_dir.path());
    a.wait_connected(2).await;
    let st = b.wait_connected(2).await;
    assert_eq!(st.path, "relay");
    c.wait_connected(1).await;

    // A second daemon on the same config directory is refused.
    let dup = Device::load(a_dir.path()).unwrap();
    let (_tx, rx) = mpsc::channel(1);
    let (atx, _arx) = mpsc::unbounded_channel();
    let err = run_daemon(
        a_dir.path(),
        dup,
        FakeClipboard(atx),
        rx,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("already running"), "{err}");

    // A → B.
    a.copy("one").await;
    assert_eq!(b.next_applied().await, "one");
    // B's watcher reporting the applied item back is not a new clip; B's
    // next real copy reaches A, with no echo of "one" before it. Copying
    // what the clipboard already holds again does nothing either. B handles
    // its local changes in order, so once A has "three", B has handled all
    // of them (nothing of B's is still queued when A sends below).
    b.copy("one").await;
    b.copy("two").await;
    b.copy("two").await;
    b.copy("three").await;
    assert_eq!(a.next_applied().await, "two");
    assert_eq!(a.next_applied().await, "three");
    assert!(a.applied.try_recv().is_err(), "echo reached A");

    // `clipmesh send` through the control socket.
    let resp = control::request(
        a_dir.path(),
        &Request::Send {
            text: "via control".into(),
        },
    )
    .await
    .unwrap();
    assert!(resp.ok, "{resp:?}");
    assert!(resp.seq.is_some());
    assert_eq!(b.next_applied().await, "via control");
    let st = a.status().await.unwrap();
    assert!(st.last_sync_ms.is_some());
    assert_eq!(st.device_id, device_id(a_dir.path()));

    // Relay restart: both reconnect by themselves and sync resumes.
    relay.restart().await;
    a.wait_connected(2).await;
    b.wait_connected(2).await;
    a.copy("after restart").await;
    assert_eq!(b.next_applied().await, "after restart");

    // B goes away; A copies; B comes back and gets the clip it missed.
    b.stop().await.unwrap();
    a.wait_connected(1).await;
    a.copy("while you were away").await;
    // Wait until the relay acknowledged it (status records the sync).
    let mut b = TestDaemon::start(b_dir.path());
    assert_eq!(b.next_applied().await, "while you were away");
    b.wait_connected(2).await;

    // The other user's daemon saw none of it.
    assert!(c.applied.try_recv().is_err());

    // Revocation: A revokes B; B's daemon stops with the revocation error.
    // The account uses key epochs, so the v1 revoke (no new epoch, B would
    // keep the key) is refused with 409; `clipmesh devices --revoke` starts
    // a new epoch and changes the password.
    let api = clipmesh::Api::new(&relay.url);
    let tok = token(a_dir.path());
    let id_b = device_id(b_dir.path());
    let refused = tokio::task::spawn_blocking(move || api.revoke(&tok, DeviceId(id_b)))
        .await
        .unwrap();
    assert!(
        matches!(
            &refused,
            Err(clipmesh::api::ApiError::Other { status: 409, .. })
        ),
        "{refused:?}"
    );
    let mut cmd = clipmesh(a_dir.path());
    cmd.args(["devices", "--revoke", &id_b.to_string(), "--password-stdin"]);
    let out = run(cmd, Some(&format!("{PASSWORD}\n{NEW_PASSWORD}\n"))).await;
    assert!(out.status.success(), "{out:?}");
    let r = tokio::time::timeout(STEP, &mut b.task)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r, Err(DaemonError::Revoked)), "{r:?}");
    assert_eq!(
        DaemonError::Revoked.to_string(),
        "this device's session was revoked; run `clipmesh login` again"
    );

    // B logs in again. The relay may hand out the same device id again;
    // A, still running, has seen that id's old sequence numbers and must
    // still accept the new device's clips.
    let out = auth("login", b_dir.path(), &relay.url, "ann", NEW_PASSWORD, "b2").await;
    assert!(out.status.success(), "{out:?}");
    let b = TestDaemon::start(b_dir.path());
    b.wait_connected(2).await;
    b.copy("from the new b").await;
    assert_eq!(a.next_applied().await, "from the new b");

    b.stop().await.unwrap();
    a.stop().await.unwrap();
    c.stop().await.unwrap();
    relay.stop().await;
}
