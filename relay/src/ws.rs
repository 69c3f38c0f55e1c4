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

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{authenticate, bearer};
use crate::metrics::Metrics;
use crate::outbox::{Next, Outbox};
use crate::room::{ConnId, Join, Member, Publish, RoomMsg, Signal};
use crate::store::SessionInfo;
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use clipmesh_proto::{CloseCode, Frame};
use clipmesh_room::conn::{ConnLimits, ConnState, Inbound as Decided};
use futures_util::SinkExt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use clipmesh_room::auth::{SUBPROTOCOL, TOKEN_PROTOCOL_PREFIX};
/// Frames written to the socket per flush when the queue has a backlog.
const WRITE_BATCH: usize = 32;
/// How long a close handshake write may take.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// One place under `limits.max_connections`, held by a socket's task;
/// dropping it gives the place back (decrements the connection gauge).
pub(crate) struct ConnSlot(Arc<Metrics>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A WebSocket upgrade's answer to a bad request, a relay shutting down or
/// a full relay.
type Refused = Box<Response>;

/// What every WebSocket endpoint checks once the caller is authenticated
/// (`/api/v1/ws` and the ClipCascade sockets): a real upgrade request, the
/// relay not shutting down, a free place under `limits.max_connections`.
/// Gives the upgrade and the place it holds, or the refusal to send.
pub(crate) fn admit(
    s: &AppState,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<(WebSocketUpgrade, ConnSlot), Refused> {
    let ws = ws.map_err(|e| Box::new(ApiError::bad_request(e.body_text()).into_response()))?;
    if s.shutdown.is_cancelled() {
        return Err(Box::new(
            ApiError::unavailable("relay is restarting", 1).into_response(),
        ));
    }
    let max = s.config.limits.max_connections;
    if s.metrics.connections.fetch_add(1, Ordering::Relaxed) >= max as i64 {
        s.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        return Err(Box::new(
            ApiError::unavailable("relay is full", 30).into_response(),
        ));
    }
    Ok((ws, ConnSlot(s.metrics.clone())))
}

fn protocol_token(headers: &HeaderMap) -> (Option<&str>, bool) {
    clipmesh_room::auth::protocol_token(
        headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

/// `GET /api/v1/ws`: authenticates, checks the connection limit, upgrades.
pub(crate) async fn upgrade(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
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
    let (ws, slot) = match admit(&s, ws) {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    let device = session.device;
    let now = s.clock.unix_now();
    if let Err(e) = s.store.call(move |db| db.touch_device(device, now)).await {
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

/// Sends a close frame with `code`, waiting at most [`CLOSE_TIMEOUT`].
pub(crate) async fn close(socket: &mut WebSocket, code: CloseCode) {
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

/// Whether a read failed because the message was over the socket's limit.
pub(crate) fn is_too_large(e: &axum::Error) -> bool {
    // tungstenite reports oversized messages as a capacity error; axum does
    // not expose its type, so match its stable message.
    let s = e.to_string();
    s.contains("too long") || s.contains("Space limit exceeded")
}

/// The connection task. Only what an idle socket needs lives in its state:
/// the socket, the session, the idle loop's timers and the select futures.
/// The `Hello` handshake, replies, closing and leaving are separate boxed
/// futures that exist only while they run.
fn run(
    s: Arc<AppState>,
    session: SessionInfo,
    conn: ConnId,
    mut socket: WebSocket,
    slot: ConnSlot,
) -> impl std::future::Future<Output = ()> + Send {
    let span =
        tracing::debug_span!("conn", user = %session.user, device = %session.device, conn = conn.0);
    use tracing::Instrument;
    // Not an `async fn` with an inner `async move`: that would keep a second
    // copy of the socket and session in the task.
    async move {
        let _slot = slot;
        tracing::debug!("connected");
        let end = match Box::pin(handshake(&s, &session, conn, &mut socket)).await {
            Ok(outbox) => {
                let end = relay_loop(&s, &session, conn, &mut socket, &outbox).await;
                outbox.detach();
                end
            }
            Err(end) => end,
        };
        Box::pin(finish(&s, &session, conn, &mut socket, end)).await;
    }
    .instrument(span)
}

/// Closes the socket the way `end` says and tells the room we left.
async fn finish(
    s: &Arc<AppState>,
    session: &SessionInfo,
    conn: ConnId,
    socket: &mut WebSocket,
    end: End,
) {
    match end {
        End::Close(code) => {
            tracing::debug!(code = code.as_u16(), "closing");
            close(socket, code).await;
            let _ = s.registry.send(session.user, RoomMsg::Leave { conn }).await;
        }
        End::Requested(code) => {
            tracing::debug!(code = code.as_u16(), "closed by room");
            close(socket, code).await;
        }
        End::Gone => {
            tracing::debug!("socket gone");
            // If the device sent a close frame, this writes tungstenite's
            // queued reply; on a dead socket it fails at once.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.flush()).await;
            let _ = s.registry.send(session.user, RoomMsg::Leave { conn }).await;
        }
        End::Shutdown => close(socket, CloseCode::ServiceRestart).await,
    }
}

/// Waits for `Hello`, joins the room and re-checks the session. Gives the
/// connection's outbox, or how the connection ends.
async fn handshake(
    s: &Arc<AppState>,
    session: &SessionInfo,
    conn: ConnId,
    socket: &mut WebSocket,
) -> Result<Arc<Outbox>, End> {
    let l = &s.config.limits;
    let write_timeout = Duration::from_secs(l.write_timeout_s.max(1));

    // 1. Hello. Shutdown does not wait for it.
    let hello = tokio::time::timeout(Duration::from_secs(l.hello_timeout_s.max(1)), async {
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
                Some(Err(e)) if is_too_large(&e) => return Err(End::Close(CloseCode::TooLarge)),
                Some(Ok(Message::Close(_)) | Err(_)) | None => return Err(End::Gone),
            }
        }
    });
    let hello = tokio::select! {
        () = s.shutdown.cancelled() => return Err(End::Shutdown),
        h = hello => h,
    };
    let last_seen = match hello {
        Ok(Ok(v)) => v,
        Ok(Err(end)) => return Err(end),
        Err(_) => {
            tracing::debug!("no hello in time");
            return Err(End::Close(CloseCode::ProtocolError));
        }
    };

    // 2. Join the room.
    let outbox = Outbox::new(l.outbound_queue, l.outbound_queue_bytes, s.metrics.clone());
    let member = Member {
        device: session.device,
        name: session.device_name.clone(),
        conn,
        port: outbox.clone(),
        kind: crate::room::MemberKind::Native,
    };
    let join = RoomMsg::Join(Box::new(Join { member, last_seen }));
    if s.registry.send(session.user, join).await.is_err() {
        return Err(End::Shutdown);
    }
    // A revoke that landed after the token check but before the Join reached
    // the room missed this socket. Check again now that the room knows it:
    // any later revoke reaches the room after the Join (one FIFO inbox).
    let device = session.device;
    match s.store.call(move |db| db.device_active(device)).await {
        Ok(true) => {}
        Ok(false) => {
            outbox.detach();
            return Err(End::Close(CloseCode::Unauthorized));
        }
        Err(e) => {
            // Fail closed: a session that cannot be re-checked might have
            // been revoked. The device retries with back-off.
            tracing::warn!(error = %e, "session re-check failed; closing");
            outbox.detach();
            return Err(End::Close(CloseCode::TryAgainLater));
        }
    }
    Ok(outbox)
}

/// What one inbound binary message asks for.
enum Inbound {
    /// Nothing to do.
    Nothing,
    /// Forward this to the room.
    Room(RoomMsg),
    /// Write this frame back to the device.
    Reply(Frame),
    /// End the connection.
    End(End),
}

/// Writes what the room queued (a close request first), in batches of
/// [`WRITE_BATCH`] frames per flush, starting with `first`. `Some(end)`
/// ends the connection; `None` leaves more queued frames for the next turn.
async fn write_queued(socket: &mut WebSocket, outbox: &Outbox, first: Bytes) -> Option<End> {
    let write = async {
        socket.feed(Message::Binary(first)).await?;
        for _ in 1..WRITE_BATCH {
            match outbox.pop() {
                Next::Close(code) => return Ok(Some(End::Requested(code))),
                Next::Frame(b) => socket.feed(Message::Binary(b)).await?,
                Next::Empty => break,
            }
        }
        socket.flush().await?;
        Ok::<_, axum::Error>(None)
    };
    write.await.unwrap_or(Some(End::Gone))
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

    // 3. Relay. What each inbound message asks for is decided by the
    // shared sans-IO connection core; its limiter exists once the device
    // publishes: idle devices never do.
    let mut state = ConnState::new();
    let conn_limits = conn_limits(s);
    // The idle timer is moved forward only when it fires, not per frame.
    let mut last_rx = tokio::time::Instant::now();
    let origin = Instant::now();
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    // One registration with the shutdown token for the socket's life, not
    // one per turn.
    let shutdown = s.shutdown.cancelled();
    tokio::pin!(shutdown);
    loop {
        let more = match outbox.pop() {
            Next::Close(code) => return End::Requested(code),
            Next::Empty => false,
            Next::Frame(first) => {
                // Boxed: a write that waits for the socket is rare, and its
                // timer should not sit in every idle connection.
                let write =
                    tokio::time::timeout(write_timeout, write_queued(socket, outbox, first));
                match Box::pin(write).await {
                    Ok(Some(end)) => return end,
                    Ok(None) => !outbox.is_empty(),
                    Err(_) => {
                        tracing::debug!("write stalled");
                        return End::Close(CloseCode::SlowConsumer);
                    }
                }
            }
        };
        let action = tokio::select! {
            biased;
            () = &mut shutdown => return End::Shutdown,
            // Reading comes before waiting for the outbox: the top of the loop
            // writes the queue on every turn anyway, so neither side starves.
            msg = socket.recv() => {
                last_rx = tokio::time::Instant::now();
                match msg {
                    Some(Ok(Message::Binary(b))) => inbound(conn, state.handle_binary(&b, &conn_limits, origin.elapsed())),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Inbound::Nothing,
                    Some(Ok(Message::Text(_))) => inbound(conn, state.handle_text(&conn_limits)),
                    Some(Err(e)) if is_too_large(&e) => return End::Close(CloseCode::TooLarge),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return End::Gone,
                }
            }
            () = outbox.changed(), if !more => Inbound::Nothing,
            () = &mut idle_timer => {
                let deadline = last_rx + idle;
                if deadline <= tokio::time::Instant::now() {
                    return End::Close(CloseCode::IdleTimeout);
                }
                idle_timer.as_mut().reset(deadline);
                Inbound::Nothing
            }
            () = std::future::ready(()), if more => Inbound::Nothing,
        };
        match action {
            Inbound::Nothing => {}
            Inbound::Room(msg) => {
                // Most messages fit the room's inbox at once; waiting (and
                // the retry across an eviction) is boxed.
                if let Err(msg) = s.registry.try_send(session.user, msg) {
                    if Box::pin(s.registry.send(session.user, msg)).await.is_err() {
                        return End::Shutdown;
                    }
                }
            }
            Inbound::Reply(f) => {
                if !Box::pin(send_frame(socket, &f, write_timeout)).await {
                    return End::Gone;
                }
            }
            Inbound::End(end) => return end,
        }
    }
}

/// The shared connection core's limits from the relay's config.
fn conn_limits(s: &AppState) -> ConnLimits {
    let l = &s.config.limits;
    ConnLimits {
        max_frame: l.max_frame,
        publish_per_s: l.publish_per_s,
        publish_burst: l.publish_burst,
        rate_limit_strikes: l.rate_limit_strikes,
        bad_frame_strikes: l.bad_frame_strikes,
    }
}

/// Turns the connection core's decision into a room message, a reply or
/// an end. Pings were answered by the core without waking the room.
fn inbound(conn: ConnId, decided: Decided) -> Inbound {
    match decided {
        Decided::Nothing => Inbound::Nothing,
        Decided::Publish { id, envelope } => {
            tracing::trace!(id, len = envelope.len(), "publish");
            Inbound::Room(RoomMsg::Publish(Box::new(Publish { conn, id, envelope })))
        }
        Decided::Signal {
            peer,
            kind,
            payload,
        } => Inbound::Room(RoomMsg::Signal(Box::new(Signal {
            conn,
            peer,
            kind,
            payload,
        }))),
        Decided::Reply(f) => Inbound::Reply(f),
        Decided::Close(code) => Inbound::End(End::Close(code)),
    }
}
