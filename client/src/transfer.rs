//! Large items: images and files sent through the relay's blob store.
//!
//! ```text
//! send:    paths ──walk (limits)──▶ per file: inline (< threshold) or a blob
//!          declared on the relay (POST) ──▶ ClipContent::Files / ImageBlob with
//!          references only ──▶ link (published at once), then per blob
//!          read 1 MiB ─▶ BlobStreamSealer ─▶ PATCH /api/v1/blobs/{id} (resumable)
//! receive: Files ──SafePath──▶ fresh folder in download_dir; blob bodies
//!          GET (Range resume; the relay streams a blob still being uploaded)
//!          ─▶ BlobOpener chunk by chunk ─▶ temp file ─▶ finish ─▶ link into place
//! ```
//!
//! Everything here is blocking (ureq, `std::fs`): the daemon runs it in
//! `spawn_blocking`, one transfer per task, with a [`Progress`] the status
//! report and the logs read.
//!
//! **Invariant:** at most a few chunks (1 MiB each) of one item are in
//! memory at a time, whatever its size: one being read and sealed, two
//! queued, one on the wire. Nothing reads a whole file.
//!
//! **Invariant:** file names are content. They never reach a log line or a
//! status message; only counts and sizes do.

mod blobs;
mod download;
mod fetch;
mod jobs;
mod pending;
mod progress;
mod receive;
mod upload;
mod walk;

pub use blobs::BlobClient;
pub use download::{download_blob, download_to_vec};
pub use fetch::{fetch_waiting, FetchError, FETCH_PROGRESS_EVERY};
pub use jobs::{
    receive_file_list, receive_image, send_files, send_image, Announce, SendLimits, Tracked,
    Transfers, MAX_INLINE_TOTAL,
};
pub use pending::{Pending, PendingItem};
pub use progress::{Direction, Progress, TransferStatus};
pub use receive::{receive_files, top_level_paths, TransferFolder};
pub use upload::{upload_blob, upload_blob_as, upload_bytes, upload_streamed, BlobRef};
pub use walk::{plan_files, Budget, PlannedFile, WalkLimits};

use clipmesh_proto::blob::BlobError;
use thiserror::Error;

/// Why a transfer failed. Every message is one line without names or
/// contents.
#[derive(Debug, Error)]
pub enum TransferError {
    /// More files than `max_files`.
    #[error("too many files: more than {max} (max_files); not sent")]
    TooManyFiles {
        /// The limit.
        max: usize,
    },
    /// More bytes than allowed.
    #[error("item too large: {size} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The size found so far.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A local file-system operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (no file names).
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file changed size while it was being sent.
    #[error("a file changed while it was being sent; copy it again")]
    Changed,
    /// The blob's TTL ran out on the relay (410).
    #[error(
        "the item expired on the relay (410 blob_expired); copy it again on the sending device"
    )]
    Expired,
    /// The per-user blob quota is used up (403).
    #[error("relay blob quota exceeded (403 quota_exceeded); wait for older items to expire")]
    QuotaExceeded,
    /// The relay refuses blobs this large (413).
    #[error("the relay refuses items this large (413 too_large)")]
    RelayTooLarge,
    /// The blob is not on the relay (404): never uploaded, or deleted by a
    /// sender that gave up during the upload.
    #[error("the item is not on the relay (404 blob_not_found); the sending device may have cancelled it")]
    NotFound,
    /// The sender stopped uploading a blob before it was complete (409).
    #[error("the sending device stopped uploading the item (409 incomplete); copy it again there")]
    Abandoned,
    /// The token is no longer valid (401).
    #[error("this device's session was revoked; run `clipmesh login` again")]
    Unauthorized,
    /// Any other refusal.
    #[error("relay refused the transfer ({status} {code})")]
    Relay {
        /// HTTP status.
        status: u16,
        /// Error code from the body.
        code: String,
    },
    /// No answer from the relay, or the connection broke (retryable).
    #[error("relay unreachable: {0}")]
    Unreachable(String),
    /// The upload offset did not match (retryable after a HEAD).
    #[error("upload offset mismatch")]
    OffsetMismatch,
    /// A chunk failed to open, the blob was cut short or its digest is
    /// wrong.
    #[error("received item failed verification ({0}); discarded")]
    Corrupt(BlobError),
    /// The daemon is shutting down.
    #[error("transfer cancelled")]
    Cancelled,
}

impl TransferError {
    /// Whether retrying (after a HEAD or with a range) may help: a broken
    /// connection, an offset mismatch, a 5xx, or a 408 (the relay ended a
    /// body it found too slow, keeping what arrived).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::OffsetMismatch)
            || matches!(self, Self::Relay { status, .. } if *status >= 500 || *status == 408)
    }

    pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { what, source }
    }
}

/// Retries of one blob transfer after a retryable error.
pub const MAX_RETRIES: u32 = 5;

/// Backoff before retry `attempt` (1-based): 200 ms doubling, at most 5 s.
pub fn retry_delay(attempt: u32) -> std::time::Duration {
    let ms = 200u64.saturating_mul(1 << attempt.saturating_sub(1).min(5));
    std::time::Duration::from_millis(ms.min(5_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_are_bounded() {
        assert_eq!(retry_delay(1).as_millis(), 200);
        assert_eq!(retry_delay(2).as_millis(), 400);
        assert_eq!(retry_delay(10).as_millis(), 5_000);
        assert!(TransferError::Unreachable("x".into()).is_retryable());
        assert!(!TransferError::Expired.is_retryable());
        assert!(!TransferError::Corrupt(BlobError::Open).is_retryable());
        let relay = |status| TransferError::Relay {
            status,
            code: "bad_request".into(),
        };
        // A PATCH the relay ended as too slow resumes; a bad request does not.
        assert!(relay(408).is_retryable());
        assert!(relay(503).is_retryable());
        assert!(!relay(400).is_retryable());
    }
}
