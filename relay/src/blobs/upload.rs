//! Streaming one `PATCH` body into a blob file: body frames are collected
//! up to [`WRITE_BUF`] bytes, written on a blocking thread, and the next
//! frames are only read once that write is done, so memory stays at about
//! one buffer per request and a slow disk slows the sender (TCP
//! back-pressure) instead of growing a queue.
//!
//! The body has no total deadline (a large blob on a slow uplink takes as
//! long as it takes); it is ended when no frame arrives for the store's
//! idle time, and what was written until then is kept. Each write moves the
//! blob's progress mark ([`super::growth`]) so downloads following the
//! upload see the new bytes.

use super::growth::{self, Mark};
use super::{blocking, BlobError, UploadLock, WRITE_BUF};
use axum::body::{Body, BodyDataStream, Bytes};
use futures_util::StreamExt;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How a body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The whole body was written.
    Done,
    /// The body broke off (client gone, bad chunked encoding, or no frame
    /// for the idle time); the bytes before the break were written.
    Interrupted,
    /// The body was longer than allowed; nothing of it is kept.
    Overflow,
}

/// What a `PATCH` body did to the file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Written {
    /// Bytes written after `start` (0 on [`End::Overflow`]).
    pub bytes: u64,
    /// How the body ended.
    pub end: End,
}

/// Writes `body` at `start` into `path`, accepting at most `allowed` bytes.
/// The file is first truncated to `start` (dropping the tail of a cancelled
/// earlier `PATCH`). It is fsynced at the end only if the body completed
/// the blob (the file reached `sealed_len`): an fsync per piece stalled the
/// upload for as long as the disk took, and a piece lost in an OS crash is
/// found by its length and sent again (see `http.rs`, `on_disk`). `lock` travels into every
/// blocking write so the blob stays locked until they have all finished,
/// even if this future is dropped. `mark` is the blob's progress mark;
/// a body with no frame for `idle` ends as [`End::Interrupted`].
// The blob's path, bounds, lock and mark are separate on purpose: each
// comes from a different owner in the handler.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write_body(
    path: PathBuf,
    start: u64,
    allowed: u64,
    body: Body,
    lock: &Arc<UploadLock>,
    mark: &Arc<watch::Sender<Mark>>,
    idle: Duration,
    sealed_len: u64,
) -> Result<Written, BlobError> {
    let (l, m) = (lock.clone(), mark.clone());
    let mut file = blocking(move || open_at(&path, start, l, &m)).await??;
    let mut stream = body.into_data_stream();
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_len = 0usize;
    let mut bytes = 0u64;
    let end = loop {
        let next = match tokio::time::timeout(idle, stream.next()).await {
            Ok(next) => next,
            Err(_) => {
                tracing::debug!(
                    idle_ms = idle.as_millis() as u64,
                    "blob upload body idle; ended"
                );
                break End::Interrupted;
            }
        };
        match next {
            Some(Ok(data)) => {
                let n = data.len() as u64;
                if bytes + pending_len as u64 + n > allowed {
                    break End::Overflow;
                }
                pending_len += data.len();
                pending.push(data);
                if pending_len >= WRITE_BUF {
                    bytes += pending_len as u64;
                    file = write_out(file, std::mem::take(&mut pending), lock).await?;
                    pending_len = 0;
                    growth::wrote(mark, start + bytes);
                } else {
                    growth::alive(mark);
                }
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "blob upload body broke off");
                break End::Interrupted;
            }
            None => break End::Done,
        }
    };
    if end == End::Overflow {
        drain(&mut stream).await;
        // Nothing of this body is kept: downloads must not trust what they
        // may have read of it.
        growth::rewinding(mark, start);
        let l = lock.clone();
        blocking(move || {
            let _l = l;
            file.set_len(start)
        })
        .await??;
        return Ok(Written { bytes: 0, end });
    }
    bytes += pending_len as u64;
    let file = write_out(file, pending, lock).await?;
    growth::wrote(mark, start + bytes);
    if start + bytes == sealed_len {
        let l = lock.clone();
        blocking(move || {
            let _l = l;
            file.sync_data()
        })
        .await??;
    }
    Ok(Written { bytes, end })
}

/// Bytes of a refused body read and dropped before answering, so a client
/// still sending can finish and read the 413 instead of a broken pipe.
/// Beyond it the connection is just closed.
pub(crate) const DRAIN_MAX: u64 = 4 << 20;

/// Reads and drops up to [`DRAIN_MAX`] more bytes of a refused body.
pub(crate) async fn drain(stream: &mut BodyDataStream) {
    let mut left = DRAIN_MAX;
    while let Some(Ok(data)) = stream.next().await {
        match left.checked_sub(data.len() as u64) {
            Some(l) => left = l,
            None => return,
        }
    }
}

fn open_at(
    path: &std::path::Path,
    start: u64,
    lock: Arc<UploadLock>,
    mark: &watch::Sender<Mark>,
) -> std::io::Result<File> {
    let _l = lock;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    if f.metadata()?.len() > start {
        // Bytes from `start` on may have been read by a download: tell it
        // before they change.
        growth::rewinding(mark, start);
    } else {
        growth::wrote(mark, start);
    }
    f.set_len(start)?;
    f.seek(SeekFrom::Start(start))?;
    Ok(f)
}

async fn write_out(
    mut file: File,
    bufs: Vec<Bytes>,
    lock: &Arc<UploadLock>,
) -> Result<File, BlobError> {
    if bufs.is_empty() {
        return Ok(file);
    }
    let l = lock.clone();
    blocking(move || {
        let _l = l;
        for b in &bufs {
            file.write_all(b)?;
        }
        Ok::<_, std::io::Error>(file)
    })
    .await?
    .map_err(BlobError::from)
}
