//! One WebSocket connection: authentication at upgrade, the `Hello`
//! handshake, and the per-connection task.
//!
//! The task owns the socket, an idle timer and a publish limiter, and
//! shares an [`Outbox`] (bounded outbound queue plus close request) with the
//! room. It
//! answers `Ping` itself without touching the room, and sends everything
//! else to the room through the [`crate::Registry`], so an evicted room is
//! woken by the next frame. It holds no reference to the room between
//! frames.
//!
//! Close codes sent here: 1012 on shutdown, 4006 idle, 4002 protocol
//! errors (no `Hello`, repeated bad frames), 1009 oversized frame, 4003
//! sustained flooding, and whatever the room requested (4001, 4004, 4005,
//! 4007).

use crate::http::{authenticate, bearer, ApiError, AppState};
use crate::metrics::Metrics;
use crate::outbox::{Next, Outbox};
use crate::ratelimit::{PublishLimiter, Verdict};
use crate::room::{ConnId, Member, RoomMsg};
use crate::store::{unix_now, SessionInfo};
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use clipmesh_proto::{CloseCode, ErrorCode, Frame};
use futures_util::SinkExt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The subprotocol browsers offer (with `clipmesh.token.<token>`).
pub const SUBPROTOCOL: &str = "clipmesh.v1";
/// Prefix of the subprotocol entry carrying the token.
pub const TOKEN_PROTOCOL_PREFIX: &str = "clipmesh.token.";
/// Frames written to the socket per flush when the queue has a backlog.
const WRITE_BATCH: usize = 32;
/// Bytes a `Deliver` adds to the envelope (version, tag, seq, from).
const DELIVER_OVERHEAD: usize = 18;
/// How long a close handshake write may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Decrements the connection gauge when dropped.
struct ConnSlot(Arc<Metrics>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

fn protocol_token(headers: &HeaderMap) -> (Option<&str>, bool) {
    let mut token = None;
    let mut v1 = false;
    for v in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(v) = v.to_str() else { continue };
        for p in v.split(',').map(str::trim) {
            if p == SUBPROTOCOL {
                v1 = true;
            } else if let Some(t) = p.strip_prefix(TOKEN_PROTOCOL_PREFIX) {
                token = Some(t);
            }
        }
    }
    (token, v1)
}

/// `GET /api/v1/ws`: authenticates, checks the connection limit, upgrades.
pub(crate) async fn upgrade(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let (proto_token, wants_v1) = protocol_token(&headers);
    let token = bearer(&headers).or(proto_token);
    let session = match authenticate(&s, token).await {
        Ok(sess) => sess,
        Err(e) => {
            tracing::debug!(%peer, "websocket refused: bad token");
            return e.into_response();
        }
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return ApiError::bad_request(e.body_text()).into_response(),
    };
    if s.shutdown.is_cancelled() {
        return ApiError::unavailable("relay is restarting", 1).into_response();
    }
    let max = s.config.limits.max_connections;
    if s.metrics.connections.fetch_add(1, Ordering::Relaxed) >= max as i64 {
        s.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        return ApiError::unavailable("relay is full", 30).into_response();
    }
    let slot = ConnSlot(s.metrics.clone());
    let device = session.device;
    if let Err(e) = s
        .store
        .call(move |db| db.touch_device(device, unix_now()))
        .await
    {
        tracing::warn!(error = %e, "recording last_seen failed");
    }
    let l = &s.config.limits;
    let max_frame = l.max_frame as usize;
    let mut ws = ws
        .read_buffer_size(l.ws_read_buffer.max(64))
        .write_buffer_size(l.ws_write_buffer)
        .max_write_buffer_size(
            max_frame
                .saturating_mul(2)
                .max(l.ws_write_buffer.saturating_mul(2)),
        )
        .max_message_size(max_frame)
        .max_frame_size(max_frame);
    if wants_v1 {
        ws = ws.protocols([SUBPROTOCOL]);
    }
    let conn = ConnId(s.next_conn.fetch_add(1, Ordering::Relaxed));
    let tracker = s.tracker.clone();
    // Boxed, so axum's upgrade task holds a pointer rather than the whole
    // connection state machine, and the socket is stored once.
    ws.on_upgrade(move |socket| {
        let f = Box::pin(run(s, session, conn, socket, slot));
        tracker.track_future(f)
    })
}

/// Why the main loop ended.
enum End {
    /// Close with this code and tell the room we left.
    Close(CloseCode),
    /// The room asked for the close (it already forgot us).
    Requested(CloseCode),
    /// The socket is gone.
    Gone,
    /// Server shutdown.
    Shutdown,
}

async fn close(socket: &mut WebSocket, code: CloseCode) {
    let frame = CloseFrame {
        code: code.as_u16(),
        reason: code.reason().into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

async fn send_frame(socket: &mut WebSocket, f: &Frame, timeout: Duration) -> bool {
    let msg = Message::Binary(Bytes::from(f.encode()));
    matches!(
        tokio::time::timeout(timeout, socket.send(msg)).await,
        Ok(Ok(()))
    )
}

fn is_too_large(e: &axum::Error) -> bool {
    // tungstenite reports oversized messages as a capacity error; axum does
    // not expose its type, so match its stable message.
    let s = e.to_string();
    s.contains("too long") || s.contains("Space limit exceeded")
}

async fn run(
    s: Arc<AppState>,
    session: SessionInfo,
    conn: ConnId,
    mut socket: WebSocket,
    _slot: ConnSlot,
) {
    let span =
        tracing::debug_span!("conn", user = %session.user, device = %session.device, conn = conn.0);
    use tracing::Instrument;
    async move {
        tracing::debug!("connected");
        let end = session_loop(&s, &session, conn, &mut socket).await;
        match end {
            End::Close(code) => {
                tracing::debug!(code = code.as_u16(), "closing");
                close(&mut socket, code).await;
                let _ = s.registry.send(session.user, RoomMsg::Leave { conn }).await;
            }
            End::Requested(code) => {
                tracing::debug!(code = code.as_u16(), "closed by room");
                close(&mut socket, code).await;
            }
            End::Gone => {
                tracing::debug!("socket gone");
                // If the device sent a close frame, this writes tungstenite's
                // queued reply; on a dead socket it fails at once.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.flush()).await;
                let _ = s.registry.send(session.user, RoomMsg::Leave { conn }).await;
            }
            End::Shutdown => close(&mut socket, CloseCode::ServiceRestart).await,
        }
    }
    .instrument(span)
    .await;
}

async fn session_loop(
    s: &Arc<AppState>,
    session: &SessionInfo,
    conn: ConnId,
    socket: &mut WebSocket,
) -> End {
    let l = &s.config.limits;
    let write_timeout = Duration::from_secs(l.write_timeout_s.max(1));

    // 1. Hello (boxed: only needed once). Shutdown does not wait for it.
    let hello = Box::pin(tokio::time::timeout(
        Duration::from_secs(l.hello_timeout_s.max(1)),
        async {
            loop {
                match socket.recv().await {
                    Some(Ok(Message::Binary(b))) => match Frame::decode(&b) {
                        Ok(Frame::Hello { last_seen }) => return Ok(last_seen),
                        Ok(Frame::Ping { nonce }) => {
                            if !send_frame(socket, &Frame::Pong { nonce }, write_timeout).await {
                                return Err(End::Gone);
                            }
                        }
                        _ => return Err(End::Close(CloseCode::ProtocolError)),
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Text(_))) => return Err(End::Close(CloseCode::ProtocolError)),
                    Some(Err(e)) if is_too_large(&e) => {
                        return Err(End::Close(CloseCode::TooLarge))
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return Err(End::Gone),
                }
            }
        },
    ));
    let hello = tokio::select! {
        () = s.shutdown.cancelled() => return End::Shutdown,
        h = hello => h,
    };
    let last_seen = match hello {
        Ok(Ok(v)) => v,
        Ok(Err(end)) => return end,
        Err(_) => {
            tracing::debug!("no hello in time");
            return End::Close(CloseCode::ProtocolError);
        }
    };

    // 2. Join the room.
    let outbox = Outbox::new(l.outbound_queue, l.outbound_queue_bytes, s.metrics.clone());
    let member = Member {
        device: session.device,
        name: session.device_name.clone(),
        conn,
        port: outbox.clone(),
    };
    if s.registry
        .send(session.user, RoomMsg::Join { member, last_seen })
        .await
        .is_err()
    {
        return End::Shutdown;
    }
    // A revoke that landed after the token check but before the Join reached
    // the room missed this socket. Check again now that the room knows it:
    // any later revoke reaches the room after the Join (one FIFO inbox).
    let device = session.device;
    match s.store.call(move |db| db.device_active(device)).await {
        Ok(true) => {}
        Ok(false) => {
            outbox.detach();
            return End::Close(CloseCode::Unauthorized);
        }
        Err(e) => tracing::warn!(error = %e, "session re-check failed"),
    }
    let end = relay_loop(s, session, conn, socket, &outbox).await;
    outbox.detach();
    end
}

async fn relay_loop(
    s: &Arc<AppState>,
    session: &SessionInfo,
    conn: ConnId,
    socket: &mut WebSocket,
    outbox: &Outbox,
) -> End {
    let l = &s.config.limits;
    let write_timeout = Duration::from_secs(l.write_timeout_s.max(1));
    let idle = s.config.idle_timeout();

    // 3. Relay.
    let mut limiter = PublishLimiter::new(
        l.publish_per_s,
        l.publish_burst,
        l.rate_limit_strikes,
        Instant::now(),
    );
    let mut bad_frames = 0u32;
    let max_envelope = (l.max_frame as usize).saturating_sub(DELIVER_OVERHEAD);
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    loop {
        // Write what the room queued (a close request first), in batches.
        let write = async {
            let mut n = 0;
            while n < WRITE_BATCH {
                match outbox.pop() {
                    Next::Close(code) => return Ok(Some(End::Requested(code))),
                    Next::Frame(b) => socket.feed(Message::Binary(b)).await?,
                    Next::Empty => break,
                }
                n += 1;
            }
            if n > 0 {
                socket.flush().await?;
            }
            Ok::<_, axum::Error>(None)
        };
        let more = match tokio::time::timeout(write_timeout, write).await {
            Ok(Ok(Some(end))) => return end,
            Ok(Ok(None)) => !outbox.is_empty(),
            Ok(Err(_)) => return End::Gone,
            Err(_) => {
                tracing::debug!("write stalled");
                return End::Close(CloseCode::SlowConsumer);
            }
        };
        tokio::select! {
            biased;
            () = s.shutdown.cancelled() => return End::Shutdown,
            // Reading comes before waiting for the outbox: the top of the loop
            // writes the queue on every turn anyway, so neither side starves.
            msg = socket.recv() => {
                idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
                let bytes = match msg {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Text(_))) => {
                        bad_frames += 1;
                        if bad_frames >= l.bad_frame_strikes.max(1) {
                            return End::Close(CloseCode::ProtocolError);
                        }
                        let e = Frame::Error { code: ErrorCode::BadFrame, id: 0, message: "text messages are not accepted; send binary frames".into() };
                        if !send_frame(socket, &e, write_timeout).await { return End::Gone; }
                        continue;
                    }
                    Some(Err(e)) if is_too_large(&e) => return End::Close(CloseCode::TooLarge),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return End::Gone,
                };
                // Boxed: the handler's state is only needed while a frame is handled,
                // not while the socket idles.
                if let Some(end) = Box::pin(inbound(s, session, conn, socket, bytes, &mut limiter, &mut bad_frames, max_envelope, write_timeout)).await {
                    return end;
                }
            }
            () = outbox.changed(), if !more => {}
            () = &mut idle_timer => return End::Close(CloseCode::IdleTimeout),
            () = std::future::ready(()), if more => {}
        }
    }
}

/// Handles one binary message. `Some(end)` ends the connection.
#[allow(clippy::too_many_arguments)]
async fn inbound(
    s: &Arc<AppState>,
    session: &SessionInfo,
    conn: ConnId,
    socket: &mut WebSocket,
    bytes: Bytes,
    limiter: &mut PublishLimiter,
    bad_frames: &mut u32,
    max_envelope: usize,
    write_timeout: Duration,
) -> Option<End> {
    let l = &s.config.limits;
    let reply = |code: ErrorCode, id: u32, message: &str| Frame::Error {
        code,
        id,
        message: message.to_owned(),
    };
    // Pings are answered here, without decoding anything else or waking the
    // room.
    if Frame::peek_tag(&bytes).ok() == Some(Frame::PING_TAG) {
        if let Ok(Frame::Ping { nonce }) = Frame::decode(&bytes) {
            return (!send_frame(socket, &Frame::Pong { nonce }, write_timeout).await)
                .then_some(End::Gone);
        }
    }
    let frame = match Frame::decode(&bytes) {
        Ok(f) => f,
        Err(e) => {
            *bad_frames += 1;
            tracing::debug!(error = %e, "undecodable frame");
            if *bad_frames >= l.bad_frame_strikes.max(1) {
                return Some(End::Close(CloseCode::ProtocolError));
            }
            let f = reply(ErrorCode::BadFrame, 0, &format!("bad frame: {e}"));
            return (!send_frame(socket, &f, write_timeout).await).then_some(End::Gone);
        }
    };
    tracing::trace!(?frame, "frame");
    let msg = match frame {
        Frame::Publish { id, envelope } => {
            if envelope.len() > max_envelope {
                let f = reply(ErrorCode::TooLarge, id, "envelope too large");
                return (!send_frame(socket, &f, write_timeout).await).then_some(End::Gone);
            }
            match limiter.check(Instant::now()) {
                Verdict::Allow => RoomMsg::Publish { conn, id, envelope },
                Verdict::Reject => {
                    let f = reply(ErrorCode::RateLimited, id, "publishing too fast");
                    return (!send_frame(socket, &f, write_timeout).await).then_some(End::Gone);
                }
                Verdict::Close => return Some(End::Close(CloseCode::RateLimited)),
            }
        }
        Frame::Signal {
            peer,
            kind,
            payload,
        } => match limiter.check(Instant::now()) {
            Verdict::Allow => RoomMsg::Signal {
                conn,
                peer,
                kind,
                payload,
            },
            Verdict::Reject => {
                let f = reply(ErrorCode::RateLimited, 0, "signalling too fast");
                return (!send_frame(socket, &f, write_timeout).await).then_some(End::Gone);
            }
            Verdict::Close => return Some(End::Close(CloseCode::RateLimited)),
        },
        Frame::Pong { .. } | Frame::Error { .. } => return None,
        Frame::Chunk { .. } => {
            let f = reply(
                ErrorCode::Unexpected,
                0,
                "the relay does not reassemble chunks; publish frames up to max_frame",
            );
            return (!send_frame(socket, &f, write_timeout).await).then_some(End::Gone);
        }
        other => {
            let f = reply(
                ErrorCode::Unexpected,
                0,
                &format!("unexpected frame tag {:#04x}", other.tag()),
            );
            return (!send_frame(socket, &f, write_timeout).await).then_some(End::Gone);
        }
    };
    if s.registry.send(session.user, msg).await.is_err() {
        return Some(End::Shutdown);
    }
    None
}
