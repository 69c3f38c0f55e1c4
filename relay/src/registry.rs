//! The room registry: routes a user id to its room actor, starting it on
//! first use, and keeps the members of evicted rooms so their sockets stay
//! open ("hibernation").
//!
//! Each user has at most one `Slot`:
//!
//! - `Active(handle)`: the actor runs; messages go to its inbox through a
//!   [`RoomHandle`].
//! - `Hibernating(members)`: the actor was evicted while idle. The registry
//!   holds each online device's id, name and outbound port (a few dozen bytes
//!   per socket), like the Durable Objects runtime holds a hibernated
//!   object's WebSockets. The next message for the user starts a new actor
//!   with these members and the state it reloads from the store.
//!
//! Connection tasks never keep a room sender: they call [`Registry::send`]
//! for each message, which looks the slot up, wakes the room if needed and
//! retries if the room was evicted between the lookup and the send.
//!
//! **Invariant:** no message is lost to eviction. A room evicts itself only
//! under the shard lock: it closes its inbox, and if anything arrived in the
//! meantime it keeps running on a fresh inbox instead (see
//! `Registry::hibernate`). A sender whose send fails on a closed inbox
//! gets its message back and retries on the new slot.
//!
//! The shard locks are `std` mutexes held only for map operations, never
//! across an `.await`.

use crate::room::{self, ConnPort, Member, RoomCtx, RoomHandle, RoomMsg, RoomState};
use clipmesh_proto::{CloseCode, DeviceId, UserId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

/// Number of independently locked shards of the user map.
pub const REGISTRY_SHARDS: usize = 16;
/// Attempts to deliver a message across evictions before giving up.
const SEND_ATTEMPTS: usize = 4;

/// A user's entry.
enum Slot {
    Active(RoomHandle),
    Hibernating(Vec<Member<ConnPort>>),
}

/// The room could not be reached (the server is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomGone;

/// Routes users to rooms.
pub struct Registry {
    shards: Vec<Mutex<HashMap<UserId, Slot>>>,
    ctx: RoomCtx,
    tracker: TaskTracker,
}

impl Registry {
    /// An empty registry whose rooms run on `tracker`.
    pub fn new(ctx: RoomCtx, tracker: TaskTracker) -> Arc<Self> {
        Arc::new(Self {
            shards: (0..REGISTRY_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            ctx,
            tracker,
        })
    }

    fn shard(&self, user: UserId) -> MutexGuard<'_, HashMap<UserId, Slot>> {
        let i = (user.0 as usize) % self.shards.len();
        // A poisoned shard means a panic while holding a plain map
        // operation; the map itself is still consistent, so keep going.
        self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The sender of the user's room, starting (or waking) it if needed.
    fn handle(self: &Arc<Self>, user: UserId) -> RoomHandle {
        let mut map = self.shard(user);
        let members = match map.remove(&user) {
            Some(Slot::Active(tx)) if !tx.is_closed() => {
                map.insert(user, Slot::Active(tx.clone()));
                return tx;
            }
            Some(Slot::Active(_)) | None => Vec::new(),
            Some(Slot::Hibernating(m)) => m,
        };
        let (tx, rx) = RoomHandle::channel();
        map.insert(user, Slot::Active(tx.clone()));
        self.tracker
            .spawn(room::run(user, rx, members, self.ctx.clone(), self.clone()));
        tx
    }

    /// Sends `msg` to the user's room, waking it if it was evicted.
    pub async fn send(self: &Arc<Self>, user: UserId, mut msg: RoomMsg) -> Result<(), RoomGone> {
        for _ in 0..SEND_ATTEMPTS {
            if self.ctx.shutdown.is_cancelled() {
                return Err(RoomGone);
            }
            match self.handle(user).send(msg).await {
                Ok(()) => return Ok(()),
                Err(m) => msg = m,
            }
        }
        Err(RoomGone)
    }

    /// Queues `msg` for the user's room (waking it if it was evicted)
    /// without waiting. Gives it back when the inbox is full or was just
    /// closed by an eviction; [`Registry::send`] then waits or retries.
    pub fn try_send(self: &Arc<Self>, user: UserId, msg: RoomMsg) -> Result<(), RoomMsg> {
        if self.ctx.shutdown.is_cancelled() {
            return Err(msg);
        }
        self.handle(user).try_send(msg)
    }

    /// Called by a room whose idle timer fired, under the shard lock: closes
    /// the inbox and, if nothing is left in it, parks the members here and
    /// returns `Ok` (the actor then exits). If messages slipped in, the room
    /// gets a fresh inbox and they are returned for it to handle.
    pub(crate) fn hibernate(
        &self,
        user: UserId,
        rx: &mut room::inbox::Receiver,
        state: &mut RoomState<ConnPort>,
    ) -> Result<(), Vec<RoomMsg>> {
        let mut map = self.shard(user);
        rx.close();
        let mut leftovers = Vec::new();
        while let Some(m) = rx.try_recv() {
            leftovers.push(m);
        }
        if leftovers.is_empty() {
            let members = state.take_members();
            if members.is_empty() {
                map.remove(&user);
            } else {
                map.insert(user, Slot::Hibernating(members));
            }
            return Ok(());
        }
        let (tx, new_rx) = RoomHandle::channel();
        *rx = new_rx;
        map.insert(user, Slot::Active(tx));
        Err(leftovers)
    }

    /// The user's online devices.
    pub async fn online(self: &Arc<Self>, user: UserId) -> Vec<DeviceId> {
        {
            let map = self.shard(user);
            match map.get(&user) {
                None => return Vec::new(),
                Some(Slot::Hibernating(m)) => return m.iter().map(|m| m.device).collect(),
                Some(Slot::Active(_)) => {}
            }
        }
        let (reply, rx) = oneshot::channel();
        if self.send(user, RoomMsg::Online { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Closes one device's sockets, or all of the user's, with 4001.
    pub async fn revoke(self: &Arc<Self>, user: UserId, device: Option<DeviceId>) {
        if !self.is_present(user) {
            return;
        }
        let _ = self.send(user, RoomMsg::revoke(device)).await;
    }

    /// The account moved to a new key epoch: closes the user's sockets
    /// with 1012, so every device reconnects at once and fetches it.
    pub async fn rekey(self: &Arc<Self>, user: UserId) {
        if !self.is_present(user) {
            return;
        }
        let _ = self.send(user, RoomMsg::Rekey).await;
    }

    /// The user was deleted: closes their sockets with 4001 and forgets the
    /// room.
    pub async fn remove(self: &Arc<Self>, user: UserId) {
        let slot = self.shard(user).remove(&user);
        let parked = match slot {
            Some(Slot::Active(tx)) => {
                let delivered = tx.send(RoomMsg::Terminate).await.is_ok();
                // If the room hibernated between our removal and the send, it
                // parked its members again: close them here.
                (!delivered)
                    .then(|| self.shard(user).remove(&user))
                    .flatten()
            }
            other => other,
        };
        if let Some(Slot::Hibernating(members)) = parked {
            for m in members {
                crate::room::Port::close(&m.port, CloseCode::Unauthorized);
            }
        }
    }

    /// Whether the user has a room, running or hibernating.
    pub fn is_present(&self, user: UserId) -> bool {
        self.shard(user).contains_key(&user)
    }

    /// Whether the user's room is hibernating (evicted, sockets parked).
    pub fn is_hibernating(&self, user: UserId) -> bool {
        matches!(self.shard(user).get(&user), Some(Slot::Hibernating(_)))
    }
}

impl room::Parking for Registry {
    fn hibernate(
        &self,
        user: UserId,
        rx: &mut room::inbox::Receiver,
        state: &mut RoomState<ConnPort>,
    ) -> Result<(), Vec<RoomMsg>> {
        Registry::hibernate(self, user, rx, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::outbox::Outbox;
    use crate::room::RoomLimits;
    use crate::store::{Db, Store};
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    const LIMITS: RoomLimits = RoomLimits {
        max_devices: 4,
        max_frame: 1024,
        ping_interval_s: 30,
        idle_timeout_s: 45,
        clip_ttl_s: 60,
    };

    fn registry() -> Arc<Registry> {
        let ctx = RoomCtx {
            store: Store::new(Db::open_in_memory().unwrap()),
            metrics: Arc::new(Metrics::default()),
            limits: LIMITS,
            evict_after: Duration::from_secs(3600),
            shutdown: CancellationToken::new(),
        };
        Registry::new(ctx, TaskTracker::new())
    }

    fn member(d: u64) -> Member<ConnPort> {
        Member {
            device: DeviceId(d),
            name: "x".into(),
            conn: crate::room::ConnId(d),
            port: Outbox::new(8, 1 << 20, Arc::new(Metrics::default())),
            kind: crate::room::MemberKind::Native,
        }
    }

    #[tokio::test]
    async fn hibernate_parks_members_when_inbox_is_empty() {
        let reg = registry();
        let user = UserId(1);
        let (tx, mut rx) = RoomHandle::channel();
        reg.shard(user).insert(user, Slot::Active(tx.clone()));
        let mut state = RoomState::new(user, LIMITS, 0, None, vec![member(1), member(2)]);
        assert!(reg.hibernate(user, &mut rx, &mut state).is_ok());
        assert!(reg.is_hibernating(user));
        assert!(state.is_empty());
        // A sender that still held the old inbox gets its message back.
        assert!(tx
            .send(RoomMsg::Leave {
                conn: crate::room::ConnId(1)
            })
            .await
            .is_err());
        // Listing devices does not wake the room.
        let mut online = reg.online(user).await;
        online.sort();
        assert_eq!(online, vec![DeviceId(1), DeviceId(2)]);
        assert!(reg.is_hibernating(user));
    }

    #[tokio::test]
    async fn hibernate_keeps_running_when_messages_slipped_in() {
        let reg = registry();
        let user = UserId(1);
        let (tx, mut rx) = RoomHandle::channel();
        reg.shard(user).insert(user, Slot::Active(tx.clone()));
        tx.send(RoomMsg::RevokeAll).await.ok().unwrap();
        let mut state = RoomState::new(user, LIMITS, 0, None, vec![member(1)]);
        let leftovers = reg.hibernate(user, &mut rx, &mut state).unwrap_err();
        assert_eq!(leftovers.len(), 1);
        assert!(!reg.is_hibernating(user));
        assert_eq!(state.len(), 1, "members stay with the running room");
        // New messages reach the same actor through its fresh inbox.
        reg.send(
            user,
            RoomMsg::Leave {
                conn: crate::room::ConnId(9),
            },
        )
        .await
        .unwrap();
        assert!(matches!(rx.try_recv(), Some(RoomMsg::Leave { .. })));
    }
}
