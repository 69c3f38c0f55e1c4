//! Splitting a frame too large for one message into [`Frame::Chunk`]s, and
//! putting it back together with bounded memory.
//!
//! A sender encodes the large frame, then sends its bytes as `total` chunk
//! frames sharing one `transfer` id, in order. Transports that carry chunks
//! (WebSocket, ordered WebRTC data channels) preserve order, so the
//! [`Reassembler`] requires `index` to arrive in sequence and treats anything
//! else as an error: a gap, a reorder, a changed `total` or an oversized
//! transfer drops that transfer. The chunk layer does no crypto; the inner
//! frame carries a sealed envelope, so a tampered reassembly fails to open.

use crate::frame::Frame;
use std::collections::HashMap;
use thiserror::Error;

/// Why a chunk was refused. The transfer it belonged to is dropped.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReassembleError {
    /// The frame was not a chunk.
    #[error("not a chunk frame")]
    NotAChunk,
    /// A chunk arrived out of order, or a transfer restarted mid-way.
    #[error("chunk out of order")]
    OutOfOrder,
    /// `total` differed from the transfer's first chunk.
    #[error("chunk count changed mid-transfer")]
    TotalChanged,
    /// The transfer would exceed the size limit.
    #[error("chunked item too large")]
    TooLarge,
    /// Too many transfers are open at once.
    #[error("too many concurrent transfers")]
    TooManyTransfers,
}

/// Splits encoded frames into chunk frames.
#[derive(Debug)]
pub struct Chunker {
    next_transfer: u32,
    piece: usize,
}

impl Chunker {
    /// A chunker whose pieces carry at most `piece` bytes of payload.
    pub fn new(piece: usize) -> Self {
        Self {
            next_transfer: 1,
            piece: piece.max(1),
        }
    }

    /// Splits `encoded` into chunk frames. Returns one chunk even for empty
    /// input, so every transfer has at least one frame.
    pub fn split(&mut self, encoded: &[u8]) -> Vec<Frame> {
        let transfer = self.next_transfer;
        self.next_transfer = self.next_transfer.wrapping_add(1).max(1);
        let pieces: Vec<&[u8]> = if encoded.is_empty() {
            vec![&[][..]]
        } else {
            encoded.chunks(self.piece).collect()
        };
        let total = u32::try_from(pieces.len()).unwrap_or(u32::MAX);
        pieces
            .into_iter()
            .zip(0u32..)
            .map(|(data, index)| Frame::Chunk {
                transfer,
                index,
                total,
                data: data.to_vec(),
            })
            .collect()
    }
}

#[derive(Debug)]
struct Partial {
    total: u32,
    next: u32,
    buf: Vec<u8>,
}

/// Reassembles chunk transfers, holding at most `max_transfers` partial
/// transfers of at most `max_bytes` each.
#[derive(Debug)]
pub struct Reassembler {
    max_bytes: usize,
    max_transfers: usize,
    open: HashMap<u32, Partial>,
}

impl Reassembler {
    /// A reassembler with the given limits.
    pub fn new(max_bytes: usize, max_transfers: usize) -> Self {
        Self {
            max_bytes,
            max_transfers: max_transfers.max(1),
            open: HashMap::new(),
        }
    }

    /// Bytes currently buffered across all partial transfers.
    pub fn buffered(&self) -> usize {
        self.open.values().map(|p| p.buf.len()).sum()
    }

    /// Feeds one chunk frame. Returns the reassembled bytes when the
    /// transfer's last chunk arrives.
    pub fn push(&mut self, frame: Frame) -> Result<Option<Vec<u8>>, ReassembleError> {
        let Frame::Chunk {
            transfer,
            index,
            total,
            data,
        } = frame
        else {
            return Err(ReassembleError::NotAChunk);
        };
        if index == 0 {
            if self.open.contains_key(&transfer) {
                self.open.remove(&transfer);
                return Err(ReassembleError::OutOfOrder);
            }
            if self.open.len() >= self.max_transfers {
                return Err(ReassembleError::TooManyTransfers);
            }
            self.open.insert(
                transfer,
                Partial {
                    total,
                    next: 0,
                    buf: Vec::new(),
                },
            );
        }
        let Some(p) = self.open.get_mut(&transfer) else {
            return Err(ReassembleError::OutOfOrder);
        };
        let fail = |open: &mut HashMap<u32, Partial>, e| {
            open.remove(&transfer);
            Err(e)
        };
        if p.total != total {
            return fail(&mut self.open, ReassembleError::TotalChanged);
        }
        if p.next != index {
            return fail(&mut self.open, ReassembleError::OutOfOrder);
        }
        if p.buf.len().saturating_add(data.len()) > self.max_bytes {
            return fail(&mut self.open, ReassembleError::TooLarge);
        }
        p.buf.extend_from_slice(&data);
        p.next += 1;
        if p.next == p.total {
            Ok(self.open.remove(&transfer).map(|p| p.buf))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_reassemble() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut c = Chunker::new(1000);
        let chunks = c.split(&data);
        assert_eq!(chunks.len(), 10);
        let mut r = Reassembler::new(1 << 20, 4);
        let mut out = None;
        for ch in chunks {
            out = r.push(ch).unwrap();
        }
        assert_eq!(out.unwrap(), data);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn reorder_and_truncation_are_rejected() {
        let mut c = Chunker::new(10);
        let mut chunks = c.split(&[7u8; 35]);
        chunks.swap(1, 2);
        let mut r = Reassembler::new(1 << 20, 4);
        assert_eq!(r.push(chunks[0].clone()), Ok(None));
        assert_eq!(r.push(chunks[1].clone()), Err(ReassembleError::OutOfOrder));
        // The transfer is gone: later chunks are orphans.
        assert_eq!(r.push(chunks[2].clone()), Err(ReassembleError::OutOfOrder));
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn size_and_transfer_limits_hold() {
        let mut c = Chunker::new(10);
        let mut r = Reassembler::new(25, 1);
        let chunks = c.split(&[1u8; 40]);
        assert_eq!(r.push(chunks[0].clone()), Ok(None));
        assert_eq!(r.push(chunks[1].clone()), Ok(None));
        assert_eq!(r.push(chunks[2].clone()), Err(ReassembleError::TooLarge));
        let a = c.split(&[1u8; 20]);
        let b = c.split(&[1u8; 20]);
        assert_eq!(r.push(a[0].clone()), Ok(None));
        assert_eq!(r.push(b[0].clone()), Err(ReassembleError::TooManyTransfers));
    }
}
