//! Blobs that are still being uploaded, watched by downloads that run
//! alongside the upload (a receiver starts as soon as the reference is
//! published, not when the last byte is in).
//!
//! Each blob being written has one [`watch`] channel carrying a [`Mark`]:
//! how many bytes of its file are written, an epoch bumped before a `PATCH`
//! cuts bytes a download may have read, whether the blob was deleted, and
//! when the upload last made progress. `PATCH` moves the mark, `GET` waits
//! on it. A download serves whole sealed chunks below the mark only (plus
//! the short last chunk once the blob is complete): a client re-seals an
//! interrupted upload from a whole chunk, so bytes inside a chunk may be
//! rewritten but a whole chunk below the committed offset is only ever
//! replaced by another sealing of the same chunk, which opens the same.
//!
//! Entries are created on demand by either side and removed when the blob
//! completes, is deleted, or has been idle with nobody watching
//! ([`Growth::prune`], from the sweeper), so the map holds only blobs
//! written or read recently.

use clipmesh_proto::{BlobId, UserId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Where the upload of one blob stands.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark {
    /// Bytes of the file written by the running or last `PATCH`; `None`
    /// until a `PATCH` ran since the entry was made (then the committed
    /// `stored_len` is what is on disk).
    pub written: Option<u64>,
    /// Bumped before a `PATCH` truncates the file below bytes already
    /// written, so a read that overlapped the cut is noticed.
    pub epoch: u64,
    /// The blob was deleted (or the uploader gave up and deleted it).
    pub gone: bool,
    /// Last progress of an upload (a body frame arrived), or when the entry
    /// was made.
    pub at: Instant,
}

type Key = (UserId, BlobId);

/// The watched blobs of a relay.
#[derive(Default)]
pub(crate) struct Growth {
    map: Mutex<HashMap<Key, Arc<watch::Sender<Mark>>>>,
}

impl Growth {
    /// The channel of a blob, made if there is none.
    pub fn get(&self, user: UserId, blob: BlobId) -> Arc<watch::Sender<Mark>> {
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry((user, blob))
            .or_insert_with(|| {
                Arc::new(watch::Sender::new(Mark {
                    written: None,
                    epoch: 0,
                    gone: false,
                    at: Instant::now(),
                }))
            })
            .clone()
    }

    /// Forgets a blob: it is complete (its mark was moved to the end
    /// first) or deleted. Watchers keep their handle and see the last mark.
    pub fn remove(&self, user: UserId, blob: BlobId) {
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.remove(&(user, blob));
    }

    /// Marks a blob deleted (waking its downloads) and forgets it.
    pub fn gone(&self, user: UserId, blob: BlobId) {
        let tx = {
            let map = match self.map.lock() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            map.get(&(user, blob)).cloned()
        };
        if let Some(tx) = tx {
            tx.send_modify(|m| m.gone = true);
        }
        self.remove(user, blob);
    }

    /// Drops entries nobody holds that made no progress for `idle`.
    pub fn prune(&self, idle: Duration) {
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.retain(|_, tx| Arc::strong_count(tx) > 1 || tx.borrow().at.elapsed() < idle);
    }

    /// Blobs watched now (for tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// A mark for a blob that is complete already, outside the map (nothing
/// will move it).
pub(crate) fn settled(len: u64) -> Arc<watch::Sender<Mark>> {
    Arc::new(watch::Sender::new(Mark {
        written: Some(len),
        epoch: 0,
        gone: false,
        at: Instant::now(),
    }))
}

/// Writer side: `written` bytes are in the file now.
pub(crate) fn wrote(tx: &watch::Sender<Mark>, written: u64) {
    tx.send_modify(|m| {
        m.written = Some(written);
        m.at = Instant::now();
    });
}

/// Writer side: the file is about to be cut to `to` bytes, below what may
/// have been read.
pub(crate) fn rewinding(tx: &watch::Sender<Mark>, to: u64) {
    tx.send_modify(|m| {
        m.written = Some(to);
        m.epoch += 1;
        m.at = Instant::now();
    });
}

/// Writer side: a body frame arrived (progress, but nothing new to read):
/// refreshes the time without waking anyone.
pub(crate) fn alive(tx: &watch::Sender<Mark>) {
    tx.send_if_modified(|m| {
        m.at = Instant::now();
        false
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn marks_wake_watchers_and_idle_entries_are_pruned() {
        let g = Growth::default();
        let (u, b) = (UserId(1), BlobId([7; 16]));
        let tx = g.get(u, b);
        let mut rx = tx.subscribe();
        assert!(rx.borrow_and_update().written.is_none());
        wrote(&tx, 10);
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().written, Some(10));
        rewinding(&tx, 4);
        rx.changed().await.unwrap();
        let m = *rx.borrow_and_update();
        assert_eq!((m.written, m.epoch), (Some(4), 1));
        // Progress without new bytes refreshes the time but wakes nobody.
        let before = m.at;
        alive(&tx);
        assert!(!rx.has_changed().unwrap());
        assert!(rx.borrow().at >= before);
        // Same entry for the same blob; held entries are never pruned,
        // recent ones neither.
        assert!(Arc::ptr_eq(&tx, &g.get(u, b)));
        g.prune(Duration::ZERO);
        assert_eq!(g.len(), 1);
        drop(tx);
        g.prune(Duration::from_secs(3600));
        assert_eq!(g.len(), 1);
        g.prune(Duration::ZERO);
        assert_eq!(g.len(), 0);
        // Deletion wakes watchers with `gone`.
        let tx = g.get(u, b);
        let mut rx = tx.subscribe();
        drop(tx);
        g.gone(u, b);
        rx.changed().await.unwrap();
        assert!(rx.borrow().gone);
        assert_eq!(g.len(), 0);
    }
}
