//! The blob store: large sealed items (images, files) uploaded in pieces,
//! kept on disk for a TTL, and downloaded by the user's other devices.
//!
//! Layout: bytes in `<data-dir>/blobs/<user id>/<blob id>` (the blob id as
//! 32 lowercase hex digits, parsed by [`BlobId::from_str`], so it is always
//! a safe file name); metadata in the `blobs` table (`store/blobs.rs`).
//! The HTTP handlers are in `blobs/http.rs`, the streaming `PATCH` writer in
//! `blobs/upload.rs`.
//!
//! **Architecture Invariant:** only ciphertext touches disk. A blob is a
//! stream of chunks sealed by the sender under a key the relay never sees
//! (`clipmesh_proto::blob`); the relay checks lengths only.
//!
//! **Architecture Invariant:** memory per transfer is bounded whatever the
//! blob size: an upload holds at most [`WRITE_BUF`] bytes (plus one body
//! frame) before writing them out, a download at most [`READ_BUF`].
//!
//! Resumability: the stored offset (`Upload-Offset`) is the row's
//! `stored_len`, committed after each `PATCH` (the file is fsynced only by
//! the `PATCH` that completes the blob; an incomplete blob whose file is
//! shorter than its committed offset, after an OS crash, resumes from the
//! file's length). A `PATCH`
//! whose body breaks off commits the bytes it wrote, at any byte boundary;
//! one that is cancelled (request timeout) commits nothing, and the next
//! `PATCH` truncates the file back to the committed offset before writing.
//! A `PATCH` may also start *before* the stored offset (a client re-sealing
//! from the whole chunk [`clipmesh_proto::BlobLayout::resume_index`] names):
//! the rewind is committed first, so the committed offset never points past
//! the bytes on disk. A complete blob is never rewritten. One `PATCH` per
//! blob runs at a time (`UploadLock`).
//!
//! Expiry: a blob expires `blob_ttl_secs` after creation (410 from then on).
//! [`sweeper`] runs [`BlobStore::sweep`] every [`SWEEP_INTERVAL`] on the
//! relay's task tracker: it deletes expired files, keeps their rows as
//! tombstones for [`TOMBSTONE_SECS`] (still 410), and removes the blob
//! directories of deleted users.
//!
//! Downloads may start before the upload ends: `GET` follows a blob still
//! being written (`blobs/serve.rs`), whole chunks at a time, waiting on the
//! upload's progress mark (`blobs/growth.rs`) for at most [`BlobStore::idle`]
//! without progress.

mod growth;
mod http;
mod serve;
mod slots;
mod upload;

pub use http::routes;

use crate::clock::Clock;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use clipmesh_proto::{BlobId, UserId};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

/// Name of the blob directory inside the data directory.
pub const BLOBS_DIR: &str = "blobs";
/// How often [`sweeper`] runs (also once at start).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How long an expired blob's row is kept after expiry so that requests for
/// it get 410 `blob_expired` rather than 404.
pub const TOMBSTONE_SECS: i64 = 7 * 24 * 3600;
/// Bytes an upload collects before handing them to a blocking write.
pub const WRITE_BUF: usize = 1 << 20;
/// Bytes a download reads from its file at a time (one blocking read each;
/// 1 MiB, about a sealed chunk, keeps the hops per MiB low).
pub const READ_BUF: usize = 1 << 20;
/// Default of [`BlobStore::idle`]: how long an upload body or a download
/// following an upload may go without progress before it is ended.
pub const BLOB_IDLE: Duration = Duration::from_secs(30);

/// Why a blob operation failed inside the relay (not the client's fault).
#[derive(Debug, Error)]
pub enum BlobError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file operation failed.
    #[error("blob file: {0}")]
    Io(#[from] std::io::Error),
    /// A blocking task panicked or was cancelled.
    #[error("blob task failed")]
    Join,
}

/// Blob limits from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct BlobLimits {
    /// Largest sealed blob.
    pub max_bytes: u64,
    /// Declared bytes of one user's unexpired blobs.
    pub quota_bytes: u64,
    /// Declared bytes of all users' unexpired blobs.
    pub total_quota_bytes: u64,
    /// Lifetime from creation, seconds.
    pub ttl_secs: i64,
    /// Largest body of one `PATCH`.
    pub patch_max_bytes: u64,
    /// Transfers (`PATCH` or `GET` bodies) running at once, all users.
    pub max_transfers: usize,
    /// Transfers of one user running at once.
    pub transfers_per_user: usize,
    /// Slowest upload body accepted, bytes per second over each idle window.
    pub min_upload_rate: u64,
}

impl From<&Limits> for BlobLimits {
    fn from(l: &Limits) -> Self {
        Self {
            max_bytes: l.blob_max_bytes,
            quota_bytes: l.blob_quota_bytes,
            total_quota_bytes: l.blob_total_quota_bytes,
            ttl_secs: i64::try_from(l.blob_ttl_secs).unwrap_or(i64::MAX),
            patch_max_bytes: l.blob_patch_max_bytes,
            max_transfers: l
                .max_http_connections
                .saturating_sub(l.http_reserved_connections)
                .max(1),
            transfers_per_user: l.blob_transfers_per_user,
            min_upload_rate: l.blob_min_upload_rate,
        }
    }
}

/// What one [`BlobStore::sweep`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Expired blobs whose files were deleted.
    pub expired: usize,
    /// Directories of deleted users removed.
    pub orphan_dirs: usize,
}

/// The blob store: files, metadata and the set of blobs being written.
pub struct BlobStore {
    /// `<data-dir>/blobs`.
    dir: PathBuf,
    /// Metadata rows.
    store: Store,
    /// The three blob metrics.
    metrics: Arc<Metrics>,
    /// Sizes, quota, TTL.
    limits: BlobLimits,
    /// Blobs with a `PATCH` in progress (or its last blocking write still
    /// running): a second one is refused instead of interleaving writes.
    uploading: Arc<Mutex<HashSet<(UserId, BlobId)>>>,
    /// Progress marks of blobs being written, for downloads that follow.
    growth: growth::Growth,
    /// Running transfers, capped per user and in total.
    transfers: Arc<slots::Transfers>,
    /// [`BlobStore::idle`] in milliseconds.
    idle_ms: AtomicU64,
    /// The wall clock expiry is judged by (the system clock unless
    /// [`BlobStore::with_clock`]).
    clock: Clock,
}

/// Held while a `PATCH` writes a blob; moved into its blocking writes so
/// the lock outlives a cancelled request until the write has finished.
pub(crate) struct UploadLock {
    key: (UserId, BlobId),
    set: Arc<Mutex<HashSet<(UserId, BlobId)>>>,
}

impl Drop for UploadLock {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.key);
        }
    }
}

impl BlobStore {
    /// Opens (creating) `<data_dir>/blobs` and sets the stored-bytes gauge
    /// from the database.
    pub async fn open(
        data_dir: &Path,
        store: Store,
        metrics: Arc<Metrics>,
        limits: BlobLimits,
    ) -> Result<Self, BlobError> {
        let dir = data_dir.join(BLOBS_DIR);
        let d = dir.clone();
        blocking(move || std::fs::create_dir_all(&d)).await??;
        let s = Self {
            dir,
            store,
            metrics,
            limits,
            uploading: Arc::default(),
            growth: growth::Growth::default(),
            transfers: slots::Transfers::new(limits.max_transfers, limits.transfers_per_user),
            idle_ms: AtomicU64::new(BLOB_IDLE.as_millis() as u64),
            clock: Clock::system(),
        };
        s.refresh_gauge().await?;
        Ok(s)
    }

    /// The same store judging expiry by `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The clock expiry is judged by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The limits in force.
    pub fn limits(&self) -> BlobLimits {
        self.limits
    }

    /// How long a blob body (`PATCH`) or a download waiting for an upload
    /// may go without progress before it is ended ([`BLOB_IDLE`] unless
    /// set).
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms.load(Ordering::Relaxed))
    }

    /// Sets [`BlobStore::idle`] (tests use a short one).
    pub fn set_idle(&self, idle: Duration) {
        self.idle_ms
            .store(idle.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// A transfer slot for `user`, or why there is none.
    pub(crate) fn take_transfer(
        &self,
        user: UserId,
    ) -> Result<slots::TransferSlot, slots::Refused> {
        self.transfers.try_take(user)
    }

    /// Blob transfers (upload or download bodies) running now.
    pub fn transfers_running(&self) -> usize {
        self.transfers.running()
    }

    pub(crate) fn growth(&self) -> &growth::Growth {
        &self.growth
    }

    /// Directory of one user's blobs.
    pub fn user_dir(&self, user: UserId) -> PathBuf {
        self.dir.join(user.0.to_string())
    }

    /// File of one blob.
    pub fn path(&self, user: UserId, blob: &BlobId) -> PathBuf {
        self.user_dir(user).join(blob.to_string())
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Takes the upload lock of a blob, or `None` if a `PATCH` holds it.
    pub(crate) fn lock_upload(&self, user: UserId, blob: BlobId) -> Option<Arc<UploadLock>> {
        let mut set = self.uploading.lock().ok()?;
        set.insert((user, blob)).then(|| {
            Arc::new(UploadLock {
                key: (user, blob),
                set: self.uploading.clone(),
            })
        })
    }

    /// Re-reads the stored-bytes gauge from the database.
    pub async fn refresh_gauge(&self) -> Result<(), BlobError> {
        let n = self.store.call(|db| db.blob_bytes_stored()).await?;
        self.metrics
            .blob_bytes_stored
            .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
        Ok(())
    }

    /// Moves the stored-bytes gauge for one blob whose committed length went
    /// from `before` to `after` (cheaper than [`BlobStore::refresh_gauge`]
    /// on every `PATCH`).
    pub(crate) fn adjust_gauge(&self, before: u64, after: u64) {
        let d =
            i64::try_from(after).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(i64::MAX);
        self.metrics
            .blob_bytes_stored
            .fetch_add(d, Ordering::Relaxed);
    }

    /// Deletes one blob's row and file. False if it did not exist.
    pub async fn delete(&self, user: UserId, blob: BlobId) -> Result<bool, BlobError> {
        let existed = self
            .store
            .call(move |db| db.delete_blob(user, &blob))
            .await?;
        self.growth.gone(user, blob);
        let path = self.path(user, &blob);
        blocking(move || remove_file_if_exists(&path)).await??;
        self.refresh_gauge().await?;
        Ok(existed)
    }

    /// Deletes every blob file of a user whose account was deleted (the rows
    /// go with the account, by cascade).
    pub async fn delete_user(&self, user: UserId) -> Result<(), BlobError> {
        let dir = self.user_dir(user);
        blocking(move || remove_dir_if_exists(&dir)).await??;
        self.refresh_gauge().await
    }

    /// Deletes the files of blobs expired at `now`, forgets tombstones older
    /// than [`TOMBSTONE_SECS`], and removes directories of users that no
    /// longer exist. `now` is a parameter so tests can drive expiry.
    pub async fn sweep(&self, now: i64) -> Result<SweepReport, BlobError> {
        let expired = self
            .store
            .call(move |db| db.sweep_blobs(now, now.saturating_sub(TOMBSTONE_SECS)))
            .await?;
        let mut report = SweepReport {
            expired: expired.len(),
            orphan_dirs: 0,
        };
        for (u, b) in &expired {
            self.growth.gone(*u, *b);
        }
        self.growth.prune(self.idle());
        let paths: Vec<PathBuf> = expired.iter().map(|(u, b)| self.path(*u, b)).collect();
        blocking(move || paths.iter().try_for_each(|p| remove_file_if_exists(p))).await??;
        let dir = self.dir.clone();
        let users: Vec<UserId> = blocking(move || user_dirs(&dir)).await??;
        for user in users {
            if !self.store.call(move |db| db.user_exists(user)).await? {
                self.delete_user(user).await?;
                report.orphan_dirs += 1;
            }
        }
        self.refresh_gauge().await?;
        Ok(report)
    }
}

/// User ids that have a directory under `dir` (other entries are ignored).
fn user_dirs(dir: &Path) -> std::io::Result<Vec<UserId>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Some(id) = e.file_name().to_str().and_then(|n| u64::from_str(n).ok()) {
            if e.file_type()?.is_dir() {
                out.push(UserId(id));
            }
        }
    }
    Ok(out)
}

/// Deletes the blob directory of `user` under `data_dir` (for the admin CLI,
/// which works on the data directory without a running relay).
pub fn remove_user_files(data_dir: &Path, user: UserId) -> std::io::Result<()> {
    remove_dir_if_exists(&data_dir.join(BLOBS_DIR).join(user.0.to_string()))
}

fn remove_file_if_exists(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_dir_if_exists(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether a request is a blob upload (`PATCH /api/v1/blobs/{id}`), whose
/// body may take longer than the relay's whole-request timeout: a large
/// blob on a slow uplink. It is ended instead when it falls below the
/// minimum upload rate over a [`BlobStore::idle`] window, or sends nothing
/// for that long (`blobs/upload.rs`). Downloads need no exemption: their
/// handler returns before the body streams.
pub fn exempt_from_request_timeout(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::PATCH && path.starts_with("/api/v1/blobs/")
}

/// Runs file IO on a blocking thread and awaits it.
pub(crate) async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, BlobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| BlobError::Join)
}

/// Sweeps expired blobs every [`SWEEP_INTERVAL`] (and once at start) until
/// `shutdown`. Runs on the relay's task tracker.
pub async fn sweeper(blobs: Arc<BlobStore>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => match blobs.sweep(blobs.clock().unix_now()).await {
                Ok(r) if r != SweepReport::default() => {
                    tracing::debug!(expired = r.expired, orphan_dirs = r.orphan_dirs, "swept blobs");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sweeping blobs failed"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    #[tokio::test]
    async fn one_upload_per_blob_and_the_lock_outlives_its_clones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Db::open_in_memory().unwrap());
        let limits = BlobLimits::from(&Limits::default());
        let blobs = BlobStore::open(dir.path(), store, Arc::default(), limits)
            .await
            .unwrap();
        assert!(dir.path().join(BLOBS_DIR).is_dir());
        let (u, a, b) = (UserId(1), BlobId([1; 16]), BlobId([2; 16]));
        let lock = blobs.lock_upload(u, a).unwrap();
        assert!(blobs.lock_upload(u, a).is_none());
        // Other blobs and other users' blobs are independent.
        assert!(blobs.lock_upload(u, b).is_some());
        assert!(blobs.lock_upload(UserId(2), a).is_some());
        // A clone held by a blocking write keeps it locked.
        let clone = lock.clone();
        drop(lock);
        assert!(blobs.lock_upload(u, a).is_none());
        drop(clone);
        assert!(blobs.lock_upload(u, a).is_some());
    }
}
