//! One actor per user room, Durable-Objects style.
//!
//! The room's logic is [`RoomState`] from the sans-IO `clipmesh-room` crate
//! (shared with the Cloudflare Worker host); this module is its tokio host.
//! The actor task owns a [`RoomState`] with no locks and reads one inbox of
//! [`RoomMsg`], a bounded queue ([`inbox`], [`ROOM_INBOX_DEPTH`]) behind a
//! [`RoomHandle`]. It loads the room's sequence number and newest clip from
//! the store when it starts. A publish is delivered to the online devices at
//! once, but its `Ack` is held until the clip is committed
//! ([`RoomState::publish_held`]): the room starts a write as soon as none is
//! in flight, the store commits the writes of all rooms that arrive within
//! its 20 ms batch window in one transaction (group commit), and clips
//! published while a write is in flight go in the next one (later clips
//! replace earlier unwritten ones). So a device that got its `Ack` knows the
//! clip survives a crash, and one that did not publishes it again after it
//! reconnects. Sequence numbers are reserved in the store [`SEQ_RESERVE`] at
//! a time, so a crash can never make a room hand out a number a device has
//! already seen. After `room.evict_idle_s` without a
//! message it writes what is pending, hands its members back to the
//! [`crate::Registry`] and exits. Sockets stay open while it is gone; the
//! next message brings it back (see `registry.rs`).
//!
//! The drive loop, as an invariant: *every* input goes through the inbox,
//! every output goes through a member's [`Port`], and the only `.await`s are
//! the inbox, store writes (one clip write in flight, and a sequence
//! reservation once per [`SEQ_RESERVE`] publishes), and timers. Every held
//! `Ack` is released or failed when the write that covers it ends.

pub mod inbox;

use crate::metrics::Metrics;
use crate::store::{ClipWrite, Store};
use bytes::Bytes;
use clipmesh_proto::{DeviceId, SignalKind, UserId};
pub use clipmesh_room::state;
pub use clipmesh_room::{
    Clip, ConnId, HeldAck, Member, MemberKind, Port, PortFull, Published, RoomLimits, RoomState,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Depth of a room's inbox. Senders wait when it is full, which pushes back
/// on the connections feeding it.
pub const ROOM_INBOX_DEPTH: usize = 256;

/// A cheap handle to a running room actor: its bounded inbox.
#[derive(Clone, Debug)]
pub struct RoomHandle {
    tx: inbox::Sender,
}

impl RoomHandle {
    /// A new room inbox: the handle and the actor's receiving end.
    pub fn channel() -> (Self, inbox::Receiver) {
        let (tx, rx) = inbox::inbox(ROOM_INBOX_DEPTH);
        (Self { tx }, rx)
    }

    /// Queues a message, waiting while the inbox is full. Gives the message
    /// back if the actor closed its inbox (evicted or stopped).
    pub async fn send(&self, msg: RoomMsg) -> Result<(), RoomMsg> {
        self.tx.send(msg).await
    }

    /// Queues a message if the inbox has room now. Gives it back if the
    /// inbox is full or closed (then [`RoomHandle::send`] waits or reports
    /// the close).
    pub fn try_send(&self, msg: RoomMsg) -> Result<(), RoomMsg> {
        self.tx.try_send(msg)
    }

    /// Whether the actor has stopped reading.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A message to a room actor.
///
/// Kept to two words: queued messages are stored inline in the room's
/// inbox, so the variants that carry more than a word box it.
#[derive(Debug)]
pub enum RoomMsg {
    /// A device sent `Hello`.
    Join(Box<Join>),
    /// A connection ended.
    Leave {
        /// Which.
        conn: ConnId,
    },
    /// A device published a clip.
    Publish(Box<Publish>),
    /// A device sent a signalling frame.
    Signal(Box<Signal>),
    /// A ClipCascade session sent a message.
    CcPublish(Box<CcPublish>),
    /// Close one device's sockets with 4001.
    Revoke {
        /// Which device.
        device: DeviceId,
    },
    /// Close all of the user's sockets with 4001 (account disabled).
    RevokeAll,
    /// Close all of the user's sockets with 1012: the account moved to a
    /// new key epoch, and devices fetch it when they reconnect.
    Rekey,
    /// Which devices are online.
    Online {
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<DeviceId>>,
    },
    /// The user was deleted: close everything with 4001 and exit without
    /// saving.
    Terminate,
}

// Two words: a larger message makes every room's inbox block larger.
const _: () = assert!(std::mem::size_of::<RoomMsg>() <= 16);

/// [`RoomMsg::Join`].
#[derive(Debug)]
pub struct Join {
    /// The device and its outbound port.
    pub member: Member<ConnPort>,
    /// `Hello.last_seen`.
    pub last_seen: u64,
}

/// [`RoomMsg::Publish`].
#[derive(Debug)]
pub struct Publish {
    /// From which connection.
    pub conn: ConnId,
    /// The `Publish` id.
    pub id: u32,
    /// The sealed envelope.
    pub envelope: Vec<u8>,
}

/// [`RoomMsg::CcPublish`].
#[derive(Debug)]
pub struct CcPublish {
    /// From which connection.
    pub conn: ConnId,
    /// The compact JSON body every ClipCascade session receives.
    pub body: Bytes,
}

/// [`RoomMsg::Signal`].
#[derive(Debug)]
pub struct Signal {
    /// From which connection.
    pub conn: ConnId,
    /// Target device.
    pub peer: DeviceId,
    /// Kind.
    pub kind: SignalKind,
    /// Payload.
    pub payload: Vec<u8>,
}

impl RoomMsg {
    /// Closes one device's sockets (`Some`) or all of the user's (`None`).
    pub fn revoke(device: Option<DeviceId>) -> Self {
        match device {
            Some(device) => Self::Revoke { device },
            None => Self::RevokeAll,
        }
    }
}

/// Where an idle room parks its members before it exits: the
/// [`crate::Registry`] that started it. A trait here, so the room does not
/// import the registry that spawns it (no import cycle between them).
pub trait Parking: Send + Sync + 'static {
    /// Called by a room whose idle timer fired: closes the inbox and, if
    /// nothing is left in it, parks the members and returns `Ok` (the actor
    /// then exits). If messages slipped in, the room gets a fresh inbox and
    /// they are returned for it to handle.
    fn hibernate(
        &self,
        user: UserId,
        rx: &mut inbox::Receiver,
        state: &mut RoomState<ConnPort>,
    ) -> Result<(), Vec<RoomMsg>>;
}

/// The real [`Port`]: a connection's [`crate::outbox::Outbox`].
pub type ConnPort = Arc<crate::outbox::Outbox>;

/// What every room needs from the server.
#[derive(Clone)]
pub struct RoomCtx {
    /// Where the newest clip is kept.
    pub store: Store,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Welcome values and limits.
    pub limits: RoomLimits,
    /// Idle time before eviction.
    pub evict_after: Duration,
    /// Server shutdown.
    pub shutdown: CancellationToken,
}

/// A clip write; resolves to the sequence floor it stored (0 on failure).
type PersistFut = Pin<Box<dyn Future<Output = u64> + Send>>;

/// Writes `clip` and moves the room's sequence floor to `clip.seq +`
/// [`SEQ_RESERVE`] in one go, so reservations are topped up by the regular
/// clip writes and publishing rarely waits for the store. The write joins
/// other rooms' writes in one transaction ([`Store::save_clip`]).
fn persist(store: &Store, user: UserId, clip: Clip) -> PersistFut {
    let floor = clip.seq.saturating_add(SEQ_RESERVE);
    let done = store.save_clip(ClipWrite {
        user,
        seq: clip.seq,
        from: clip.from,
        envelope: clip.envelope,
        stored_at: clip.stored_at,
        floor,
    });
    Box::pin(async move {
        match done.await {
            Ok(true) => floor,
            // The batch logged why.
            Ok(false) | Err(_) => 0,
        }
    })
}

/// The actor's persistence state: the newest clip is written as soon as no
/// write is in flight, the publishers' `Ack`s wait for the write that
/// covers their clip, and sequence numbers are reserved in the store ahead
/// of use.
struct Persistence {
    user: UserId,
    store: Store,
    /// The write in progress.
    in_flight: Option<PersistFut>,
    /// The `Ack`s waiting for the write in progress.
    in_flight_acks: Vec<HeldAck>,
    /// The newest clip not yet written.
    dirty: Option<Clip>,
    /// The `Ack`s waiting for `dirty` to be written (it supersedes the
    /// clips they acknowledge, which are never replayed once it exists).
    dirty_acks: Vec<HeldAck>,
    /// Sequence numbers up to here are reserved in the store.
    reserved: u64,
}

impl Persistence {
    /// Before assigning `next`, makes sure a crash cannot make the counter
    /// go back below it. Reservations are made at start and topped up by
    /// clip writes; this waits for the store only when a room publishes
    /// [`SEQ_RESERVE`] clips faster than one write.
    async fn reserve(&mut self, next: u64, state: &mut RoomState<ConnPort>) {
        if next <= self.reserved {
            return;
        }
        // Finish the write in progress first: it may hold one of the store's
        // few permits, and it is only polled from here or the actor loop.
        // Waiting on a second store call while it sits unpolled let rooms
        // take every permit and deadlock the whole store under load.
        if let Some(f) = self.in_flight.take() {
            let floor = f.await;
            self.written(floor, state);
            if next <= self.reserved {
                return;
            }
        }
        let floor = next.saturating_add(SEQ_RESERVE);
        let user = self.user;
        match self
            .store
            .call(move |db| db.set_seq_floor(user, floor))
            .await
        {
            Ok(()) => self.reserved = floor,
            Err(e) => tracing::warn!(error = %e, "reserving sequence numbers failed"),
        }
    }

    fn held_acks(&self) -> usize {
        self.in_flight_acks.len() + self.dirty_acks.len()
    }

    fn idle(&self) -> bool {
        self.in_flight.is_none() && self.dirty.is_none()
    }

    /// The write in progress ended, storing the sequence floor `floor` (0:
    /// it failed). Sends the `Ack`s it covered, or on failure closes their
    /// publishers so they publish again.
    fn written(&mut self, floor: u64, state: &mut RoomState<ConnPort>) {
        self.in_flight = None;
        self.reserved = self.reserved.max(floor);
        for ack in self.in_flight_acks.drain(..) {
            if floor > 0 {
                state.release_ack(ack);
            } else {
                state.fail_ack(ack);
            }
        }
    }

    /// Starts writing the newest clip if it is not written and no write is
    /// in flight.
    fn start_write(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        if let Some(c) = self.dirty.take() {
            self.in_flight = Some(persist(&self.store, self.user, c));
            self.in_flight_acks = std::mem::take(&mut self.dirty_acks);
        }
    }

    /// At exit: finish writing (sending the `Ack`s of what was stored),
    /// then release the reservation so the next start resumes exactly at
    /// `seq`. A terminated room (its user deleted) writes and acknowledges
    /// nothing more.
    async fn finish(&mut self, state: &mut RoomState<ConnPort>, terminated: bool) {
        if let Some(f) = self.in_flight.take() {
            let floor = f.await;
            if !terminated {
                self.written(floor, state);
            }
        }
        if terminated {
            return;
        }
        self.start_write();
        if let Some(f) = self.in_flight.take() {
            let floor = f.await;
            self.written(floor, state);
        }
        let seq = state.seq();
        let user = self.user;
        if let Err(e) = self
            .store
            .call(move |db| db.release_seq_floor(user, seq))
            .await
        {
            tracing::warn!(error = %e, "saving the sequence number failed");
        }
    }
}

/// Most `Ack`s a room holds for uncommitted clips; a publish beyond it waits
/// for the write in flight. Half the default send queue
/// (`limits.outbound_queue`, 64 frames), so a released burst always fits.
pub const MAX_HELD_ACKS: usize = 32;
/// Sequence numbers reserved in the store at a time, so that after a crash a
/// room never reuses a number a device has already seen.
pub const SEQ_RESERVE: u64 = 1000;

/// Runs one room until it is evicted, terminated or the server shuts down.
///
/// Not an `async fn` around an `async move` block, which would keep two
/// copies of the arguments in every room task; the start-up load, sequence
/// reservations and the final write are boxed, so only the running loop's
/// state stays in the task.
pub(crate) fn run(
    user: UserId,
    mut rx: inbox::Receiver,
    members: Vec<Member<ConnPort>>,
    ctx: RoomCtx,
    registry: Arc<dyn Parking>,
) -> impl Future<Output = ()> + Send {
    let span = tracing::debug_span!("room", %user);
    async move {
        ctx.metrics.rooms_active.fetch_add(1, Ordering::Relaxed);
        // Load, and reserve the next SEQ_RESERVE numbers before handling
        // anything, so the first publish does not wait for the store.
        let loaded = Box::pin(ctx.store.call(move |db| {
                let rec = db.load_room(user)?;
                let floor = db.seq_floor(user)?;
                let seq = rec.as_ref().map_or(0, |r| r.seq).max(floor);
                db.set_seq_floor(user, seq.saturating_add(SEQ_RESERVE))?;
                Ok((rec, floor))
            }))
            .await;
        let reserved_ok = loaded.is_ok();
        let (seq, newest) = match loaded {
            Ok((Some(r), floor)) => (
                r.seq.max(floor),
                Some(Clip {
                    seq: r.seq,
                    from: r.from,
                    envelope: r.envelope.map(Bytes::from),
                    stored_at: r.stored_at,
                }),
            ),
            Ok((None, floor)) => (floor, None),
            Err(e) => {
                tracing::warn!(error = %e, "loading room state failed");
                (0, None)
            }
        };
        tracing::debug!(seq, members = members.len(), "room started");
        let mut state = RoomState::new(user, ctx.limits, seq, newest, members);
        let mut p = Persistence {
            user,
            store: ctx.store.clone(),
            in_flight: None,
            in_flight_acks: Vec::new(),
            dirty: None,
            dirty_acks: Vec::new(),
            reserved: if reserved_ok {
                seq.saturating_add(SEQ_RESERVE)
            } else {
                seq
            },
        };
        let idle = tokio::time::sleep(ctx.evict_after);
        tokio::pin!(idle);
        let mut terminated = false;
        loop {
            tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => break,
                floor = async { match p.in_flight.as_mut() { Some(f) => f.await, None => 0 } }, if p.in_flight.is_some() => {
                    p.written(floor, &mut state);
                }
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    if apply(&mut state, msg, &ctx, &mut p).await {
                        terminated = true;
                        break;
                    }
                    idle.as_mut().reset(tokio::time::Instant::now() + ctx.evict_after);
                }
                () = &mut idle, if p.idle() => {
                    match registry.hibernate(user, &mut rx, &mut state) {
                        Ok(()) => {
                            Metrics::add(&ctx.metrics.rooms_evicted, 1);
                            tracing::debug!("room evicted while idle");
                            break;
                        }
                        Err(leftovers) => {
                            for msg in leftovers {
                                if apply(&mut state, msg, &ctx, &mut p).await {
                                    terminated = true;
                                    break;
                                }
                            }
                            if terminated {
                                break;
                            }
                            idle.as_mut().reset(tokio::time::Instant::now() + ctx.evict_after);
                        }
                    }
                }
            }
            p.start_write();
        }
        // Leave the store consistent.
        Box::pin(p.finish(&mut state, terminated)).await;
        ctx.metrics.rooms_active.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!("room stopped");
    }
    .instrument(span)
}

/// Applies one message, reserving sequence numbers first for a publish.
/// Returns true when the room must exit (terminated).
async fn apply(
    state: &mut RoomState<ConnPort>,
    msg: RoomMsg,
    ctx: &RoomCtx,
    p: &mut Persistence,
) -> bool {
    // Held `Ack`s are released together when their write commits: keep
    // their number below a socket's send queue, or a device publishing
    // without waiting for acks would be dropped as a slow consumer by its
    // own burst. Waiting here also pushes back on publishers through the
    // bounded inbox while the store is slow.
    while matches!(msg, RoomMsg::Publish(_)) && p.held_acks() >= MAX_HELD_ACKS {
        p.start_write();
        let Some(f) = p.in_flight.take() else { break };
        let floor = Box::pin(f).await;
        p.written(floor, state);
    }
    if matches!(msg, RoomMsg::Publish(_)) && state.seq() + 1 > p.reserved {
        // Rare (reservations are topped up by clip writes): boxed, so the
        // store call's state is not part of every room task.
        Box::pin(p.reserve(state.seq() + 1, state)).await;
    }
    handle(state, msg, ctx, p)
}

/// Applies one message to the state. Returns true when the room must exit
/// (terminated).
fn handle(
    state: &mut RoomState<ConnPort>,
    msg: RoomMsg,
    ctx: &RoomCtx,
    p: &mut Persistence,
) -> bool {
    let now = crate::clock::system_unix_now();
    match msg {
        RoomMsg::Join(j) => {
            let Join { member, last_seen } = *j;
            tracing::debug!(device = %member.device, "join");
            state.join(member, last_seen, now);
        }
        RoomMsg::Leave { conn } => {
            if state.leave(conn) {
                tracing::debug!(conn = conn.0, "leave");
            }
        }
        RoomMsg::Publish(msg) => {
            let Publish { conn, id, envelope } = *msg;
            let out = state.publish_held(conn, id, envelope, now);
            Metrics::add(&ctx.metrics.frames_relayed, out.delivered);
            Metrics::add(&ctx.metrics.bytes_relayed, out.bytes);
            if let Some(clip) = out.persist {
                tracing::trace!(seq = clip.seq, delivered = out.delivered, "published");
                p.dirty = Some(clip);
            }
            p.dirty_acks.extend(out.held_ack);
        }
        RoomMsg::Signal(sig) => {
            let Signal {
                conn,
                peer,
                kind,
                payload,
            } = *sig;
            if state.signal(conn, peer, kind, payload) {
                Metrics::add(&ctx.metrics.signals, 1);
            }
        }
        RoomMsg::CcPublish(p) => {
            let CcPublish { conn, body } = *p;
            let out = state.cc_publish(conn, body);
            Metrics::add(&ctx.metrics.frames_relayed, out.delivered);
            Metrics::add(&ctx.metrics.bytes_relayed, out.bytes);
            tracing::trace!(delivered = out.delivered, "clipcascade message");
        }
        RoomMsg::Revoke { device } => state.revoke(Some(device)),
        RoomMsg::RevokeAll => state.revoke(None),
        RoomMsg::Rekey => {
            state.reconnect_all();
            // The old epoch's clip goes from memory, and a write of it still
            // queued or in flight may land after the rotation cleared the
            // stored copy: an empty write queued behind it clears it again.
            if let Some(old) = state.forget_newest() {
                p.dirty = Some(Clip {
                    envelope: None,
                    ..old
                });
            }
        }
        RoomMsg::Online { reply } => {
            let _ = reply.send(state.online().into_iter().map(|d| d.id).collect());
        }
        RoomMsg::Terminate => {
            state.revoke(None);
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Db, DB_CONCURRENCY};

    fn clip(seq: u64) -> Clip {
        Clip {
            seq,
            from: DeviceId(1),
            envelope: Some(Bytes::from_static(b"sealed")),
            stored_at: 1,
        }
    }

    /// An epoch change with a live room (`RoomMsg::Rekey`): the rotation's
    /// transaction clears the stored clip while the room's write-behind of
    /// an old-epoch clip is still queued. A device joining afterwards must
    /// not get that clip from memory, and once the writes have run the
    /// store must not hold it.
    #[tokio::test]
    async fn a_rekey_forgets_the_newest_clip_in_memory_and_in_the_store() {
        let mut db = Db::open_in_memory().unwrap();
        let user = crate::store::test_support::user(&mut db, "ann");
        let store = Store::new(db);
        let metrics = Arc::new(Metrics::default());
        let limits = RoomLimits {
            max_devices: 4,
            max_frame: 1024,
            ping_interval_s: 30,
            idle_timeout_s: 45,
            clip_ttl_s: 600,
        };
        let ctx = RoomCtx {
            store: store.clone(),
            metrics: metrics.clone(),
            limits,
            evict_after: Duration::from_secs(60),
            shutdown: CancellationToken::new(),
        };
        let mut state = RoomState::new(user, limits, 0, None, Vec::new());
        let mut p = Persistence {
            user,
            store: store.clone(),
            in_flight: None,
            in_flight_acks: Vec::new(),
            dirty: None,
            dirty_acks: Vec::new(),
            reserved: SEQ_RESERVE,
        };
        let member = |device: u64| {
            let port = crate::outbox::Outbox::new(64, 1 << 20, metrics.clone());
            let m = Member {
                device: DeviceId(device),
                name: format!("d{device}"),
                conn: ConnId(device),
                port: port.clone(),
                kind: MemberKind::Native,
            };
            (
                RoomMsg::Join(Box::new(Join {
                    member: m,
                    last_seen: 0,
                })),
                port,
            )
        };
        let (join_a, _a) = member(1);
        assert!(!handle(&mut state, join_a, &ctx, &mut p));
        let publish = RoomMsg::Publish(Box::new(Publish {
            conn: ConnId(1),
            id: 1,
            envelope: b"sealed under the old epoch".to_vec(),
        }));
        assert!(!handle(&mut state, publish, &ctx, &mut p));
        // The write-behind is queued (it commits after the batch window)...
        p.start_write();
        assert!(p.in_flight.is_some());
        // ...when the rotation's transaction clears the stored clip, and the
        // relay tells the room.
        store.call(|db| db.expire_clips(i64::MAX)).await.unwrap();
        assert!(!handle(&mut state, RoomMsg::Rekey, &ctx, &mut p));
        // A device joining now gets its Welcome and nothing else.
        let (join_b, b) = member(2);
        assert!(!handle(&mut state, join_b, &ctx, &mut p));
        assert!(matches!(b.pop(), crate::outbox::Next::Frame(_)), "welcome");
        assert_eq!(
            b.pop(),
            crate::outbox::Next::Empty,
            "the old-epoch clip was replayed from memory after the rekey"
        );
        // Every write the room has started or queued runs to the end.
        for _ in 0..4 {
            if let Some(f) = p.in_flight.take() {
                let floor = f.await;
                p.written(floor, &mut state);
            }
            p.start_write();
        }
        assert!(p.idle());
        let stored = store.call(move |db| db.load_room(user)).await.unwrap();
        assert!(
            stored.as_ref().is_some_and(|r| r.envelope.is_none()),
            "the store holds the old-epoch clip after the write-behind: {stored:?}"
        );
    }

    /// Regression: every store permit held by a room's in-flight clip write
    /// (polled once, then left while the room reserves sequence numbers)
    /// used to deadlock the store.
    #[tokio::test]
    async fn reserving_while_writes_are_in_flight_does_not_deadlock() {
        let store = Store::new(Db::open_in_memory().unwrap());
        let mut rooms: Vec<Persistence> = (0..DB_CONCURRENCY as u64)
            .map(|u| {
                let mut f = persist(&store, UserId(u + 1), clip(1));
                let waker = futures_util::task::noop_waker();
                let mut cx = std::task::Context::from_waker(&waker);
                // One poll: the write takes a permit and starts.
                let _ = f.as_mut().poll(&mut cx);
                Persistence {
                    user: UserId(u + 1),
                    store: store.clone(),
                    in_flight: Some(f),
                    in_flight_acks: Vec::new(),
                    dirty: None,
                    dirty_acks: Vec::new(),
                    reserved: 0,
                }
            })
            .collect();
        let limits = RoomLimits {
            max_devices: 1,
            max_frame: 1024,
            ping_interval_s: 30,
            idle_timeout_s: 45,
            clip_ttl_s: 60,
        };
        let mut state = RoomState::new(UserId(1), limits, 0, None, Vec::new());
        let all = async {
            for p in &mut rooms {
                p.reserve(SEQ_RESERVE + 5, &mut state).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .expect("reserve finished without deadlock");
        for p in &rooms {
            assert!(p.in_flight.is_none());
            assert!(p.reserved >= SEQ_RESERVE + 5);
        }
    }
}
