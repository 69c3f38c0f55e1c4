//! The `UserRoom` Durable Object: one per user (`idFromName(user_id)`),
//! holding that user's sockets with the Hibernation API and driving
//! `clipmesh_room::RoomState`, plus the Worker-side helpers that reach it.
//!
//! - Sockets are accepted with `acceptWebSocket`, tagged `d<device>`, and
//!   carry a serialized attachment ([`Attachment`]: user, device, name,
//!   connection id, whether `Hello` was seen, last message). After a wake
//!   the room's membership is rebuilt from `getWebSockets()` and those
//!   attachments. A member's messages find its connection through an
//!   in-memory map from the socket object, so the hot path reads and
//!   writes no attachment.
//! - **The newest clip** and the sequence number live in DO storage
//!   (`clip`, which carries its sequence number and the sealed envelope as
//!   bytes, and `seq` when the two differ). A publish fans out at once;
//!   the write and the publisher's `Ack` wait for a zero-delay timer
//!   ([`UserRoom::schedule_write`]), which the runtime runs when no other
//!   event is ready: so the clips published meanwhile share one write
//!   (group commit; only the newest of them is kept anyway), and their
//!   `Ack`s are sent right after it is issued. The runtime's output gate
//!   holds those `Ack`s (and anything else the object sends after the
//!   write) until the write is confirmed, so an acknowledged clip is
//!   stored, as on the native relay, while the sockets' next messages are
//!   handled at once. A write the runtime refuses at once closes the
//!   publishers with 1013 instead; one that fails later breaks the output
//!   gate and the runtime resets the object (its sockets close, and the
//!   devices publish their unacknowledged clips again after they
//!   reconnect).
//! - `wakes` in storage counts how often the object was constructed to
//!   handle an event (a cold start or a wake from hibernation); `/status`
//!   reports it, which is how the hibernation test sees eviction and
//!   wakes.
//! - Per-connection state (bad-frame strikes, the publish limiter, usage
//!   counts not yet stored, the last message time) lives in memory.
//! - **Metering:** every inbound message counts (messages, bytes) in
//!   memory; the first uncounted one arms the alarm for at most
//!   [`USAGE_FLUSH_MS`] later (up to [`USAGE_FLUSH_JITTER_MS`] earlier, at
//!   random, so rooms do not flush in step), which adds the counts to the day's
//!   `usage:<day>` in storage and writes each socket's last message time
//!   into its attachment. A closing socket's counts go to storage in its
//!   close handler. The flush is shorter than the idle time after which
//!   the runtime may evict the object (about 10 s), so eviction loses
//!   nothing; a crash or restart of the runtime loses at most
//!   [`USAGE_FLUSH_MS`] of counts. A connect when the day's messages reach
//!   `DAILY_MESSAGE_QUOTA` (0: none) is answered 101, then
//!   `Error{RateLimited, "quota exceeded: …"}` and close 4003.
//! - One alarm serves both the `Hello` timeout and the usage flush.
//! - **`last_seen_at`** (a device's last connect, in D1) is written by the
//!   flush for every socket whose attachment is not yet marked `seen`, in
//!   one D1 batch, or by the close handler of a socket that ends before
//!   it; the Worker's upgrade path writes nothing to D1.

use crate::api::{self, ApiError};
use crate::config::Settings;
use crate::session::{self, Session};
use clipmesh_proto::{CloseCode, DeviceId, ErrorCode, Frame, UserId};
use clipmesh_room::conn::{ConnState, Inbound};
use clipmesh_room::{Clip, ConnId, HeldAck, Member, MemberKind, Port, PortFull, RoomState};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::{JsCast, JsValue};
use worker::js_sys::{self, Reflect, Uint8Array};
use worker::wasm_bindgen_futures::{self, JsFuture};
use worker::worker_sys::DurableObjectStorage;
use worker::{
    durable_object, DurableObject, Env, Headers, Method, Request, RequestInit, Response, State,
    Storage, WebSocket, WebSocketIncomingMessage, WebSocketPair,
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
    /// yet), as of the last usage flush. Protocol pings never reach the
    /// room, so they do not count.
    #[serde(default)]
    pub last_msg: i64,
    /// Whether its connect time is in its device's `last_seen_at` (D1).
    #[serde(default)]
    pub seen: bool,
}

/// How long usage counts stay in memory before the alarm writes them, at
/// most: shorter than the idle time after which the runtime may evict the
/// object, so an eviction finds them stored.
const USAGE_FLUSH_MS: u64 = 5_000;
/// Each flush comes up to this much earlier than [`USAGE_FLUSH_MS`], at
/// random: rooms that start together (a relay's restart, a benchmark) would
/// otherwise keep flushing together, and their alarms then hold the
/// runtime's thread for tens of milliseconds every few seconds (measured:
/// docs/benchmarks.md, "Sixth round").
const USAGE_FLUSH_JITTER_MS: u32 = 1_000;

/// Messages and bytes a user's devices sent (metering).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Usage {
    messages: u64,
    bytes: u64,
}

impl Usage {
    fn add(&mut self, o: Usage) {
        self.messages += o.messages;
        self.bytes += o.bytes;
    }
}

/// The storage key of a day's usage (`usage:<days since the epoch>`).
fn usage_key(unix_s: i64) -> String {
    format!("usage:{}", unix_s.max(0) / 86_400)
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

/// A connection's state in memory.
#[derive(Default)]
struct Conn {
    /// Bad-frame strikes and the publish limiter.
    state: ConnState,
    /// Messages and bytes not yet in storage.
    unmetered: Usage,
    /// When it last sent a message, Unix seconds (0: not since the wake).
    last_msg: i64,
    /// Whether `last_msg` is newer than its attachment's.
    last_msg_dirty: bool,
}

struct Inner {
    room: RoomState<WsPort>,
    conns: HashMap<u64, Conn>,
    /// Joined sockets (the runtime's socket objects, stable while the
    /// object lives) to their connection id.
    members: js_sys::Map,
    /// Counts of connections that closed before the flush.
    closed: Usage,
    /// When the armed usage flush is due (Unix ms), if counts wait for one.
    flush_due: Option<u64>,
    settings: Settings,
    wakes: u64,
    /// WebSocket messages handled since this construction (memory only).
    messages: u64,
    /// The newest clip, published but not yet written to storage.
    unstored: Option<Clip>,
    /// The `Ack`s of the clips published since the last write: sent after
    /// the next write (group commit, see the module's documentation). Not
    /// empty exactly while that write is scheduled.
    held: Vec<HeldAck>,
}

impl Inner {
    /// Counts one inbound message of `conn`; gives the flush due time
    /// when this message has to arm it.
    fn count(&mut self, conn: u64, len: u64, now_s: i64) -> Option<u64> {
        self.messages += 1;
        let c = self.conns.entry(conn).or_default();
        c.unmetered.add(Usage {
            messages: 1,
            bytes: len,
        });
        c.last_msg = now_s;
        c.last_msg_dirty = true;
        if self.flush_due.is_some() {
            return None;
        }
        let due = now_ms() + USAGE_FLUSH_MS - u64::from(rand_u32() % USAGE_FLUSH_JITTER_MS);
        self.flush_due = Some(due);
        Some(due)
    }

    /// The counts in memory.
    fn unmetered(&self) -> Usage {
        let mut sum = self.closed;
        self.conns.values().for_each(|c| sum.add(c.unmetered));
        sum
    }
}

/// One user's room.
#[durable_object]
pub struct UserRoom {
    state: State,
    env: Env,
    /// Shared with the scheduled clip write ([`write_unstored`]).
    inner: Rc<RefCell<Option<Inner>>>,
}

fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

fn attachment(ws: &WebSocket) -> Option<Attachment> {
    ws.deserialize_attachment::<Attachment>().ok().flatten()
}

/// The runtime's object for a socket (the key of [`Inner::members`]).
fn js_key(ws: &WebSocket) -> &JsValue {
    AsRef::<worker::web_sys::WebSocket>::as_ref(ws).as_ref()
}

fn js_set(obj: &js_sys::Object, key: &str, value: &JsValue) -> worker::Result<()> {
    Reflect::set(obj, &JsValue::from_str(key), value)?;
    Ok(())
}

/// `storage.put(key, value)`, not awaited: the runtime's output gate
/// holds every message the object sends after it until the write is
/// confirmed (and resets the object if it fails), so the event need not
/// wait for it.
fn put_gated(storage: &DurableObjectStorage, key: &str, value: JsValue) -> worker::Result<()> {
    // Not awaited: the output gate is what waits for it.
    let _confirmed = storage.put(key, value)?;
    Ok(())
}

/// Issues the write of the room's sequence number and newest clip (one
/// write when the clip carries the room's sequence number, which a
/// publish's does; [`UserRoom::ensure_loaded`] takes the larger of the two
/// keys). Messages sent after it wait for its confirmation.
fn persist(storage: &DurableObjectStorage, seq: u64, c: &Clip) -> worker::Result<()> {
    let v = js_sys::Object::new();
    js_set(&v, "seq", &JsValue::from_f64(c.seq as f64))?;
    js_set(&v, "from", &JsValue::from_f64(c.from.0 as f64))?;
    let envelope = match &c.envelope {
        Some(e) => Uint8Array::from(&e[..]).into(),
        None => JsValue::NULL,
    };
    js_set(&v, "envelope", &envelope)?;
    js_set(&v, "stored_at", &JsValue::from_f64(c.stored_at as f64))?;
    put_gated(storage, "clip", v.into())?;
    if c.seq != seq {
        put_gated(storage, "seq", JsValue::from_f64(seq as f64))?;
    }
    Ok(())
}

/// The scheduled write of a room's newest clip: writes the clip published
/// last (if any is still unstored) and then sends every held `Ack`, which
/// the output gate holds until that write is confirmed; if the runtime
/// refuses the write at once, their publishers are closed with 1013
/// instead.
fn write_unstored(inner: &RefCell<Option<Inner>>, storage: &DurableObjectStorage) {
    let mut guard = inner.borrow_mut();
    let Some(inner) = guard.as_mut() else {
        return;
    };
    let held = std::mem::take(&mut inner.held);
    let stored = match inner.unstored.take() {
        Some(clip) => persist(storage, inner.room.seq(), &clip),
        // Nothing to write: the clip was forgotten (a new key epoch) and
        // every member was closed meanwhile.
        None => Ok(()),
    };
    match stored {
        Ok(()) => held.into_iter().for_each(|a| inner.room.release_ack(a)),
        Err(e) => {
            worker::console_warn!("storing the newest clip failed: {e}");
            held.into_iter().for_each(|a| inner.room.fail_ack(a));
        }
    }
}

/// The stored newest clip: `{seq, from, envelope, stored_at}`, the
/// envelope as bytes (or, as earlier versions wrote it, hex), `null` when
/// the clip TTL is 0.
async fn load_clip(storage: &Storage) -> worker::Result<Option<Clip>> {
    let v = JsFuture::from(storage.as_raw().get("clip")?).await?;
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    let num = |k: &str| {
        Reflect::get(&v, &JsValue::from_str(k))
            .ok()
            .and_then(|x| x.as_f64())
            .unwrap_or(0.0)
    };
    let env = Reflect::get(&v, &JsValue::from_str("envelope"))?;
    let envelope = if let Some(h) = env.as_string() {
        hex::decode(h).ok().map(bytes::Bytes::from)
    } else if env.is_instance_of::<Uint8Array>() {
        Some(bytes::Bytes::from(
            env.unchecked_into::<Uint8Array>().to_vec(),
        ))
    } else {
        None
    };
    Ok(Some(Clip {
        seq: num("seq") as u64,
        from: DeviceId(num("from") as u64),
        envelope,
        stored_at: num("stored_at") as i64,
    }))
}

impl UserRoom {
    /// Loads the room after a construction (cold start or wake): sequence
    /// number, newest clip, and the joined sockets as members.
    async fn ensure_loaded(&self, user: Option<UserId>) -> worker::Result<()> {
        if self.inner.borrow().is_some() {
            return Ok(());
        }
        let storage = self.state.storage();
        let clip = load_clip(&storage).await?;
        // A publish writes only the clip record, which carries its
        // sequence number; `seq` is written when the two differ.
        let seq: u64 = storage
            .get::<u64>("seq")
            .await?
            .unwrap_or(0)
            .max(clip.as_ref().map_or(0, |c| c.seq));
        // The user is stored once (reads cost nothing measurable; a write
        // per construction would cost a row each time).
        let stored = storage.get::<u64>("user").await?;
        let user = match user {
            Some(u) => {
                if stored != Some(u.0) {
                    storage.put("user", u.0).await?;
                }
                u
            }
            None => UserId(stored.unwrap_or(0)),
        };
        let wakes: u64 = storage.get::<u64>("wakes").await?.unwrap_or(0) + 1;
        storage.put("wakes", wakes).await?;
        if self.inner.borrow().is_some() {
            return Ok(());
        }
        let index = js_sys::Map::new();
        let members = self
            .state
            .get_websockets()
            .into_iter()
            .filter_map(|ws| {
                let a = attachment(&ws)?;
                if !a.joined {
                    return None;
                }
                index.set(js_key(&ws), &JsValue::from_f64(a.conn as f64));
                Some(Member {
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
            room: RoomState::new(user, settings.room, seq, clip, members),
            conns: HashMap::new(),
            members: index,
            closed: Usage::default(),
            flush_due: None,
            settings,
            wakes,
            messages: 0,
            unstored: None,
            held: Vec::new(),
        });
        Ok(())
    }

    /// Schedules [`write_unstored`] on a zero-delay timer: the runtime
    /// runs timers when it has no other event ready, so every clip
    /// published before then shares one storage write (group commit).
    fn schedule_write(&self) {
        let inner = Rc::clone(&self.inner);
        let storage: DurableObjectStorage = AsRef::<JsValue>::as_ref(self.state.storage().as_raw())
            .clone()
            .unchecked_into();
        wasm_bindgen_futures::spawn_local(async move {
            worker::Delay::from(Duration::ZERO).await;
            write_unstored(&inner, &storage);
        });
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
            seen: false,
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
        let mut day: Usage = self
            .state
            .storage()
            .get(&usage_key(api::unix_now()))
            .await?
            .unwrap_or_default();
        day.add(self.unmetered());
        Ok(day)
    }

    /// The counts in memory, not in storage yet.
    fn unmetered(&self) -> Usage {
        self.inner
            .borrow()
            .as_ref()
            .map(Inner::unmetered)
            .unwrap_or_default()
    }

    /// Moves the counts in memory to today's stored usage, and each
    /// socket's last message time into its attachment.
    async fn flush_usage(&self) -> worker::Result<()> {
        let mut sum = Usage::default();
        let mut last: HashMap<u64, i64> = HashMap::new();
        {
            let mut guard = self.inner.borrow_mut();
            let Some(inner) = guard.as_mut() else {
                return Ok(());
            };
            inner.flush_due = None;
            sum.add(std::mem::take(&mut inner.closed));
            for (id, c) in inner.conns.iter_mut() {
                sum.add(std::mem::take(&mut c.unmetered));
                if std::mem::take(&mut c.last_msg_dirty) {
                    last.insert(*id, c.last_msg);
                }
            }
        }
        if !last.is_empty() {
            for ws in self.state.get_websockets() {
                let Some(mut a) = attachment(&ws) else {
                    continue;
                };
                if let Some(&t) = last.get(&a.conn) {
                    a.last_msg = t;
                    ws.serialize_attachment(&a)?;
                }
            }
        }
        self.add_usage(sum).await?;
        self.record_seen().await;
        Ok(())
    }

    /// Writes `last_seen_at` (the connect time) of the devices whose sockets
    /// are not marked `seen` in their attachment: one D1 batch per flush
    /// instead of a write per connect. Best effort, as the native relay's:
    /// after a failure the next flush tries again.
    async fn record_seen(&self) {
        let mut latest: HashMap<u64, i64> = HashMap::new();
        let mut conns = Vec::new();
        for a in self.state.get_websockets().iter().filter_map(attachment) {
            if !a.seen {
                conns.push(a.conn);
                let t = latest.entry(a.device).or_insert(a.since);
                *t = (*t).max(a.since);
            }
        }
        if latest.is_empty() || !self.write_seen(&latest).await {
            return;
        }
        // Other events ran during the write: read each attachment again
        // and change only its mark.
        for ws in self.state.get_websockets() {
            let Some(mut a) = attachment(&ws) else {
                continue;
            };
            if !a.seen && conns.contains(&a.conn) {
                a.seen = true;
                if let Err(e) = ws.serialize_attachment(&a) {
                    worker::console_warn!("marking a socket seen failed: {e}");
                }
            }
        }
    }

    /// Writes each device's `last_seen_at` (never moving it back) in one D1
    /// batch; false (and a warning) when it failed.
    async fn write_seen(&self, latest: &HashMap<u64, i64>) -> bool {
        let write = async {
            let db = self.env.d1(session::DB)?;
            let mut batch = Vec::with_capacity(latest.len());
            for (device, t) in latest {
                batch.push(
                    db.prepare(
                        "UPDATE devices SET last_seen_at = MAX(last_seen_at, ?1) WHERE id = ?2",
                    )
                    .bind(&[JsValue::from_f64(*t as f64), session::js_u64(*device)])?,
                );
            }
            db.batch(batch).await?;
            Ok::<_, worker::Error>(())
        };
        match write.await {
            Ok(()) => true,
            Err(e) => {
                worker::console_warn!("recording last_seen_at failed: {e}");
                false
            }
        }
    }

    /// Adds `mem` to today's stored usage.
    async fn add_usage(&self, mem: Usage) -> worker::Result<()> {
        if mem.messages == 0 {
            return Ok(());
        }
        let key = usage_key(api::unix_now());
        let storage = self.state.storage();
        let mut day: Usage = storage.get(&key).await?.unwrap_or_default();
        day.add(mem);
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
                let mem = inner.conns.get(&a.conn).map_or(0, |c| c.last_msg);
                let last_msg = a.last_msg.max(mem);
                let last = (last_msg > 0).then_some(last_msg);
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
            "unflushed_messages": inner.unmetered().messages,
        })
    }

    /// Handles one inbound message of a joined or joining socket.
    async fn message(&self, ws: WebSocket, msg: WebSocketIncomingMessage) -> worker::Result<()> {
        self.ensure_loaded(None).await?;
        let len = match &msg {
            WebSocketIncomingMessage::Binary(b) => b.len(),
            WebSocketIncomingMessage::String(t) => t.len(),
        } as u64;
        let now_s = api::unix_now();
        let known = self
            .inner
            .borrow()
            .as_ref()
            .and_then(|i| i.members.get(js_key(&ws)).as_f64());
        let conn = match known {
            Some(c) => c as u64,
            None => {
                let Some(att) = attachment(&ws) else {
                    let _ = ws.close(Some(CloseCode::ProtocolError.as_u16()), Some("no session"));
                    return Ok(());
                };
                if !att.joined {
                    return self.before_hello(ws, att, msg, len, now_s).await;
                }
                if let Some(i) = self.inner.borrow().as_ref() {
                    i.members
                        .set(js_key(&ws), &JsValue::from_f64(att.conn as f64));
                }
                att.conn
            }
        };
        let arm;
        {
            let mut guard = self.inner.borrow_mut();
            let Some(inner) = guard.as_mut() else {
                return Ok(());
            };
            arm = inner.count(conn, len, now_s);
            let limits = inner.settings.conn;
            let cs = &mut inner.conns.entry(conn).or_default().state;
            let decided = match &msg {
                WebSocketIncomingMessage::Binary(b) => {
                    cs.handle_binary(b, &limits, Duration::from_millis(now_ms()))
                }
                WebSocketIncomingMessage::String(_) => cs.handle_text(&limits),
            };
            let id = ConnId(conn);
            match decided {
                Inbound::Nothing => {}
                Inbound::Publish { id: pid, envelope } => {
                    // `Deliver`s go out now; the clip is written by the
                    // scheduled write, and the `Ack` sent after it.
                    let out = inner.room.publish_held(id, pid, envelope, now_s);
                    if let (Some(clip), Some(ack)) = (out.persist, out.held_ack) {
                        inner.unstored = Some(clip);
                        if inner.held.is_empty() {
                            self.schedule_write();
                        }
                        inner.held.push(ack);
                    }
                }
                Inbound::Signal {
                    peer,
                    kind,
                    payload,
                } => {
                    inner.room.signal(id, peer, kind, payload);
                }
                Inbound::Reply(f) => {
                    let _ = ws.send_with_bytes(f.encode());
                }
                Inbound::Close(code) => {
                    let _ = ws.close(Some(code.as_u16()), Some(code.reason()));
                    inner.room.leave(id);
                    inner.members.delete(js_key(&ws));
                    if let Some(c) = inner.conns.remove(&conn) {
                        inner.closed.add(c.unmetered);
                    }
                }
            }
        }
        if let Some(due) = arm {
            self.arm_alarm(due).await?;
        }
        Ok(())
    }

    /// A message of a socket that has not joined yet: only `Hello` or
    /// `Ping` (anything else closes it with 4002).
    async fn before_hello(
        &self,
        ws: WebSocket,
        mut att: Attachment,
        msg: WebSocketIncomingMessage,
        len: u64,
        now_s: i64,
    ) -> worker::Result<()> {
        let arm = {
            let mut guard = self.inner.borrow_mut();
            let Some(inner) = guard.as_mut() else {
                return Ok(());
            };
            let arm = inner.count(att.conn, len, now_s);
            let frame = match &msg {
                WebSocketIncomingMessage::Binary(b) => Frame::decode(b).ok(),
                WebSocketIncomingMessage::String(_) => None,
            };
            match frame {
                Some(Frame::Hello { last_seen }) => {
                    att.joined = true;
                    att.last_msg = now_s;
                    ws.serialize_attachment(&att)?;
                    inner
                        .members
                        .set(js_key(&ws), &JsValue::from_f64(att.conn as f64));
                    inner.room.join(
                        Member {
                            device: DeviceId(att.device),
                            name: att.name,
                            conn: ConnId(att.conn),
                            port: WsPort(ws),
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
            arm
        };
        if let Some(due) = arm {
            self.arm_alarm(due).await?;
        }
        Ok(())
    }

    /// A socket closed or failed: it leaves the room, and the counts it
    /// held go to storage now.
    async fn left(&self, ws: &WebSocket) -> worker::Result<()> {
        let Some(a) = attachment(ws) else {
            return Ok(());
        };
        let mut counts = Usage::default();
        // A connection that ends before a flush recorded its connect. A
        // close and an error for one socket may both get here: the second
        // write changes nothing.
        let unseen = !a.seen;
        if let Some(inner) = self.inner.borrow_mut().as_mut() {
            inner.room.leave(ConnId(a.conn));
            inner.members.delete(js_key(ws));
            // A close and an error for one socket must not count it twice:
            // the entry goes with the first.
            if let Some(c) = inner.conns.remove(&a.conn) {
                counts = c.unmetered;
            }
        }
        if unseen {
            self.write_seen(&HashMap::from([(a.device, a.since)])).await;
        }
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
            inner: Rc::new(RefCell::new(None)),
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
                // Without a device: every socket (an account disabled or
                // deleted by an admin; `forget=1` also wipes the storage).
                let forget =
                    device.is_none() && url.query_pairs().any(|(k, v)| k == "forget" && v == "1");
                if let Some(inner) = self.inner.borrow_mut().as_mut() {
                    inner.room.revoke(device.map(DeviceId));
                    if forget {
                        // A scheduled write must not store the newest clip
                        // after the wipe below.
                        inner.unstored = None;
                    }
                }
                // Sockets still waiting for their Hello.
                let c = CloseCode::Unauthorized;
                let left = match device {
                    Some(d) => self.state.get_websockets_with_tag(&format!("d{d}")),
                    None => self.state.get_websockets(),
                };
                for ws in left {
                    let _ = ws.close(Some(c.as_u16()), Some(c.reason()));
                }
                if forget {
                    self.state.storage().delete_alarm().await?;
                    self.state.storage().delete_all().await?;
                    *self.inner.borrow_mut() = None;
                }
                Response::empty()
            }
            "/rekey" => {
                // A new key epoch: every socket of the account closes with
                // 1012, members and sockets still waiting for their Hello,
                // so each device reconnects and fetches its wrap on join.
                // The stored clip is sealed under the old epoch: it goes,
                // the sequence number stays (as natively).
                self.ensure_loaded(None).await?;
                let seq = self.inner.borrow_mut().as_mut().map(|inner| {
                    inner.room.reconnect_all();
                    inner.room.forget_newest();
                    // Sealed under the old epoch: never written now.
                    inner.unstored = None;
                    inner.room.seq()
                });
                if let Some(seq) = seq {
                    self.state.storage().put("seq", seq).await?;
                    self.state.storage().delete("clip").await?;
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
        // The next Hello deadline, or a flush armed by messages that came
        // while this one ran, whichever is first.
        let flush = self.inner.borrow().as_ref().and_then(|i| i.flush_due);
        let next = match (self.sweep_hello(), flush) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(t) = next {
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

/// `GET /api/v1/ws`: authenticates and hands the upgrade to the user's
/// room (which records the device's `last_seen_at` in its next flush).
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

/// Closes every socket of the user's room with 4001 (an admin disabled
/// the account; with `forget`, deleted it: the room's storage goes too).
/// Best effort, as [`revoke`].
pub async fn revoke_all(env: &Env, user: UserId, forget: bool) {
    if let Ok(st) = stub(env, user) {
        let url = format!(
            "https://room/revoke?user={}&forget={}",
            user.0,
            u8::from(forget)
        );
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
