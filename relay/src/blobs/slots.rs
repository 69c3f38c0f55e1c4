//! Caps on blob transfers (a `PATCH` body or a `GET` body), the only HTTP
//! requests that may last for minutes: at most `per_user` at once for one
//! user and `total` for the whole relay. `total` is the accept loop's pool
//! minus a reserve (`limits.http_reserved_connections`), so transfers never
//! hold the slots that logins and WebSocket joins need.

use clipmesh_proto::UserId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Why a transfer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The user already runs `per_user` transfers.
    User,
    /// The relay already runs `total` transfers.
    Relay,
}

/// Transfers running now.
#[derive(Debug)]
pub(crate) struct Transfers {
    /// Running transfers in total and per user (users at 0 removed).
    running: Mutex<(usize, HashMap<UserId, usize>)>,
    /// Most transfers at once.
    total: usize,
    /// Most transfers of one user at once.
    per_user: usize,
}

/// One running transfer; dropping it frees its slots.
#[derive(Debug)]
pub(crate) struct TransferSlot {
    /// The counts it is part of.
    owner: Arc<Transfers>,
    /// Whose transfer.
    user: UserId,
}

impl Transfers {
    /// Caps of `total` transfers, `per_user` each (both at least 1).
    pub fn new(total: usize, per_user: usize) -> Arc<Self> {
        Arc::new(Self {
            running: Mutex::new((0, HashMap::new())),
            total: total.max(1),
            per_user: per_user.max(1),
        })
    }

    /// A slot for one more transfer of `user`.
    pub fn try_take(self: &Arc<Self>, user: UserId) -> Result<TransferSlot, Refused> {
        let mut g = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let (total, users) = &mut *g;
        if users.get(&user).copied().unwrap_or(0) >= self.per_user {
            return Err(Refused::User);
        }
        if *total >= self.total {
            return Err(Refused::Relay);
        }
        *total += 1;
        *users.entry(user).or_insert(0) += 1;
        Ok(TransferSlot {
            owner: self.clone(),
            user,
        })
    }

    /// Transfers running now.
    pub fn running(&self) -> usize {
        self.running.lock().map_or(0, |g| g.0)
    }
}

impl Drop for TransferSlot {
    fn drop(&mut self) {
        let mut g = self.owner.running.lock().unwrap_or_else(|p| p.into_inner());
        let (total, users) = &mut *g;
        *total = total.saturating_sub(1);
        if let Some(n) = users.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                users.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_then_total() {
        let t = Transfers::new(3, 2);
        let (a, b, c) = (UserId(1), UserId(2), UserId(3));
        let a1 = t.try_take(a).unwrap();
        let _a2 = t.try_take(a).unwrap();
        assert_eq!(t.try_take(a).err(), Some(Refused::User));
        let _b1 = t.try_take(b).unwrap();
        assert_eq!(t.try_take(c).err(), Some(Refused::Relay));
        assert_eq!(t.running(), 3);
        drop(a1);
        let _c1 = t.try_take(c).expect("a freed slot is reusable");
        assert_eq!(t.running(), 3);
    }
}
