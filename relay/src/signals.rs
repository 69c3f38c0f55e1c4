//! The signalling switch of the ClipCascade surface (`/p2psignaling`):
//! user → peers, each with a bounded [`Outbox`].
//!
//! Its lock is held for map operations only, never across an `.await`.
//! Signalling does not go through the room actor: it is a separate,
//! stateless switch (like the second Durable Object of the design this
//! relay follows), and it carries no clipboard data. It lives here, below
//! both [`crate::app::AppState`] (which holds it) and `clipcascade/signal.rs`
//! (whose socket tasks use it), so neither imports the other.

use crate::outbox::Outbox;
use bytes::Bytes;
use clipmesh_proto::{CloseCode, UserId};
use clipmesh_room::Port;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Most signalling sessions of one user at once.
pub const MAX_PEERS_PER_USER: usize = 32;

/// One signalling session.
struct Peer {
    id: String,
    port: Arc<Outbox>,
}

/// Routes signalling messages between the sessions of each user.
#[derive(Default)]
pub struct SignalHub {
    users: Mutex<HashMap<UserId, Vec<Peer>>>,
}

/// The user already has [`MAX_PEERS_PER_USER`] sessions.
#[derive(Debug, PartialEq, Eq)]
pub struct HubFull;

impl SignalHub {
    fn lock(&self) -> MutexGuard<'_, HashMap<UserId, Vec<Peer>>> {
        // Map operations cannot leave it inconsistent.
        self.users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn peer_list(peers: &[Peer]) -> Bytes {
        let ids: Vec<&str> = peers.iter().map(|p| p.id.as_str()).collect();
        Bytes::from(json!({"type": "PEER_LIST", "peers": ids}).to_string())
    }

    fn broadcast(peers: &[Peer]) {
        let list = Self::peer_list(peers);
        for p in peers {
            if p.port.try_send(list.clone()).is_err() {
                p.port.close(CloseCode::SlowConsumer);
            }
        }
    }

    /// Adds a session: queues its `ASSIGNED_ID`, then the new peer list to
    /// everyone of the user. Gives the peer id.
    pub fn join(&self, user: UserId, port: Arc<Outbox>) -> Result<String, HubFull> {
        let mut map = self.lock();
        let peers = map.entry(user).or_default();
        if peers.len() >= MAX_PEERS_PER_USER {
            return Err(HubFull);
        }
        let id = uuid_v4();
        let assigned = json!({"type": "ASSIGNED_ID", "peerId": id}).to_string();
        // An empty queue always takes one message.
        let _ = port.try_send(Bytes::from(assigned));
        peers.push(Peer {
            id: id.clone(),
            port,
        });
        Self::broadcast(peers);
        Ok(id)
    }

    /// Removes a session and tells the others.
    pub fn leave(&self, user: UserId, id: &str) {
        let mut map = self.lock();
        let Some(peers) = map.get_mut(&user) else {
            return;
        };
        peers.retain(|p| p.id != id);
        if peers.is_empty() {
            map.remove(&user);
        } else {
            Self::broadcast(peers);
        }
    }

    /// Forwards `text` to the user's session `to`. False if there is none.
    pub fn forward(&self, user: UserId, to: &str, text: Bytes) -> bool {
        let map = self.lock();
        let Some(p) = map.get(&user).and_then(|v| v.iter().find(|p| p.id == to)) else {
            return false;
        };
        if p.port.try_send(text).is_err() {
            p.port.close(CloseCode::SlowConsumer);
        }
        true
    }

    /// Sessions of `user` now.
    pub fn peers(&self, user: UserId) -> usize {
        self.lock().get(&user).map_or(0, Vec::len)
    }
}

/// A random UUID (version 4) as text, for peer ids and message ids.
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
