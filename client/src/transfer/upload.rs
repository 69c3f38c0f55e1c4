//! Uploading one blob: read 1 MiB at a time, seal, `PATCH` each sealed
//! chunk; resume after a broken connection from the first chunk the relay
//! does not have ([`BlobLayout::resume_index`] of its `HEAD` offset).
//!
//! A reader thread seals while the calling thread uploads, with
//! [`UPLOAD_QUEUE`] sealed chunks between them: the hash and cipher overlap
//! the network, and memory stays at a few chunks.

use super::{retry_delay, BlobClient, Progress, TransferError, MAX_RETRIES};
use clipmesh_proto::blob::{
    BlobId, BlobKey, BlobLayout, BlobStreamSealer, BlobSummary, SealedChunk, CHUNK_LEN,
};
use std::io::Read;
use std::sync::mpsc::sync_channel;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroize;

/// Sealed chunks queued between the sealing thread and the uploader.
pub const UPLOAD_QUEUE: usize = 2;

/// What the envelope needs to name an uploaded blob.
#[derive(Clone)]
pub struct BlobRef {
    /// The blob's id on the relay.
    pub id: BlobId,
    /// Its key (only ever inside an envelope).
    pub key: BlobKey,
    /// Plaintext length.
    pub len: u64,
    /// SHA-256 of the plaintext.
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for BlobRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobRef({}, {} bytes)", self.id, self.len)
    }
}

/// Uploads bytes already in memory (an image) as a blob.
pub fn upload_bytes(
    client: &BlobClient,
    data: &[u8],
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<BlobRef, TransferError> {
    upload_blob(
        client,
        || Ok(std::io::Cursor::new(data)),
        data.len() as u64,
        progress,
        cancel,
    )
}

/// Uploads `len` bytes from the readers `open` returns (it is called again
/// from the start for a resumed attempt, whose skipped chunks are only
/// hashed). Fails with [`TransferError::Changed`] if a reader yields a
/// different length.
pub fn upload_blob<R: Read + Send>(
    client: &BlobClient,
    open: impl FnMut() -> std::io::Result<R>,
    len: u64,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<BlobRef, TransferError> {
    upload_blob_as(
        client,
        BlobId::generate(),
        BlobKey::generate(),
        open,
        len,
        progress,
        cancel,
    )
}

/// [`upload_blob`] under a given id and key. If the relay already holds
/// part of this blob (an upload interrupted earlier, even by a restart of
/// this process), only the chunks after its whole-chunk offset are sent.
pub fn upload_blob_as<R: Read + Send>(
    client: &BlobClient,
    id: BlobId,
    key: BlobKey,
    open: impl FnMut() -> std::io::Result<R>,
    len: u64,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<BlobRef, TransferError> {
    upload_with(client, id, key, open, len, true, progress, cancel)
}

/// Uploads a blob whose reference was published before the upload (a
/// receiver may already be downloading it as it lands): no SHA-256 is
/// computed, the reference carries [`clipmesh_proto::blob::NO_DIGEST`] or a
/// digest the caller computed itself. Resumes like [`upload_blob_as`].
pub fn upload_streamed<R: Read + Send>(
    client: &BlobClient,
    id: BlobId,
    key: BlobKey,
    open: impl FnMut() -> std::io::Result<R>,
    len: u64,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<(), TransferError> {
    upload_with(client, id, key, open, len, false, progress, cancel).map(drop)
}

#[allow(clippy::too_many_arguments)]
fn upload_with<R: Read + Send>(
    client: &BlobClient,
    id: BlobId,
    key: BlobKey,
    mut open: impl FnMut() -> std::io::Result<R>,
    len: u64,
    digest: bool,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<BlobRef, TransferError> {
    let layout = BlobLayout::new(len).map_err(|_| TransferError::RelayTooLarge)?;
    let base = progress.done();
    let mut attempt = 0u32;
    let mut from = 0u64;
    let mut created = false;
    loop {
        if cancel.is_cancelled() {
            return Err(TransferError::Cancelled);
        }
        let step = (|| {
            if !created {
                client.create(&id, layout.sealed_len())?;
                created = true;
                // 201 for a new blob, 200 for one that exists: ask where
                // it stands either way.
                from = layout.resume_index(client.offset(&id)?);
            }
            progress.rewind_to(base + layout.plain_offset(from));
            let reader = open().map_err(TransferError::io("cannot read a file to send"))?;
            upload_pass(
                client, &id, &key, layout, reader, from, digest, progress, cancel,
            )
        })();
        match step {
            Ok(summary) => {
                return Ok(BlobRef {
                    id,
                    key,
                    len: summary.len,
                    sha256: summary.sha256,
                })
            }
            Err(e) if e.is_retryable() && attempt < MAX_RETRIES => {
                attempt += 1;
                tracing::info!(attempt, error = %e, "blob upload interrupted; resuming");
                std::thread::sleep(retry_delay(attempt));
                if created {
                    match client.offset(&id) {
                        Ok(acked) => from = layout.resume_index(acked),
                        Err(e) if e.is_retryable() => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// One attempt: seal from chunk `from` on and upload each chunk.
#[allow(clippy::too_many_arguments)]
fn upload_pass<R: Read + Send>(
    client: &BlobClient,
    id: &BlobId,
    key: &BlobKey,
    layout: BlobLayout,
    mut reader: R,
    from: u64,
    digest: bool,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<BlobSummary, TransferError> {
    let len = layout.plain_len();
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<SealedChunk>(UPLOAD_QUEUE);
        let producer = s.spawn(move || -> Result<BlobSummary, TransferError> {
            let mut sealer = BlobStreamSealer::new(key, *id).resume_from(from);
            if !digest {
                sealer = sealer.without_digest();
            }
            let mut buf = vec![0u8; CHUNK_LEN];
            let result = (|| loop {
                let n = read_full(&mut reader, &mut buf)
                    .map_err(TransferError::io("cannot read a file to send"))?;
                if n == 0 {
                    return Ok(());
                }
                if sealer.len() + n as u64 > len {
                    return Err(TransferError::Changed);
                }
                for c in sealer.push(&buf[..n]).map_err(TransferError::Corrupt)? {
                    tx.send(c).map_err(|_| TransferError::Cancelled)?;
                }
            })();
            buf.zeroize();
            result?;
            if sealer.len() != len {
                return Err(TransferError::Changed);
            }
            let (last, summary) = sealer.finish().map_err(TransferError::Corrupt)?;
            if let Some(c) = last {
                tx.send(c).map_err(|_| TransferError::Cancelled)?;
            }
            Ok(summary)
        });
        let mut failed = None;
        // Up to PATCH_CHUNKS sealed chunks per request, streamed from the
        // queue as the sealer produces them.
        while let Ok(first) = rx.recv() {
            if cancel.is_cancelled() {
                failed = Some(TransferError::Cancelled);
                break;
            }
            let start = first.index;
            let end = (start + PATCH_CHUNKS).min(layout.chunk_count());
            let len = layout.sealed_offset(end) - layout.sealed_offset(start);
            let mut body = BatchBody {
                rx: &rx,
                cur: first.bytes,
                pos: 0,
                next: start + 1,
                end,
                layout,
                progress,
            };
            progress.add(layout.chunk_plain_len(start).unwrap_or(0) as u64);
            if let Err(e) = client.append_stream(id, layout.sealed_offset(start), len, &mut body) {
                failed = Some(e);
                break;
            }
        }
        // The receiver is gone: the producer's next send fails and it ends.
        let produced = producer.join().unwrap_or(Err(TransferError::Cancelled));
        match failed {
            Some(e) => Err(e),
            None => produced,
        }
    })
}

/// Sealed chunks sent in one `PATCH` (at most 8 MiB of body): fewer
/// requests and fewer relay-side syncs than one chunk per request.
pub const PATCH_CHUNKS: u64 = 8;

/// The body of one batched `PATCH`: sealed chunks `[first, end)` pulled
/// from the sealer's queue as the request streams.
struct BatchBody<'a> {
    rx: &'a std::sync::mpsc::Receiver<SealedChunk>,
    cur: Vec<u8>,
    pos: usize,
    next: u64,
    end: u64,
    layout: BlobLayout,
    progress: &'a Progress,
}

impl Read for BatchBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.next >= self.end {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(c) if c.index == self.next => {
                    self.progress
                        .add(self.layout.chunk_plain_len(c.index).unwrap_or(0) as u64);
                    self.cur = c.bytes;
                    self.pos = 0;
                    self.next += 1;
                }
                // The sealer stopped (read error, changed file): end the
                // request short; the relay keeps whole chunks only.
                _ => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "sealer stopped",
                    ))
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
