//! Shutdown, restart and revocation.

use super::common::*;
use clipmesh_proto::Frame;

#[tokio::test]
async fn shutdown_closes_sockets_with_1012() {
    let relay = TestRelay::start().await;
    let ann = signup(&relay, "ann").await;
    let mut d = connect_dev(&relay, &ann.login.token, 0).await;
    // A socket still before its Hello is closed too, without waiting for
    // the Hello deadline.
    let mut early = ws_connect(&relay, Some(&ann.login.token)).await.unwrap();
    let handle = relay.handle.as_ref().unwrap();
    handle.shutdown();
    assert_eq!(close_code(&mut d.ws).await, Some(1012));
    assert_eq!(close_code(&mut early).await, Some(1012));
    tokio::time::timeout(std::time::Duration::from_secs(5), relay.stop())
        .await
        .expect("shutdown took too long");
}

#[tokio::test]
async fn sessions_and_newest_clip_survive_restart() {
    let relay = TestRelay::start().await;
    let ann = signup(&relay, "ann").await;
    let t2 = new_device(&relay, &ann, "d2").await.token;
    let mut a1 = connect_dev(&relay, &ann.login.token, 0).await;
    send(
        &mut a1.ws,
        &Frame::Publish {
            id: 1,
            envelope: b"kept".to_vec(),
        },
    )
    .await;
    assert_eq!(
        next_non_presence(&mut a1.ws).await,
        Frame::Ack { id: 1, seq: 1 }
    );
    let dir = relay.stop().await;
    assert_eq!(close_code(&mut a1.ws).await, Some(1012));

    let relay = TestRelay::start_in(dir, |_| {}).await;
    // The old tokens still work: nobody is logged out by a restart.
    let mut a1 = connect_dev(&relay, &ann.login.token, 1).await;
    let mut a2 = connect_dev(&relay, &t2, 0).await;
    assert_eq!(
        next_non_presence(&mut a2.ws).await,
        Frame::Deliver {
            seq: 1,
            from: a1.device,
            envelope: b"kept".to_vec()
        }
    );
    // Sequence numbers continue after the restart.
    send(
        &mut a1.ws,
        &Frame::Publish {
            id: 2,
            envelope: b"next".to_vec(),
        },
    )
    .await;
    assert_eq!(
        next_non_presence(&mut a1.ws).await,
        Frame::Ack { id: 2, seq: 2 }
    );
}

#[tokio::test]
async fn clip_ttl_expires_replay() {
    let relay = TestRelay::start_with(|c| c.room.clip_ttl_s = 0).await;
    let ann = signup(&relay, "ann").await;
    let t2 = new_device(&relay, &ann, "d2").await.token;
    let mut a1 = connect_dev(&relay, &ann.login.token, 0).await;
    send(
        &mut a1.ws,
        &Frame::Publish {
            id: 1,
            envelope: b"gone".to_vec(),
        },
    )
    .await;
    assert!(matches!(
        next_non_presence(&mut a1.ws).await,
        Frame::Ack { .. }
    ));
    let mut a2 = connect_dev(&relay, &t2, 0).await;
    send(&mut a2.ws, &Frame::Ping { nonce: 1 }).await;
    assert_eq!(
        next_non_presence(&mut a2.ws).await,
        Frame::Pong { nonce: 1 }
    );
}

#[tokio::test]
async fn revoked_device_is_closed_4001() {
    let relay = TestRelay::start().await;
    let ann = signup(&relay, "ann").await;
    let d2 = new_device(&relay, &ann, "d2").await;
    let mut a1 = connect_dev(&relay, &ann.login.token, 0).await;
    let mut a2 = connect_dev(&relay, &d2.token, 0).await;
    presence_with(&mut a1.ws, 2).await;
    let r = http(
        "DELETE",
        &format!("{}/api/v1/devices/{}", relay.url, d2.device_id.0),
        Some(&ann.login.token),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(close_code(&mut a2.ws).await, Some(4001));
    assert_eq!(presence_with(&mut a1.ws, 1).await, vec![a1.device]);
    assert_eq!(ws_connect(&relay, Some(&d2.token)).await.err(), Some(401));
}

#[tokio::test]
async fn client_close_is_answered_and_presence_updated() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let relay = TestRelay::start().await;
    let ann = signup(&relay, "ann").await;
    let t2 = new_device(&relay, &ann, "d2").await.token;
    let mut a1 = connect_dev(&relay, &ann.login.token, 0).await;
    let mut a2 = connect_dev(&relay, &t2, 0).await;
    presence_with(&mut a1.ws, 2).await;
    a2.ws
        .send(tokio_tungstenite::tungstenite::Message::Close(Some(
            CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            },
        )))
        .await
        .unwrap();
    // The relay answers the close handshake.
    assert_eq!(close_code(&mut a2.ws).await, Some(1000));
    assert_eq!(presence_with(&mut a1.ws, 1).await, vec![a1.device]);
}
