//! Progress of one transfer, shared between the blocking transfer task
//! (which adds bytes) and the daemon (which reports them in `clipmesh
//! status`). Logs at info each time another tenth is done: sizes and
//! counts only, never names.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Which way a transfer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Uploading a local item.
    Send,
    /// Downloading a received item.
    Receive,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Receive => "receive",
        }
    }
}

/// One transfer in `clipmesh status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStatus {
    /// Transfer number (per daemon run).
    pub id: u64,
    /// Send or receive.
    pub direction: Direction,
    /// How many files (1 for an image).
    pub files: usize,
    /// Bytes done so far.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

struct Inner {
    id: u64,
    direction: Direction,
    files: usize,
    total: u64,
    done: AtomicU64,
    /// Last tenth logged (0..=10).
    logged: AtomicU64,
}

/// A cheap, cloneable progress counter.
#[derive(Clone)]
pub struct Progress(Arc<Inner>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.status();
        write!(
            f,
            "Progress(#{} {} {}/{})",
            s.id,
            s.direction.as_str(),
            s.done,
            s.total
        )
    }
}

impl Progress {
    /// A new transfer of `files` files and `total` bytes.
    pub fn new(id: u64, direction: Direction, files: usize, total: u64) -> Self {
        Self(Arc::new(Inner {
            id,
            direction,
            files,
            total,
            done: AtomicU64::new(0),
            logged: AtomicU64::new(0),
        }))
    }

    /// A counter nobody reads (tests, small items).
    pub fn detached(total: u64) -> Self {
        Self::new(0, Direction::Send, 1, total)
    }

    /// Adds `n` bytes done; logs when another tenth is reached.
    pub fn add(&self, n: u64) {
        let done = self.0.done.fetch_add(n, Ordering::Relaxed) + n;
        let tenth = tenths(done, self.0.total);
        let prev = self.0.logged.load(Ordering::Relaxed);
        if tenth > prev
            && self
                .0
                .logged
                .compare_exchange(prev, tenth, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::info!(
                transfer = self.0.id,
                direction = self.0.direction.as_str(),
                files = self.0.files,
                done,
                total = self.0.total,
                "transfer {}0%",
                tenth
            );
        }
    }

    /// Takes back bytes counted by a failed attempt that will be redone.
    pub fn rewind_to(&self, done: u64) {
        self.0.done.store(done, Ordering::Relaxed);
    }

    /// Bytes done so far.
    pub fn done(&self) -> u64 {
        self.0.done.load(Ordering::Relaxed)
    }

    /// A snapshot for the status report.
    pub fn status(&self) -> TransferStatus {
        TransferStatus {
            id: self.0.id,
            direction: self.0.direction,
            files: self.0.files,
            done: self.done().min(self.0.total),
            total: self.0.total,
        }
    }
}

/// Completed tenths of `total` (0..=10); an empty total counts as done.
pub fn tenths(done: u64, total: u64) -> u64 {
    if total == 0 {
        return 10;
    }
    ((u128::from(done.min(total)) * 10) / u128::from(total)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenths_are_monotone_and_bounded() {
        assert_eq!(tenths(0, 100), 0);
        assert_eq!(tenths(9, 100), 0);
        assert_eq!(tenths(10, 100), 1);
        assert_eq!(tenths(100, 100), 10);
        assert_eq!(tenths(500, 100), 10);
        assert_eq!(tenths(0, 0), 10);
        assert_eq!(tenths(u64::MAX - 1, u64::MAX), 9);
    }

    #[test]
    fn progress_counts_and_snapshots() {
        let p = Progress::new(3, Direction::Receive, 2, 1000);
        p.add(250);
        p.add(250);
        let s = p.status();
        assert_eq!((s.id, s.files, s.done, s.total), (3, 2, 500, 1000));
        p.rewind_to(100);
        assert_eq!(p.done(), 100);
        p.add(5000);
        assert_eq!(p.status().done, 1000);
    }
}
