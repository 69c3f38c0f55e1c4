//! The relay link: a thin tokio driver around [`Session`] and [`Backoff`].
//!
//! [`run`] connects to `ws(s)://server/api/v1/ws` with the device token,
//! drives one [`Session`] per connection, and reconnects according to
//! [`Backoff`] until cancelled or the session is revoked. The application
//! talks to it through a [`LinkHandle`] (publish) and a channel of
//! [`LinkEvent`]s (everything received).
//!
//! Signalling for direct links ([`crate::p2p`]) goes out through
//! [`LinkHandle::signal`] and comes back as [`LinkEvent::Signal`]. Signals
//! are never queued while offline: a direct-link attempt that loses one
//! times out and retries.
//!
//! Publishes survive reconnects: anything not acknowledged when a
//! connection drops is sent again on the next one (receivers drop the
//! duplicate by origin sequence number). At most [`MAX_PENDING`] wait while
//! offline; older ones are superseded, since only the newest clip matters.

use crate::backoff::{Backoff, Disconnect, Next, StopReason};
use crate::config::ws_url;
use crate::session::{ClockWatch, Session, SessionEvent};
use crate::tls::TrustRoots;
use crate::token::TokenCell;
use clipmesh_proto::{CloseCode, DeviceId, DeviceInfo, ErrorCode, SignalKind};
use futures_util::{SinkExt, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// Publishes kept while offline.
pub const MAX_PENDING: usize = 8;
/// Depth of the publish command queue.
pub const COMMAND_QUEUE: usize = 32;
/// Depth of the outgoing signal queue.
pub const SIGNAL_QUEUE: usize = 32;
/// Depth of the event queue towards the application.
pub const EVENT_QUEUE: usize = 64;
/// Time allowed for TCP + TLS + WebSocket upgrade.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Frame limit assumed until the relay's `Welcome` says otherwise.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;
/// Longest a single frame write may take before the link counts as dead.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest the goodbye close frame may take at shutdown.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest message accepted from the relay (a frame plus slack).
pub const MAX_INBOUND: usize = 16 << 20;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the link needs to connect.
pub struct LinkConfig {
    /// Relay base URL (`http(s)://…`).
    pub server: String,
    /// Device token (shared with the renewal task, which may replace it;
    /// each connection attempt presents the current one).
    pub token: TokenCell,
    /// Newest room sequence already seen (sent in `Hello`).
    pub last_seen: u64,
    /// Seed for the back-off jitter.
    pub seed: u64,
    /// Certificates trusted for `wss://`.
    pub roots: TrustRoots,
}

impl std::fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkConfig")
            .field("server", &self.server)
            .field("last_seen", &self.last_seen)
            .finish_non_exhaustive()
    }
}

/// Something that happened on the link.
#[derive(Debug, Clone)]
pub enum LinkEvent {
    /// Connected and welcomed.
    Connected {
        /// This device, as the relay knows it.
        device: DeviceId,
        /// Devices online now.
        online: Vec<DeviceInfo>,
    },
    /// The connection dropped (or could not be made); retrying after the
    /// delay.
    Disconnected {
        /// Short reason.
        reason: String,
        /// Delay before the next attempt.
        retry_in: Duration,
        /// The relay closed with 1012 (a new key epoch, or a restart):
        /// every device of the account reconnects at once.
        rekey: bool,
    },
    /// The online set changed.
    Presence {
        /// Devices online now.
        online: Vec<DeviceInfo>,
    },
    /// A clip from another device.
    Deliver {
        /// Room sequence.
        seq: u64,
        /// Publishing device.
        from: DeviceId,
        /// The sealed envelope.
        envelope: Vec<u8>,
    },
    /// A signalling message from another device of this user.
    Signal {
        /// The sending device (stamped by the relay).
        from: DeviceId,
        /// What it is.
        kind: SignalKind,
        /// The (sealed) payload.
        payload: Vec<u8>,
    },
    /// A publish was acknowledged.
    Published {
        /// Room sequence assigned.
        seq: u64,
    },
    /// The relay reported an error.
    RelayError {
        /// The relay's message.
        message: String,
    },
}

/// How [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkExit {
    /// Cancelled by the application.
    Cancelled,
    /// The relay revoked the session (close 4001 or HTTP 401).
    Revoked,
}

/// Why a publish did not reach the relay.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// The envelope exceeds the relay's frame limit.
    #[error("item too large for the relay ({0} bytes)")]
    TooLarge(usize),
    /// The relay refused it.
    #[error("relay refused the clip: {0}")]
    Rejected(String),
    /// A newer publish replaced it while offline.
    #[error("superseded by a newer clip")]
    Superseded,
    /// The link stopped.
    #[error("not connected to the relay")]
    Stopped,
    /// `--mode p2p` and no other device has an open direct link.
    #[error("no other device has an open direct link (--mode p2p); not sent")]
    NoDirectLink,
}

/// A publish waiting for its ack.
#[derive(Debug)]
pub struct Outgoing {
    envelope: Vec<u8>,
    done: Option<oneshot::Sender<Result<u64, PublishError>>>,
}

impl Outgoing {
    fn finish(mut self, r: Result<u64, PublishError>) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(r);
        }
    }
}

/// A signalling frame to send.
#[derive(Debug)]
pub struct SignalOut {
    peer: DeviceId,
    kind: SignalKind,
    payload: Vec<u8>,
}

/// The application's side of the link.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    tx: mpsc::Sender<Outgoing>,
    signals: mpsc::Sender<SignalOut>,
}

/// The link's side of [`LinkHandle`]: publishes and signals.
#[derive(Debug)]
pub struct Commands {
    publish: mpsc::Receiver<Outgoing>,
    signals: mpsc::Receiver<SignalOut>,
}

/// Creates the command channel for [`run`].
pub fn channel() -> (LinkHandle, Commands) {
    let (tx, publish) = mpsc::channel(COMMAND_QUEUE);
    let (stx, signals) = mpsc::channel(SIGNAL_QUEUE);
    (
        LinkHandle { tx, signals: stx },
        Commands { publish, signals },
    )
}

impl LinkHandle {
    /// Queues a sealed envelope; the receiver resolves to the room sequence
    /// once the relay acknowledges it.
    pub async fn publish(
        &self,
        envelope: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<u64, PublishError>>, PublishError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Outgoing {
                envelope,
                done: Some(done),
            })
            .await
            .map_err(|_| PublishError::Stopped)?;
        Ok(rx)
    }

    /// Queues a `Signal` frame for `peer` without waiting. Returns false
    /// when the queue is full or the link stopped; signals are not kept
    /// while the relay is unreachable.
    pub fn signal(&self, peer: DeviceId, kind: SignalKind, payload: Vec<u8>) -> bool {
        self.signals
            .try_send(SignalOut {
                peer,
                kind,
                payload,
            })
            .is_ok()
    }
}

/// Mutable state that outlives one connection.
struct Shared {
    backoff: Backoff,
    pending: VecDeque<Outgoing>,
    last_seen: u64,
    max_frame: u32,
    commands_open: bool,
    signals_open: bool,
}

impl Shared {
    fn queue(&mut self, o: Outgoing) {
        while self.pending.len() >= MAX_PENDING {
            if let Some(old) = self.pending.pop_front() {
                old.finish(Err(PublishError::Superseded));
            }
        }
        self.pending.push_back(o);
    }
}

/// Runs the link until cancelled or revoked.
pub async fn run(
    cfg: LinkConfig,
    commands: Commands,
    events: mpsc::Sender<LinkEvent>,
    cancel: CancellationToken,
) -> LinkExit {
    let Commands {
        publish: mut commands,
        mut signals,
    } = commands;
    let mut sh = Shared {
        backoff: Backoff::new(cfg.seed),
        pending: VecDeque::new(),
        last_seen: cfg.last_seen,
        max_frame: DEFAULT_MAX_FRAME,
        commands_open: true,
        signals_open: true,
    };
    let url = ws_url(&cfg.server);
    loop {
        let token = cfg.token.get();
        let how = tokio::select! {
            _ = cancel.cancelled() => return finish(&mut sh, &mut commands, LinkExit::Cancelled),
            r = connect(&url, &token, &cfg.roots) => match r {
                Ok(ws) => {
                    tracing::debug!("connected to relay");
                    match drive(ws, &mut sh, &mut commands, &mut signals, &events, &cancel).await {
                        Some(d) => d,
                        None => return finish(&mut sh, &mut commands, LinkExit::Cancelled),
                    }
                }
                Err(d) => d,
            },
        };
        if let Disconnect::Closed(code @ (CloseCode::TooLarge | CloseCode::ProtocolError)) = how {
            // Something we sent may be the cause: do not send it again.
            for o in sh.pending.drain(..) {
                o.finish(Err(PublishError::Rejected(describe(Disconnect::Closed(
                    code,
                )))));
            }
        }
        let next = sh.backoff.on_disconnect(how);
        tracing::debug!(?how, ?next, "relay connection ended");
        let delay = match next {
            Next::Stop(StopReason::Revoked) => {
                return finish(&mut sh, &mut commands, LinkExit::Revoked)
            }
            Next::Reconnect(d) => d,
        };
        let _ = events
            .send(LinkEvent::Disconnected {
                reason: describe(how),
                retry_in: delay,
                rekey: how == Disconnect::Closed(CloseCode::ServiceRestart),
            })
            .await;
        let wake = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return finish(&mut sh, &mut commands, LinkExit::Cancelled),
                _ = tokio::time::sleep_until(wake) => break,
                o = commands.recv(), if sh.commands_open => match o {
                    Some(o) => sh.queue(o),
                    None => sh.commands_open = false,
                },
                s = signals.recv(), if sh.signals_open => match s {
                    Some(s) => tracing::debug!(peer = %s.peer, kind = ?s.kind, "relay down: signal dropped"),
                    None => sh.signals_open = false,
                },
            }
        }
    }
}

fn finish(sh: &mut Shared, commands: &mut mpsc::Receiver<Outgoing>, exit: LinkExit) -> LinkExit {
    commands.close();
    while let Ok(o) = commands.try_recv() {
        sh.queue(o);
    }
    for o in sh.pending.drain(..) {
        o.finish(Err(PublishError::Stopped));
    }
    exit
}

/// A one-line description of a disconnect for status output.
pub fn describe(how: Disconnect) -> String {
    match how {
        Disconnect::Closed(code) => {
            format!(
                "relay closed the connection ({} {})",
                code.as_u16(),
                code.reason()
            )
        }
        Disconnect::Unauthorized => "relay refused the device token".into(),
        Disconnect::HalfOpen => "relay stopped answering".into(),
        Disconnect::Io => "relay unreachable".into(),
        Disconnect::Protocol => "protocol error".into(),
    }
}

async fn connect(url: &str, token: &str, roots: &TrustRoots) -> Result<Ws, Disconnect> {
    let mut req = url.into_client_request().map_err(|e| {
        tracing::warn!(error = %e, "bad relay URL");
        Disconnect::Io
    })?;
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| Disconnect::Unauthorized)?;
    req.headers_mut().insert("authorization", value);
    let ws_cfg = WebSocketConfig::default()
        .max_message_size(Some(MAX_INBOUND))
        .max_frame_size(Some(MAX_INBOUND));
    let fut = tokio_tungstenite::connect_async_tls_with_config(
        req,
        Some(ws_cfg),
        true,
        roots.ws_connector(),
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
        Err(_) => {
            tracing::debug!("connect timed out");
            Err(Disconnect::Io)
        }
        Ok(Ok((ws, _resp))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) if resp.status().as_u16() == 401 => {
            Err(Disconnect::Unauthorized)
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "connect failed");
            Err(Disconnect::Io)
        }
    }
}

/// Drives one connection. `None` means cancelled.
async fn drive(
    ws: Ws,
    sh: &mut Shared,
    commands: &mut mpsc::Receiver<Outgoing>,
    signals: &mut mpsc::Receiver<SignalOut>,
    events: &mpsc::Sender<LinkEvent>,
    cancel: &CancellationToken,
) -> Option<Disconnect> {
    let (mut sink, mut stream) = ws.split();
    let mut s = Session::new(sh.last_seen, Instant::now());
    let mut inflight: HashMap<u32, Outgoing> = HashMap::new();
    let mut clock = ClockWatch::new(Instant::now(), SystemTime::now());
    for o in std::mem::take(&mut sh.pending) {
        submit(&mut s, sh.max_frame, &mut inflight, o);
    }
    let how = 'conn: loop {
        while let Some(f) = s.poll_transmit() {
            tracing::trace!(frame = ?f, "send");
            let msg = if s.is_keepalive(&f) {
                Message::Ping(Default::default())
            } else {
                Message::Binary(f.encode().into())
            };
            // A write that cannot drain (the peer vanished with our data
            // queued) must not stall the timers: bound it.
            match tokio::time::timeout(WRITE_TIMEOUT, sink.send(msg)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "send failed");
                    break 'conn Disconnect::Io;
                }
                Err(_) => {
                    tracing::debug!("send did not complete in time: half-open");
                    break 'conn Disconnect::HalfOpen;
                }
            }
        }
        while let Some(ev) = s.poll_event() {
            on_event(ev, sh, &mut inflight, events).await;
        }
        sh.last_seen = s.last_seen();
        if let Some(d) = s.dead() {
            break d;
        }
        let deadline = tokio::time::Instant::from_std(s.poll_timeout());
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                let bye = sink.send(Message::Close(Some(CloseFrame {
                    code: WsCloseCode::Normal,
                    reason: "bye".into(),
                })));
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, bye).await;
                for (_, o) in inflight.drain() {
                    o.finish(Err(PublishError::Stopped));
                }
                return None;
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    tracing::trace!(len = b.len(), "recv");
                    s.handle_bytes(&b, Instant::now());
                }
                Some(Ok(Message::Close(cf))) => {
                    let code = cf.map(|c| CloseCode::from_u16(u16::from(c.code)))
                        .unwrap_or(CloseCode::Normal);
                    break Disconnect::Closed(code);
                }
                Some(Ok(_)) => s.handle_liveness(Instant::now()),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "receive failed");
                    break Disconnect::Io;
                }
                None => break Disconnect::Io,
            },
            o = commands.recv(), if sh.commands_open => match o {
                Some(o) => submit(&mut s, sh.max_frame, &mut inflight, o),
                None => sh.commands_open = false,
            },
            g = signals.recv(), if sh.signals_open => match g {
                Some(g) => {
                    if !s.signal(g.peer, g.kind, g.payload) {
                        tracing::debug!(peer = %g.peer, kind = ?g.kind, "not welcomed yet: signal dropped");
                    }
                }
                None => sh.signals_open = false,
            },
            _ = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                if clock.observe(now, SystemTime::now()) {
                    tracing::debug!("clock jump (sleep or network change?): probing the relay");
                    s.handle_clock_jump(now);
                }
                s.handle_timeout(now);
            }
        }
    };
    // Unacknowledged publishes go out again on the next connection, oldest
    // first.
    let mut left: Vec<(u32, Outgoing)> = inflight.into_iter().collect();
    left.sort_by_key(|(id, _)| *id);
    for (_, o) in left {
        sh.queue(o);
    }
    Some(how)
}

fn submit(s: &mut Session, max_frame: u32, inflight: &mut HashMap<u32, Outgoing>, o: Outgoing) {
    // Publish frame = version + tag + id + envelope.
    let frame_len = o.envelope.len() + 6;
    if frame_len > max_frame as usize {
        let n = o.envelope.len();
        tracing::warn!(
            len = n,
            max_frame,
            "clip larger than the relay's frame limit; not sent"
        );
        o.finish(Err(PublishError::TooLarge(n)));
        return;
    }
    match s.publish(o.envelope.clone(), Instant::now()) {
        Some(id) => {
            inflight.insert(id, o);
        }
        None => o.finish(Err(PublishError::Superseded)),
    }
}

async fn on_event(
    ev: SessionEvent,
    sh: &mut Shared,
    inflight: &mut HashMap<u32, Outgoing>,
    events: &mpsc::Sender<LinkEvent>,
) {
    let out = match ev {
        SessionEvent::Welcome {
            device,
            max_frame,
            online,
            ..
        } => {
            sh.backoff.reset();
            sh.max_frame = max_frame.max(1024);
            tracing::info!(%device, online = online.len(), "connected to relay");
            Some(LinkEvent::Connected { device, online })
        }
        SessionEvent::Deliver {
            seq,
            from,
            envelope,
        } => Some(LinkEvent::Deliver {
            seq,
            from,
            envelope,
        }),
        SessionEvent::Acked { id, seq } => {
            if let Some(o) = inflight.remove(&id) {
                o.finish(Ok(seq));
            }
            Some(LinkEvent::Published { seq })
        }
        SessionEvent::Rejected { id, code, message } => {
            tracing::warn!(?code, %message, "relay refused a clip");
            if let Some(o) = inflight.remove(&id) {
                o.finish(Err(PublishError::Rejected(message.clone())));
            }
            Some(LinkEvent::RelayError { message })
        }
        SessionEvent::Presence { online } => Some(LinkEvent::Presence { online }),
        SessionEvent::Signal {
            from,
            kind,
            payload,
        } => Some(LinkEvent::Signal {
            from,
            kind,
            payload,
        }),
        SessionEvent::RelayError {
            code: ErrorCode::PeerOffline,
            message,
        } => {
            // A signal raced the peer going offline; presence follows.
            tracing::debug!(%message, "signal target offline");
            None
        }
        SessionEvent::RelayError { code, message } => {
            tracing::warn!(?code, %message, "relay error");
            Some(LinkEvent::RelayError { message })
        }
    };
    if let Some(e) = out {
        let _ = events.send(e).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    #[test]
    fn describe_is_one_line() {
        for d in [
            Disconnect::Closed(CloseCode::ServiceRestart),
            Disconnect::Unauthorized,
            Disconnect::HalfOpen,
            Disconnect::Io,
            Disconnect::Protocol,
        ] {
            let s = describe(d);
            assert!(!s.is_empty() && !s.contains('\n'));
        }
        assert!(describe(Disconnect::Closed(CloseCode::ServiceRestart)).contains("1012"));
    }

    #[tokio::test]
    async fn unreachable_relay_reports_and_cancels_cleanly() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (handle, rx) = channel();
        let (etx, mut erx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(
            LinkConfig {
                server: format!("http://127.0.0.1:{port}"),
                token: Zeroizing::new(String::from("t")).into(),
                last_seen: 0,
                seed: 1,
                roots: TrustRoots::webpki(),
            },
            rx,
            etx,
            cancel.clone(),
        ));
        let ack = handle.publish(vec![1, 2, 3]).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(10), erx.recv()).await {
            Ok(Some(LinkEvent::Disconnected { retry_in, .. })) => {
                assert!(retry_in <= Duration::from_millis(500))
            }
            other => panic!("unexpected {other:?}"),
        }
        cancel.cancel();
        assert_eq!(task.await.unwrap(), LinkExit::Cancelled);
        assert_eq!(ack.await.unwrap(), Err(PublishError::Stopped));
    }

    /// What the fake relay does with one connection.
    #[derive(Clone, Copy)]
    enum Script {
        /// Refuse the upgrade with HTTP 401.
        Refuse401,
        /// Welcome, then close with this code after the first publish (or
        /// at once if `on_publish` is false).
        WelcomeThenClose { code: u16, on_publish: bool },
        /// Welcome and ack every publish.
        Ack,
    }

    /// A one-connection-at-a-time fake relay on loopback running `scripts`
    /// in order; returns its URL.
    // The upgrade callback's error type is tungstenite's, not ours.
    #[allow(clippy::result_large_err)]
    async fn fake_relay(scripts: Vec<Script>) -> (String, tokio::task::JoinHandle<()>) {
        use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            for script in scripts {
                let (tcp, _) = listener.accept().await.unwrap();
                let refuse = matches!(script, Script::Refuse401);
                let cb = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                    assert_eq!(
                        req.headers().get("authorization").unwrap(),
                        "Bearer tok",
                        "token sent at the upgrade"
                    );
                    if refuse {
                        let mut r = ErrorResponse::new(None);
                        *r.status_mut() = tungstenite::http::StatusCode::UNAUTHORIZED;
                        return Err(r);
                    }
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
                    continue;
                };
                let welcome = clipmesh_proto::Frame::Welcome {
                    user: clipmesh_proto::UserId(1),
                    device: DeviceId(2),
                    max_frame: 1 << 20,
                    ping_interval_s: 30,
                    idle_timeout_s: 45,
                    online: vec![],
                };
                // Hello first.
                let hello = ws.next().await.unwrap().unwrap().into_data();
                assert!(matches!(
                    clipmesh_proto::Frame::decode(&hello),
                    Ok(clipmesh_proto::Frame::Hello { .. })
                ));
                ws.send(Message::Binary(welcome.encode().into()))
                    .await
                    .unwrap();
                let close = |code: u16| {
                    Message::Close(Some(CloseFrame {
                        code: WsCloseCode::from(code),
                        reason: "test".into(),
                    }))
                };
                match script {
                    Script::Refuse401 => {}
                    Script::WelcomeThenClose { code, on_publish } => {
                        if on_publish {
                            let _ = ws.next().await;
                        }
                        let _ = ws.send(close(code)).await;
                        // Drain until the client closes.
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                    Script::Ack => {
                        while let Some(Ok(m)) = ws.next().await {
                            if let Ok(clipmesh_proto::Frame::Publish { id, .. }) =
                                clipmesh_proto::Frame::decode(&m.into_data())
                            {
                                let ack = clipmesh_proto::Frame::Ack { id, seq: 99 };
                                ws.send(Message::Binary(ack.encode().into())).await.unwrap();
                            }
                        }
                    }
                }
            }
        });
        (url, task)
    }

    fn start(
        url: String,
    ) -> (
        LinkHandle,
        mpsc::Receiver<LinkEvent>,
        CancellationToken,
        tokio::task::JoinHandle<LinkExit>,
    ) {
        let (handle, rx) = channel();
        let (etx, erx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(
            LinkConfig {
                server: url,
                token: Zeroizing::new(String::from("tok")).into(),
                last_seen: 0,
                seed: 1,
                roots: TrustRoots::webpki(),
            },
            rx,
            etx,
            cancel.clone(),
        ));
        (handle, erx, cancel, task)
    }

    async fn next_event(erx: &mut mpsc::Receiver<LinkEvent>) -> LinkEvent {
        tokio::time::timeout(Duration::from_secs(10), erx.recv())
            .await
            .expect("event in time")
            .expect("link running")
    }

    #[tokio::test]
    async fn http_401_at_upgrade_stops_the_link() {
        let (url, _relay) = fake_relay(vec![Script::Refuse401]).await;
        let (_h, _erx, _cancel, task) = start(url);
        let exit = tokio::time::timeout(Duration::from_secs(10), task).await;
        assert_eq!(exit.unwrap().unwrap(), LinkExit::Revoked);
    }

    #[tokio::test]
    async fn close_4001_stops_and_1012_reconnects_at_once() {
        let (url, _relay) = fake_relay(vec![
            Script::WelcomeThenClose {
                code: 1012,
                on_publish: false,
            },
            Script::WelcomeThenClose {
                code: 4001,
                on_publish: false,
            },
        ])
        .await;
        let (_h, mut erx, _cancel, task) = start(url);
        assert!(matches!(
            next_event(&mut erx).await,
            LinkEvent::Connected { .. }
        ));
        match next_event(&mut erx).await {
            LinkEvent::Disconnected {
                retry_in,
                reason,
                rekey,
            } => {
                assert!(rekey);
                assert_eq!(retry_in, Duration::ZERO);
                assert!(reason.contains("1012"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            next_event(&mut erx).await,
            LinkEvent::Connected { .. }
        ));
        let exit = tokio::time::timeout(Duration::from_secs(10), task).await;
        assert_eq!(exit.unwrap().unwrap(), LinkExit::Revoked);
    }

    #[tokio::test]
    async fn unacked_publish_is_resent_but_not_after_a_protocol_close() {
        // Connection 1 closes (1011 internal error) on the publish: it is
        // resent on connection 2, which acks it.
        let (url, _relay) = fake_relay(vec![
            Script::WelcomeThenClose {
                code: 1011,
                on_publish: true,
            },
            Script::Ack,
        ])
        .await;
        let (h, mut erx, cancel, task) = start(url);
        assert!(matches!(
            next_event(&mut erx).await,
            LinkEvent::Connected { .. }
        ));
        let ack = h.publish(vec![1, 2, 3]).await.unwrap();
        let seq = tokio::time::timeout(Duration::from_secs(10), ack).await;
        assert_eq!(seq.unwrap().unwrap(), Ok(99));
        cancel.cancel();
        assert_eq!(task.await.unwrap(), LinkExit::Cancelled);

        // A protocol-error close after the publish drops it instead.
        let (url, _relay) = fake_relay(vec![
            Script::WelcomeThenClose {
                code: 4002,
                on_publish: true,
            },
            Script::Ack,
        ])
        .await;
        let (h, mut erx, cancel, task) = start(url);
        assert!(matches!(
            next_event(&mut erx).await,
            LinkEvent::Connected { .. }
        ));
        let ack = h.publish(vec![1, 2, 3]).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), ack).await;
        assert!(matches!(
            r.unwrap().unwrap(),
            Err(PublishError::Rejected(_))
        ));
        cancel.cancel();
        assert_eq!(task.await.unwrap(), LinkExit::Cancelled);
    }
}
