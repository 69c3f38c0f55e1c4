//! The body of a blob download: bytes `[start, end)` of the blob file, read
//! [`READ_BUF`] at a time on a blocking thread, following the file while an
//! upload is still writing it.
//!
//! Below the upload's [`Mark`] only whole sealed chunks are served (the
//! short last chunk once the blob is complete), so a download never sends
//! half of a chunk that a resumed upload rewrites. When nothing new is
//! there the stream waits on the mark, at most the store's idle time
//! without upload progress; then it looks at the row once more and ends
//! the body with an error if the blob is still incomplete, deleted or
//! expired. The client sees a broken body, asks again with a `Range`, and
//! gets a clear answer (409 `incomplete`, 404, 410) at once.

use super::growth::Mark;
use super::{BlobStore, READ_BUF};
use crate::metrics::Metrics;
use axum::body::Bytes;
use clipmesh_proto::{BlobId, BlobLayout, UserId};
use futures_util::Stream;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// Everything one download stream owns.
pub(crate) struct Tail {
    /// The open blob file (moved into each blocking read and back); `None`
    /// until the first `PATCH` made it.
    pub file: Option<File>,
    /// Where the file is.
    pub path: PathBuf,
    /// Next byte to send.
    pub pos: u64,
    /// One past the last byte to send.
    pub end: u64,
    /// The blob's layout (whole-chunk boundaries).
    pub layout: BlobLayout,
    /// Committed bytes when the download started; what is on disk while the
    /// mark has seen no `PATCH`.
    pub committed: u64,
    /// The row says the blob is complete (every byte may be served).
    pub complete: bool,
    /// The blob's upload mark.
    pub rx: watch::Receiver<Mark>,
    /// Keeps the blob's entry (and its sender) alive while we watch.
    pub _entry: Arc<watch::Sender<Mark>>,
    /// The store, to re-read the row after a quiet spell.
    pub blobs: Arc<BlobStore>,
    /// Whose blob.
    pub user: UserId,
    /// Which blob.
    pub blob: BlobId,
    /// Byte counter.
    pub metrics: Arc<Metrics>,
    /// The transfer slot this download holds until its body ends.
    pub _slot: super::slots::TransferSlot,
}

fn broken(msg: &'static str) -> std::io::Error {
    std::io::Error::other(msg)
}

impl Tail {
    /// Bytes that may be served now, given a mark.
    fn available(&self, m: &Mark) -> u64 {
        let sealed = self.layout.sealed_len();
        if self.complete {
            return self.end;
        }
        let written = m.written.unwrap_or(self.committed).min(sealed);
        let safe = if written == sealed {
            sealed
        } else {
            self.layout.whole_chunks_len(written)
        };
        safe.min(self.end)
    }

    /// The stream of body pieces.
    pub fn into_stream(self) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
        futures_util::stream::try_unfold(self, |mut t| async move {
            loop {
                if t.pos >= t.end {
                    return Ok(None);
                }
                let m = *t.rx.borrow_and_update();
                if m.gone {
                    return Err(broken("blob deleted during the download"));
                }
                let avail = t.available(&m);
                if avail > t.pos {
                    // At most READ_BUF, which fits usize.
                    let n = (avail - t.pos).min(READ_BUF as u64) as usize;
                    let pos = t.pos;
                    let (file, path) = (t.file.take(), t.path.clone());
                    let (file, read) = tokio::task::spawn_blocking(move || {
                        let mut file = match file {
                            Some(f) => f,
                            None => match File::open(&path) {
                                Ok(f) => f,
                                Err(e) => return (None, Err(e)),
                            },
                        };
                        let mut buf = vec![0u8; n];
                        let r = file
                            .seek(SeekFrom::Start(pos))
                            .and_then(|_| file.read_exact(&mut buf))
                            .map(|()| buf);
                        (Some(file), r)
                    })
                    .await
                    .map_err(std::io::Error::other)?;
                    t.file = file;
                    if t.rx.borrow().epoch != m.epoch {
                        // A PATCH cut the file while we read. At a chunk
                        // boundary nothing of a rewritten chunk was sent:
                        // read again. Inside one, end the body; the client
                        // resumes from its last whole chunk.
                        if t.layout.whole_chunks_len(t.pos) == t.pos {
                            continue;
                        }
                        return Err(broken("blob rewritten during the download"));
                    }
                    let buf = read?;
                    t.pos += n as u64;
                    Metrics::add(&t.metrics.blob_bytes_downloaded, n as u64);
                    return Ok(Some((Bytes::from(buf), t)));
                }
                // Nothing new: wait for the upload, at most the idle time
                // after its last progress.
                let idle = t.blobs.idle();
                let quiet_for = m.at.elapsed();
                if quiet_for < idle {
                    if let Ok(changed) =
                        tokio::time::timeout(idle - quiet_for, t.rx.changed()).await
                    {
                        // The sender lives in `t.tx`, so this cannot fail.
                        changed.map_err(|_| broken("blob watch closed"))?;
                    }
                    continue;
                }
                // Quiet for the whole idle time: complete after all (the
                // mark missed it), or abandoned?
                let (user, blob) = (t.user, t.blob);
                let row = t
                    .blobs
                    .store()
                    .call(move |db| db.blob(user, &blob))
                    .await
                    .map_err(std::io::Error::other)?;
                match row {
                    Some(r) if !r.expired(t.blobs.clock().unix_now()) && r.complete => {
                        t.complete = true
                    }
                    _ => return Err(broken("blob upload stalled")),
                }
            }
        })
    }
}
