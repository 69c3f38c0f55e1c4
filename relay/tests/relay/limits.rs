//! Hostile or broken clients get a clear error or close code, and the relay
//! keeps serving everyone else.

use super::common::*;
use clipmesh_proto::{ErrorCode, Frame};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// After each abuse, the relay still serves a fresh device normally.
async fn still_serving(relay: &TestRelay, token: &str) {
    let mut d = connect_dev(relay, token, u64::MAX).await;
    send(&mut d.ws, &Frame::Ping { nonce: 42 }).await;
    assert_eq!(
        next_non_presence(&mut d.ws).await,
        Frame::Pong { nonce: 42 }
    );
}

#[tokio::test]
async fn oversized_frame_closes_1009() {
    let relay = TestRelay::start_with(|c| c.limits.max_frame = 64 * 1024).await;
    let ann = signup(&relay, "ann").await;
    let mut d = connect_dev(&relay, &ann.login.token, 0).await;
    let big = Frame::Publish {
        id: 1,
        envelope: vec![7; 100 * 1024],
    };
    // The relay may close while we are still writing; ignore send errors.
    let _ = d.ws.send(Message::Binary(Bytes::from(big.encode()))).await;
    assert_eq!(close_code(&mut d.ws).await, Some(1009));
    still_serving(&relay, &ann.login.token).await;
}

#[tokio::test]
async fn envelope_just_over_deliver_limit_is_refused_softly() {
    let relay = TestRelay::start_with(|c| c.limits.max_frame = 1024).await;
    let ann = signup(&relay, "ann").await;
    let mut d = connect_dev(&relay, &ann.login.token, 0).await;
    // Fits in max_frame as a Publish, but the Deliver would not.
    send(
        &mut d.ws,
        &Frame::Publish {
            id: 3,
            envelope: vec![0; 1024 - 10],
        },
    )
    .await;
    assert!(matches!(
        next_non_presence(&mut d.ws).await,
        Frame::Error {
            code: ErrorCode::TooLarge,
            id: 3,
            ..
        }
    ));
}

#[tokio::test]
async fn malformed_frames_get_bad_frame_then_4002() {
    let relay = TestRelay::start().await;
    let ann = signup(&relay, "ann").await;
    let mut d = connect_dev(&relay, &ann.login.token, 0).await;
    d.ws.send(Message::Binary(Bytes::from_static(&[1, 0xee, 0])))
        .await
        .unwrap();
    assert!(matches!(
        next_non_presence(&mut d.ws).await,
        Frame::Error {
            code: ErrorCode::BadFrame,
            ..
        }
    ));
    d.ws.send(Message::Text("hello".into())).await.unwrap();
    assert!(matches!(
        next_non_presence(&mut d.ws).await,
        Frame::Error {
            code: ErrorCode::BadFrame,
            ..
        }
    ));
    // A frame type that is not for the relay: Unexpected, not a strike.
    send(&mut d.ws, &Frame::Ack { id: 1, seq: 1 }).await;
    assert!(matches!(
        next_non_presence(&mut d.ws).await,
        Frame::Error {
            code: ErrorCode::Unexpected,
            ..
        }
    ));
    d.ws.send(Message::Binary(Bytes::from_static(&[9])))
        .await
        .unwrap();
    assert_eq!(close_code(&mut d.ws).await, Some(4002));
    still_serving(&relay, &ann.login.token).await;
}

#[tokio::test]
async fn hello_required_first() {
    let relay = TestRelay::start().await;
    let ann = signup(&relay, "ann").await;
    let mut ws = ws_connect(&relay, Some(&ann.login.token)).await.unwrap();
    send(
        &mut ws,
        &Frame::Publish {
            id: 1,
            envelope: vec![],
        },
    )
    .await;
    assert_eq!(close_code(&mut ws).await, Some(4002));
}

#[tokio::test]
async fn silent_sockets_time_out() {
    let relay = TestRelay::start_with(|c| {
        c.limits.hello_timeout_s = 1;
        c.limits.idle_timeout_s = 1;
    })
    .await;
    let ann = signup(&relay, "ann").await;
    let mut ws = ws_connect(&relay, Some(&ann.login.token)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(4002));
    let mut d = connect_dev(&relay, &ann.login.token, 0).await;
    assert_eq!(close_code(&mut d.ws).await, Some(4006));
}

#[tokio::test]
async fn publish_flood_is_rate_limited_then_closed() {
    let relay = TestRelay::start_with(|c| {
        c.limits.publish_per_s = 1.0;
        c.limits.publish_burst = 5.0;
        c.limits.rate_limit_strikes = 10;
    })
    .await;
    let ann = signup(&relay, "ann").await;
    let mut d = connect_dev(&relay, &ann.login.token, 0).await;
    let mut acks = 0;
    let mut limited = 0;
    for id in 0..200u32 {
        let f = Frame::Publish {
            id,
            envelope: vec![1; 10],
        };
        if d.ws
            .send(Message::Binary(Bytes::from(f.encode())))
            .await
            .is_err()
        {
            break;
        }
    }
    let code = loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut d.ws))
            .await
            .unwrap()
        {
            Some(Ok(Message::Binary(b))) => match Frame::decode(&b).unwrap() {
                Frame::Ack { .. } => acks += 1,
                Frame::Error {
                    code: ErrorCode::RateLimited,
                    ..
                } => limited += 1,
                _ => {}
            },
            Some(Ok(Message::Close(c))) => break c.map(|c| u16::from(c.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(code, Some(4003));
    // Acks travel through the room and may still be queued when the close
    // goes out; never more than the burst.
    assert!(acks <= 5, "acks {acks}");
    assert!(limited >= 5, "limited {limited}");
    still_serving(&relay, &ann.login.token).await;
}

#[tokio::test]
async fn too_many_devices_4004_and_same_device_replaced_4007() {
    let relay = TestRelay::start_with(|c| c.limits.max_devices_per_user = 2).await;
    let ann = signup(&relay, "ann").await;
    let t2 = new_device(&relay, &ann, "d2").await.token;
    let t3 = new_device(&relay, &ann, "d3").await.token;
    let mut a1 = connect_dev(&relay, &ann.login.token, 0).await;
    let _a2 = connect_dev(&relay, &t2, 0).await;
    let mut ws = ws_connect(&relay, Some(&t3)).await.unwrap();
    send(&mut ws, &Frame::Hello { last_seen: 0 }).await;
    assert_eq!(close_code(&mut ws).await, Some(4004));
    // Same device again: the old socket is closed with 4007.
    let _a1b = connect_dev(&relay, &ann.login.token, 0).await;
    assert_eq!(close_code(&mut a1.ws).await, Some(4007));
}

#[tokio::test]
async fn total_connection_limit_is_503_before_upgrade() {
    let relay = TestRelay::start_with(|c| c.limits.max_connections = 2).await;
    let ann = signup(&relay, "ann").await;
    let t2 = new_device(&relay, &ann, "d2").await.token;
    let _a = connect_dev(&relay, &ann.login.token, 0).await;
    let _b = connect_dev(&relay, &t2, 0).await;
    assert_eq!(ws_connect(&relay, Some(&t2)).await.err(), Some(503));
}

#[tokio::test]
async fn slow_reader_is_dropped_with_4005_and_queue_stays_bounded() {
    let relay = TestRelay::start_with(|c| {
        c.limits.outbound_queue = 8;
        c.limits.publish_per_s = 10_000.0;
        c.limits.publish_burst = 10_000.0;
        c.limits.write_timeout_s = 60;
    })
    .await;
    let ann = signup(&relay, "ann").await;
    let t2 = new_device(&relay, &ann, "slow").await.token;
    let mut fast = connect_dev(&relay, &ann.login.token, 0).await;
    // The slow device says Hello and then never reads.
    let mut slow = connect_dev(&relay, &t2, 0).await;
    presence_with(&mut fast.ws, 2).await;
    let envelope = vec![0x5a; 60 * 1024];
    // Publish until the relay gives up on the slow device (presence drops
    // to 1). Kernel socket buffers absorb a few MiB first; the loop is
    // bounded.
    let mut dropped = false;
    for id in 0..2000u32 {
        send(
            &mut fast.ws,
            &Frame::Publish {
                id,
                envelope: envelope.clone(),
            },
        )
        .await;
        loop {
            match next_frame(&mut fast.ws).await {
                Frame::Ack { id: a, .. } if a == id => break,
                Frame::Presence { online } if online.len() == 1 => dropped = true,
                _ => {}
            }
        }
        if id % 25 == 0 {
            // The relay never queues more than the slow device's bound
            // (8 frames here) plus a few small frames for the fast one.
            let queued = metric(&relay, "clipmesh_relay_outbound_queued_bytes").await;
            assert!(
                queued <= (8 * (60 * 1024 + 18) + 4096) as f64,
                "queued {queued}"
            );
        }
        if dropped {
            break;
        }
    }
    assert!(dropped, "slow device never dropped");
    // The dropped device's queue is released.
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric(&relay, "clipmesh_relay_outbound_queued_bytes").await > 0.0 {
        assert!(tokio::time::Instant::now() < deadline, "queue not released");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric(&relay, "clipmesh_relay_slow_consumers_total").await,
        1.0
    );
    // Now the slow device reads: queued frames, then close 4005.
    assert_eq!(close_code(&mut slow.ws).await, Some(4005));
    still_serving(&relay, &t2).await;
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_http_connections_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = TestRelay::start_with(|c| {
        c.limits.http_header_timeout_s = 1;
        c.limits.max_http_connections = 2;
    })
    .await;
    let addr = relay.handle().local_addr();
    // Slowloris: half a request line, then silence. The relay hangs up.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HT").await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(WAIT, slow.read_to_end(&mut buf))
        .await
        .expect("relay kept a slow client")
        .unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).contains("200 OK"));

    // Two idle connections fill the cap; a third is closed at once.
    let _a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, third.read_to_end(&mut buf))
        .await
        .expect("over-cap connection not closed");
    assert!(buf.is_empty(), "over-cap connection was served");
    // Once the idle ones are gone, requests are served again.
    drop((_a, _b));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = c
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(WAIT, c.read_to_end(&mut buf)).await;
        if String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay did not recover"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
