//! Whole transfers as the daemon runs them (blocking, inside
//! `spawn_blocking`): a copied file list or image out, a received one in.
//! Each registers its [`Progress`] in [`Transfers`] for `clipmesh status`
//! while it runs.

use super::{
    download_to_vec, plan_files, receive_files, top_level_paths, upload_streamed, BlobClient,
    Direction, Progress, TransferError, TransferFolder, TransferStatus, WalkLimits,
};
use clipmesh_proto::blob::{BlobId, BlobKey, BlobLayout, NO_DIGEST};
use clipmesh_proto::content::{FileBody, FileEntry};
use clipmesh_proto::ClipContent;
use sha2::{Digest, Sha256};
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

/// Publishes a reference before its blobs are uploaded; false if nobody
/// takes it any more (the daemon is stopping).
pub type Announce<'a> = &'a mut dyn FnMut(ClipContent) -> bool;

/// Sends a copied file list: walks it within the limits, reads the small
/// files, declares a blob for every other one on the relay, hands the
/// content (references only) to `announce` so receivers can start at once,
/// then uploads the blobs one after the other. Their references carry
/// [`NO_DIGEST`]: the digest is not known when they are published, and the
/// blobs' chunk AEAD authenticates them. On failure every blob is deleted
/// again, which ends the receivers' downloads with a clear error.
pub fn send_files(
    blobs: &BlobClient,
    transfers: &Transfers,
    paths: &[PathBuf],
    limits: SendLimits,
    cancel: &CancellationToken,
    announce: Announce<'_>,
) -> Result<ClipContent, TransferError> {
    let plan = plan_files(paths, &limits.walk)?;
    let total = plan.iter().map(|f| f.size).sum();
    let tracked = transfers.start(Direction::Send, plan.len(), total);
    let mut entries = Vec::with_capacity(plan.len());
    let mut uploads: Vec<(usize, BlobId, BlobKey)> = Vec::new();
    let mut inline_total = 0u64;
    let result = (|| {
        for (i, f) in plan.iter().enumerate() {
            if cancel.is_cancelled() {
                return Err(TransferError::Cancelled);
            }
            let body = if f.size < limits.inline_threshold
                && inline_total + f.size <= MAX_INLINE_TOTAL
            {
                let data = read_small(&f.path, f.size)?;
                inline_total += data.len() as u64;
                tracked.progress.add(data.len() as u64);
                FileBody::Inline(data)
            } else {
                let layout = BlobLayout::new(f.size).map_err(|_| TransferError::RelayTooLarge)?;
                let (id, key) = (BlobId::generate(), BlobKey::generate());
                blobs.create(&id, layout.sealed_len())?;
                uploads.push((i, id, key.clone()));
                FileBody::Blob {
                    id,
                    sha256: NO_DIGEST,
                    key,
                }
            };
            entries.push(FileEntry {
                name: f.name.clone(),
                size: f.size,
                body,
            });
        }
        let content = ClipContent::Files(entries.clone());
        if !announce(content.clone()) {
            return Err(TransferError::Cancelled);
        }
        for (i, id, key) in &uploads {
            let f = &plan[*i];
            upload_streamed(
                blobs,
                *id,
                key.clone(),
                || std::fs::File::open(&f.path),
                f.size,
                &tracked.progress,
                cancel,
            )?;
        }
        Ok(content)
    })();
    match result {
        Ok(content) => {
            tracing::info!(files = entries.len(), total, "file list uploaded");
            Ok(content)
        }
        Err(e) => {
            // Best effort: the relay would drop them at their TTL anyway.
            for (_, id, _) in &uploads {
                let _ = blobs.delete(id);
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

/// Sends an image's PNG bytes as a blob: declares it on the relay, hands
/// the [`ClipContent::ImageBlob`] (with the PNG's SHA-256, cheap to compute
/// from memory) to `announce` so receivers can start at once, then uploads
/// it. Deletes the blob again on failure.
pub fn send_image(
    blobs: &BlobClient,
    transfers: &Transfers,
    width: u32,
    height: u32,
    png: &[u8],
    cancel: &CancellationToken,
    announce: Announce<'_>,
) -> Result<ClipContent, TransferError> {
    let tracked = transfers.start(Direction::Send, 1, png.len() as u64);
    let layout = BlobLayout::new(png.len() as u64).map_err(|_| TransferError::RelayTooLarge)?;
    let (id, key) = (BlobId::generate(), BlobKey::generate());
    let content = ClipContent::ImageBlob {
        width,
        height,
        size: png.len() as u64,
        id,
        sha256: Sha256::digest(png).into(),
        key: key.clone(),
    };
    blobs.create(&id, layout.sealed_len())?;
    let result = if announce(content.clone()) {
        upload_streamed(
            blobs,
            id,
            key,
            || Ok(std::io::Cursor::new(png)),
            png.len() as u64,
            &tracked.progress,
            cancel,
        )
    } else {
        Err(TransferError::Cancelled)
    };
    match result {
        Ok(()) => Ok(content),
        Err(e) => {
            let _ = blobs.delete(&id);
            Err(e)
        }
    }
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
