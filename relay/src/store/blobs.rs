//! Blob metadata rows (`blobs` table): one row per uploaded blob, scoped to
//! its user. The bytes live in files (`crate::blobs`); this table says how
//! long each blob is declared to be, how much of it is stored, and when it
//! expires.
//!
//! A blob past its TTL is first *swept* (its file deleted, `swept = 1`,
//! `stored_len = 0`) and its row kept as a tombstone for
//! [`crate::blobs::TOMBSTONE_SECS`], so a late download gets 410 instead of
//! 404. Then the row goes too.

use super::{id, sql_id, Db, StoreError};
use clipmesh_proto::{BlobId, UserId};
use rusqlite::{params, OptionalExtension};

/// One blob's metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobRow {
    /// Declared sealed length (`Upload-Length`).
    pub sealed_len: u64,
    /// Bytes stored so far (`Upload-Offset`).
    pub stored_len: u64,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Expiry time, Unix seconds: created_at + TTL.
    pub expires_at: i64,
    /// Whether all `sealed_len` bytes are stored.
    pub complete: bool,
    /// Whether the sweeper already deleted the file (tombstone).
    pub swept: bool,
}

impl BlobRow {
    /// Whether the blob is expired at `now` (or already swept).
    pub fn expired(&self, now: i64) -> bool {
        self.swept || now >= self.expires_at
    }
}

/// Result of [`Db::create_blob`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateBlob {
    /// A new row.
    Created,
    /// A row with this id already exists (unchanged).
    Exists(BlobRow),
    /// The user's unexpired blobs plus this one exceed the quota.
    OverQuota {
        /// Declared bytes of the user's unexpired blobs.
        used: u64,
    },
    /// All users' unexpired blobs plus this one exceed the relay's total.
    OverTotalQuota,
}

fn sql_len(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BlobRow> {
    Ok(BlobRow {
        sealed_len: id(r.get(0)?),
        stored_len: id(r.get(1)?),
        created_at: r.get(2)?,
        expires_at: r.get(3)?,
        complete: r.get(4)?,
        swept: r.get(5)?,
    })
}

const COLS: &str = "sealed_len, stored_len, created_at, expires_at, complete, swept";

/// The quotas a new blob must fit: declared bytes of one user's unexpired
/// blobs, and of all users' together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobQuota {
    /// One user's.
    pub user: u64,
    /// Everyone's.
    pub total: u64,
}

impl Db {
    /// The user's blob `blob`, if any.
    pub fn blob(&self, user: UserId, blob: &BlobId) -> Result<Option<BlobRow>, StoreError> {
        let sql = format!("SELECT {COLS} FROM blobs WHERE user_id = ?1 AND id = ?2");
        Ok(self
            .conn
            .query_row(&sql, params![sql_id(user.0), &blob.0[..]], row)
            .optional()?)
    }

    /// Creates a blob row of `sealed_len` bytes expiring at `now + ttl`,
    /// unless one exists or the user's unexpired declared bytes plus
    /// `sealed_len` would exceed `quota.user`, or all users' would exceed
    /// `quota.total`. One transaction, so concurrent creations cannot both
    /// slip under a quota.
    pub fn create_blob(
        &mut self,
        user: UserId,
        blob: &BlobId,
        sealed_len: u64,
        now: i64,
        ttl: i64,
        quota: BlobQuota,
    ) -> Result<CreateBlob, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let sql = format!("SELECT {COLS} FROM blobs WHERE user_id = ?1 AND id = ?2");
        if let Some(r) = tx
            .query_row(&sql, params![sql_id(user.0), &blob.0[..]], row)
            .optional()?
        {
            return Ok(CreateBlob::Exists(r));
        }
        let used: i64 = tx.query_row(
            "SELECT COALESCE(SUM(sealed_len), 0) FROM blobs \
             WHERE user_id = ?1 AND swept = 0 AND expires_at > ?2",
            params![sql_id(user.0), now],
            |r| r.get(0),
        )?;
        let used = id(used);
        if used.saturating_add(sealed_len) > quota.user {
            return Ok(CreateBlob::OverQuota { used });
        }
        let all: i64 = tx.query_row(
            "SELECT COALESCE(SUM(sealed_len), 0) FROM blobs WHERE swept = 0 AND expires_at > ?1",
            params![now],
            |r| r.get(0),
        )?;
        if id(all).saturating_add(sealed_len) > quota.total {
            return Ok(CreateBlob::OverTotalQuota);
        }
        tx.execute(
            "INSERT INTO blobs (user_id, id, sealed_len, stored_len, created_at, expires_at, complete, swept) \
             VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, 0)",
            params![
                sql_id(user.0),
                &blob.0[..],
                sql_len(sealed_len),
                now,
                now.saturating_add(ttl),
                sealed_len == 0
            ],
        )?;
        tx.commit()?;
        Ok(CreateBlob::Created)
    }

    /// Records that `stored_len` bytes of an unswept blob are on disk (and
    /// whether that completes it). False if the row is gone or swept.
    pub fn set_blob_stored(
        &self,
        user: UserId,
        blob: &BlobId,
        stored_len: u64,
    ) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE blobs SET stored_len = ?3, complete = (?3 = sealed_len) \
             WHERE user_id = ?1 AND id = ?2 AND swept = 0",
            params![sql_id(user.0), &blob.0[..], sql_len(stored_len)],
        )?;
        Ok(n > 0)
    }

    /// Deletes a blob row. False if there was none.
    pub fn delete_blob(&self, user: UserId, blob: &BlobId) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "DELETE FROM blobs WHERE user_id = ?1 AND id = ?2",
            params![sql_id(user.0), &blob.0[..]],
        )?;
        Ok(n > 0)
    }

    /// Marks every unswept blob expired at `now` as swept (returning them, so
    /// their files can be deleted) and drops tombstones that expired before
    /// `forget_before`.
    pub fn sweep_blobs(
        &mut self,
        now: i64,
        forget_before: i64,
    ) -> Result<Vec<(UserId, BlobId)>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut out = Vec::new();
        {
            let mut st =
                tx.prepare("SELECT user_id, id FROM blobs WHERE swept = 0 AND expires_at <= ?1")?;
            let rows = st.query_map(params![now], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            for r in rows {
                let (u, b) = r?;
                let b: [u8; clipmesh_proto::blob::BLOB_ID_LEN] =
                    b.try_into().map_err(|_| StoreError::Corrupt("blob id"))?;
                out.push((UserId(id(u)), BlobId(b)));
            }
        }
        tx.execute(
            "UPDATE blobs SET swept = 1, stored_len = 0, complete = 0 \
             WHERE swept = 0 AND expires_at <= ?1",
            params![now],
        )?;
        tx.execute(
            "DELETE FROM blobs WHERE swept = 1 AND expires_at < ?1",
            params![forget_before],
        )?;
        tx.commit()?;
        Ok(out)
    }

    /// Bytes stored in all unswept blobs (the `blob_bytes_stored` gauge).
    pub fn blob_bytes_stored(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT COALESCE(SUM(stored_len), 0) FROM blobs WHERE swept = 0",
            [],
            |r| r.get(0),
        )?;
        Ok(id(n))
    }

    /// Whether the user exists (the sweeper removes blob directories of
    /// deleted users).
    pub fn user_exists(&self, user: UserId) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM users WHERE id = ?1",
                params![sql_id(user.0)],
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
    fn quota_counts_unexpired_declared_lengths() {
        let mut db = Db::open_in_memory().unwrap();
        let u = user(&mut db, "ann");
        let (a, b, c) = (BlobId([1; 16]), BlobId([2; 16]), BlobId([3; 16]));
        assert_eq!(
            db.create_blob(
                u,
                &a,
                60,
                100,
                10,
                BlobQuota {
                    user: 100,
                    total: u64::MAX
                }
            )
            .unwrap(),
            CreateBlob::Created
        );
        assert_eq!(
            db.create_blob(
                u,
                &b,
                50,
                100,
                10,
                BlobQuota {
                    user: 100,
                    total: u64::MAX
                }
            )
            .unwrap(),
            CreateBlob::OverQuota { used: 60 }
        );
        assert!(matches!(
            db.create_blob(u, &a, 60, 100, 10, BlobQuota { user: 100, total: u64::MAX }).unwrap(),
            CreateBlob::Exists(r) if r.sealed_len == 60 && !r.complete
        ));
        // At 110, `a` is expired and no longer counts.
        assert_eq!(
            db.create_blob(
                u,
                &c,
                90,
                110,
                10,
                BlobQuota {
                    user: 100,
                    total: u64::MAX
                }
            )
            .unwrap(),
            CreateBlob::Created
        );
        assert!(db.set_blob_stored(u, &c, 90).unwrap());
        assert!(db.blob(u, &c).unwrap().unwrap().complete);
        assert_eq!(db.blob_bytes_stored().unwrap(), 90);
        // The relay's total counts every user's unexpired blobs.
        let v = user(&mut db, "vic");
        assert_eq!(
            db.create_blob(
                v,
                &a,
                20,
                110,
                10,
                BlobQuota {
                    user: 100,
                    total: 100
                }
            )
            .unwrap(),
            CreateBlob::OverTotalQuota
        );
        assert_eq!(
            db.create_blob(
                v,
                &a,
                10,
                110,
                10,
                BlobQuota {
                    user: 100,
                    total: 100
                }
            )
            .unwrap(),
            CreateBlob::Created
        );
    }

    #[test]
    fn sweep_tombstones_then_forgets_and_user_delete_cascades() {
        let mut db = Db::open_in_memory().unwrap();
        let u = user(&mut db, "ann");
        let a = BlobId([1; 16]);
        db.create_blob(
            u,
            &a,
            40,
            100,
            10,
            BlobQuota {
                user: 1000,
                total: u64::MAX,
            },
        )
        .unwrap();
        db.set_blob_stored(u, &a, 20).unwrap();
        assert!(db.sweep_blobs(109, 0).unwrap().is_empty());
        assert_eq!(db.sweep_blobs(110, 0).unwrap(), vec![(u, a)]);
        let r = db.blob(u, &a).unwrap().unwrap();
        assert!(r.swept && r.expired(0) && r.stored_len == 0);
        assert!(!db.set_blob_stored(u, &a, 40).unwrap());
        assert_eq!(db.blob_bytes_stored().unwrap(), 0);
        db.sweep_blobs(111, 111).unwrap();
        assert!(db.blob(u, &a).unwrap().is_none());
        db.create_blob(
            u,
            &a,
            40,
            100,
            10,
            BlobQuota {
                user: 1000,
                total: u64::MAX,
            },
        )
        .unwrap();
        assert!(db.delete_user(u).unwrap());
        assert!(db.blob(u, &a).unwrap().is_none());
        assert!(!db.user_exists(u).unwrap());
    }
}
