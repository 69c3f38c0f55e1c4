//! STOMP 1.1 on `/clipsocket`: one ClipCascade session per WebSocket.
//!
//! [`StompSession`] is the sans-IO core, in the relay's one idiom:
//! `handle_message(bytes, binary, now)` and `handle_delivery(body)` feed
//! it, `handle_timeout(now)` runs its timers, `poll_output()` drains what
//! it wants done ([`StompOutput`]) and `poll_timeout()` says when to call
//! it again. The task around it ([`run`]) owns the socket and joins the
//! user's room on `CONNECT`, like a clipmesh device on `Hello`.
//!
//! What the session enforces: `CONNECT` first (within the hello timeout),
//! `SEND` only to `/app/cliptext` with a JSON body
//! `{"payload": string, "type"?: string, "metadata"?: any}`, at most
//! [`MAX_SUBSCRIPTIONS`] subscriptions, the publish rate limit, and the
//! transport limit (2·L, enforced by the WebSocket itself). Bad input gets
//! an `ERROR` frame and the socket closes; the relay carries on.
//!
//! Deliveries: the room hands each ClipCascade member the compact JSON
//! body `{"payload","type","metadata"}` once per message; the session wraps
//! it in a `MESSAGE` per subscription to `/user/queue/cliptext`. Replies go
//! out as the client's last message came in: text or binary.

use super::{require, transport_limit, SEND_DESTINATION, USER_DESTINATION};
use crate::app::AppState;
use crate::outbox::{Next, Outbox};
use crate::ratelimit::{PublishLimiter, Verdict};
use crate::room::{CcPublish, ConnId, Join, Member, MemberKind, RoomMsg};
use crate::store::CcSession;
use crate::ws::{close, is_too_large, ConnSlot, CLOSE_TIMEOUT};
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use clipmesh_proto::stomp::{self, Command, StompFrame};
use clipmesh_proto::CloseCode;
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most subscriptions one session may hold.
pub const MAX_SUBSCRIPTIONS: usize = 8;
/// Longest `type` accepted in a message, bytes.
pub const MAX_TYPE: usize = 32;
/// Bytes of STOMP headers allowed on top of the 2·L body limit.
pub const HEADER_ALLOWANCE: usize = 16 * 1024;
/// Heart-beat periods missed before a silent client is closed.
const MISSED_BEATS: u32 = 3;

/// What the session wants done.
#[derive(Debug, PartialEq, Eq)]
pub enum StompOutput {
    /// Write one WebSocket message.
    Write {
        /// The bytes (one frame, or a heart-beat).
        bytes: Vec<u8>,
        /// As a binary message (else text).
        binary: bool,
    },
    /// The client connected: join the user's room.
    Join,
    /// Publish this message body to every ClipCascade session of the user.
    Publish(Bytes),
    /// Close the socket with this code (after the writes before it).
    Close(CloseCode),
}

/// A client's message, as far as the relay checks it.
#[derive(Deserialize)]
struct Incoming {
    payload: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

/// The body every session receives (compact JSON: no raw newline).
#[derive(Serialize)]
struct Outgoing<'a> {
    payload: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    metadata: &'a serde_json::Value,
}

/// The sans-IO STOMP session.
#[derive(Debug)]
pub struct StompSession {
    /// `CONNECT` has been answered.
    connected: bool,
    /// Ids of subscriptions to `/user/queue/cliptext`.
    subs: Vec<String>,
    /// Subscriptions to anything else (kept so counts are bounded).
    other_subs: usize,
    /// Prefix of this session's message ids.
    tag: u64,
    /// Message ids handed out.
    sent: u64,
    /// Reply as binary (the client's last message was binary).
    binary: bool,
    /// Decoder bounds.
    limits: stomp::Limits,
    /// Our heart-beat, offered in `CONNECTED`.
    heartbeat: Duration,
    /// Send a heart-beat this often (negotiated), and when next.
    send_every: Option<Duration>,
    next_beat: Option<Instant>,
    /// Expect something from the client this often (negotiated).
    expect_every: Option<Duration>,
    /// When the client last sent anything.
    last_rx: Instant,
    /// `CONNECT` must arrive by then.
    connect_by: Instant,
    /// An `ERROR` or `DISCONNECT` ended the session.
    closing: bool,
    out: VecDeque<StompOutput>,
}

impl StompSession {
    /// A session opened at `now`: `CONNECT` must come within
    /// `connect_timeout`; `max_message` bounds a message; `heartbeat` is
    /// the relay's own heart-beat period.
    pub fn new(
        tag: u64,
        max_message: usize,
        heartbeat: Duration,
        connect_timeout: Duration,
        now: Instant,
    ) -> Self {
        Self {
            connected: false,
            subs: Vec::new(),
            other_subs: 0,
            tag,
            sent: 0,
            binary: false,
            limits: stomp::Limits {
                max_message,
                ..stomp::Limits::default()
            },
            heartbeat,
            send_every: None,
            next_beat: None,
            expect_every: None,
            last_rx: now,
            connect_by: now + connect_timeout,
            closing: false,
            out: VecDeque::new(),
        }
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<StompOutput> {
        self.out.pop_front()
    }

    /// When [`StompSession::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closing {
            return None;
        }
        if !self.connected {
            return Some(self.connect_by);
        }
        let silent = self.expect_every.map(|e| self.last_rx + e * MISSED_BEATS);
        match (self.next_beat, silent) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the session has ended (nothing more is read).
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    fn write(&mut self, bytes: Vec<u8>) {
        self.out.push_back(StompOutput::Write {
            bytes,
            binary: self.binary,
        });
    }

    /// Answers bad input with `ERROR` and ends the session.
    fn error(&mut self, message: &str) {
        if self.closing {
            return;
        }
        let f = StompFrame::new(Command::Error)
            .header("message", message)
            .header("content-type", "text/plain")
            .body(message);
        self.write(f.encode());
        self.out
            .push_back(StompOutput::Close(CloseCode::ProtocolError));
        self.closing = true;
    }

    /// Runs the timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closing {
            return;
        }
        if !self.connected {
            if now >= self.connect_by {
                self.error("no CONNECT in time");
            }
            return;
        }
        if let Some(e) = self.expect_every {
            if now >= self.last_rx + e * MISSED_BEATS {
                self.error("heart-beat timeout");
                return;
            }
        }
        if let (Some(every), Some(at)) = (self.send_every, self.next_beat) {
            if now >= at {
                self.write(b"\n".to_vec());
                self.next_beat = Some(now + every);
            }
        }
    }

    /// One WebSocket message from the client.
    pub fn handle_message(&mut self, bytes: &[u8], binary: bool, now: Instant) {
        if self.closing {
            return;
        }
        self.last_rx = now;
        self.binary = binary;
        let frames = match stomp::decode(bytes, &self.limits) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "bad stomp message");
                return self.error(&format!("malformed frame: {e}"));
            }
        };
        for f in frames {
            self.frame(f, now);
            if self.closing {
                return;
            }
        }
    }

    fn receipt(&mut self, f: &StompFrame) {
        if let Some(r) = f.get("receipt") {
            let r = StompFrame::new(Command::Receipt).header("receipt-id", r);
            self.write(r.encode());
        }
    }

    fn frame(&mut self, f: StompFrame, now: Instant) {
        tracing::trace!(frame = ?f, "stomp frame");
        if !self.connected && !matches!(f.command, Command::Connect | Command::Stomp) {
            return self.error("expected CONNECT");
        }
        match f.command {
            Command::Connect | Command::Stomp => self.connect(&f, now),
            Command::Subscribe => {
                let (Some(id), Some(dest)) = (f.get("id"), f.get("destination")) else {
                    return self.error("SUBSCRIBE needs id and destination");
                };
                if self.subs.len() + self.other_subs >= MAX_SUBSCRIPTIONS {
                    return self.error("too many subscriptions");
                }
                if dest == USER_DESTINATION {
                    if !self.subs.iter().any(|s| s == id) {
                        self.subs.push(id.to_owned());
                    }
                } else {
                    // Accepted, as a STOMP broker would; nothing is ever
                    // sent there.
                    self.other_subs += 1;
                }
                self.receipt(&f);
            }
            Command::Unsubscribe => {
                let Some(id) = f.get("id") else {
                    return self.error("UNSUBSCRIBE needs id");
                };
                let before = self.subs.len();
                self.subs.retain(|s| s != id);
                if self.subs.len() == before {
                    self.other_subs = self.other_subs.saturating_sub(1);
                }
                self.receipt(&f);
            }
            Command::Send => self.send(&f),
            Command::Ack | Command::Nack | Command::Begin | Command::Commit | Command::Abort => {
                self.receipt(&f);
            }
            Command::Disconnect => {
                self.receipt(&f);
                self.out.push_back(StompOutput::Close(CloseCode::Normal));
                self.closing = true;
            }
            Command::Connected | Command::Message | Command::Receipt | Command::Error => {
                self.error("server frames are not accepted from clients");
            }
        }
    }

    fn connect(&mut self, f: &StompFrame, now: Instant) {
        if self.connected {
            return self.error("already connected");
        }
        let offered = f.get("accept-version").unwrap_or("1.0");
        let version = if offered.split(',').any(|v| v.trim() == "1.1") {
            "1.1"
        } else if offered.split(',').any(|v| v.trim() == "1.2") {
            "1.2"
        } else {
            return self.error("supported protocol versions are 1.1 and 1.2");
        };
        let ours = u64::try_from(self.heartbeat.as_millis()).unwrap_or(u64::MAX);
        let (cx, cy) = f
            .get("heart-beat")
            .and_then(|h| h.split_once(','))
            .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)))
            .unwrap_or((0, 0));
        if ours > 0 && cy > 0 {
            let every = Duration::from_millis(ours.max(cy));
            self.send_every = Some(every);
            self.next_beat = Some(now + every);
        }
        if ours > 0 && cx > 0 {
            self.expect_every = Some(Duration::from_millis(ours.max(cx)));
        }
        self.connected = true;
        let reply = StompFrame::new(Command::Connected)
            .header("version", version)
            .header("heart-beat", &format!("{ours},{ours}"))
            .header("server", "clipmesh-relay");
        self.write(reply.encode());
        self.out.push_back(StompOutput::Join);
    }

    fn send(&mut self, f: &StompFrame) {
        if f.get("destination") != Some(SEND_DESTINATION) {
            return self.error("unknown destination; send to /app/cliptext");
        }
        let msg: Incoming = match serde_json::from_slice(&f.body) {
            Ok(m) => m,
            Err(_) => {
                return self.error("body must be JSON {\"payload\": string, \"type\": string}")
            }
        };
        let kind = msg.kind.as_deref().unwrap_or("text");
        if kind.is_empty() || kind.len() > MAX_TYPE {
            return self.error("bad message type");
        }
        let null = serde_json::Value::Null;
        let body = Outgoing {
            payload: &msg.payload,
            kind,
            metadata: msg.metadata.as_ref().unwrap_or(&null),
        };
        match serde_json::to_vec(&body) {
            Ok(b) => {
                self.receipt(f);
                self.out.push_back(StompOutput::Publish(Bytes::from(b)));
            }
            Err(_) => self.error("message could not be re-encoded"),
        }
    }

    /// A message body from the room: one `MESSAGE` per subscription.
    pub fn handle_delivery(&mut self, body: &[u8]) {
        if self.closing {
            return;
        }
        for i in 0..self.subs.len() {
            self.sent += 1;
            let f = StompFrame {
                command: Command::Message,
                headers: vec![
                    ("destination".into(), USER_DESTINATION.into()),
                    ("subscription".into(), self.subs[i].clone()),
                    ("message-id".into(), format!("{}-{}", self.tag, self.sent)),
                    ("content-type".into(), "application/json".into()),
                ],
                body: body.to_vec(),
            };
            self.write(f.encode());
        }
    }
}

/// `GET /clipsocket`: needs the session cookie (401 without), then upgrades.
pub(super) async fn upgrade(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let session = match require(&s, &headers).await {
        Ok(sess) => sess,
        Err(r) => return r,
    };
    let (ws, slot) = match crate::ws::admit(&s, ws) {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    let device = session.device;
    let now = s.clock.unix_now();
    if let Err(e) = s.store.call(move |db| db.touch_device(device, now)).await {
        tracing::warn!(error = %e, "recording last_seen failed");
    }
    let max_message = usize::try_from(transport_limit(&s.config.clipcascade))
        .unwrap_or(usize::MAX)
        .saturating_add(HEADER_ALLOWANCE);
    let l = &s.config.limits;
    let ws = ws
        .read_buffer_size(l.ws_read_buffer.max(64))
        .write_buffer_size(l.ws_write_buffer)
        .max_write_buffer_size(max_message.saturating_mul(2))
        .max_message_size(max_message)
        .max_frame_size(max_message);
    let conn = ConnId(s.next_conn.fetch_add(1, Ordering::Relaxed));
    let tracker = s.tracker.clone();
    ws.on_upgrade(move |socket| {
        let f = Box::pin(run(s, session, conn, socket, slot, max_message));
        tracker.track_future(f)
    })
}

/// How the session ended.
enum End {
    /// Close with this code; tell the room if we joined.
    Close(CloseCode),
    /// The room asked for the close.
    Requested(CloseCode),
    /// The socket is gone.
    Gone,
    /// Server shutdown.
    Shutdown,
}

async fn run(
    s: Arc<AppState>,
    session: CcSession,
    conn: ConnId,
    mut socket: WebSocket,
    slot: ConnSlot,
    max_message: usize,
) {
    use tracing::Instrument;
    let span =
        tracing::debug_span!("cc", user = %session.user, device = %session.device, conn = conn.0);
    async move {
        let _slot = slot;
        tracing::debug!("clipcascade socket open");
        let outbox = Outbox::new(
            s.config.limits.outbound_queue,
            s.config.limits.outbound_queue_bytes.max(max_message),
            s.metrics.clone(),
        );
        let mut joined = false;
        let end = session_loop(
            &s,
            &session,
            conn,
            &mut socket,
            &outbox,
            &mut joined,
            max_message,
        )
        .await;
        outbox.detach();
        match end {
            End::Close(code) => close(&mut socket, code).await,
            End::Requested(code) => {
                close(&mut socket, code).await;
                joined = false;
            }
            End::Gone => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.flush()).await;
            }
            End::Shutdown => {
                close(&mut socket, CloseCode::ServiceRestart).await;
                joined = false;
            }
        }
        if joined {
            let _ = s.registry.send(session.user, RoomMsg::Leave { conn }).await;
        }
        tracing::debug!("clipcascade socket closed");
    }
    .instrument(span)
    .await;
}

#[allow(clippy::too_many_arguments)]
async fn session_loop(
    s: &Arc<AppState>,
    session: &CcSession,
    conn: ConnId,
    socket: &mut WebSocket,
    outbox: &Arc<Outbox>,
    joined: &mut bool,
    max_message: usize,
) -> End {
    let l = &s.config.limits;
    let write_timeout = Duration::from_secs(l.write_timeout_s.max(1));
    let mut core = StompSession::new(
        conn.0,
        max_message,
        Duration::from_secs(u64::from(s.config.clipcascade.heartbeat_s)),
        Duration::from_secs(l.hello_timeout_s.max(1)),
        Instant::now(),
    );
    let mut limiter: Option<PublishLimiter> = None;
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    let shutdown = s.shutdown.cancelled();
    tokio::pin!(shutdown);
    loop {
        // 1. Do what the core asks.
        while let Some(o) = core.poll_output() {
            match o {
                StompOutput::Write { bytes, binary } => {
                    let msg = if binary {
                        Message::Binary(Bytes::from(bytes))
                    } else {
                        match String::from_utf8(bytes) {
                            Ok(t) => Message::Text(t.into()),
                            Err(e) => Message::Binary(Bytes::from(e.into_bytes())),
                        }
                    };
                    match tokio::time::timeout(write_timeout, socket.send(msg)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return End::Gone,
                        Err(_) => return End::Close(CloseCode::SlowConsumer),
                    }
                }
                StompOutput::Join => {
                    let member = Member {
                        device: session.device,
                        name: session.device_name.clone(),
                        conn,
                        port: outbox.clone(),
                        kind: MemberKind::ClipCascade,
                    };
                    let join = RoomMsg::Join(Box::new(Join {
                        member,
                        last_seen: u64::MAX,
                    }));
                    if s.registry.send(session.user, join).await.is_err() {
                        return End::Shutdown;
                    }
                    *joined = true;
                    let device = session.device;
                    match s.store.call(move |db| db.cc_device_active(device)).await {
                        Ok(true) => {}
                        Ok(false) => return End::Close(CloseCode::Unauthorized),
                        Err(e) => tracing::warn!(error = %e, "session re-check failed"),
                    }
                }
                StompOutput::Publish(body) => {
                    let lim = limiter.get_or_insert_with(|| {
                        PublishLimiter::new(
                            l.publish_per_s,
                            l.publish_burst,
                            l.rate_limit_strikes,
                            Instant::now(),
                        )
                    });
                    match lim.check(Instant::now()) {
                        Verdict::Allow => {
                            let msg = RoomMsg::CcPublish(Box::new(CcPublish { conn, body }));
                            if let Err(msg) = s.registry.try_send(session.user, msg) {
                                if Box::pin(s.registry.send(session.user, msg)).await.is_err() {
                                    return End::Shutdown;
                                }
                            }
                        }
                        // STOMP has no per-message error that keeps the
                        // session: a dropped item is what a client sees
                        // from a lost frame; a flood ends the session.
                        Verdict::Reject => tracing::debug!("clipcascade publish rate-limited"),
                        Verdict::Close => return End::Close(CloseCode::RateLimited),
                    }
                }
                StompOutput::Close(code) => return End::Close(code),
            }
        }
        // 2. Room deliveries.
        match outbox.pop() {
            Next::Close(code) => return End::Requested(code),
            Next::Frame(body) => {
                core.handle_delivery(&body);
                continue;
            }
            Next::Empty => {}
        }
        if let Some(at) = core.poll_timeout() {
            timer.as_mut().reset(tokio::time::Instant::from_std(at));
        }
        tokio::select! {
            biased;
            () = &mut shutdown => return End::Shutdown,
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) => core.handle_message(&b, true, Instant::now()),
                Some(Ok(Message::Text(t))) => core.handle_message(t.as_bytes(), false, Instant::now()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(e)) if is_too_large(&e) => return End::Close(CloseCode::TooLarge),
                Some(Ok(Message::Close(_)) | Err(_)) | None => return End::Gone,
            },
            () = outbox.changed() => {}
            () = &mut timer, if core.poll_timeout().is_some() => core.handle_timeout(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn session(now: Instant) -> StompSession {
        StompSession::new(7, 4096, 20 * SEC, 10 * SEC, now)
    }

    fn drain(s: &mut StompSession) -> Vec<StompOutput> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    fn frames(out: &[StompOutput]) -> Vec<StompFrame> {
        out.iter()
            .filter_map(|o| match o {
                StompOutput::Write { bytes, .. } => Some(
                    stomp::decode(bytes, &stomp::Limits::default())
                        .unwrap()
                        .into_iter(),
                ),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn connect(s: &mut StompSession, now: Instant) {
        s.handle_message(
            b"CONNECT\naccept-version:1.0,1.1\nheart-beat:0,20000\n\n\0",
            false,
            now,
        );
        let out = drain(s);
        let f = frames(&out);
        assert_eq!(f[0].command, Command::Connected);
        assert_eq!(f[0].get("version"), Some("1.1"));
        assert_eq!(out.last(), Some(&StompOutput::Join));
        s.handle_message(
            b"SUBSCRIBE\nid:sub-0\ndestination:/user/queue/cliptext\n\n\0",
            false,
            now,
        );
        assert!(drain(s).is_empty());
    }

    #[test]
    fn connect_subscribe_send_and_deliver() {
        let t0 = Instant::now();
        let mut s = session(t0);
        connect(&mut s, t0);
        s.handle_message(
            b"SEND\ndestination:/app/cliptext\n\n{\"payload\":\"a\\nb\",\"type\":\"text\"}\0",
            true,
            t0,
        );
        let out = drain(&mut s);
        let [StompOutput::Publish(body)] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(
            &body[..],
            br#"{"payload":"a\nb","type":"text","metadata":null}"#
        );
        s.handle_delivery(body);
        let out = drain(&mut s);
        assert!(matches!(
            &out[..],
            [StompOutput::Write { binary: true, .. }]
        ));
        let f = &frames(&out)[0];
        assert_eq!(f.command, Command::Message);
        assert_eq!(f.get("subscription"), Some("sub-0"));
        assert_eq!(f.get("destination"), Some(USER_DESTINATION));
        assert_eq!(f.get("message-id"), Some("7-1"));
        assert_eq!(f.get("content-type"), Some("application/json"));
        assert_eq!(f.body, &body[..]);
        assert!(!f.body.contains(&b'\n'), "no raw newline in bodies");
    }

    #[test]
    fn type_defaults_and_metadata_passes_through() {
        let t0 = Instant::now();
        let mut s = session(t0);
        connect(&mut s, t0);
        s.handle_message(
            b"SEND\ndestination:/app/cliptext\n\n{\"payload\":\"x\",\"metadata\":{\"k\":[1]}}\0",
            false,
            t0,
        );
        let out = drain(&mut s);
        assert_eq!(
            out,
            vec![StompOutput::Publish(Bytes::from_static(
                br#"{"payload":"x","type":"text","metadata":{"k":[1]}}"#
            ))]
        );
    }

    #[test]
    fn heartbeats_are_sent_and_silence_is_not_required_without_client_beats() {
        let t0 = Instant::now();
        let mut s = session(t0);
        connect(&mut s, t0);
        assert_eq!(s.poll_timeout(), Some(t0 + 20 * SEC));
        s.handle_timeout(t0 + 20 * SEC);
        assert_eq!(
            drain(&mut s),
            vec![StompOutput::Write {
                bytes: b"\n".to_vec(),
                binary: false
            }]
        );
        assert_eq!(s.poll_timeout(), Some(t0 + 40 * SEC));
        // A client heart-beat is accepted and answered with nothing.
        s.handle_message(b"\n", false, t0 + 21 * SEC);
        assert!(drain(&mut s).is_empty());
        assert!(!s.is_closing());
    }

    #[test]
    fn silent_client_that_promised_beats_is_closed() {
        let t0 = Instant::now();
        let mut s = session(t0);
        s.handle_message(
            b"CONNECT\naccept-version:1.1\nheart-beat:10000,0\n\n\0",
            false,
            t0,
        );
        drain(&mut s);
        assert_eq!(s.poll_timeout(), Some(t0 + 60 * SEC));
        s.handle_timeout(t0 + 60 * SEC);
        let out = drain(&mut s);
        assert_eq!(frames(&out)[0].command, Command::Error);
        assert_eq!(
            out.last(),
            Some(&StompOutput::Close(CloseCode::ProtocolError))
        );
    }

    #[test]
    fn bad_input_gets_error_and_close() {
        let t0 = Instant::now();
        let cases: &[&[u8]] = &[
            b"SEND\ndestination:/app/cliptext\n\n{}\0",
            b"GARBAGE\n\n\0",
            b"SEND\ndestination:/app/other\n\n{\"payload\":\"x\"}\0",
            b"SEND\ndestination:/app/cliptext\n\nnot json\0",
            b"SEND\ndestination:/app/cliptext\n\n{\"payload\":1}\0",
            b"CONNECT\naccept-version:1.1\n\n\0",
            b"MESSAGE\n\n\0",
            b"SUBSCRIBE\nid:1\n\n\0",
        ];
        for c in cases {
            let mut s = session(t0);
            connect(&mut s, t0);
            s.handle_message(c, false, t0);
            let out = drain(&mut s);
            assert_eq!(frames(&out)[0].command, Command::Error, "{c:?}");
            assert_eq!(
                out.last(),
                Some(&StompOutput::Close(CloseCode::ProtocolError))
            );
            assert!(s.is_closing());
            // Nothing more is read.
            s.handle_message(
                b"SEND\ndestination:/app/cliptext\n\n{\"payload\":\"x\"}\0",
                false,
                t0,
            );
            assert!(drain(&mut s).is_empty());
        }
        // Before CONNECT.
        let mut s = session(t0);
        s.handle_message(
            b"SEND\ndestination:/app/cliptext\n\n{\"payload\":\"x\"}\0",
            false,
            t0,
        );
        assert_eq!(frames(&drain(&mut s))[0].command, Command::Error);
        // No CONNECT in time.
        let mut s = session(t0);
        s.handle_timeout(t0 + 10 * SEC);
        assert_eq!(frames(&drain(&mut s))[0].command, Command::Error);
    }

    #[test]
    fn subscriptions_are_bounded_and_receipts_answered() {
        let t0 = Instant::now();
        let mut s = session(t0);
        connect(&mut s, t0);
        s.handle_message(
            b"SUBSCRIBE\nid:x\ndestination:/topic/a\nreceipt:r1\n\n\0",
            false,
            t0,
        );
        let f = frames(&drain(&mut s));
        assert_eq!(f[0].command, Command::Receipt);
        assert_eq!(f[0].get("receipt-id"), Some("r1"));
        for i in 0..6 {
            s.handle_message(
                format!("SUBSCRIBE\nid:{i}\ndestination:/topic/a\n\n\0").as_bytes(),
                false,
                t0,
            );
        }
        assert!(drain(&mut s).is_empty());
        s.handle_message(b"SUBSCRIBE\nid:9\ndestination:/topic/a\n\n\0", false, t0);
        assert_eq!(frames(&drain(&mut s))[0].command, Command::Error);
    }

    #[test]
    fn disconnect_closes_after_receipt() {
        let t0 = Instant::now();
        let mut s = session(t0);
        connect(&mut s, t0);
        s.handle_message(b"DISCONNECT\nreceipt:77\n\n\0", false, t0);
        let out = drain(&mut s);
        assert_eq!(frames(&out)[0].get("receipt-id"), Some("77"));
        assert_eq!(out.last(), Some(&StompOutput::Close(CloseCode::Normal)));
    }
}
