//! ClipCascade's P2P signalling on `/p2psignaling`: raw JSON over a
//! WebSocket, routed within one user only.
//!
//! On connect a session gets a random UUID peer id
//! (`{"type":"ASSIGNED_ID","peerId":…}`), and every session of the user
//! gets the new `{"type":"PEER_LIST","peers":[…]}`; again on each leave.
//! `OFFER`, `ANSWER` and `ICE_CANDIDATE` messages go, as the original text,
//! to the session whose peer id is `toPeerId` among the same user's
//! sessions; other types are ignored. The relay pings every
//! [`PING_INTERVAL`] and closes a session silent for [`PONG_TIMEOUT`].
//!
//! The routing table, user → peers, is [`crate::signals::SignalHub`]
//! (shared through `AppState`, so it lives below both).

use super::require;
use crate::app::AppState;
use crate::outbox::{Next, Outbox};
use crate::ratelimit::{PublishLimiter, Verdict};
use crate::ws::{close, is_too_large, ConnSlot};
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use clipmesh_proto::{CloseCode, UserId};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest signalling message, bytes (SDP offers are a few KiB).
pub const MAX_SIGNAL_MESSAGE: usize = 64 * 1024;
/// Messages queued towards one session before it counts as a slow consumer.
pub const SIGNAL_QUEUE: usize = 64;
/// How often the relay pings a signalling session.
pub const PING_INTERVAL: Duration = Duration::from_secs(40);
/// How long a session may go without a pong (or any message).
pub const PONG_TIMEOUT: Duration = Duration::from_secs(120);
/// The fields the relay reads from a client message.
#[derive(Deserialize)]
struct Routed {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "toPeerId")]
    to: Option<String>,
}

/// What to do with one client message: forward it to a peer id, or not.
pub fn route(text: &[u8]) -> Option<String> {
    let m: Routed = serde_json::from_slice(text).ok()?;
    match m.kind?.as_str() {
        "OFFER" | "ANSWER" | "ICE_CANDIDATE" => m.to,
        _ => None,
    }
}

/// `GET /p2psignaling`: needs the session cookie (401 without).
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
    let ws = ws
        .max_message_size(MAX_SIGNAL_MESSAGE)
        .max_frame_size(MAX_SIGNAL_MESSAGE);
    let tracker = s.tracker.clone();
    let user = session.user;
    ws.on_upgrade(move |socket| tracker.track_future(Box::pin(run(s, user, socket, slot))))
}

async fn run(s: Arc<AppState>, user: UserId, mut socket: WebSocket, slot: ConnSlot) {
    let _slot = slot;
    let outbox = Outbox::new(
        SIGNAL_QUEUE,
        SIGNAL_QUEUE * MAX_SIGNAL_MESSAGE,
        s.metrics.clone(),
    );
    let Ok(id) = s.signals.join(user, outbox.clone()) else {
        close(&mut socket, CloseCode::TooManyDevices).await;
        return;
    };
    tracing::debug!(%user, "clipcascade signalling session open");
    let code = serve(&s, user, &mut socket, &outbox).await;
    s.signals.leave(user, &id);
    outbox.detach();
    if let Some(code) = code {
        close(&mut socket, code).await;
    }
    tracing::debug!(%user, "clipcascade signalling session closed");
}

/// The session loop; gives the close code to send (none if the socket is
/// gone).
async fn serve(
    s: &Arc<AppState>,
    user: UserId,
    socket: &mut WebSocket,
    outbox: &Arc<Outbox>,
) -> Option<CloseCode> {
    let l = &s.config.limits;
    let write_timeout = Duration::from_secs(l.write_timeout_s.max(1));
    let mut limiter = PublishLimiter::new(
        l.publish_per_s,
        l.publish_burst,
        l.rate_limit_strikes,
        Instant::now(),
    );
    let mut last_rx = tokio::time::Instant::now();
    let mut ping = tokio::time::interval_at(last_rx + PING_INTERVAL, PING_INTERVAL);
    loop {
        loop {
            match outbox.pop() {
                Next::Close(code) => return Some(code),
                Next::Empty => break,
                Next::Frame(b) => {
                    let text = String::from_utf8_lossy(&b).into_owned();
                    match tokio::time::timeout(
                        write_timeout,
                        socket.send(Message::Text(text.into())),
                    )
                    .await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return None,
                        Err(_) => return Some(CloseCode::SlowConsumer),
                    }
                }
            }
        }
        tokio::select! {
            biased;
            () = s.shutdown.cancelled() => return Some(CloseCode::ServiceRestart),
            msg = socket.recv() => {
                last_rx = tokio::time::Instant::now();
                let bytes = match msg {
                    Some(Ok(Message::Text(t))) => Bytes::copy_from_slice(t.as_bytes()),
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Err(e)) if is_too_large(&e) => return Some(CloseCode::TooLarge),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                };
                let Some(to) = route(&bytes) else { continue };
                match limiter.check(Instant::now()) {
                    Verdict::Allow => {
                        if s.signals.forward(user, &to, bytes) {
                            crate::metrics::Metrics::add(&s.metrics.signals, 1);
                        }
                    }
                    Verdict::Reject => {}
                    Verdict::Close => return Some(CloseCode::RateLimited),
                }
            }
            () = outbox.changed() => {}
            _ = ping.tick() => {
                if last_rx.elapsed() >= PONG_TIMEOUT {
                    return Some(CloseCode::IdleTimeout);
                }
                let sent = tokio::time::timeout(write_timeout, socket.send(Message::Ping(Bytes::new()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::signals::SignalHub;
    use serde_json::json;

    fn port() -> Arc<Outbox> {
        Outbox::new(8, 1 << 20, Arc::new(Metrics::default()))
    }

    fn texts(o: &Outbox) -> Vec<serde_json::Value> {
        let mut v = Vec::new();
        while let Next::Frame(b) = o.pop() {
            v.push(serde_json::from_slice(&b).unwrap());
        }
        v
    }

    #[test]
    fn ids_lists_and_routing_stay_within_a_user() {
        let hub = SignalHub::default();
        let (a, b, c) = (port(), port(), port());
        let ida = hub.join(UserId(1), a.clone()).unwrap();
        let got = texts(&a);
        assert_eq!(got[0]["type"], "ASSIGNED_ID");
        assert_eq!(got[0]["peerId"], ida.as_str());
        assert_eq!(got[1]["peers"], json!([ida]));
        let idb = hub.join(UserId(1), b.clone()).unwrap();
        assert_eq!(texts(&a)[0]["peers"], json!([ida, idb]));
        assert_eq!(texts(&b).len(), 2);
        let idc = hub.join(UserId(2), c.clone()).unwrap();
        texts(&c);
        assert!(texts(&a).is_empty(), "another user's join is not announced");
        let offer = Bytes::from(format!(
            r#"{{"type":"OFFER","fromPeerId":"{ida}","toPeerId":"{idb}","offer":{{"type":"offer","sdp":"x"}}}}"#
        ));
        assert_eq!(route(&offer), Some(idb.clone()));
        assert!(hub.forward(UserId(1), &idb, offer.clone()));
        assert!(matches!(b.pop(), Next::Frame(f) if f == offer));
        // Another user's peer id is unknown here.
        assert!(!hub.forward(UserId(1), &idc, offer.clone()));
        assert!(!hub.forward(UserId(2), &idb, offer));
        assert!(texts(&c).is_empty());
        hub.leave(UserId(1), &idb);
        assert_eq!(texts(&a)[0]["peers"], json!([ida]));
        hub.leave(UserId(1), &ida);
        assert_eq!(hub.peers(UserId(1)), 0);
    }

    #[test]
    fn only_signalling_types_are_routed() {
        assert_eq!(
            route(br#"{"type":"ANSWER","toPeerId":"p"}"#),
            Some("p".into())
        );
        assert_eq!(
            route(br#"{"type":"ICE_CANDIDATE","toPeerId":"p"}"#),
            Some("p".into())
        );
        assert_eq!(route(br#"{"type":"PEER_LIST","toPeerId":"p"}"#), None);
        assert_eq!(route(br#"{"type":"OFFER"}"#), None);
        assert_eq!(route(b"not json"), None);
        assert_eq!(route(br#"{"type":1}"#), None);
    }
}
