//! The relay's embedded SQLite database: users, devices, sessions, each
//! room's newest clip, and the server secret.
//!
//! [`Db`] is the synchronous layer (one connection, WAL). [`Store`] is the
//! async handle the server uses: every call runs on `spawn_blocking`, and the
//! connection's mutex is only ever held inside that blocking closure, never
//! across an `.await`.
//!
//! What is stored, per the key hierarchy in `docs/crypto.md`: the salt, the
//! KDF parameters, an Argon2id PHC hash of `auth_key`, and the wrapped data
//! key. Sessions are stored as SHA-256 of the token. Clips are stored as the
//! sealed envelope only. Nothing here can decrypt anything.

mod batch;
mod blobs;
mod clipcascade;
mod migrations;
mod opaque;

use clipmesh_proto::api::UserRecord;
use clipmesh_proto::{DeviceId, KdfParams, UserId};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};
use thiserror::Error;

pub use batch::{ClipWrite, BATCH_MAX, BATCH_WINDOW};
pub use blobs::{BlobQuota, BlobRow, CreateBlob};
pub use clipcascade::{CcAccount, CcMode, CcSession};
pub use migrations::MIGRATIONS;
pub use opaque::{DeviceKeyRow, EpochWrapRow, Rotation, V2Account, V2Credentials};

/// Errors from the database layer.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value could not be read back.
    #[error("corrupt row: {0}")]
    Corrupt(&'static str),
    /// The database was written by a newer relay.
    #[error("database schema version {0} is newer than this relay")]
    TooNew(u32),
    /// The blocking task panicked or was cancelled.
    #[error("database task failed")]
    Join,
    /// The database mutex was poisoned by a panic.
    #[error("database lock poisoned")]
    Poisoned,
}

/// One account.
#[derive(Clone, Debug)]
pub struct UserRow {
    /// Id.
    pub id: UserId,
    /// Name.
    pub username: String,
    /// Argon2id salt the client chose.
    pub salt: Vec<u8>,
    /// KDF parameters the client chose.
    pub kdf: KdfParams,
    /// PHC string of the Argon2id hash of `auth_key`.
    pub auth_hash: String,
    /// The data key wrapped under the KEK.
    pub wrapped_data_key: Vec<u8>,
    /// Administers the relay.
    pub is_admin: bool,
    /// Disabled by an admin.
    pub disabled: bool,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Has an OPAQUE record (protocol v2): v1 login no longer works for it,
    /// and its v1 salt, verifier and wrapped key are empty.
    pub v2: bool,
}

/// What a valid token resolves to.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    /// The account.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
    /// The device's name.
    pub device_name: String,
    /// The account is an admin.
    pub is_admin: bool,
    /// The account is disabled (the token is then refused).
    pub disabled: bool,
}

/// How long a session lives (`[auth] session_idle_s`, `session_max_s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLifetimes {
    /// Ends after this many seconds without use.
    pub idle_s: i64,
    /// Ends this many seconds after its token was issued.
    pub max_s: i64,
}

impl SessionLifetimes {
    /// No limit (tests, admin tools).
    pub const UNLIMITED: Self = Self {
        idle_s: i64::MAX,
        max_s: i64::MAX,
    };

    /// From the config's seconds (0 or a huge value: no limit).
    pub fn new(idle_s: u64, max_s: u64) -> Self {
        let f = |v: u64| match i64::try_from(v) {
            Ok(0) | Err(_) => i64::MAX,
            Ok(v) => v,
        };
        Self {
            idle_s: f(idle_s),
            max_s: f(max_s),
        }
    }

    /// Whether a session issued at `issued_at` and last used at
    /// `last_used_at` has ended at `now`.
    pub fn expired(&self, issued_at: i64, last_used_at: i64, now: i64) -> bool {
        now.saturating_sub(issued_at) > self.max_s || now.saturating_sub(last_used_at) > self.idle_s
    }
}

/// A session's `last_used_at` is rewritten at most this often, seconds (so
/// a busy device costs one write a minute, not one per request).
pub const SESSION_TOUCH_S: i64 = 60;

/// A device with a live session.
#[derive(Clone, Debug)]
pub struct DeviceRow {
    /// Id.
    pub id: DeviceId,
    /// Name.
    pub name: String,
    /// Login time, Unix seconds.
    pub created_at: i64,
    /// Last authentication, Unix seconds.
    pub last_seen_at: i64,
}

/// A room's persisted state: its sequence number and newest clip.
#[derive(Clone, Debug)]
pub struct RoomRecord {
    /// Newest sequence number assigned.
    pub seq: u64,
    /// Device that published the newest clip.
    pub from: DeviceId,
    /// The sealed envelope, or `None` once expired.
    pub envelope: Option<Vec<u8>>,
    /// When it was stored, Unix seconds.
    pub stored_at: i64,
}

/// Credentials for a new account or a password change (already validated).
#[derive(Clone)]
pub struct NewCredentials {
    /// Salt.
    pub salt: Vec<u8>,
    /// KDF parameters.
    pub kdf: KdfParams,
    /// PHC hash of `auth_key`.
    pub auth_hash: String,
    /// Wrapped data key.
    pub wrapped_data_key: Vec<u8>,
}

/// Result of [`Db::create_user`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateUser {
    /// Created; the first device is logged in.
    Created {
        /// New user.
        user: UserId,
        /// First device (absent when created without a session).
        device: Option<DeviceId>,
        /// Whether it became admin (the first account does).
        is_admin: bool,
    },
    /// The name is taken.
    Taken,
    /// Signup policy forbids it.
    Closed,
}

/// The synchronous database.
pub struct Db {
    conn: Connection,
}

fn kdf_from_json(s: &str) -> Result<KdfParams, StoreError> {
    serde_json::from_str(s).map_err(|_| StoreError::Corrupt("kdf"))
}

fn kdf_to_json(k: &KdfParams) -> String {
    // KdfParams is plain integers and a unit enum: serialising cannot fail.
    serde_json::to_string(k).unwrap_or_default()
}

fn id(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn sql_id(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const USER_COLS: &str =
    "id, username, salt, kdf, auth_hash, wrapped_data_key, is_admin, disabled, \
     created_at, opaque_record IS NOT NULL";

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(UserRow, String)> {
    Ok((
        UserRow {
            id: UserId(id(r.get(0)?)),
            username: r.get(1)?,
            salt: r.get(2)?,
            kdf: KdfParams::default(),
            auth_hash: r.get(4)?,
            wrapped_data_key: r.get(5)?,
            is_admin: r.get(6)?,
            disabled: r.get(7)?,
            created_at: r.get(8)?,
            v2: r.get(9)?,
        },
        r.get(3)?,
    ))
}

fn finish_user(pair: (UserRow, String)) -> Result<UserRow, StoreError> {
    let (mut u, kdf) = pair;
    u.kdf = kdf_from_json(&kdf)?;
    Ok(u)
}

impl Db {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut db = Self { conn };
        db.migrate()?;
        db.ensure_secret()?;
        Ok(db)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let v: u32 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX);
        if v > known {
            return Err(StoreError::TooNew(v));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(v as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
            tracing::debug!(version = i + 1, "applied migration");
        }
        Ok(())
    }

    fn ensure_secret(&mut self) -> Result<(), StoreError> {
        let mut s = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut s);
        self.conn.execute(
            "INSERT OR IGNORE INTO server_secret (id, secret) VALUES (1, ?1)",
            params![&s[..]],
        )?;
        Ok(())
    }

    /// The server secret (32 random bytes made at first start), used to
    /// derive fake pre-login salts.
    pub fn secret(&self) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT secret FROM server_secret WHERE id = 1", [], |r| {
                r.get(0)
            })?)
    }

    /// How many accounts exist.
    pub fn user_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
        Ok(id(n))
    }

    /// Every distinct set of KDF parameters in use and how many accounts use
    /// it, most used first (ties by text, so the order is stable).
    pub fn kdf_census(&self) -> Result<Vec<(KdfParams, u64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT kdf, COUNT(*) AS n FROM users GROUP BY kdf ORDER BY n DESC, kdf ASC",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (kdf, n) = row?;
            out.push((kdf_from_json(&kdf)?, id(n)));
        }
        Ok(out)
    }

    /// Cheap liveness query for `/readyz`.
    pub fn ping(&self) -> Result<(), StoreError> {
        let _: i64 = self.conn.query_row("SELECT 1", [], |r| r.get(0))?;
        Ok(())
    }

    /// Creates an account and, if `device` is given, its first device
    /// session, in one transaction. The first account becomes admin.
    pub fn create_user(
        &mut self,
        username: &str,
        creds: &NewCredentials,
        policy_allows: impl FnOnce(u64) -> bool,
        device: Option<(&str, &[u8; 32])>,
        now: i64,
    ) -> Result<CreateUser, StoreError> {
        self.create_user_inner(username, creds, None, policy_allows, device, now)
    }

    fn create_user_inner(
        &mut self,
        username: &str,
        creds: &NewCredentials,
        v2: Option<&V2Credentials>,
        policy_allows: impl FnOnce(u64) -> bool,
        device: Option<(&str, &[u8; 32])>,
        now: i64,
    ) -> Result<CreateUser, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let users: i64 = tx.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
        if !policy_allows(id(users)) {
            return Ok(CreateUser::Closed);
        }
        let taken: Option<i64> = tx
            .query_row(
                "SELECT id FROM users WHERE username = ?1",
                params![username],
                |r| r.get(0),
            )
            .optional()?;
        if taken.is_some() {
            return Ok(CreateUser::Taken);
        }
        let is_admin = users == 0;
        tx.execute(
            "INSERT INTO users (username, salt, kdf, auth_hash, wrapped_data_key, is_admin, disabled, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7)",
            params![
                username,
                creds.salt,
                kdf_to_json(&creds.kdf),
                creds.auth_hash,
                creds.wrapped_data_key,
                is_admin,
                now
            ],
        )?;
        let user = UserId(id(tx.last_insert_rowid()));
        if let Some(v2) = v2 {
            tx.execute(
                "UPDATE users SET opaque_record = ?2, epoch = ?3, export_wrap = ?4 WHERE id = ?1",
                params![
                    sql_id(user.0),
                    v2.record,
                    i64::from(v2.epoch),
                    v2.export_wrap
                ],
            )?;
        }
        let device = match device {
            Some((name, token_hash)) => {
                Some(Self::insert_session(&tx, user, name, token_hash, now)?)
            }
            None => None,
        };
        tx.commit()?;
        Ok(CreateUser::Created {
            user,
            device,
            is_admin,
        })
    }

    fn insert_session(
        tx: &Connection,
        user: UserId,
        name: &str,
        token_hash: &[u8; 32],
        now: i64,
    ) -> Result<DeviceId, StoreError> {
        tx.execute(
            "INSERT INTO devices (user_id, name, created_at, last_seen_at) VALUES (?1, ?2, ?3, ?3)",
            params![sql_id(user.0), name, now],
        )?;
        let device = DeviceId(id(tx.last_insert_rowid()));
        tx.execute(
            "INSERT INTO sessions (token_sha256, device_id, created_at, issued_at, last_used_at) \
             VALUES (?1, ?2, ?3, ?3, ?3)",
            params![&token_hash[..], sql_id(device.0), now],
        )?;
        Ok(device)
    }

    /// Logs a new device in.
    pub fn create_session(
        &mut self,
        user: UserId,
        name: &str,
        token_hash: &[u8; 32],
        now: i64,
    ) -> Result<DeviceId, StoreError> {
        let tx = self.conn.transaction()?;
        let d = Self::insert_session(&tx, user, name, token_hash, now)?;
        tx.commit()?;
        Ok(d)
    }

    /// Looks a user up by name.
    pub fn user_by_name(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE username = ?1");
        self.conn
            .query_row(&sql, params![username], user_from_row)
            .optional()?
            .map(finish_user)
            .transpose()
    }

    /// Looks a user up by id.
    pub fn user_by_id(&self, user: UserId) -> Result<Option<UserRow>, StoreError> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE id = ?1");
        self.conn
            .query_row(&sql, params![sql_id(user.0)], user_from_row)
            .optional()?
            .map(finish_user)
            .transpose()
    }

    /// Resolves a token hash to its session, ignoring lifetimes (tests and
    /// admin tools; requests go through [`Db::use_session`]).
    pub fn session(&self, token_hash: &[u8; 32]) -> Result<Option<SessionInfo>, StoreError> {
        self.use_session(token_hash, 0, SessionLifetimes::UNLIMITED)
    }

    /// Resolves a token hash to a live session at `now` and records the
    /// use: a session unused for `life.idle_s`, or issued more than
    /// `life.max_s` ago, is deleted (with its device) and `None` returned.
    /// `last_used_at` is written at most once per [`SESSION_TOUCH_S`]. The
    /// token a renewal replaced is accepted until the new one is first used,
    /// which forgets it.
    pub fn use_session(
        &self,
        token_hash: &[u8; 32],
        now: i64,
        life: SessionLifetimes,
    ) -> Result<Option<SessionInfo>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT u.id, d.id, d.name, u.is_admin, u.disabled, s.issued_at, \
                 s.last_used_at, s.token_sha256 = ?1, s.prev_sha256 IS NOT NULL FROM sessions s \
                 JOIN devices d ON d.id = s.device_id JOIN users u ON u.id = d.user_id \
                 WHERE s.token_sha256 = ?1 OR s.prev_sha256 = ?1",
            )?
            .query_row(params![&token_hash[..]], |r| {
                Ok((
                    SessionInfo {
                        user: UserId(id(r.get(0)?)),
                        device: DeviceId(id(r.get(1)?)),
                        device_name: r.get(2)?,
                        is_admin: r.get(3)?,
                        disabled: r.get(4)?,
                    },
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, bool>(7)?,
                    r.get::<_, bool>(8)?,
                ))
            })
            .optional()?;
        let Some((info, issued_at, last_used_at, current, has_prev)) = row else {
            return Ok(None);
        };
        if life.expired(issued_at, last_used_at, now) {
            // The device row goes with it (as on logout), so the devices
            // list shows only devices that can still connect.
            self.conn
                .prepare_cached("DELETE FROM devices WHERE id = ?1")?
                .execute(params![sql_id(info.device.0)])?;
            return Ok(None);
        }
        if current && (has_prev || now.saturating_sub(last_used_at) >= SESSION_TOUCH_S) {
            self.conn
                .prepare_cached(
                    "UPDATE sessions SET last_used_at = ?2, prev_sha256 = NULL \
                     WHERE token_sha256 = ?1",
                )?
                .execute(params![&token_hash[..], now])?;
        }
        Ok(Some(info))
    }

    /// Replaces the token of the session that `old_hash` resolves to (its
    /// current token, or the one the last renewal replaced while the new one
    /// is unused: the device may have lost that answer) with `new_hash`,
    /// restarting its absolute lifetime at `now`. `old_hash` stays accepted
    /// until the new token is first used. Returns false if no session has
    /// `old_hash`.
    pub fn renew_session(
        &self,
        old_hash: &[u8; 32],
        new_hash: &[u8; 32],
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE sessions SET token_sha256 = ?2, prev_sha256 = ?1, issued_at = ?3, \
             last_used_at = ?3 WHERE token_sha256 = ?1 OR prev_sha256 = ?1",
            params![&old_hash[..], &new_hash[..], now],
        )?;
        Ok(n > 0)
    }

    /// Whether the device still has a session and its account is enabled.
    pub fn device_active(&self, device: DeviceId) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM sessions s JOIN devices d ON d.id = s.device_id \
                 JOIN users u ON u.id = d.user_id WHERE d.id = ?1 AND u.disabled = 0",
                params![sql_id(device.0)],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Records that a device authenticated now.
    pub fn touch_device(&self, device: DeviceId, now: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE devices SET last_seen_at = ?2 WHERE id = ?1")?
            .execute(params![sql_id(device.0), now])?;
        Ok(())
    }

    /// Deletes a device of `user` and its session. False if no such device.
    pub fn delete_device(&self, user: UserId, device: DeviceId) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "DELETE FROM devices WHERE id = ?1 AND user_id = ?2",
            params![sql_id(device.0), sql_id(user.0)],
        )?;
        Ok(n > 0)
    }

    /// The user's devices, oldest first.
    pub fn list_devices(&self, user: UserId) -> Result<Vec<DeviceRow>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, name, created_at, last_seen_at FROM devices WHERE user_id = ?1 ORDER BY id",
        )?;
        let rows = st.query_map(params![sql_id(user.0)], |r| {
            Ok(DeviceRow {
                id: DeviceId(id(r.get(0)?)),
                name: r.get(1)?,
                created_at: r.get(2)?,
                last_seen_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces the user's credentials. With `keep = Some(d)`, every device
    /// but `d` is logged out; with `end_all`, every device is. Returns the
    /// devices logged out. With `forget_clip`, the stored clip is dropped
    /// (used when the data key changes and old clips become unreadable).
    pub fn update_credentials(
        &mut self,
        user: UserId,
        creds: &NewCredentials,
        logout: Logout,
        forget_clip: bool,
    ) -> Result<Vec<DeviceId>, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            // The ClipCascade verifier is of the old password: drop it (the
            // device changing the password may set a new one).
            "UPDATE users SET salt = ?2, kdf = ?3, auth_hash = ?4, wrapped_data_key = ?5, \
             cc_verifier = NULL WHERE id = ?1",
            params![
                sql_id(user.0),
                creds.salt,
                kdf_to_json(&creds.kdf),
                creds.auth_hash,
                creds.wrapped_data_key
            ],
        )?;
        let revoked = Self::logout_in(&tx, user, logout)?;
        if forget_clip {
            tx.execute(
                "UPDATE room_state SET envelope = NULL WHERE user_id = ?1",
                params![sql_id(user.0)],
            )?;
        }
        tx.commit()?;
        Ok(revoked)
    }

    /// Ends the sessions `logout` names inside a transaction; returns them.
    fn logout_in(
        tx: &Connection,
        user: UserId,
        logout: Logout,
    ) -> Result<Vec<DeviceId>, StoreError> {
        let keep = match logout {
            Logout::None => return Ok(Vec::new()),
            Logout::AllBut(d) => sql_id(d.0),
            Logout::All => -1,
        };
        let mut revoked = Vec::new();
        {
            let mut st = tx.prepare("SELECT id FROM devices WHERE user_id = ?1 AND id != ?2")?;
            let rows = st.query_map(params![sql_id(user.0), keep], |r| r.get::<_, i64>(0))?;
            for r in rows {
                revoked.push(DeviceId(id(r?)));
            }
        }
        tx.execute(
            "DELETE FROM devices WHERE user_id = ?1 AND id != ?2",
            params![sql_id(user.0), keep],
        )?;
        Ok(revoked)
    }

    /// Every user with its device count.
    pub fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT u.id, u.username, u.is_admin, u.disabled, u.created_at, \
             (SELECT COUNT(*) FROM devices d WHERE d.user_id = u.id) FROM users u ORDER BY u.id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(UserRecord {
                id: UserId(id(r.get(0)?)),
                username: r.get(1)?,
                is_admin: r.get(2)?,
                disabled: r.get(3)?,
                created_at: r.get(4)?,
                devices: u32::try_from(r.get::<_, i64>(5)?).unwrap_or(u32::MAX),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Sets or clears the disabled flag. False if no such user.
    pub fn set_disabled(&self, user: UserId, disabled: bool) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE users SET disabled = ?2 WHERE id = ?1",
            params![sql_id(user.0), disabled],
        )?;
        Ok(n > 0)
    }

    /// Sets or clears the admin flag. False if no such user.
    pub fn set_admin(&self, user: UserId, admin: bool) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE users SET is_admin = ?2 WHERE id = ?1",
            params![sql_id(user.0), admin],
        )?;
        Ok(n > 0)
    }

    /// Deletes a user and everything of theirs. False if no such user.
    pub fn delete_user(&self, user: UserId) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM users WHERE id = ?1", params![sql_id(user.0)])?;
        Ok(n > 0)
    }

    /// The room's persisted state.
    pub fn load_room(&self, user: UserId) -> Result<Option<RoomRecord>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq, from_device, envelope, stored_at FROM room_state WHERE user_id = ?1",
                params![sql_id(user.0)],
                |r| {
                    Ok(RoomRecord {
                        seq: id(r.get(0)?),
                        from: DeviceId(id(r.get(1)?)),
                        envelope: r.get(2)?,
                        stored_at: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// The room's sequence floor: its counter resumes at least here.
    pub fn seq_floor(&self, user: UserId) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq_floor FROM room_state WHERE user_id = ?1",
                params![sql_id(user.0)],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map_or(0, id))
    }

    /// Raises the room's sequence floor to `floor` (never lowers it, so
    /// writes finishing out of order are harmless). Ignored if the user no
    /// longer exists.
    pub fn set_seq_floor(&self, user: UserId, floor: u64) -> Result<(), StoreError> {
        self.conn.prepare_cached(
            "INSERT INTO room_state (user_id, seq, from_device, envelope, stored_at, seq_floor) \
             SELECT ?1, 0, 0, NULL, 0, ?2 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?1) \
             ON CONFLICT(user_id) DO UPDATE SET seq_floor = MAX(seq_floor, excluded.seq_floor)",
        )?
        .execute(params![sql_id(user.0), sql_id(floor)])?;
        Ok(())
    }

    /// Sets the floor to exactly `seq` when a room stops cleanly, giving
    /// back its unused reservation.
    pub fn release_seq_floor(&self, user: UserId, seq: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE room_state SET seq_floor = ?2 WHERE user_id = ?1",
            params![sql_id(user.0), sql_id(seq)],
        )?;
        Ok(())
    }

    /// Stores the room's newest clip (replacing the previous one). Ignored
    /// if the user no longer exists.
    pub fn save_room(&self, user: UserId, rec: &RoomRecord) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO room_state (user_id, seq, from_device, envelope, stored_at) \
             SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?1) \
             ON CONFLICT(user_id) DO UPDATE SET seq = excluded.seq, from_device = excluded.from_device, \
             envelope = excluded.envelope, stored_at = excluded.stored_at",
            params![
                sql_id(user.0),
                sql_id(rec.seq),
                sql_id(rec.from.0),
                rec.envelope,
                rec.stored_at
            ],
        )?;
        Ok(())
    }

    /// Drops stored clips older than `before` (Unix seconds), keeping the
    /// sequence numbers. Returns how many were dropped.
    pub fn expire_clips(&self, before: i64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "UPDATE room_state SET envelope = NULL WHERE envelope IS NOT NULL AND stored_at < ?1",
            params![before],
        )?)
    }

    /// Checkpoints the WAL into the main file (at shutdown).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// Which sessions a credential change ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logout {
    /// None.
    None,
    /// All but this device.
    AllBut(DeviceId),
    /// All.
    All,
}

/// Database calls handed to blocking threads at once. The connection is
/// single, so more would only park threads on its mutex; a burst (e.g. every
/// device reconnecting after a restart) queues here instead of growing the
/// blocking thread pool.
pub const DB_CONCURRENCY: usize = 2;

/// The async handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Mutex<Db>>,
    permits: Arc<tokio::sync::Semaphore>,
    /// Clip writes waiting for their batch (`batch.rs`).
    pending: Arc<batch::Pending>,
    /// The batch tasks (`batch.rs`): owned, so that shutdown waits for the
    /// writes they hold ([`Store::flush_batches`]).
    batches: tokio_util::task::TaskTracker,
}

impl Store {
    /// Wraps an open database.
    pub fn new(db: Db) -> Self {
        Self {
            db: Arc::new(Mutex::new(db)),
            permits: Arc::new(tokio::sync::Semaphore::new(DB_CONCURRENCY)),
            pending: Arc::default(),
            batches: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Runs `f` on the database on a blocking thread.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Db) -> Result<R, StoreError> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Join)?;
        let db = self.db.clone();
        // The permit is released when the database work ends, not when the
        // caller next polls this future.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut g = db.lock().map_err(|_| StoreError::Poisoned)?;
            f(&mut g)
        })
        .await
        .map_err(|_| StoreError::Join)?
    }

    /// Runs `f` on the database on the current thread (for the admin CLI
    /// and shutdown, outside any async context).
    pub fn blocking<R>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut g = self.db.lock().map_err(|_| StoreError::Poisoned)?;
        f(&mut g)
    }
}

/// Accounts for the store's unit tests (one helper instead of one per file).
#[cfg(test)]
pub(crate) mod test_support {
    use super::{CreateUser, Db, KdfParams, NewCredentials, UserId};

    /// Stand-in credentials: the store keeps them, it never checks them.
    pub(crate) fn creds() -> NewCredentials {
        NewCredentials {
            salt: vec![1; 16],
            kdf: KdfParams::default(),
            auth_hash: "$argon2id$fake".into(),
            wrapped_data_key: vec![2; 72],
        }
    }

    /// Creates the account `name` (no device).
    pub(crate) fn user(db: &mut Db, name: &str) -> UserId {
        match db.create_user(name, &creds(), |_| true, None, 1).unwrap() {
            CreateUser::Created { user, .. } => user,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::creds;
    use super::*;

    /// Creates user "ann" with device "a" (token `[1; 32]`).
    fn ann_with_device(db: &mut Db) -> (UserId, DeviceId) {
        let CreateUser::Created {
            user,
            device: Some(device),
            ..
        } = db
            .create_user("ann", &creds(), |_| true, Some(("a", &[1; 32])), 1)
            .unwrap()
        else {
            panic!("ann was not created with a device")
        };
        (user, device)
    }

    #[test]
    fn first_user_is_admin_and_names_are_unique() {
        let mut db = Db::open_in_memory().unwrap();
        let r = db
            .create_user("ann", &creds(), |_| true, Some(("lap", &[7; 32])), 1)
            .unwrap();
        let CreateUser::Created {
            user,
            device: Some(dev),
            is_admin: true,
        } = r
        else {
            panic!("unexpected {r:?}")
        };
        assert_eq!(
            db.create_user("ann", &creds(), |_| true, None, 1).unwrap(),
            CreateUser::Taken
        );
        assert_eq!(
            db.create_user("bob", &creds(), |n| n == 0, None, 1)
                .unwrap(),
            CreateUser::Closed
        );
        let s = db.session(&[7; 32]).unwrap().unwrap();
        assert_eq!((s.user, s.device), (user, dev));
        assert!(db.device_active(dev).unwrap());
        db.set_disabled(user, true).unwrap();
        assert!(!db.device_active(dev).unwrap());
        db.set_disabled(user, false).unwrap();
        assert!(db.session(&[8; 32]).unwrap().is_none());
        assert_eq!(
            db.user_by_name("ann").unwrap().unwrap().kdf,
            KdfParams::default()
        );
    }

    #[test]
    fn credential_change_logs_out_others_and_delete_cascades() {
        let mut db = Db::open_in_memory().unwrap();
        let (user, d1) = ann_with_device(&mut db);
        let d2 = db.create_session(user, "b", &[2; 32], 1).unwrap();
        let revoked = db
            .update_credentials(user, &creds(), Logout::AllBut(d1), false)
            .unwrap();
        assert_eq!(revoked, vec![d2]);
        assert!(db.session(&[2; 32]).unwrap().is_none());
        db.save_room(
            user,
            &RoomRecord {
                seq: 3,
                from: d1,
                envelope: Some(vec![9]),
                stored_at: 10,
            },
        )
        .unwrap();
        assert_eq!(db.load_room(user).unwrap().unwrap().seq, 3);
        assert_eq!(db.seq_floor(user).unwrap(), 0);
        db.set_seq_floor(user, 1003).unwrap();
        assert_eq!(db.seq_floor(user).unwrap(), 1003);
        db.set_seq_floor(user, 10).unwrap();
        assert_eq!(db.seq_floor(user).unwrap(), 1003, "never lowered");
        db.release_seq_floor(user, 5).unwrap();
        assert_eq!(db.seq_floor(user).unwrap(), 5);
        db.set_seq_floor(user, 1003).unwrap();
        // Saving a clip keeps the floor.
        db.save_room(
            user,
            &RoomRecord {
                seq: 4,
                from: d1,
                envelope: Some(vec![9]),
                stored_at: 10,
            },
        )
        .unwrap();
        assert_eq!(db.seq_floor(user).unwrap(), 1003);
        assert_eq!(db.expire_clips(11).unwrap(), 1);
        assert!(db.load_room(user).unwrap().unwrap().envelope.is_none());
        assert!(db.delete_user(user).unwrap());
        assert!(db.session(&[1; 32]).unwrap().is_none());
        assert!(db.load_room(user).unwrap().is_none());
    }

    #[test]
    fn ids_are_never_reused_after_delete() {
        // Devices dedupe by (origin device, seq): a reused device id would
        // make other devices drop a new device's clips as duplicates.
        let mut db = Db::open_in_memory().unwrap();
        let (user, d1) = ann_with_device(&mut db);
        let d2 = db.create_session(user, "b", &[2; 32], 1).unwrap();
        assert!(db.delete_device(user, d2).unwrap());
        let d3 = db.create_session(user, "c", &[3; 32], 1).unwrap();
        assert!(d3 > d2 && d2 > d1, "{d1} {d2} {d3}");
        assert!(db.delete_user(user).unwrap());
        let CreateUser::Created { user: u2, .. } =
            db.create_user("bob", &creds(), |_| true, None, 1).unwrap()
        else {
            panic!()
        };
        assert!(u2 > user);
    }

    #[test]
    fn reopen_keeps_secret_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.db");
        let s1 = Db::open(&p).unwrap().secret().unwrap();
        let s2 = Db::open(&p).unwrap().secret().unwrap();
        assert_eq!(s1, s2);
        assert_eq!(s1.len(), 32);
    }
}
