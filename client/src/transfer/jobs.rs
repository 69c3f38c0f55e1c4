//! Whole transfers as the daemon runs them (blocking, inside
//! `spawn_blocking`): a copied file list or image out, a received one in.
//! Each registers its [`Progress`] in [`Transfers`] for `clipmesh status`
//! while it runs.

use super::{
    download_to_vec, plan_files, receive_files, top_level_paths, upload_blob, upload_bytes,
    BlobClient, Direction, Progress, TransferError, TransferFolder, TransferStatus, WalkLimits,
};
use clipmesh_proto::content::{FileBody, FileEntry};
use clipmesh_proto::ClipContent;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Most bytes of a file list sent inline, all files together, so the
/// envelope stays well inside one relay frame (1 MiB by default) with room
/// for names and blob references; further small files go as blobs. A list
/// whose names alone overflow the frame is refused by the link with "item
/// too large for the relay".
pub const MAX_INLINE_TOTAL: u64 = 256 << 10;

/// The transfers running now, for the status report.
#[derive(Clone, Default)]
pub struct Transfers {
    running: Arc<Mutex<BTreeMap<u64, Progress>>>,
    next: Arc<AtomicU64>,
}

impl std::fmt::Debug for Transfers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Transfers({} running)", self.snapshot().len())
    }
}

/// Removes its transfer from the registry when dropped.
#[derive(Debug)]
pub struct Tracked {
    transfers: Transfers,
    /// The transfer's progress counter.
    pub progress: Progress,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Ok(mut m) = self.transfers.running.lock() {
            m.remove(&self.progress.status().id);
        }
    }
}

impl Transfers {
    /// Registers a new transfer.
    pub fn start(&self, direction: Direction, files: usize, total: u64) -> Tracked {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let progress = Progress::new(id, direction, files, total);
        if let Ok(mut m) = self.running.lock() {
            m.insert(id, progress.clone());
        }
        tracing::info!(
            transfer = id,
            direction = ?direction,
            files,
            total,
            "transfer started"
        );
        Tracked {
            transfers: self.clone(),
            progress,
        }
    }

    /// What is running now.
    pub fn snapshot(&self) -> Vec<TransferStatus> {
        self.running
            .lock()
            .map(|m| m.values().map(Progress::status).collect())
            .unwrap_or_default()
    }
}

/// Limits and thresholds of an outgoing item.
#[derive(Clone, Copy, Debug)]
pub struct SendLimits {
    /// Files below this size travel inline.
    pub inline_threshold: u64,
    /// Walk limits (file count, total bytes).
    pub walk: WalkLimits,
}

/// Sends a copied file list: walks it within the limits, uploads what is
/// not inline, and returns the content to publish (references only).
pub fn send_files(
    blobs: &BlobClient,
    transfers: &Transfers,
    paths: &[PathBuf],
    limits: SendLimits,
    cancel: &CancellationToken,
) -> Result<ClipContent, TransferError> {
    let plan = plan_files(paths, &limits.walk)?;
    let total = plan.iter().map(|f| f.size).sum();
    let tracked = transfers.start(Direction::Send, plan.len(), total);
    let mut entries = Vec::with_capacity(plan.len());
    let mut inline_total = 0u64;
    let result = (|| {
        for f in &plan {
            if cancel.is_cancelled() {
                return Err(TransferError::Cancelled);
            }
            let body =
                if f.size < limits.inline_threshold && inline_total + f.size <= MAX_INLINE_TOTAL {
                    let data = read_small(&f.path, f.size)?;
                    inline_total += data.len() as u64;
                    tracked.progress.add(data.len() as u64);
                    FileBody::Inline(data)
                } else {
                    let r = upload_blob(
                        blobs,
                        || std::fs::File::open(&f.path),
                        f.size,
                        &tracked.progress,
                        cancel,
                    )?;
                    FileBody::Blob {
                        id: r.id,
                        sha256: r.sha256,
                        key: r.key,
                    }
                };
            entries.push(FileEntry {
                name: f.name.clone(),
                size: f.size,
                body,
            });
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            tracing::info!(files = entries.len(), total, "file list uploaded");
            Ok(ClipContent::Files(entries))
        }
        Err(e) => {
            // Best effort: the relay would drop them at their TTL anyway.
            for e in &entries {
                if let FileBody::Blob { id, .. } = &e.body {
                    let _ = blobs.delete(id);
                }
            }
            Err(e)
        }
    }
}

/// Reads a small file whole, refusing it if it grew past twice its walked
/// size (it is being written to).
fn read_small(path: &Path, size: u64) -> Result<Vec<u8>, TransferError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(TransferError::io("cannot read a file to send"))?;
    let mut data = Vec::with_capacity(size as usize);
    f.take(size + 1)
        .read_to_end(&mut data)
        .map_err(TransferError::io("cannot read a file to send"))?;
    if data.len() as u64 != size {
        return Err(TransferError::Changed);
    }
    Ok(data)
}

/// Uploads an image's PNG bytes and returns the [`ClipContent::ImageBlob`]
/// to publish.
pub fn send_image(
    blobs: &BlobClient,
    transfers: &Transfers,
    width: u32,
    height: u32,
    png: &[u8],
    cancel: &CancellationToken,
) -> Result<ClipContent, TransferError> {
    let tracked = transfers.start(Direction::Send, 1, png.len() as u64);
    let r = upload_bytes(blobs, png, &tracked.progress, cancel)?;
    Ok(ClipContent::ImageBlob {
        width,
        height,
        size: r.len,
        id: r.id,
        sha256: r.sha256,
        key: r.key,
    })
}

/// Receives a file list into a fresh folder in `download_dir` and returns
/// the top-level paths to put on the clipboard. Removes the folder again
/// on failure.
pub fn receive_file_list(
    blobs: &BlobClient,
    transfers: &Transfers,
    entries: &[FileEntry],
    download_dir: &Path,
    at_ms: u64,
    cancel: &CancellationToken,
) -> Result<Vec<PathBuf>, TransferError> {
    let total = entries.iter().fold(0u64, |a, e| a.saturating_add(e.size));
    let tracked = transfers.start(Direction::Receive, entries.len(), total);
    let folder = TransferFolder::create(download_dir, at_ms)?;
    match receive_files(blobs, entries, &folder, &tracked.progress, cancel) {
        Ok(written) => {
            tracing::info!(files = written.len(), total, "file list received");
            Ok(top_level_paths(folder.path(), &written))
        }
        Err(e) => {
            folder.discard();
            Err(e)
        }
    }
}

/// Downloads a received [`ClipContent::ImageBlob`] into memory (at most
/// `max` bytes) and returns it as a [`ClipContent::Image`].
pub fn receive_image(
    blobs: &BlobClient,
    transfers: &Transfers,
    content: &ClipContent,
    max: u64,
    cancel: &CancellationToken,
) -> Result<ClipContent, TransferError> {
    let ClipContent::ImageBlob {
        width,
        height,
        size,
        id,
        sha256,
        key,
    } = content
    else {
        return Err(TransferError::Relay {
            status: 0,
            code: "not an image reference".into(),
        });
    };
    let tracked = transfers.start(Direction::Receive, 1, *size);
    let png = download_to_vec(
        blobs,
        id,
        key,
        *size,
        *sha256,
        max,
        &tracked.progress,
        cancel,
    )?;
    Ok(ClipContent::Image {
        width: *width,
        height: *height,
        png,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_lists_running_transfers_only() {
        let t = Transfers::default();
        let a = t.start(Direction::Send, 2, 100);
        let b = t.start(Direction::Receive, 1, 50);
        a.progress.add(40);
        let s = t.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].done, s[0].total, s[0].files), (40, 100, 2));
        drop(a);
        assert_eq!(t.snapshot().len(), 1);
        drop(b);
        assert!(t.snapshot().is_empty());
    }
}
