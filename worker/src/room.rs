//! The `UserRoom` Durable Object: one per user (`idFromName(user_id)`),
//! holding that user's sockets with the Hibernation API and driving
//! `clipmesh_room::RoomState`, plus the Worker-side helpers that reach it.
//!
//! - Sockets are accepted with `acceptWebSocket`, tagged `d<device>`, and
//!   carry a serialized attachment ([`Attachment`]: user, device, name,
//!   connection id, whether `Hello` was seen). After a wake the room's
//!   membership is rebuilt from `getWebSockets()` and those attachments.
//! - The newest clip and the sequence number live in DO storage (`clip`,
//!   which carries its sequence number, and `seq` when the two differ),
//!   one write per publish before the room handles the next event, so a
//!   restart or eviction resumes exactly where it stopped.
//! - `wakes` in storage counts how often the object was constructed to
//!   handle an event (a cold start or a wake from hibernation); `/status`
//!   reports it, which is how the hibernation test sees eviction and
//!   wakes.
//! - Per-connection state (bad-frame strikes, the publish limiter) lives
//!   in memory only and starts afresh after a wake.
//! - **Metering:** every inbound message counts (messages, bytes) in its
//!   socket's attachment, which the runtime keeps with the socket while
//!   the object is evicted; a socket's first uncounted message arms the
//!   alarm for [`USAGE_FLUSH_MS`] later, which adds every socket's counts
//!   to the day's `usage:<day>` in storage and zeroes them. A closing
//!   socket's counts go to storage in its close handler. So eviction loses
//!   nothing; what can be lost is at most [`USAGE_FLUSH_MS`] of counts
//!   held by sockets that the runtime itself drops without running their
//!   close handler (a runtime restart). A connect when the day's messages
//!   reach `DAILY_MESSAGE_QUOTA` (0: none) is answered 101, then
//!   `Error{RateLimited, "quota exceeded: …"}` and close 4003.
//! - One alarm serves both the `Hello` timeout and the usage flush.

use crate::api::{self, ApiError};
use crate::config::Settings;
use crate::session::{self, Session};
use clipmesh_proto::{CloseCode, DeviceId, ErrorCode, Frame, UserId};
use clipmesh_room::conn::{ConnState, Inbound};
use clipmesh_room::{Clip, ConnId, Member, MemberKind, Port, PortFull, RoomState};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;
use worker::{
    durable_object, DurableObject, Env, Headers, Method, Request, RequestInit, Response, State,
    WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

/// The Durable Object binding.
pub const ROOMS: &str = "ROOMS";
/// Header carrying the authenticated session from the Worker to the room.
const SESSION_HEADER: &str = "X-Clipmesh-Session";
/// Header saying the device offered the `clipmesh.v1` subprotocol.
const V1_HEADER: &str = "X-Clipmesh-V1";

/// What a hibernated socket remembers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attachment {
    /// The device.
    pub device: u64,
    /// Its name.
    pub name: String,
    /// The connection id (unique within the room).
    pub conn: u64,
    /// Whether its `Hello` was handled (it is a room member).
    pub joined: bool,
    /// When it connected, Unix seconds.
    pub since: i64,
    /// When it last sent a message the room handled, Unix seconds (0: none
    /// yet). Protocol pings never reach the room, so they do not count.
    #[serde(default)]
    pub last_msg: i64,
    /// Messages and bytes it sent that are not yet in the day's usage.
    #[serde(default)]
    pub unmetered: Usage,
}

/// How long usage counts stay in memory before the alarm writes them.
const USAGE_FLUSH_MS: u64 = 60_000;

/// Messages and bytes a user's devices sent (metering).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Usage {
    messages: u64,
    bytes: u64,
}

/// The storage key of a day's usage (`usage:<days since the epoch>`).
fn usage_key(unix_s: i64) -> String {
    format!("usage:{}", unix_s.max(0) / 86_400)
}

/// The room's persisted newest clip.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredClip {
    seq: u64,
    from: u64,
    /// Hex of the sealed envelope (`None` when the clip TTL is 0).
    envelope: Option<String>,
    stored_at: i64,
}

/// A socket as a room [`Port`]: sends never block (the runtime buffers).
#[derive(Debug)]
pub struct WsPort(WebSocket);

impl Port for WsPort {
    fn try_send(&self, frame: bytes::Bytes) -> Result<(), PortFull> {
        self.0.send_with_bytes(&frame).map_err(|_| PortFull)
    }
    fn close(&self, code: CloseCode) {
        let _ = self.0.close(Some(code.as_u16()), Some(code.reason()));
    }
}

struct Inner {
    room: RoomState<WsPort>,
    conns: HashMap<u64, ConnState>,
    settings: Settings,
    wakes: u64,
    /// WebSocket messages handled since this construction (memory only).
    messages: u64,
}

/// One user's room.
#[durable_object]
pub struct UserRoom {
    state: State,
    env: Env,
    inner: RefCell<Option<Inner>>,
}

fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

fn attachment(ws: &WebSocket) -> Option<Attachment> {
    ws.deserialize_attachment::<Attachment>().ok().flatten()
}

impl UserRoom {
    /// Loads the room after a construction (cold start or wake): sequence
    /// number, newest clip, and the joined sockets as members.
    async fn ensure_loaded(&self, user: Option<UserId>) -> worker::Result<()> {
        if self.inner.borrow().is_some() {
            return Ok(());
        }
        let storage = self.state.storage();
        let clip: Option<StoredClip> = storage.get("clip").await?;
        // A publish writes only the clip record, which carries its
        // sequence number; `seq` is written when the two differ.
        let seq: u64 = storage
            .get::<u64>("seq")
            .await?
            .unwrap_or(0)
            .max(clip.as_ref().map_or(0, |c| c.seq));
        let user = match user {
            Some(u) => u,
            None => UserId(storage.get::<u64>("user").await?.unwrap_or(0)),
        };
        let wakes: u64 = storage.get::<u64>("wakes").await?.unwrap_or(0) + 1;
        storage.put("wakes", wakes).await?;
        if self.inner.borrow().is_some() {
            return Ok(());
        }
        let newest = clip.map(|c| Clip {
            seq: c.seq,
            from: DeviceId(c.from),
            envelope: c
                .envelope
                .and_then(|h| hex::decode(h).ok())
                .map(bytes::Bytes::from),
            stored_at: c.stored_at,
        });
        let members = self
            .state
            .get_websockets()
            .into_iter()
            .filter_map(|ws| {
                let a = attachment(&ws)?;
                a.joined.then(|| Member {
                    device: DeviceId(a.device),
                    name: a.name,
                    conn: ConnId(a.conn),
                    port: WsPort(ws),
                    kind: MemberKind::Native,
                })
            })
            .collect();
        let settings = Settings::from_env(&self.env);
        *self.inner.borrow_mut() = Some(Inner {
            room: RoomState::new(user, settings.room, seq, newest, members),
            conns: HashMap::new(),
            settings,
            wakes,
            messages: 0,
        });
        Ok(())
    }

    /// Stores the room's sequence number and newest clip: one write when
    /// there is a clip (its record carries its sequence number, which is
    /// the room's; [`Self::ensure_loaded`] takes the larger of the two
    /// keys), so a publish costs one storage write.
    async fn persist(&self, seq: u64, clip: Option<Clip>) -> worker::Result<()> {
        let storage = self.state.storage();
        let Some(c) = clip else {
            return storage.put("seq", seq).await;
        };
        let clip_seq = c.seq;
        let stored = StoredClip {
            seq: c.seq,
            from: c.from.0,
            envelope: c.envelope.map(hex::encode),
            stored_at: c.stored_at,
        };
        storage.put("clip", stored).await?;
        if clip_seq != seq {
            storage.put("seq", seq).await?;
        }
        Ok(())
    }

    async fn accept(&self, req: Request) -> worker::Result<Response> {
        let Some(raw) = req.headers().get(SESSION_HEADER)? else {
            return Response::error("missing session", 400);
        };
        let session: Session =
            serde_json::from_str(&raw).map_err(|e| worker::Error::RustError(e.to_string()))?;
        self.ensure_loaded(Some(session.user)).await?;
        let pair = WebSocketPair::new()?;
        let conn = u64::from(rand_u32()) << 20 | (now_ms() & 0xfffff);
        let tag = format!("d{}", session.device.0);
        self.state
            .accept_websocket_with_tags(&pair.server, &[tag.as_str()]);
        pair.server.serialize_attachment(Attachment {
            device: session.device.0,
            name: session.device_name,
            conn,
            joined: false,
            since: api::unix_now(),
            last_msg: 0,
            unmetered: Usage::default(),
        })?;
        let quota = self
            .inner
            .borrow()
            .as_ref()
            .map_or(0, |i| i.settings.daily_message_quota);
        if quota > 0 && self.usage_today().await?.messages >= quota {
            // 101, then a structured refusal and close 4003.
            let refusal = Frame::Error {
                code: ErrorCode::RateLimited,
                id: 0,
                message: format!("quota exceeded: {quota} messages per day"),
            };
            let _ = pair.server.send_with_bytes(refusal.encode());
            let c = CloseCode::RateLimited;
            let _ = pair.server.close(Some(c.as_u16()), Some("quota exceeded"));
        } else {
            self.arm_alarm(hello_due(self.hello_timeout_ms())).await?;
        }
        let mut resp = Response::from_websocket(pair.client)?;
        if req.headers().get(V1_HEADER)?.is_some() {
            resp.headers_mut()
                .set("Sec-WebSocket-Protocol", clipmesh_room::auth::SUBPROTOCOL)?;
        }
        Ok(resp)
    }

    /// Today's usage: stored plus not yet flushed.
    async fn usage_today(&self) -> worker::Result<Usage> {
        let stored: Usage = self
            .state
            .storage()
            .get(&usage_key(api::unix_now()))
            .await?
            .unwrap_or_default();
        let mem = self.unmetered();
        Ok(Usage {
            messages: stored.messages + mem.messages,
            bytes: stored.bytes + mem.bytes,
        })
    }

    /// The counts the sockets hold that are not in storage yet.
    fn unmetered(&self) -> Usage {
        let mut sum = Usage::default();
        for a in self.state.get_websockets().iter().filter_map(attachment) {
            sum.messages += a.unmetered.messages;
            sum.bytes += a.unmetered.bytes;
        }
        sum
    }

    /// Moves every socket's counts to today's stored usage.
    async fn flush_usage(&self) -> worker::Result<()> {
        let mut mem = Usage::default();
        for ws in self.state.get_websockets() {
            let Some(mut a) = attachment(&ws) else {
                continue;
            };
            if a.unmetered.messages == 0 {
                continue;
            }
            mem.messages += a.unmetered.messages;
            mem.bytes += a.unmetered.bytes;
            a.unmetered = Usage::default();
            ws.serialize_attachment(&a)?;
        }
        self.add_usage(mem).await
    }

    /// Adds `mem` to today's stored usage.
    async fn add_usage(&self, mem: Usage) -> worker::Result<()> {
        if mem.messages == 0 {
            return Ok(());
        }
        let key = usage_key(api::unix_now());
        let storage = self.state.storage();
        let mut day: Usage = storage.get(&key).await?.unwrap_or_default();
        day.messages += mem.messages;
        day.bytes += mem.bytes;
        storage.put(&key, day).await
    }

    /// Makes sure an alarm fires by `due` (Unix ms); an earlier one stays
    /// (the alarm handler re-arms for whatever is still pending).
    async fn arm_alarm(&self, due: u64) -> worker::Result<()> {
        let storage = self.state.storage();
        match storage.get_alarm().await? {
            Some(t) if (t as u64) <= due => Ok(()),
            // An i64 is an offset from now, in milliseconds.
            _ => storage.set_alarm(due.saturating_sub(now_ms()) as i64).await,
        }
    }

    fn hello_timeout_ms(&self) -> u64 {
        self.inner
            .borrow()
            .as_ref()
            .map_or(10, |i| i.settings.hello_timeout_s)
            * 1000
    }

    /// Closes sockets that sent no `Hello` within the timeout (4002, as the
    /// native relay does); gives when the next one is due.
    fn sweep_hello(&self) -> Option<u64> {
        let hello_ms = self.hello_timeout_ms();
        let now = now_ms();
        let mut next: Option<u64> = None;
        for ws in self.state.get_websockets() {
            let Some(a) = attachment(&ws) else { continue };
            if a.joined {
                continue;
            }
            // `since` is whole seconds: round up, never close early.
            let due = (a.since.max(0) as u64 + 1) * 1000 + hello_ms;
            if due <= now {
                let c = CloseCode::ProtocolError;
                let _ = ws.close(Some(c.as_u16()), Some("no hello in time"));
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        next
    }

    fn status_json(&self) -> serde_json::Value {
        let now = api::unix_now();
        let inner = self.inner.borrow();
        let Some(inner) = inner.as_ref() else {
            return serde_json::json!({});
        };
        let devices: Vec<_> = self
            .state
            .get_websockets()
            .iter()
            .filter_map(attachment)
            .map(|a| {
                let last = (a.last_msg > 0).then_some(a.last_msg);
                serde_json::json!({
                    "device": a.device, "name": a.name, "joined": a.joined,
                    "connected_s": now.saturating_sub(a.since),
                    "last_message_at": last,
                    "idle_s": now.saturating_sub(last.unwrap_or(a.since)),
                })
            })
            .collect();
        serde_json::json!({
            "user": inner.room.user().0,
            "seq": inner.room.seq(),
            "online": inner.room.len(),
            "sockets": devices,
            "wakes": inner.wakes,
            "messages_since_wake": inner.messages,
            "unflushed_messages": self.unmetered().messages,
        })
    }

    /// Handles one inbound message of a joined or joining socket.
    async fn message(&self, ws: WebSocket, msg: WebSocketIncomingMessage) -> worker::Result<()> {
        self.ensure_loaded(None).await?;
        let Some(mut att) = attachment(&ws) else {
            let _ = ws.close(Some(CloseCode::ProtocolError.as_u16()), Some("no session"));
            return Ok(());
        };
        let len = match &msg {
            WebSocketIncomingMessage::Binary(b) => b.len(),
            WebSocketIncomingMessage::String(t) => t.len(),
        } as u64;
        if let Some(i) = self.inner.borrow_mut().as_mut() {
            i.messages += 1;
        }
        let now_s = api::unix_now();
        // Counted with the socket, so an eviction does not lose it.
        att.last_msg = now_s;
        att.unmetered.messages += 1;
        att.unmetered.bytes += len;
        ws.serialize_attachment(&att)?;
        if att.unmetered.messages == 1 {
            self.arm_alarm(now_ms() + USAGE_FLUSH_MS).await?;
        }
        let mut persist = None;
        {
            let mut guard = self.inner.borrow_mut();
            let Some(inner) = guard.as_mut() else {
                return Ok(());
            };
            if !att.joined {
                // Before Hello: only Hello or Ping.
                let frame = match &msg {
                    WebSocketIncomingMessage::Binary(b) => Frame::decode(b).ok(),
                    WebSocketIncomingMessage::String(_) => None,
                };
                match frame {
                    Some(Frame::Hello { last_seen }) => {
                        att.joined = true;
                        ws.serialize_attachment(&att)?;
                        inner.room.join(
                            Member {
                                device: DeviceId(att.device),
                                name: att.name.clone(),
                                conn: ConnId(att.conn),
                                port: WsPort(ws.clone()),
                                kind: MemberKind::Native,
                            },
                            last_seen,
                            now_s,
                        );
                    }
                    Some(Frame::Ping { nonce }) => {
                        let _ = ws.send_with_bytes(Frame::Pong { nonce }.encode());
                    }
                    _ => {
                        let c = CloseCode::ProtocolError;
                        let _ = ws.close(Some(c.as_u16()), Some(c.reason()));
                    }
                }
                return Ok(());
            }
            let limits = inner.settings.conn;
            let cs = inner.conns.entry(att.conn).or_default();
            let decided = match &msg {
                WebSocketIncomingMessage::Binary(b) => {
                    cs.handle_binary(b, &limits, Duration::from_millis(now_ms()))
                }
                WebSocketIncomingMessage::String(_) => cs.handle_text(&limits),
            };
            let conn = ConnId(att.conn);
            match decided {
                Inbound::Nothing => {}
                Inbound::Publish { id, envelope } => {
                    let out = inner.room.publish(conn, id, envelope, now_s);
                    if out.persist.is_some() {
                        persist = Some((inner.room.seq(), out.persist));
                    }
                }
                Inbound::Signal {
                    peer,
                    kind,
                    payload,
                } => {
                    inner.room.signal(conn, peer, kind, payload);
                }
                Inbound::Reply(f) => {
                    let _ = ws.send_with_bytes(f.encode());
                }
                Inbound::Close(code) => {
                    let _ = ws.close(Some(code.as_u16()), Some(code.reason()));
                    inner.room.leave(conn);
                    inner.conns.remove(&att.conn);
                }
            }
        }
        if let Some((seq, clip)) = persist {
            self.persist(seq, clip).await?;
        }
        Ok(())
    }

    /// A socket closed or failed: it leaves the room, and the counts it
    /// held go to storage now (its attachment goes with it).
    async fn left(&self, ws: &WebSocket) -> worker::Result<()> {
        let Some(mut a) = attachment(ws) else {
            return Ok(());
        };
        if let Some(inner) = self.inner.borrow_mut().as_mut() {
            inner.room.leave(ConnId(a.conn));
            inner.conns.remove(&a.conn);
        }
        let counts = std::mem::take(&mut a.unmetered);
        // A close and an error for one socket must not count it twice.
        let _ = ws.serialize_attachment(&a);
        self.add_usage(counts).await
    }
}

/// When a socket connecting now must have sent `Hello` (Unix ms; whole
/// seconds rounded up, as the sweep counts).
fn hello_due(hello_ms: u64) -> u64 {
    (api::unix_now().max(0) as u64 + 1) * 1000 + hello_ms
}

fn rand_u32() -> u32 {
    use rand::RngCore;
    rand::rngs::OsRng.next_u32()
}

impl DurableObject for UserRoom {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            inner: RefCell::new(None),
        }
    }

    async fn fetch(&self, req: Request) -> worker::Result<Response> {
        let url = req.url()?;
        // Every request from the Worker names the room's user, so a room
        // first reached through `/online` or `/revoke` knows it too.
        let user = url
            .query_pairs()
            .find(|(k, _)| k == "user")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .map(UserId);
        if let Some(u) = user {
            if self.inner.borrow().is_none() {
                self.state.storage().put("user", u.0).await?;
            }
            self.ensure_loaded(Some(u)).await?;
        }
        match url.path() {
            "/ws" => self.accept(req).await,
            "/revoke" => {
                self.ensure_loaded(None).await?;
                let device = url
                    .query_pairs()
                    .find(|(k, _)| k == "device")
                    .and_then(|(_, v)| v.parse::<u64>().ok());
                if let Some(d) = device {
                    if let Some(inner) = self.inner.borrow_mut().as_mut() {
                        inner.room.revoke(Some(DeviceId(d)));
                    }
                    // Sockets still waiting for their Hello.
                    for ws in self.state.get_websockets_with_tag(&format!("d{d}")) {
                        let c = CloseCode::Unauthorized;
                        let _ = ws.close(Some(c.as_u16()), Some(c.reason()));
                    }
                }
                Response::empty()
            }
            "/rekey" => {
                // A new key epoch: every socket of the account closes with
                // 1012, members and sockets still waiting for their Hello,
                // so each device reconnects and fetches its wrap on join.
                self.ensure_loaded(None).await?;
                if let Some(inner) = self.inner.borrow_mut().as_mut() {
                    inner.room.reconnect_all();
                }
                let c = CloseCode::ServiceRestart;
                for ws in self.state.get_websockets() {
                    let _ = ws.close(Some(c.as_u16()), Some(c.reason()));
                }
                Response::empty()
            }
            "/online" => {
                self.ensure_loaded(None).await?;
                let ids: Vec<u64> = self
                    .inner
                    .borrow()
                    .as_ref()
                    .map(|i| i.room.online().into_iter().map(|d| d.id.0).collect())
                    .unwrap_or_default();
                Response::from_json(&ids)
            }
            "/status" => {
                self.ensure_loaded(None).await?;
                let mut v = self.status_json();
                // When the next alarm fires (Unix ms), if one is set.
                v["alarm_at"] = self.state.storage().get_alarm().await?.into();
                let u = self.usage_today().await?;
                v["usage_today"] = serde_json::json!({"messages": u.messages, "bytes": u.bytes});
                Response::from_json(&v)
            }
            _ => Response::error("not found", 404),
        }
    }

    async fn alarm(&self) -> worker::Result<Response> {
        self.ensure_loaded(None).await?;
        self.flush_usage().await?;
        if let Some(t) = self.sweep_hello() {
            // An i64 is an offset from now, in milliseconds.
            self.state
                .storage()
                .set_alarm(t.saturating_sub(now_ms()).max(1) as i64)
                .await?;
        }
        Response::empty()
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> worker::Result<()> {
        self.message(ws, message).await
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> worker::Result<()> {
        self.ensure_loaded(None).await?;
        self.left(&ws).await
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> worker::Result<()> {
        self.ensure_loaded(None).await?;
        self.left(&ws).await
    }
}

fn stub(env: &Env, user: UserId) -> worker::Result<worker::Stub> {
    env.durable_object(ROOMS)?
        .id_from_name(&user.0.to_string())?
        .get_stub()
}

/// `GET /api/v1/ws`: authenticates, records `last_seen`, and hands the
/// upgrade to the user's room.
pub async fn upgrade(req: Request, env: &Env) -> Result<Response, ApiError> {
    let s = Settings::from_env(env);
    let (token, v1) = session::request_token(&req);
    let me = session::authenticate(env, &s, token.as_deref()).await?;
    let is_ws = req
        .headers()
        .get("Upgrade")?
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_ws {
        return Err(ApiError::bad_request("expected a WebSocket upgrade"));
    }
    let _ = env
        .d1(session::DB)?
        .prepare("UPDATE devices SET last_seen_at = ?1 WHERE id = ?2")
        .bind(&[
            wasm_bindgen::JsValue::from_f64(api::unix_now() as f64),
            session::js_u64(me.device.0),
        ])?
        .run()
        .await;
    let headers = Headers::new();
    headers.set("Upgrade", "websocket")?;
    headers.set(
        SESSION_HEADER,
        &serde_json::to_string(&me).map_err(ApiError::internal)?,
    )?;
    if v1 {
        headers.set(V1_HEADER, "1")?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let inner = Request::new_with_init(&format!("https://room/ws?user={}", me.user.0), &init)?;
    Ok(stub(env, me.user)?.fetch_with_request(inner).await?)
}

/// Closes a revoked device's sockets (best effort: the session is already
/// gone from D1 and KV, so it cannot reconnect).
pub async fn revoke(env: &Env, user: UserId, device: DeviceId) {
    if let Ok(st) = stub(env, user) {
        let url = format!("https://room/revoke?user={}&device={}", user.0, device.0);
        if let Err(e) = st.fetch_with_str(&url).await {
            worker::console_warn!("revoke in room failed: {e}");
        }
    }
}

/// Closes every socket of the user's room with 1012 after a new key epoch
/// (best effort: a device that misses it fetches the new epoch's wrap on
/// its next join, and until then its clips fail to open elsewhere).
pub async fn rekey(env: &Env, user: UserId) {
    if let Ok(st) = stub(env, user) {
        let url = format!("https://room/rekey?user={}", user.0);
        if let Err(e) = st.fetch_with_str(&url).await {
            worker::console_warn!("rekey in room failed: {e}");
        }
    }
}

/// The devices online in the user's room.
pub async fn online(env: &Env, user: UserId) -> Vec<DeviceId> {
    let Ok(st) = stub(env, user) else {
        return Vec::new();
    };
    match st
        .fetch_with_str(&format!("https://room/online?user={}", user.0))
        .await
    {
        Ok(mut r) => r
            .json::<Vec<u64>>()
            .await
            .map(|v| v.into_iter().map(DeviceId).collect())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// `GET /api/v1/admin/users/{id}/status` (an admin's token): user `id`'s
/// room as `/api/v1/status` shows it (sockets with seconds connected,
/// last message and idle seconds), plus the account's devices with their
/// last connect (`last_seen_at`, D1). Not an admin: 403; no such user: 404.
pub async fn admin_status(req: Request, env: &Env, id: &str) -> Result<Response, ApiError> {
    let s = Settings::from_env(env);
    let (token, _) = session::request_token(&req);
    let me = session::authenticate(env, &s, token.as_deref()).await?;
    let user = UserId(clipmesh_room::validate::path_id(id)?);
    #[derive(serde::Deserialize)]
    struct Admin {
        is_admin: u32,
    }
    let db = env.d1(session::DB)?;
    let admin: Option<Admin> = db
        .prepare("SELECT is_admin FROM users WHERE id = ?1")
        .bind(&[session::js_u64(me.user.0)])?
        .first(None)
        .await?;
    if admin.is_none_or(|a| a.is_admin == 0) {
        return Err(ApiError::new(403, "forbidden", "admin only"));
    }
    let exists: Option<Admin> = db
        .prepare("SELECT is_admin FROM users WHERE id = ?1")
        .bind(&[session::js_u64(user.0)])?
        .first(None)
        .await?;
    if exists.is_none() {
        return Err(ApiError::not_found("user"));
    }
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Device {
        id: u64,
        name: String,
        last_seen_at: i64,
    }
    let devices: Vec<Device> = db
        .prepare("SELECT id, name, last_seen_at FROM devices WHERE user_id = ?1 ORDER BY id")
        .bind(&[session::js_u64(user.0)])?
        .all()
        .await?
        .results()?;
    let mut r = stub(env, user)?
        .fetch_with_str(&format!("https://room/status?user={}", user.0))
        .await?;
    let mut v: serde_json::Value = r.json().await?;
    v["devices"] = serde_json::to_value(devices).map_err(ApiError::internal)?;
    api::ok_json(&v)
}

/// `GET /api/v1/status`: the caller's room (sockets, how long each has been
/// connected, sequence number, wakes).
pub async fn status(req: Request, env: &Env) -> Result<Response, ApiError> {
    let s = Settings::from_env(env);
    let (token, _) = session::request_token(&req);
    let me = session::authenticate(env, &s, token.as_deref()).await?;
    let mut r = stub(env, me.user)?
        .fetch_with_str(&format!("https://room/status?user={}", me.user.0))
        .await?;
    let v: serde_json::Value = r.json().await?;
    api::ok_json(&v)
}
