//! Rooms over real WebSockets: fan-out, isolation, presence, signalling,
//! replay of the newest clip, eviction and transparent wake.

use super::common::*;
use clipmesh_proto::{DeviceId, ErrorCode, Frame, SignalKind};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[tokio::test]
async fn fan_out_across_three_devices_and_isolation() {
    let relay = TestRelay::start().await;
    let ann = signup(&relay, "ann").await;
    let bob = signup(&relay, "bob").await;
    let t2 = new_device(&relay, &ann, "d2").await.token;
    let t3 = new_device(&relay, &ann, "d3").await.token;
    let mut a1 = connect_dev(&relay, &ann.login.token, 0).await;
    let mut a2 = connect_dev(&relay, &t2, 0).await;
    let mut a3 = connect_dev(&relay, &t3, 0).await;
    let mut b1 = connect_dev(&relay, &bob.login.token, 0).await;
    assert_eq!(a3.welcome_online, 3);
    assert_eq!(b1.welcome_online, 1);

    send(
        &mut a1.ws,
        &Frame::Publish {
            id: 9,
            envelope: b"sealed-1".to_vec(),
        },
    )
    .await;
    assert_eq!(
        next_non_presence(&mut a1.ws).await,
        Frame::Ack { id: 9, seq: 1 }
    );
    for d in [&mut a2, &mut a3] {
        assert_eq!(
            next_non_presence(&mut d.ws).await,
            Frame::Deliver {
                seq: 1,
                from: a1.device,
                envelope: b"sealed-1".to_vec()
            }
        );
    }
    // Bob publishes; Ann's devices must not see it, and Bob's clip gets
    // Bob's own sequence.
    send(
        &mut b1.ws,
        &Frame::Publish {
            id: 1,
            envelope: b"bob".to_vec(),
        },
    )
    .await;
    assert_eq!(
        next_non_presence(&mut b1.ws).await,
        Frame::Ack { id: 1, seq: 1 }
    );
    send(
        &mut a2.ws,
        &Frame::Publish {
            id: 2,
            envelope: b"sealed-2".to_vec(),
        },
    )
    .await;
    assert_eq!(
        next_non_presence(&mut a2.ws).await,
        Frame::Ack { id: 2, seq: 2 }
    );
    // The next thing a1 and a3 get is Ann's clip 2, not Bob's.
    for d in [&mut a1, &mut a3] {
        assert!(matches!(
            next_non_presence(&mut d.ws).await,
            Frame::Deliver { seq: 2, envelope, .. } if envelope == b"sealed-2"
        ));
    }
    assert!(metric(&relay, "clipmesh_relay_frames_relayed_total").await >= 4.0);
    assert_eq!(metric(&relay, "clipmesh_relay_connections").await, 4.0);
}

#[tokio::test]
async fn presence_on_join_and_leave() {
    let relay = TestRelay::start().await;
    let ann = signup(&relay, "ann").await;
    let t2 = new_device(&relay, &ann, "d2").await.token;
    let mut a1 = connect_dev(&relay, &ann.login.token, 0).await;
    let a2 = connect_dev(&relay, &t2, 0).await;
    let online = presence_with(&mut a1.ws, 2).await;
    assert!(online.contains(&a2.device) && online.contains(&a1.device));
    drop(a2);
    assert_eq!(presence_with(&mut a1.ws, 1).await, vec![a1.device]);
}

#[tokio::test]
async fn signalling_routes_and_reports_offline() {
    let relay = TestRelay::start().await;
    let ann = signup(&relay, "ann").await;
    let bob = signup(&relay, "bob").await;
    let t2 = new_device(&relay, &ann, "d2").await.token;
    let mut a1 = connect_dev(&relay, &ann.login.token, 0).await;
    let mut a2 = connect_dev(&relay, &t2, 0).await;
    let b1 = connect_dev(&relay, &bob.login.token, 0).await;
    send(
        &mut a1.ws,
        &Frame::Signal {
            peer: a2.device,
            kind: SignalKind::Offer,
            payload: b"v=0 sdp".to_vec(),
        },
    )
    .await;
    assert_eq!(
        next_non_presence(&mut a2.ws).await,
        Frame::Signal {
            peer: a1.device,
            kind: SignalKind::Offer,
            payload: b"v=0 sdp".to_vec()
        }
    );
    // Another user's device is "offline" as far as Ann is concerned.
    for target in [b1.device, DeviceId(999_999)] {
        send(
            &mut a1.ws,
            &Frame::Signal {
                peer: target,
                kind: SignalKind::Candidate,
                payload: vec![1],
            },
        )
        .await;
        assert!(matches!(
            next_non_presence(&mut a1.ws).await,
            Frame::Error {
                code: ErrorCode::PeerOffline,
                ..
            }
        ));
    }
    assert_eq!(metric(&relay, "clipmesh_relay_signals_total").await, 1.0);
}

#[tokio::test]
async fn newest_clip_replayed_on_reconnect_by_last_seen() {
    let relay = TestRelay::start().await;
    let ann = signup(&relay, "ann").await;
    let t2 = new_device(&relay, &ann, "d2").await.token;
    let mut a1 = connect_dev(&relay, &ann.login.token, 0).await;
    for (id, env) in [(1, b"old".to_vec()), (2, b"newest".to_vec())] {
        send(&mut a1.ws, &Frame::Publish { id, envelope: env }).await;
        assert!(matches!(
            next_non_presence(&mut a1.ws).await,
            Frame::Ack { .. }
        ));
    }
    // d2 was offline: it gets only the newest clip on joining.
    let mut a2 = connect_dev(&relay, &t2, 0).await;
    assert_eq!(
        next_non_presence(&mut a2.ws).await,
        Frame::Deliver {
            seq: 2,
            from: a1.device,
            envelope: b"newest".to_vec()
        }
    );
    drop(a2);
    // Having seen seq 2, it gets nothing on reconnect.
    let mut a2 = connect_dev(&relay, &t2, 2).await;
    send(&mut a2.ws, &Frame::Ping { nonce: 5 }).await;
    assert_eq!(
        next_non_presence(&mut a2.ws).await,
        Frame::Pong { nonce: 5 }
    );
    // The publisher is never replayed its own clip.
    drop(a1);
    let mut a1 = connect_dev(&relay, &ann.login.token, 0).await;
    send(&mut a1.ws, &Frame::Ping { nonce: 6 }).await;
    assert_eq!(
        next_non_presence(&mut a1.ws).await,
        Frame::Pong { nonce: 6 }
    );
}

#[tokio::test]
async fn room_evicted_while_idle_and_woken_transparently() {
    let relay = TestRelay::start_with(|c| c.room.evict_idle_s = 1).await;
    let ann = signup(&relay, "ann").await;
    let t2 = new_device(&relay, &ann, "d2").await.token;
    let mut a1 = connect_dev(&relay, &ann.login.token, 0).await;
    let mut a2 = connect_dev(&relay, &t2, 0).await;
    presence_with(&mut a1.ws, 2).await;
    send(
        &mut a1.ws,
        &Frame::Publish {
            id: 1,
            envelope: b"before".to_vec(),
        },
    )
    .await;
    assert!(matches!(
        next_non_presence(&mut a2.ws).await,
        Frame::Deliver { seq: 1, .. }
    ));
    assert!(matches!(
        next_non_presence(&mut a1.ws).await,
        Frame::Ack { seq: 1, .. }
    ));
    let registry = relay.handle().registry().clone();
    let user = a1.user;
    eventually(|| registry.is_hibernating(user)).await;
    assert_eq!(metric(&relay, "clipmesh_relay_rooms_active").await, 0.0);
    // Pings are answered while the room sleeps, without waking it.
    send(&mut a1.ws, &Frame::Ping { nonce: 1 }).await;
    assert_eq!(
        next_non_presence(&mut a1.ws).await,
        Frame::Pong { nonce: 1 }
    );
    assert!(registry.is_hibernating(user));
    // Devices listing still knows who is online.
    let r = http(
        "GET",
        &format!("{}/api/v1/devices", relay.url),
        Some(&ann.login.token),
        None,
    )
    .await;
    let devs = r.json()["devices"].as_array().unwrap().clone();
    assert!(devs.iter().all(|d| d["online"] == true), "{devs:?}");
    // The next frame wakes the room; sequence numbers continue.
    send(
        &mut a2.ws,
        &Frame::Publish {
            id: 2,
            envelope: b"after".to_vec(),
        },
    )
    .await;
    assert_eq!(
        next_non_presence(&mut a2.ws).await,
        Frame::Ack { id: 2, seq: 2 }
    );
    assert_eq!(
        next_non_presence(&mut a1.ws).await,
        Frame::Deliver {
            seq: 2,
            from: a2.device,
            envelope: b"after".to_vec()
        }
    );
    assert!(!registry.is_hibernating(user));
    assert!(metric(&relay, "clipmesh_relay_rooms_evicted_total").await >= 1.0);
    // Leaving while hibernated still updates presence.
    eventually(|| registry.is_hibernating(user)).await;
    drop(a2);
    assert_eq!(presence_with(&mut a1.ws, 1).await, vec![a1.device]);
}

#[tokio::test]
async fn browser_style_token_in_subprotocol() {
    let relay = TestRelay::start().await;
    let ann = signup(&relay, "ann").await;
    let mut req = relay.ws_url().into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(&format!("clipmesh.v1, clipmesh.token.{}", ann.login.token)).unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "clipmesh.v1"
    );
    send(&mut ws, &Frame::Hello { last_seen: 0 }).await;
    assert!(matches!(next_frame(&mut ws).await, Frame::Welcome { .. }));
}
