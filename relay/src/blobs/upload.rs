//! Streaming one `PATCH` body into a blob file: body frames are collected
//! up to [`WRITE_BUF`] bytes, written on a blocking thread, and the next
//! frames are only read once that write is done, so memory stays at about
//! one buffer per request and a slow disk slows the sender (TCP
//! back-pressure) instead of growing a queue.
//!
//! The body has no total deadline (a large blob on a slow uplink takes as
//! long as it takes); it is ended when no frame arrives for the store's
//! idle time, or when fewer than `min_rate` bytes per second arrived over
//! one idle-time window (a trickle of tiny frames does not keep it alive),
//! and what was written until then is kept. Time spent writing to disk is
//! not counted against the sender. Each write moves the
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
use tokio::time::Instant;

/// How a body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The whole body was written.
    Done,
    /// The body broke off (client gone, bad chunked encoding); the bytes
    /// before the break were written.
    Interrupted,
    /// The relay ended a body too slow to keep: no frame for the idle time,
    /// or a window below the minimum rate. The bytes before were written.
    Stalled,
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
/// a body with no frame for `idle`, or with fewer than `min_rate` bytes per
/// second over an `idle` window, ends as [`End::Stalled`].
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
    min_rate: u64,
    sealed_len: u64,
) -> Result<Written, BlobError> {
    let (l, m) = (lock.clone(), mark.clone());
    let mut file = blocking(move || open_at(&path, start, l, &m)).await??;
    let mut stream = body.into_data_stream();
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_len = 0usize;
    let mut bytes = 0u64;
    let mut rate = RateWindow::new(idle, min_rate, Instant::now());
    let end = loop {
        let now = Instant::now();
        let wait = idle.min(rate.ends.saturating_duration_since(now));
        let next = match tokio::time::timeout(wait, stream.next()).await {
            Ok(next) => next,
            Err(_) if rate.ends <= Instant::now() => {
                if rate.roll(Instant::now()) {
                    continue;
                }
                tracing::debug!(min_rate, "blob upload body below the minimum rate; ended");
                break End::Stalled;
            }
            Err(_) => {
                tracing::debug!(
                    idle_ms = idle.as_millis() as u64,
                    "blob upload body idle; ended"
                );
                break End::Stalled;
            }
        };
        match next {
            Some(Ok(data)) => {
                let n = data.len() as u64;
                rate.got(n);
                if rate.ends <= Instant::now() && !rate.roll(Instant::now()) {
                    tracing::debug!(min_rate, "blob upload body below the minimum rate; ended");
                    break End::Stalled;
                }
                if bytes + pending_len as u64 + n > allowed {
                    break End::Overflow;
                }
                pending_len += data.len();
                pending.push(data);
                if pending_len >= WRITE_BUF {
                    bytes += pending_len as u64;
                    let began = Instant::now();
                    file = write_out(file, std::mem::take(&mut pending), lock).await?;
                    // The sender waited on our disk: not its slowness.
                    rate.ends += began.elapsed();
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
/// Beyond it the connection is just closed (after the accept loop's
/// bounded lingering close).
pub(crate) const DRAIN_MAX: u64 = 4 << 20;
/// Longest time spent draining a refused body.
pub(crate) const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Reads and drops up to [`DRAIN_MAX`] more bytes of a refused body, for at
/// most [`DRAIN_TIME`] (a client trickling its refused body does not keep
/// the connection).
pub(crate) async fn drain(stream: &mut BodyDataStream) {
    let mut left = DRAIN_MAX;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(data)) = stream.next().await {
            match left.checked_sub(data.len() as u64) {
                Some(l) => left = l,
                None => return,
            }
        }
    })
    .await;
}

/// The minimum-rate check of an upload body: bytes received in the current
/// window of `len`, which must reach `need` (and be more than nothing)
/// by the window's end.
#[derive(Clone, Copy, Debug)]
struct RateWindow {
    /// Window length (the store's idle time).
    len: Duration,
    /// Bytes a window must bring: `min_rate` × `len`.
    need: u64,
    /// Bytes received in this window.
    got: u64,
    /// When this window ends (moved on by time spent writing to disk).
    ends: Instant,
}

impl RateWindow {
    fn new(len: Duration, min_rate: u64, now: Instant) -> Self {
        let need = (min_rate as f64 * len.as_secs_f64()) as u64;
        Self {
            len,
            need,
            got: 0,
            ends: now + len,
        }
    }

    fn got(&mut self, n: u64) {
        self.got = self.got.saturating_add(n);
    }

    /// At or after the window's end: whether it brought enough; if so the
    /// next window starts at `now`.
    fn roll(&mut self, now: Instant) -> bool {
        if self.got == 0 || self.got < self.need {
            return false;
        }
        self.got = 0;
        self.ends = now + self.len;
        true
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_needs_its_bytes_and_more_than_nothing() {
        let t0 = Instant::now();
        let len = Duration::from_secs(30);
        let mut w = RateWindow::new(len, 100, t0);
        assert_eq!(w.need, 3000);
        w.got(2999);
        assert!(!w.roll(t0 + len), "a trickle below the rate ends the body");
        let mut w = RateWindow::new(len, 100, t0);
        w.got(3000);
        assert!(w.roll(t0 + len));
        assert_eq!((w.got, w.ends), (0, t0 + len + len));
        // With no minimum rate, a window without any byte still ends it.
        let mut w = RateWindow::new(len, 0, t0);
        assert!(!w.roll(t0 + len));
        w.got(1);
        assert!(w.roll(t0 + len));
    }
}
