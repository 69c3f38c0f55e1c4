//! A received item waiting for `clipmesh fetch`: a file list or image over
//! `auto_download_max` is announced, not downloaded; the daemon keeps its
//! reference (in memory only: it holds the blob keys) until it is fetched
//! or replaced by a newer one.
//!
//! What `clipmesh status` shows of it is the kind, the file count, the size,
//! the sending device and when it came: never names or contents.

use clipmesh_proto::{ClipContent, ClipItem, DeviceId};
use serde::{Deserialize, Serialize};

/// What `clipmesh status` says about the waiting item.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingItem {
    /// `files` or `image`.
    pub kind: String,
    /// Number of files (1 for an image).
    pub files: usize,
    /// Bytes to download (plaintext, all files together).
    pub bytes: u64,
    /// The device that sent it.
    pub from_device: u64,
    /// When it arrived here, ms since the Unix epoch.
    pub received_ms: u64,
}

/// The waiting item itself (keys included; never printed).
pub struct Pending {
    /// The received item (references and keys only).
    pub item: ClipItem,
    /// What status shows.
    pub summary: PendingItem,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Pending({}, {} file(s), {} bytes)",
            self.summary.kind, self.summary.files, self.summary.bytes
        )
    }
}

impl Pending {
    /// Keeps `item` (a file list or an image reference) for a later fetch.
    pub fn new(item: ClipItem, from: DeviceId, received_ms: u64) -> Self {
        let (files, bytes) = match &item.content {
            ClipContent::Files(entries) => (
                entries.len(),
                entries.iter().fold(0u64, |a, e| a.saturating_add(e.size)),
            ),
            other => (1, crate::config::item_size(other)),
        };
        let summary = PendingItem {
            kind: item.content.kind_name().to_owned(),
            files,
            bytes,
            from_device: from.0,
            received_ms,
        };
        Self { item, summary }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clipmesh_proto::blob::{BlobId, BlobKey, NO_DIGEST};
    use clipmesh_proto::content::{FileBody, FileEntry};

    #[test]
    fn summary_has_sizes_and_counts_but_no_names() {
        let item = ClipItem {
            timestamp_ms: 5,
            content: ClipContent::Files(vec![
                FileEntry {
                    name: "secret-plans.pdf".into(),
                    size: 300,
                    body: FileBody::Blob {
                        id: BlobId::generate(),
                        sha256: NO_DIGEST,
                        key: BlobKey::generate(),
                    },
                },
                FileEntry {
                    name: "b".into(),
                    size: 7,
                    body: FileBody::Inline(vec![1; 7]),
                },
            ]),
        };
        let p = Pending::new(item, DeviceId(4), 99);
        assert_eq!(
            p.summary,
            PendingItem {
                kind: "files".into(),
                files: 2,
                bytes: 307,
                from_device: 4,
                received_ms: 99
            }
        );
        let shown = format!("{p:?} {}", serde_json::to_string(&p.summary).unwrap());
        assert!(!shown.contains("secret"), "{shown}");
    }
}
