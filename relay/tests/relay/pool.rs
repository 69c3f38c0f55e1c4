//! The HTTP connection pool under hostile clients (issue 15, findings 2 and
//! 9): caps per client network and per user, a reserve that blob transfers
//! cannot take, a minimum upload rate, a write timeout on downloads, and a
//! lingering close so an early 4xx is readable.

use super::blob_client::*;
use super::common::*;
use clipmesh_proto::{BlobId, BlobLayout};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    s.connect(addr).await.unwrap()
}

/// Reads until the end of the answer's headers (or EOF); the status code,
/// or `None` if the connection ended or broke without one.
async fn status_of(s: &mut TcpStream) -> Option<u16> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("no answer and no close");
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Headers of a `PATCH` of blob `id` at offset 0 declaring `len` bytes.
fn patch_head(addr: SocketAddr, token: &str, id: &str, len: usize) -> String {
    format!(
        "PATCH /api/v1/blobs/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Upload-Offset: 0\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// A fresh blob of `plain` plaintext bytes created on the relay: its id and
/// sealed length. (The relay checks lengths only; any bytes will do.)
async fn new_blob(url: &str, token: &str, plain: u64) -> (String, usize) {
    let id = BlobId::generate().to_string();
    let len = BlobLayout::new(plain).unwrap().sealed_len();
    assert_eq!(create(url, token, &id, len).await.status, 201);
    (id, len as usize)
}

/// Finding 9: a client that sends a body the relay refuses before reading it
/// (too large, or no credentials) can finish sending it and read the answer,
/// as most HTTP clients do (they give up on the first failed write), instead
/// of a reset. The body is larger than the socket buffers between the two
/// ends hold, so without a lingering close the relay's reset comes while
/// the client is still writing.
#[tokio::test]
async fn an_early_refusal_is_readable_by_a_client_still_sending() {
    let relay = TestRelay::start().await;
    let addr = relay.handle().local_addr();
    let body = vec![b'x'; 8 << 20];
    let requests = [
        (
            format!(
                "POST /api/v1/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                body.len()
            ),
            413,
        ),
        (
            format!(
                "PATCH /api/v1/blobs/{} HTTP/1.1\r\nHost: {addr}\r\nUpload-Offset: 0\r\n\
                 Content-Length: {}\r\n\r\n",
                BlobId::generate(),
                body.len()
            ),
            401,
        ),
    ];
    for (head, want) in requests {
        for round in 0..5 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(&body)
                .await
                .unwrap_or_else(|e| panic!("sending the body broke off ({e}): {head}"));
            assert_eq!(status_of(&mut s).await, Some(want), "{head} round {round}");
        }
    }
    relay.stop().await;
}

/// Finding 2: one client network holds at most `max_http_connections_per_ip`
/// HTTP connections; other networks are still served.
#[tokio::test]
async fn http_connections_are_capped_per_client_network() {
    let relay = TestRelay::start_with(|c| c.limits.max_http_connections_per_ip = 2).await;
    let addr = relay.handle().local_addr();
    let _a = connect_from("127.0.0.1", addr).await;
    let _b = connect_from("127.0.0.1", addr).await;
    // Let the accept loop take both before the third arrives.
    eventually_served(addr, "127.0.0.2").await;
    let mut third = connect_from("127.0.0.1", addr).await;
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(
        status_of(&mut third).await,
        None,
        "a third from one network was served"
    );
    drop((_a, _b));
    eventually_served(addr, "127.0.0.1").await;
    relay.stop().await;
}

/// Polls `GET /healthz` from `from` until it is answered 200.
async fn eventually_served(addr: SocketAddr, from: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = connect_from(from, addr).await;
        let _ = c
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        if status_of(&mut c).await == Some(200) {
            return;
        }
        assert!(Instant::now() < deadline, "{from} not served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Finding 2: blob transfers are capped per user (429) and in total below
/// the pool (503), so logins still get in while stalled uploads hold every
/// transfer slot.
#[tokio::test]
async fn stalled_uploads_leave_the_reserve_to_logins() {
    let relay = TestRelay::start_with(|c| {
        c.limits.max_http_connections = 6;
        c.limits.http_reserved_connections = 2;
        c.limits.blob_transfers_per_user = 2;
    })
    .await;
    let addr = relay.handle().local_addr();
    let (ann, bob, cyd) = (
        signup(&relay, "ann").await,
        signup(&relay, "bob").await,
        signup(&relay, "cyd").await,
    );
    // Four uploads that send their headers and a few bytes, then stall.
    let mut stalled = Vec::new();
    for (i, who) in [&ann, &ann, &bob, &bob].into_iter().enumerate() {
        let (id, len) = new_blob(&relay.url, &who.login.token, 100_000).await;
        let mut s = connect_from(&format!("127.0.0.{}", i + 2), addr).await;
        s.write_all(patch_head(addr, &who.login.token, &id, len).as_bytes())
            .await
            .unwrap();
        s.write_all(&[0u8; 100]).await.unwrap();
        stalled.push(s);
    }
    let blobs = relay.handle().blobs().clone();
    eventually(|| blobs.transfers_running() == 4).await;
    // A third transfer of one user: 429; any user's beyond the total: 503.
    let (id, len) = new_blob(&relay.url, &ann.login.token, 1000).await;
    let r = patch(&relay.url, &ann.login.token, &id, 0, &vec![0u8; len]).await;
    assert_eq!((r.status, r.header("retry-after")), (429, Some("1")));
    let (id, len) = new_blob(&relay.url, &cyd.login.token, 1000).await;
    let r = patch(&relay.url, &cyd.login.token, &id, 0, &vec![0u8; len]).await;
    assert_eq!((r.status, r.header("retry-after")), (503, Some("1")));
    // The reserve: logins and WebSocket joins still get in.
    for _ in 0..3 {
        assert_eq!(login(&relay, &cyd, "d").await.status, 200);
    }
    let dev = connect_dev(&relay, &cyd.login.token, 0).await;
    drop(dev);
    drop(stalled);
    eventually(|| blobs.transfers_running() == 0).await;
    let r = patch(&relay.url, &cyd.login.token, &id, 0, &vec![0u8; len]).await;
    assert_eq!(r.status, 204);
    relay.stop().await;
}

/// Finding 2: an upload trickling tiny frames (each well inside the idle
/// time) ends once a window brings less than the minimum rate; what arrived
/// is kept.
#[tokio::test]
async fn a_trickling_upload_ends_at_the_minimum_rate() {
    let relay = TestRelay::start().await;
    let h = relay.handle();
    // Windows of 1 s at 4096 bytes/s (the default rate): 4 KiB per window.
    h.blobs().set_idle(Duration::from_secs(1));
    let addr = h.local_addr();
    let ann = signup(&relay, "ann").await;
    let (id, len) = new_blob(&relay.url, &ann.login.token, 100_000).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(patch_head(addr, &ann.login.token, &id, len).as_bytes())
        .await
        .unwrap();
    // 50 bytes every 100 ms (500 bytes/s) for up to 20 s.
    let (mut rd, mut wr) = s.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for _ in 0..200 {
            if wr.write_all(&[7u8; 50]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, rd.read(&mut buf))
            .await
            .expect("a trickling upload was kept beyond its first windows")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let took = started.elapsed();
    trickle.abort();
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(text.starts_with("http/1.1 408"), "{text}");
    assert!(took < Duration::from_secs(5), "ended after {took:?}");
    let kept: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("upload-offset:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(kept > 0 && kept % 50 == 0, "kept {kept}");
    assert_eq!(head(&relay.url, &ann.login.token, &id).await.offset(), kept);
    relay.stop().await;
}

/// Finding 2: a download whose client stops reading ends after the write
/// timeout and frees its transfer slot.
#[tokio::test]
async fn a_download_nobody_reads_ends_after_the_write_timeout() {
    let relay = TestRelay::start_with(|c| c.limits.http_write_timeout_s = 1).await;
    let addr = relay.handle().local_addr();
    let ann = signup(&relay, "ann").await;
    let t = &ann.login.token;
    // Larger than every socket buffer between the two ends.
    let (id, len) = new_blob(&relay.url, t, 24 << 20).await;
    let data: Vec<u8> = (0..len as u64).map(pattern).collect();
    for (i, piece) in data.chunks(16 << 20).enumerate() {
        let r = patch(&relay.url, t, &id, (i * (16 << 20)) as u64, piece).await;
        assert_eq!(r.status, 204);
    }
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    s.write_all(
        format!(
            "GET /api/v1/blobs/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {t}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let blobs = relay.handle().blobs().clone();
    eventually(|| blobs.transfers_running() == 1).await;
    // Never read: the relay gives up on the write and frees the slot.
    let deadline = Instant::now() + WAIT;
    while blobs.transfers_running() != 0 {
        assert!(
            Instant::now() < deadline,
            "a stalled download kept its slot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(s);
    relay.stop().await;
}

/// Finding 2 (floods of bad credentials): once a network's refused requests
/// (401, 429, 503) outrun `http_refusals_per_ip_per_s` and its burst, its new
/// connections are closed on accept; other networks are served.
#[tokio::test]
async fn a_network_flooding_bad_credentials_is_closed_on_accept() {
    let relay = TestRelay::start_with(|c| {
        c.limits.http_refusals_per_ip_per_s = 0.01;
        c.limits.http_refusals_burst = 5.0;
    })
    .await;
    let addr = relay.handle().local_addr();
    let bad = |from: &'static str| async move {
        let mut s = connect_from(from, addr).await;
        let _ = s
            .write_all(
                b"GET /api/v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\
                  Connection: close\r\n\r\n",
            )
            .await;
        status_of(&mut s).await
    };
    for i in 0..5 {
        assert_eq!(bad("127.0.0.3").await, Some(401), "refusal {i}");
    }
    assert_eq!(
        bad("127.0.0.3").await,
        None,
        "the sixth connection was served"
    );
    assert_eq!(
        bad("127.0.0.4").await,
        Some(401),
        "another network is served"
    );
    relay.stop().await;
}
