//! One actor per user room, Durable-Objects style.
//!
//! The actor task owns a [`RoomState`] with no locks and reads one inbox,
//! [`RoomMsg`], from a bounded channel ([`ROOM_INBOX_DEPTH`]). It loads the
//! room's sequence number and newest clip from the store when it starts,
//! writes the newest clip back behind the fan-out (at most one write in
//! flight; later clips coalesce into the next write), and after
//! `room.evict_idle_s` without a message hands its members back to the
//! [`crate::Registry`] and exits. Sockets stay open while it is gone; the
//! next message brings it back (see `registry.rs`).
//!
//! The drive loop, as an invariant: *every* input goes through the inbox,
//! every output goes through a member's [`Port`], and the only `.await`s are
//! the inbox, the single in-flight store write and the eviction timer.

pub mod state;

use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::{RoomRecord, Store};
use axum::body::Bytes;
use clipmesh_proto::{DeviceId, SignalKind, UserId};
pub use state::{Clip, ConnId, Member, Port, PortFull, Published, RoomLimits, RoomState};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Depth of a room's inbox. Senders wait when it is full, which pushes back
/// on the connections feeding it.
pub const ROOM_INBOX_DEPTH: usize = 256;

/// A cheap handle to a running room actor: its bounded inbox.
#[derive(Clone, Debug)]
pub struct RoomHandle {
    tx: mpsc::Sender<RoomMsg>,
}

impl RoomHandle {
    /// A new room inbox: the handle and the actor's receiving end.
    pub fn channel() -> (Self, mpsc::Receiver<RoomMsg>) {
        let (tx, rx) = mpsc::channel(ROOM_INBOX_DEPTH);
        (Self { tx }, rx)
    }

    /// Queues a message, waiting while the inbox is full. Gives the message
    /// back if the actor closed its inbox (evicted or stopped).
    pub async fn send(&self, msg: RoomMsg) -> Result<(), RoomMsg> {
        self.tx.send(msg).await.map_err(|e| e.0)
    }

    /// Whether the actor has stopped reading.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A message to a room actor.
#[derive(Debug)]
pub enum RoomMsg {
    /// A device sent `Hello`.
    Join {
        /// The device and its outbound port.
        member: Member<ConnPort>,
        /// `Hello.last_seen`.
        last_seen: u64,
    },
    /// A connection ended.
    Leave {
        /// Which.
        conn: ConnId,
    },
    /// A device published a clip.
    Publish {
        /// From which connection.
        conn: ConnId,
        /// The `Publish` id.
        id: u32,
        /// The sealed envelope.
        envelope: Vec<u8>,
    },
    /// A device sent a signalling frame.
    Signal {
        /// From which connection.
        conn: ConnId,
        /// Target device.
        peer: DeviceId,
        /// Kind.
        kind: SignalKind,
        /// Payload.
        payload: Vec<u8>,
    },
    /// Close one device's sockets (`Some`) or all (`None`) with 4001.
    Revoke {
        /// Which device.
        device: Option<DeviceId>,
    },
    /// Which devices are online.
    Online {
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<DeviceId>>,
    },
    /// The user was deleted: close everything with 4001 and exit without
    /// saving.
    Terminate,
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

type PersistFut = Pin<Box<dyn Future<Output = ()> + Send>>;

fn persist(store: &Store, user: UserId, clip: Clip) -> PersistFut {
    let store = store.clone();
    Box::pin(async move {
        let rec = RoomRecord {
            seq: clip.seq,
            from: clip.from,
            envelope: clip.envelope.map(|b| b.to_vec()),
            stored_at: clip.stored_at,
        };
        if let Err(e) = store.call(move |db| db.save_room(user, &rec)).await {
            tracing::warn!(error = %e, "saving room state failed");
        }
    })
}

/// Runs one room until it is evicted, terminated or the server shuts down.
pub(crate) async fn run(
    user: UserId,
    mut rx: mpsc::Receiver<RoomMsg>,
    members: Vec<Member<ConnPort>>,
    ctx: RoomCtx,
    registry: Arc<Registry>,
) {
    let span = tracing::debug_span!("room", %user);
    async move {
        ctx.metrics.rooms_active.fetch_add(1, Ordering::Relaxed);
        let loaded = ctx.store.call(move |db| db.load_room(user)).await;
        let (seq, newest) = match loaded {
            Ok(Some(r)) => (
                r.seq,
                Some(Clip {
                    seq: r.seq,
                    from: r.from,
                    envelope: r.envelope.map(Bytes::from),
                    stored_at: r.stored_at,
                }),
            ),
            Ok(None) => (0, None),
            Err(e) => {
                tracing::warn!(error = %e, "loading room state failed");
                (0, None)
            }
        };
        tracing::debug!(seq, members = members.len(), "room started");
        let mut state = RoomState::new(user, ctx.limits, seq, newest, members);
        let mut in_flight: Option<PersistFut> = None;
        let mut dirty: Option<Clip> = None;
        let idle = tokio::time::sleep(ctx.evict_after);
        tokio::pin!(idle);
        let mut terminated = false;
        loop {
            tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => break,
                () = async { if let Some(f) = in_flight.as_mut() { f.await } }, if in_flight.is_some() => {
                    in_flight = dirty.take().map(|c| persist(&ctx.store, user, c));
                }
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    if handle(&mut state, msg, &ctx, &mut in_flight, &mut dirty) {
                        terminated = true;
                        break;
                    }
                    idle.as_mut().reset(tokio::time::Instant::now() + ctx.evict_after);
                }
                () = &mut idle, if in_flight.is_none() && dirty.is_none() => {
                    match registry.hibernate(user, &mut rx, &mut state) {
                        Ok(()) => {
                            Metrics::add(&ctx.metrics.rooms_evicted, 1);
                            tracing::debug!("room evicted while idle");
                            break;
                        }
                        Err(leftovers) => {
                            for msg in leftovers {
                                if handle(&mut state, msg, &ctx, &mut in_flight, &mut dirty) {
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
        }
        // Leave the store consistent: finish the write in flight, then the
        // newest pending one.
        if let Some(f) = in_flight.take() {
            f.await;
        }
        if let (Some(c), false) = (dirty.take(), terminated) {
            persist(&ctx.store, user, c).await;
        }
        ctx.metrics.rooms_active.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!("room stopped");
    }
    .instrument(span)
    .await;
}

/// Applies one message. Returns true when the room must exit (terminated).
fn handle(
    state: &mut RoomState<ConnPort>,
    msg: RoomMsg,
    ctx: &RoomCtx,
    in_flight: &mut Option<PersistFut>,
    dirty: &mut Option<Clip>,
) -> bool {
    let now = crate::store::unix_now();
    match msg {
        RoomMsg::Join { member, last_seen } => {
            tracing::debug!(device = %member.device, "join");
            state.join(member, last_seen, now);
        }
        RoomMsg::Leave { conn } => {
            if state.leave(conn) {
                tracing::debug!(conn = conn.0, "leave");
            }
        }
        RoomMsg::Publish { conn, id, envelope } => {
            let out = state.publish(conn, id, envelope, now);
            Metrics::add(&ctx.metrics.frames_relayed, out.delivered);
            Metrics::add(&ctx.metrics.bytes_relayed, out.bytes);
            if let Some(clip) = out.persist {
                tracing::trace!(seq = clip.seq, delivered = out.delivered, "published");
                if in_flight.is_none() {
                    *in_flight = Some(persist(&ctx.store, state.user(), clip));
                } else {
                    *dirty = Some(clip);
                }
            }
        }
        RoomMsg::Signal {
            conn,
            peer,
            kind,
            payload,
        } => {
            if state.signal(conn, peer, kind, payload) {
                Metrics::add(&ctx.metrics.signals, 1);
            }
        }
        RoomMsg::Revoke { device } => state.revoke(device),
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
