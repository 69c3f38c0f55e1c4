//! What the relay stores for ClipCascade compatibility: each account's
//! ClipCascade verifier and server mode, and cookie sessions.
//!
//! The verifier is an Argon2id PHC hash of the SHA3-512 hex a ClipCascade
//! client sends as its "password" (see `docs/crypto.md` on why it is weaker
//! than the native verifier). A session is stored as SHA-256 of its
//! `JSESSIONID` and tied to a device row, so it shows in the devices list,
//! is revoked like any device and ends with the account.

use super::{id, sql_id, Db, StoreError};
use clipmesh_proto::{DeviceId, UserId};
use rusqlite::{params, OptionalExtension};

/// `/server-mode` of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CcMode {
    /// Relay through `/clipsocket` (STOMP). The default.
    #[default]
    P2S,
    /// Direct links, signalled through `/p2psignaling`.
    P2P,
}

impl CcMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::P2S => "P2S",
            Self::P2P => "P2P",
        }
    }

    /// Parses a wire name (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("P2S") {
            Some(Self::P2S)
        } else if s.eq_ignore_ascii_case("P2P") {
            Some(Self::P2P)
        } else {
            None
        }
    }
}

/// An account as the ClipCascade login sees it.
#[derive(Clone, Debug)]
pub struct CcAccount {
    /// The account.
    pub user: UserId,
    /// The verifier, `None` when compatibility is off for it.
    pub verifier: Option<String>,
    /// Its server mode.
    pub mode: CcMode,
    /// Disabled by an admin.
    pub disabled: bool,
}

/// What a live ClipCascade session resolves to.
#[derive(Clone, Debug)]
pub struct CcSession {
    /// The account.
    pub user: UserId,
    /// Its user name (for `/whoami`).
    pub username: String,
    /// The device row of this session.
    pub device: DeviceId,
    /// Its name.
    pub device_name: String,
    /// The account administers the relay.
    pub is_admin: bool,
    /// The account's server mode.
    pub mode: CcMode,
}

impl Db {
    /// The ClipCascade view of an account.
    pub fn cc_account(&self, username: &str) -> Result<Option<CcAccount>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, cc_verifier, cc_mode, disabled FROM users WHERE username = ?1",
                params![username],
                |r| {
                    Ok(CcAccount {
                        user: UserId(id(r.get(0)?)),
                        verifier: r.get(1)?,
                        mode: CcMode::parse(&r.get::<_, String>(2)?).unwrap_or_default(),
                        disabled: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Sets (`Some`) or clears (`None`) an account's verifier. Clearing it
    /// also ends every ClipCascade session of the account, and returns
    /// their devices so their sockets can be closed.
    pub fn set_cc_verifier(
        &mut self,
        user: UserId,
        verifier: Option<&str>,
    ) -> Result<Vec<DeviceId>, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE users SET cc_verifier = ?2 WHERE id = ?1",
            params![sql_id(user.0), verifier],
        )?;
        let mut ended = Vec::new();
        if verifier.is_none() {
            {
                let mut st = tx.prepare(
                    "SELECT d.id FROM cc_sessions c JOIN devices d ON d.id = c.device_id \
                     WHERE d.user_id = ?1",
                )?;
                for r in st.query_map(params![sql_id(user.0)], |r| r.get::<_, i64>(0))? {
                    ended.push(DeviceId(id(r?)));
                }
            }
            for d in &ended {
                tx.execute("DELETE FROM devices WHERE id = ?1", params![sql_id(d.0)])?;
            }
        }
        tx.commit()?;
        Ok(ended)
    }

    /// Sets an account's server mode.
    pub fn set_cc_mode(&self, user: UserId, mode: CcMode) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE users SET cc_mode = ?2 WHERE id = ?1",
            params![sql_id(user.0), mode.as_str()],
        )?;
        Ok(())
    }

    /// Starts a ClipCascade session: a new device row named `name` with the
    /// session's hash. Beyond `max` sessions for the account, the oldest
    /// end; their devices are returned so their sockets can be closed.
    pub fn create_cc_session(
        &mut self,
        user: UserId,
        name: &str,
        sid_hash: &[u8; 32],
        max: u32,
        now: i64,
    ) -> Result<(DeviceId, Vec<DeviceId>), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO devices (user_id, name, created_at, last_seen_at) VALUES (?1, ?2, ?3, ?3)",
            params![sql_id(user.0), name, now],
        )?;
        let device = DeviceId(id(tx.last_insert_rowid()));
        tx.execute(
            "INSERT INTO cc_sessions (sid_sha256, device_id, created_at) VALUES (?1, ?2, ?3)",
            params![&sid_hash[..], sql_id(device.0), now],
        )?;
        let mut ended = Vec::new();
        {
            let mut st = tx.prepare(
                "SELECT d.id FROM cc_sessions c JOIN devices d ON d.id = c.device_id \
                 WHERE d.user_id = ?1 ORDER BY c.created_at DESC, d.id DESC LIMIT -1 OFFSET ?2",
            )?;
            for r in st.query_map(params![sql_id(user.0), i64::from(max.max(1))], |r| {
                r.get::<_, i64>(0)
            })? {
                ended.push(DeviceId(id(r?)));
            }
        }
        for d in &ended {
            tx.execute("DELETE FROM devices WHERE id = ?1", params![sql_id(d.0)])?;
        }
        tx.commit()?;
        Ok((device, ended))
    }

    /// Resolves a session hash to a live session of an enabled account
    /// that still has compatibility on.
    pub fn cc_session(&self, sid_hash: &[u8; 32]) -> Result<Option<CcSession>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT u.id, u.username, d.id, d.name, u.is_admin, u.cc_mode FROM cc_sessions c \
                 JOIN devices d ON d.id = c.device_id JOIN users u ON u.id = d.user_id \
                 WHERE c.sid_sha256 = ?1 AND u.disabled = 0 AND u.cc_verifier IS NOT NULL",
                params![&sid_hash[..]],
                |r| {
                    Ok(CcSession {
                        user: UserId(id(r.get(0)?)),
                        username: r.get(1)?,
                        device: DeviceId(id(r.get(2)?)),
                        device_name: r.get(3)?,
                        is_admin: r.get(4)?,
                        mode: CcMode::parse(&r.get::<_, String>(5)?).unwrap_or_default(),
                    })
                },
            )
            .optional()?)
    }

    /// Whether a ClipCascade session's device is still live (the check
    /// after joining a room, like [`Db::device_active`]).
    pub fn cc_device_active(&self, device: DeviceId) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM cc_sessions c JOIN devices d ON d.id = c.device_id \
                 JOIN users u ON u.id = d.user_id \
                 WHERE d.id = ?1 AND u.disabled = 0 AND u.cc_verifier IS NOT NULL",
                params![sql_id(device.0)],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::user;

    #[test]
    fn sessions_need_the_verifier_and_are_capped() {
        let mut db = Db::open_in_memory().unwrap();
        let ann = user(&mut db, "ann");
        assert!(db.cc_account("ann").unwrap().unwrap().verifier.is_none());
        db.set_cc_verifier(ann, Some("$argon2id$v")).unwrap();
        db.set_cc_mode(ann, CcMode::P2P).unwrap();
        let acc = db.cc_account("ann").unwrap().unwrap();
        assert_eq!(acc.verifier.as_deref(), Some("$argon2id$v"));
        assert_eq!(acc.mode, CcMode::P2P);
        let (d1, ended) = db.create_cc_session(ann, "cc", &[1; 32], 2, 10).unwrap();
        assert!(ended.is_empty());
        let s = db.cc_session(&[1; 32]).unwrap().unwrap();
        assert_eq!((s.user, s.device, s.username.as_str()), (ann, d1, "ann"));
        assert!(db.cc_device_active(d1).unwrap());
        db.create_cc_session(ann, "cc", &[2; 32], 2, 11).unwrap();
        let (_, ended) = db.create_cc_session(ann, "cc", &[3; 32], 2, 12).unwrap();
        assert_eq!(ended, vec![d1], "the oldest session ends");
        assert!(db.cc_session(&[1; 32]).unwrap().is_none());
        // A native token hash is not a ClipCascade session.
        assert!(db.session(&[2; 32]).unwrap().is_none());
        // Turning compatibility off ends every session.
        let ended = db.set_cc_verifier(ann, None).unwrap();
        assert_eq!(ended.len(), 2);
        assert!(db.cc_session(&[3; 32]).unwrap().is_none());
        assert!(db.list_devices(ann).unwrap().is_empty());
    }
}
