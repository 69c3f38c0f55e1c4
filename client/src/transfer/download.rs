//! Downloading one blob: `GET` the sealed stream, open it chunk by chunk
//! with [`BlobOpener`], write each plaintext chunk out, and check the
//! digest at the end. A broken connection resumes with `Range` from the
//! next unopened chunk; a chunk that does not authenticate ends the
//! download at once.
//!
//! A reader thread pulls sealed chunks off the socket while the calling
//! thread opens and writes, with [`DOWNLOAD_QUEUE`] chunks between them.

use super::upload::read_full;
use super::{retry_delay, BlobClient, Progress, TransferError, MAX_RETRIES};
use clipmesh_proto::blob::{BlobError, BlobId, BlobKey, BlobLayout, BlobOpener};
use std::io::Write;
use std::sync::mpsc::sync_channel;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroize;

/// Sealed chunks queued between the socket reader and the opener.
pub const DOWNLOAD_QUEUE: usize = 2;

/// Downloads blob `id` (plaintext `len` bytes, digest `sha256`) into `out`.
/// On error, whatever was written to `out` must be discarded.
#[allow(clippy::too_many_arguments)]
pub fn download_blob(
    client: &BlobClient,
    id: &BlobId,
    key: &BlobKey,
    len: u64,
    sha256: [u8; 32],
    out: &mut impl Write,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<(), TransferError> {
    let mut opener = BlobOpener::new(key, *id, len, sha256).map_err(TransferError::Corrupt)?;
    let layout = opener.layout();
    let base = progress.done();
    let mut attempt = 0u32;
    while opener.next_sealed_len().is_some() {
        if cancel.is_cancelled() {
            return Err(TransferError::Cancelled);
        }
        match download_pass(
            client,
            id,
            &mut opener,
            layout,
            out,
            (progress, base),
            cancel,
        ) {
            Ok(()) => {}
            Err(e) if e.is_retryable() && attempt < MAX_RETRIES => {
                attempt += 1;
                tracing::info!(attempt, error = %e, "blob download interrupted; resuming");
                std::thread::sleep(retry_delay(attempt));
            }
            Err(e) => return Err(e),
        }
    }
    opener.finish().map_err(TransferError::Corrupt)
}

/// Downloads a blob into memory, refusing one longer than `max` bytes.
#[allow(clippy::too_many_arguments)]
pub fn download_to_vec(
    client: &BlobClient,
    id: &BlobId,
    key: &BlobKey,
    len: u64,
    sha256: [u8; 32],
    max: u64,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Vec<u8>, TransferError> {
    if len > max {
        return Err(TransferError::TooLarge { size: len, max });
    }
    // len ≤ max, a configured in-memory limit.
    let mut out = Vec::with_capacity(len as usize);
    match download_blob(client, id, key, len, sha256, &mut out, progress, cancel) {
        Ok(()) => Ok(out),
        Err(e) => {
            out.zeroize();
            Err(e)
        }
    }
}

enum Piece {
    Chunk(Vec<u8>),
    Failed(TransferError),
}

fn download_pass(
    client: &BlobClient,
    id: &BlobId,
    opener: &mut BlobOpener,
    layout: BlobLayout,
    out: &mut impl Write,
    (progress, base): (&Progress, u64),
    cancel: &CancellationToken,
) -> Result<(), TransferError> {
    let first = opener.next_index();
    let mut body = client.get(id, layout.sealed_offset(first))?;
    progress.rewind_to(base + layout.plain_offset(first));
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<Piece>(DOWNLOAD_QUEUE);
        s.spawn(move || {
            let mut index = first;
            while let Some(n) = layout.chunk_sealed_len(index) {
                let mut buf = vec![0u8; n];
                let piece = match read_full(&mut body, &mut buf) {
                    Ok(k) if k == n => Piece::Chunk(buf),
                    // The stream ended on a chunk boundary: the relay's blob
                    // is shorter than the envelope says.
                    Ok(0) => Piece::Failed(TransferError::Corrupt(BlobError::Truncated)),
                    Ok(_) => Piece::Failed(TransferError::Unreachable(
                        "connection closed inside a chunk".into(),
                    )),
                    Err(e) => Piece::Failed(TransferError::Unreachable(e.to_string())),
                };
                let stop = matches!(piece, Piece::Failed(_));
                if tx.send(piece).is_err() || stop {
                    return;
                }
                index += 1;
            }
        });
        for piece in rx {
            if cancel.is_cancelled() {
                return Err(TransferError::Cancelled);
            }
            let sealed = match piece {
                Piece::Chunk(b) => b,
                Piece::Failed(e) => return Err(e),
            };
            let mut plain = opener.open_chunk(&sealed).map_err(TransferError::Corrupt)?;
            let written = out.write_all(&plain);
            let n = plain.len() as u64;
            plain.zeroize();
            written.map_err(TransferError::io("cannot write a received file"))?;
            progress.add(n);
            if opener.next_sealed_len().is_none() {
                break;
            }
        }
        Ok(())
    })
}
