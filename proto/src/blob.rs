//! Large items: a blob sealed as a stream of independently authenticated
//! chunks, so a sender, the relay and a receiver each hold a chunk or two at a
//! time, never the whole item.
//!
//! ```text
//! blob       : sealed_chunk{count}          count = max(1, ceil(len / CHUNK_LEN))
//! sealed     : nonce (24) | ciphertext (n) | tag (16)
//!              n = CHUNK_LEN for every chunk but the last; 0 < n ≤ CHUNK_LEN
//!              for the last (n = 0 only for the single chunk of an empty blob)
//! AEAD       : XChaCha20-Poly1305(blob_key, nonce, aad, plaintext)
//! aad (41 B) : "clipmesh/v1/blob" (16) | blob id (16) | index u64 | last u8 (0 or 1)
//! ```
//!
//! Each blob has its own random 32-byte [`BlobKey`] and random 16-byte
//! [`BlobId`]. Both travel only inside the clip envelope
//! ([`crate::content::FileBody::Blob`]), so the relay stores and serves
//! ciphertext it cannot read. The AAD binds every chunk to its blob, its
//! position and whether it ends the blob (the STREAM construction of
//! Hoang, Reyhanitabar, Rogaway and Vizár): a reordered, swapped, dropped,
//! duplicated or appended chunk fails to open, and a stream cut at a chunk
//! boundary is caught by [`BlobOpener::finish`] because no chunk flagged
//! "last" was seen. `docs/crypto.md` ("Large items") gives the reasoning.
//!
//! Everything here is sans-IO. The drive loops are:
//!
//! - send: read the file in pieces into [`BlobStreamSealer::push`], upload
//!   each [`SealedChunk`] it returns, then [`BlobStreamSealer::finish`] gives
//!   the last chunk and the [`BlobSummary`] (length, SHA-256) that goes into
//!   the envelope. To resume, start a new stream sealer with
//!   [`BlobStreamSealer::resume_from`]`(layout.resume_index(acked))`.
//! - receive: `while let Some(n) = opener.next_sealed_len()` read exactly `n`
//!   bytes, [`BlobOpener::open_chunk`] them and write the plaintext to a
//!   temporary file; then [`BlobOpener::finish`] before renaming it into
//!   place.
//! - relay: [`BlobLayout`] says how long a valid upload is, where chunk `i`
//!   starts and from which chunk an interrupted upload resumes.

use crate::keys::{random_nonce, KEY_LEN, NONCE_LEN, TAG_LEN};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Plaintext bytes per chunk (1 MiB). Every chunk but the last is exactly
/// this long.
pub const CHUNK_LEN: usize = 1 << 20;
/// Bytes a sealed chunk adds to its plaintext: nonce and tag.
pub const CHUNK_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Length of a full sealed chunk on the wire and on the relay's disk.
pub const SEALED_CHUNK_LEN: usize = CHUNK_LEN + CHUNK_OVERHEAD;
/// Length of a [`BlobId`].
pub const BLOB_ID_LEN: usize = 16;
/// Domain separation prefix of every chunk's AAD (16 bytes).
pub const BLOB_AAD_DOMAIN: &[u8; 16] = b"clipmesh/v1/blob";
/// Length of a chunk's AAD: domain, blob id, index, last flag.
pub const BLOB_AAD_LEN: usize = 16 + BLOB_ID_LEN + 8 + 1;
/// The digest a reference carries when its sender published it before the
/// upload ended (a streamed blob): no SHA-256 is given or checked, and the
/// STREAM construction alone authenticates the plaintext (the envelope
/// still fixes the length, so the chunk count and the last chunk are
/// checked). All zeros: no plaintext has this SHA-256 in practice.
pub const NO_DIGEST: [u8; 32] = [0; 32];
/// Largest blob this format describes (2^50 bytes, 1 PiB): far above any
/// configured limit, and low enough that no length computation overflows.
pub const MAX_BLOB_LEN: u64 = 1 << 50;

/// Why a blob could not be sealed or opened. Authentication failures of any
/// kind (wrong key, tampered, reordered, swapped or resized chunk) are the
/// single [`BlobError::Open`], with no detail.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum BlobError {
    /// A chunk did not authenticate at its position.
    #[error("could not open blob chunk")]
    Open,
    /// The stream ended before the chunk flagged last.
    #[error("blob is truncated")]
    Truncated,
    /// A chunk arrived after the last one.
    #[error("data after the last blob chunk")]
    AfterLast,
    /// The opened plaintext does not match the length or SHA-256 the
    /// envelope promised.
    #[error("blob does not match its digest")]
    Digest,
    /// A chunk handed to the sealer has a length the layout forbids
    /// (a caller bug, not peer input).
    #[error("blob chunk has the wrong length")]
    ChunkLen,
    /// The blob is longer than [`MAX_BLOB_LEN`].
    #[error("blob too large")]
    TooLarge,
}

/// Names a blob on the relay: 16 random bytes, written as 32 lowercase hex
/// digits in URLs and file names. Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub [u8; BLOB_ID_LEN]);

impl BlobId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let mut b = [0u8; BLOB_ID_LEN];
        rand::rngs::OsRng.fill_bytes(&mut b);
        Self(b)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; BLOB_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({self})")
    }
}

/// A string that is not 32 lowercase hex digits.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("invalid blob id")]
pub struct BlobIdError;

impl FromStr for BlobId {
    type Err = BlobIdError;

    /// Parses exactly 32 lowercase hex digits (the [`fmt::Display`] form), so
    /// every id has one spelling and is safe as a file name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 2 * BLOB_ID_LEN || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(BlobIdError);
        }
        let mut out = [0u8; BLOB_ID_LEN];
        hex::decode_to_slice(s, &mut out).map_err(|_| BlobIdError)?;
        Ok(Self(out))
    }
}

/// The random key of one blob. Travels only inside a clip envelope.
/// Zeroizes on drop, prints as `BlobKey(<redacted>)`, compares in constant
/// time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct BlobKey([u8; KEY_LEN]);

impl BlobKey {
    /// A fresh random key, for one blob only.
    pub fn generate() -> Self {
        let mut k = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut k);
        Self(k)
    }

    /// Wraps raw key bytes (decoding, tests).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes. Callers must not log or persist them outside the
    /// clip envelope or a resume state file with the clip's protection.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.0))
    }
}

impl fmt::Debug for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlobKey(<redacted>)")
    }
}

impl PartialEq for BlobKey {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for BlobKey {}

/// The shape of a blob of a given plaintext length: how many chunks, how
/// long each is sealed, where each starts. Shared by the sender, the relay
/// (which cannot decrypt but can check lengths and resume points) and the
/// receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlobLayout {
    len: u64,
}

const CHUNK: u64 = CHUNK_LEN as u64;
const SEALED: u64 = SEALED_CHUNK_LEN as u64;
const OVERHEAD: u64 = CHUNK_OVERHEAD as u64;

impl BlobLayout {
    /// The layout of a blob of `plain_len` plaintext bytes.
    pub fn new(plain_len: u64) -> Result<Self, BlobError> {
        if plain_len > MAX_BLOB_LEN {
            return Err(BlobError::TooLarge);
        }
        Ok(Self { len: plain_len })
    }

    /// The layout whose sealed form is exactly `sealed_len` bytes, if any.
    /// The relay uses it to refuse an upload whose declared size no blob can
    /// have.
    pub fn from_sealed_len(sealed_len: u64) -> Option<Self> {
        if sealed_len < OVERHEAD {
            return None;
        }
        let count = sealed_len.div_ceil(SEALED);
        let layout = Self::new(sealed_len.checked_sub(count.checked_mul(OVERHEAD)?)?).ok()?;
        (layout.sealed_len() == sealed_len).then_some(layout)
    }

    /// Plaintext length.
    pub fn plain_len(&self) -> u64 {
        self.len
    }

    /// Number of chunks: `max(1, ceil(len / CHUNK_LEN))`.
    pub fn chunk_count(&self) -> u64 {
        self.len.div_ceil(CHUNK).max(1)
    }

    /// Total sealed length: the plaintext plus 40 bytes per chunk.
    pub fn sealed_len(&self) -> u64 {
        self.len + self.chunk_count() * OVERHEAD
    }

    /// Whether chunk `index` is the last one.
    pub fn is_last(&self, index: u64) -> bool {
        index + 1 == self.chunk_count()
    }

    /// Plaintext length of chunk `index`, or `None` past the end.
    pub fn chunk_plain_len(&self, index: u64) -> Option<usize> {
        if index >= self.chunk_count() {
            return None;
        }
        let start = index * CHUNK;
        // At most CHUNK_LEN, which fits usize.
        Some((self.len - start).min(CHUNK) as usize)
    }

    /// Sealed length of chunk `index`, or `None` past the end.
    pub fn chunk_sealed_len(&self, index: u64) -> Option<usize> {
        self.chunk_plain_len(index).map(|n| n + CHUNK_OVERHEAD)
    }

    /// Offset of chunk `index` in the sealed stream (for `index ==
    /// chunk_count()`, the sealed length).
    pub fn sealed_offset(&self, index: u64) -> u64 {
        if index >= self.chunk_count() {
            self.sealed_len()
        } else {
            index * SEALED
        }
    }

    /// Offset of chunk `index` in the plaintext (clamped to the length).
    pub fn plain_offset(&self, index: u64) -> u64 {
        index.saturating_mul(CHUNK).min(self.len)
    }

    /// The first chunk an interrupted upload must send again, given how many
    /// sealed bytes the relay has kept. Only whole chunks count; the relay
    /// drops a trailing partial chunk. Returns [`BlobLayout::chunk_count`]
    /// when the upload is complete.
    pub fn resume_index(&self, acked_sealed: u64) -> u64 {
        if acked_sealed >= self.sealed_len() {
            return self.chunk_count();
        }
        (acked_sealed / SEALED).min(self.chunk_count())
    }

    /// The longest prefix of `received` sealed bytes made of whole chunks:
    /// what the relay keeps of an interrupted upload.
    pub fn whole_chunks_len(&self, received: u64) -> u64 {
        self.sealed_offset(self.resume_index(received))
    }
}

/// One sealed chunk and where it goes.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedChunk {
    /// Position in the blob, from 0.
    pub index: u64,
    /// Whether this chunk ends the blob.
    pub last: bool,
    /// `nonce | ciphertext | tag`, ready to upload.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for SealedChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SealedChunk {{ index: {}, last: {}, {} bytes }}",
            self.index,
            self.last,
            self.bytes.len()
        )
    }
}

/// Length and SHA-256 of a blob's plaintext, for the envelope.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BlobSummary {
    /// Plaintext length in bytes.
    pub len: u64,
    /// SHA-256 of the plaintext.
    pub sha256: [u8; 32],
}

impl fmt::Debug for BlobSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobSummary({} bytes)", self.len)
    }
}

/// The AAD of chunk `index` of blob `id`.
pub fn chunk_aad(id: &BlobId, index: u64, last: bool) -> [u8; BLOB_AAD_LEN] {
    let mut aad = [0u8; BLOB_AAD_LEN];
    aad[..16].copy_from_slice(BLOB_AAD_DOMAIN);
    aad[16..32].copy_from_slice(&id.0);
    aad[32..40].copy_from_slice(&index.to_be_bytes());
    aad[40] = u8::from(last);
    aad
}

/// Seals single chunks of one blob. Stateless: any chunk can be sealed (or
/// sealed again, on resume) at any time; every seal draws a fresh nonce.
pub struct BlobSealer {
    key: BlobKey,
    id: BlobId,
}

impl fmt::Debug for BlobSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobSealer({})", self.id)
    }
}

impl BlobSealer {
    /// A sealer for blob `id` under `key`.
    pub fn new(key: &BlobKey, id: BlobId) -> Self {
        Self {
            key: key.clone(),
            id,
        }
    }

    /// The blob's id.
    pub fn id(&self) -> BlobId {
        self.id
    }

    /// Seals chunk `index` with a random nonce. A chunk that is not `last`
    /// must be exactly [`CHUNK_LEN`] bytes; the last one at most that, and
    /// empty only as chunk 0 (an empty blob). Anything else is
    /// [`BlobError::ChunkLen`].
    pub fn seal_chunk(
        &self,
        index: u64,
        plaintext: &[u8],
        last: bool,
    ) -> Result<Vec<u8>, BlobError> {
        self.seal_chunk_with_nonce(index, plaintext, last, &random_nonce())
    }

    /// Seals with a caller-chosen nonce. Only for test vectors: reusing a
    /// nonce under one key is catastrophic.
    pub fn seal_chunk_with_nonce(
        &self,
        index: u64,
        plaintext: &[u8],
        last: bool,
        nonce: &[u8; NONCE_LEN],
    ) -> Result<Vec<u8>, BlobError> {
        let ok_len = if last {
            plaintext.len() <= CHUNK_LEN && (index == 0 || !plaintext.is_empty())
        } else {
            plaintext.len() == CHUNK_LEN
        };
        if !ok_len {
            return Err(BlobError::ChunkLen);
        }
        if index.saturating_mul(CHUNK) >= MAX_BLOB_LEN {
            return Err(BlobError::TooLarge);
        }
        let aad = chunk_aad(&self.id, index, last);
        let mut out = Vec::with_capacity(plaintext.len() + CHUNK_OVERHEAD);
        out.extend_from_slice(nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .key
            .cipher()
            .encrypt_in_place_detached(XNonce::from_slice(nonce), &aad, &mut out[NONCE_LEN..])
            // At most 1 MiB: far inside the AEAD's 256 GiB limit.
            .map_err(|_| BlobError::ChunkLen)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }
}

/// Seals a blob from a stream of arbitrary pieces, holding one chunk of
/// plaintext at a time, and computes the [`BlobSummary`] on the way.
pub struct BlobStreamSealer {
    sealer: BlobSealer,
    buf: Vec<u8>,
    next: u64,
    resume_from: u64,
    len: u64,
    /// `None` for a streamed blob ([`BlobStreamSealer::without_digest`]).
    sha: Option<Sha256>,
}

impl fmt::Debug for BlobStreamSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BlobStreamSealer({}, chunk {}, {} bytes)",
            self.sealer.id, self.next, self.len
        )
    }
}

impl BlobStreamSealer {
    /// A stream sealer for blob `id` under `key`.
    pub fn new(key: &BlobKey, id: BlobId) -> Self {
        Self {
            sealer: BlobSealer::new(key, id),
            buf: Vec::new(),
            next: 0,
            resume_from: 0,
            len: 0,
            sha: Some(Sha256::new()),
        }
    }

    /// Skips the SHA-256: [`BlobStreamSealer::finish`] reports
    /// [`NO_DIGEST`]. For a blob whose reference is published before the
    /// upload ends, when the digest cannot be in the envelope anyway (or
    /// is computed elsewhere); it halves the sender's work.
    pub fn without_digest(mut self) -> Self {
        self.sha = None;
        self
    }

    /// Resumes an upload: chunks before `index` are hashed but not sealed
    /// or returned (the relay has them). Feed the stream from its start.
    pub fn resume_from(mut self, index: u64) -> Self {
        self.resume_from = index;
        self
    }

    /// Plaintext bytes pushed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Feeds plaintext. Returns the chunks completed by it (a full chunk is
    /// sealed once the next byte arrives, because only then is it known
    /// not to be the last). Push pieces of at most [`CHUNK_LEN`] (a file
    /// read buffer) and upload what comes back before pushing more: then at
    /// most one chunk of plaintext and one sealed chunk are in memory.
    pub fn push(&mut self, mut data: &[u8]) -> Result<Vec<SealedChunk>, BlobError> {
        if self.len.saturating_add(data.len() as u64) > MAX_BLOB_LEN {
            return Err(BlobError::TooLarge);
        }
        self.len += data.len() as u64;
        if let Some(sha) = &mut self.sha {
            sha.update(data);
        }
        let mut out = Vec::new();
        while !data.is_empty() {
            if self.buf.len() == CHUNK_LEN {
                if let Some(c) = self.emit(false)? {
                    out.push(c);
                }
            }
            let take = (CHUNK_LEN - self.buf.len()).min(data.len());
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(CHUNK_LEN);
            }
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(out)
    }

    /// Ends the stream: seals the last chunk (unless resuming past it) and
    /// returns the summary for the envelope.
    pub fn finish(mut self) -> Result<(Option<SealedChunk>, BlobSummary), BlobError> {
        let last = self.emit(true)?;
        let summary = BlobSummary {
            len: self.len,
            sha256: self
                .sha
                .take()
                .map_or(NO_DIGEST, |sha| sha.finalize().into()),
        };
        Ok((last, summary))
    }

    fn emit(&mut self, last: bool) -> Result<Option<SealedChunk>, BlobError> {
        let index = self.next;
        self.next += 1;
        let chunk = if index >= self.resume_from {
            Some(SealedChunk {
                index,
                last,
                bytes: self.sealer.seal_chunk(index, &self.buf, last)?,
            })
        } else {
            None
        };
        self.buf.zeroize();
        self.buf.clear();
        Ok(chunk)
    }
}

impl Drop for BlobStreamSealer {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpenerState {
    Open,
    Done,
    Failed(BlobError),
}

/// Opens a blob chunk by chunk, in order, and checks at the end that every
/// chunk arrived and the plaintext matches the envelope's length and
/// SHA-256. After any error it refuses everything.
pub struct BlobOpener {
    key: BlobKey,
    id: BlobId,
    layout: BlobLayout,
    next: u64,
    /// `None` when the reference carries [`NO_DIGEST`].
    sha: Option<Sha256>,
    expected_sha256: [u8; 32],
    state: OpenerState,
}

impl fmt::Debug for BlobOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BlobOpener({}, chunk {} of {}, {:?})",
            self.id,
            self.next,
            self.layout.chunk_count(),
            self.state
        )
    }
}

impl BlobOpener {
    /// An opener for blob `id` under `key`, whose plaintext the envelope
    /// says is `len` bytes with SHA-256 `sha256` ([`NO_DIGEST`]: a streamed
    /// blob, no digest to check).
    pub fn new(key: &BlobKey, id: BlobId, len: u64, sha256: [u8; 32]) -> Result<Self, BlobError> {
        Ok(Self {
            key: key.clone(),
            id,
            layout: BlobLayout::new(len)?,
            next: 0,
            sha: (sha256 != NO_DIGEST).then(Sha256::new),
            expected_sha256: sha256,
            state: OpenerState::Open,
        })
    }

    /// The blob's layout.
    pub fn layout(&self) -> BlobLayout {
        self.layout
    }

    /// Index of the next chunk expected.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// Plaintext bytes opened so far (for progress).
    pub fn opened_len(&self) -> u64 {
        self.layout.plain_offset(self.next)
    }

    /// How many sealed bytes the next chunk has, or `None` once the last
    /// chunk was opened or after an error.
    pub fn next_sealed_len(&self) -> Option<usize> {
        match self.state {
            OpenerState::Open => self.layout.chunk_sealed_len(self.next),
            _ => None,
        }
    }

    /// Opens the next chunk and returns its plaintext. Anything but the
    /// exact sealed chunk that belongs at this position of this blob fails
    /// with [`BlobError::Open`]; a chunk after the last fails with
    /// [`BlobError::AfterLast`].
    pub fn open_chunk(&mut self, sealed: &[u8]) -> Result<Vec<u8>, BlobError> {
        match self.state {
            OpenerState::Open => {}
            OpenerState::Done => return self.fail(BlobError::AfterLast),
            OpenerState::Failed(e) => return Err(e),
        }
        let index = self.next;
        let Some(want) = self.layout.chunk_sealed_len(index) else {
            return self.fail(BlobError::AfterLast);
        };
        if sealed.len() != want {
            return self.fail(BlobError::Open);
        }
        let last = self.layout.is_last(index);
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut buf = ct.to_vec();
        let aad = chunk_aad(&self.id, index, last);
        if self
            .key
            .cipher()
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &aad,
                &mut buf,
                Tag::from_slice(tag),
            )
            .is_err()
        {
            buf.zeroize();
            return self.fail(BlobError::Open);
        }
        if let Some(sha) = &mut self.sha {
            sha.update(&buf);
        }
        self.next += 1;
        if last {
            self.state = OpenerState::Done;
        }
        Ok(buf)
    }

    /// Resumes a download: accounts for the plaintext of the next chunk,
    /// already opened and written to the receiver's own disk by an earlier
    /// attempt, without decrypting it. It must be exactly that chunk's
    /// length. It is hashed, so [`BlobOpener::finish`] still checks the whole
    /// file. Then fetch the rest from [`BlobLayout::sealed_offset`] of
    /// [`BlobOpener::next_index`] (an HTTP range request).
    pub fn resume_chunk(&mut self, opened_plaintext: &[u8]) -> Result<(), BlobError> {
        match self.state {
            OpenerState::Open => {}
            OpenerState::Done => return self.fail(BlobError::AfterLast),
            OpenerState::Failed(e) => return Err(e),
        }
        if self.layout.chunk_plain_len(self.next) != Some(opened_plaintext.len()) {
            return self.fail(BlobError::Digest);
        }
        if let Some(sha) = &mut self.sha {
            sha.update(opened_plaintext);
        }
        if self.layout.is_last(self.next) {
            self.state = OpenerState::Done;
        }
        self.next += 1;
        Ok(())
    }

    /// Ends the blob: fails unless the last chunk was opened and the
    /// plaintext's SHA-256 matches the envelope (unless it carries
    /// [`NO_DIGEST`]). Only then may the receiver expose the file.
    pub fn finish(self) -> Result<(), BlobError> {
        match self.state {
            OpenerState::Done => {}
            OpenerState::Open => return Err(BlobError::Truncated),
            OpenerState::Failed(e) => return Err(e),
        }
        let Some(sha) = &self.sha else {
            return Ok(());
        };
        let got: [u8; 32] = sha.clone().finalize().into();
        use subtle::ConstantTimeEq;
        if bool::from(got.ct_eq(&self.expected_sha256)) {
            Ok(())
        } else {
            Err(BlobError::Digest)
        }
    }

    fn fail<T>(&mut self, e: BlobError) -> Result<T, BlobError> {
        self.state = OpenerState::Failed(e);
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 131 + 7) as u8).collect()
    }

    fn seal_all(
        key: &BlobKey,
        id: BlobId,
        data: &[u8],
        piece: usize,
    ) -> (Vec<SealedChunk>, BlobSummary) {
        let mut s = BlobStreamSealer::new(key, id);
        let mut chunks = Vec::new();
        for p in data.chunks(piece.max(1)) {
            chunks.extend(s.push(p).unwrap());
        }
        let (last, summary) = s.finish().unwrap();
        chunks.extend(last);
        (chunks, summary)
    }

    fn open_all(
        key: &BlobKey,
        id: BlobId,
        s: &BlobSummary,
        chunks: &[Vec<u8>],
    ) -> Result<Vec<u8>, BlobError> {
        let mut o = BlobOpener::new(key, id, s.len, s.sha256)?;
        let mut out = Vec::new();
        for c in chunks {
            out.extend(o.open_chunk(c)?);
        }
        o.finish()?;
        Ok(out)
    }

    #[test]
    fn layout_edges() {
        let l = BlobLayout::new(0).unwrap();
        assert_eq!((l.chunk_count(), l.sealed_len()), (1, 40));
        assert_eq!(l.chunk_plain_len(0), Some(0));
        assert_eq!(l.chunk_plain_len(1), None);
        let l = BlobLayout::new(CHUNK).unwrap();
        assert_eq!((l.chunk_count(), l.sealed_len()), (1, SEALED));
        let l = BlobLayout::new(CHUNK + 1).unwrap();
        assert_eq!((l.chunk_count(), l.sealed_len()), (2, SEALED + 41));
        assert_eq!(l.sealed_offset(1), SEALED);
        assert_eq!(l.sealed_offset(2), l.sealed_len());
        assert_eq!(l.sealed_offset(9), l.sealed_len());
        assert!(l.is_last(1) && !l.is_last(0));
        assert_eq!(BlobLayout::new(MAX_BLOB_LEN + 1), Err(BlobError::TooLarge));
        let max = BlobLayout::new(MAX_BLOB_LEN).unwrap();
        assert_eq!(BlobLayout::from_sealed_len(max.sealed_len()), Some(max));
    }

    #[test]
    fn from_sealed_len_inverts_and_rejects_impossible_sizes() {
        for len in [
            0,
            1,
            39,
            40,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            5 * CHUNK,
            5 * CHUNK + 3,
        ] {
            let l = BlobLayout::new(len).unwrap();
            assert_eq!(
                BlobLayout::from_sealed_len(l.sealed_len()),
                Some(l),
                "{len}"
            );
        }
        // Shorter than a sealed empty blob, or a last chunk with no
        // plaintext after a full one.
        for bad in [0, 39, SEALED + 40, 2 * SEALED + 40] {
            assert_eq!(BlobLayout::from_sealed_len(bad), None, "{bad}");
        }
        assert_eq!(BlobLayout::from_sealed_len(u64::MAX), None);
    }

    #[test]
    fn resume_index_counts_whole_chunks() {
        let l = BlobLayout::new(3 * CHUNK + 10).unwrap();
        assert_eq!(l.resume_index(0), 0);
        assert_eq!(l.resume_index(SEALED - 1), 0);
        assert_eq!(l.resume_index(SEALED), 1);
        assert_eq!(l.resume_index(3 * SEALED + 49), 3);
        assert_eq!(l.resume_index(3 * SEALED + 50), 4);
        assert_eq!(l.resume_index(u64::MAX), 4);
        assert_eq!(l.whole_chunks_len(2 * SEALED + 7), 2 * SEALED);
        assert_eq!(l.whole_chunks_len(l.sealed_len()), l.sealed_len());
    }

    #[test]
    fn roundtrip_at_chunk_boundaries() {
        let key = BlobKey::generate();
        let id = BlobId::generate();
        for len in [
            0,
            1,
            CHUNK_LEN - 1,
            CHUNK_LEN,
            CHUNK_LEN + 1,
            2 * CHUNK_LEN,
            2 * CHUNK_LEN + 5,
        ] {
            let data = pattern(len);
            let (chunks, summary) = seal_all(&key, id, &data, 64 * 1024 + 3);
            let layout = BlobLayout::new(len as u64).unwrap();
            assert_eq!(chunks.len() as u64, layout.chunk_count(), "{len}");
            let total: usize = chunks.iter().map(|c| c.bytes.len()).sum();
            assert_eq!(total as u64, layout.sealed_len(), "{len}");
            for c in &chunks {
                assert_eq!(c.last, layout.is_last(c.index));
                assert_eq!(Some(c.bytes.len()), layout.chunk_sealed_len(c.index));
            }
            assert_eq!(summary.len, len as u64);
            assert_eq!(summary.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
            let bytes: Vec<Vec<u8>> = chunks.into_iter().map(|c| c.bytes).collect();
            assert_eq!(open_all(&key, id, &summary, &bytes).unwrap(), data, "{len}");
        }
    }

    #[test]
    fn one_big_push_equals_many_small_ones() {
        let key = BlobKey::generate();
        let id = BlobId::generate();
        let data = pattern(2 * CHUNK_LEN + 17);
        let (a, sa) = seal_all(&key, id, &data, data.len());
        let (b, sb) = seal_all(&key, id, &data, 1000);
        assert_eq!(sa, sb);
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn truncation_reorder_swap_and_extra_data_fail() {
        let key = BlobKey::generate();
        let id = BlobId::generate();
        let data = pattern(3 * CHUNK_LEN + 100);
        let (chunks, s) = seal_all(&key, id, &data, CHUNK_LEN);
        let bytes: Vec<Vec<u8>> = chunks.into_iter().map(|c| c.bytes).collect();
        // Cut at a chunk boundary: every chunk opens, finish refuses.
        assert_eq!(
            open_all(&key, id, &s, &bytes[..3]),
            Err(BlobError::Truncated)
        );
        // Reordered.
        let mut r = bytes.clone();
        r.swap(0, 1);
        assert_eq!(open_all(&key, id, &s, &r), Err(BlobError::Open));
        // Duplicated chunk.
        let d = vec![bytes[0].clone(), bytes[0].clone()];
        assert_eq!(open_all(&key, id, &s, &d), Err(BlobError::Open));
        // Data after the last chunk.
        let mut o = BlobOpener::new(&key, id, s.len, s.sha256).unwrap();
        for c in &bytes {
            o.open_chunk(c).unwrap();
        }
        assert_eq!(o.next_sealed_len(), None);
        assert_eq!(o.open_chunk(&bytes[0]), Err(BlobError::AfterLast));
        assert_eq!(o.finish(), Err(BlobError::AfterLast));
        // A chunk from another blob under the same key (id is in the AAD).
        let other = BlobId::generate();
        let (oc, _) = seal_all(&key, other, &data, CHUNK_LEN);
        let mut m = bytes.clone();
        m[1] = oc[1].bytes.clone();
        assert_eq!(open_all(&key, id, &s, &m), Err(BlobError::Open));
        // Wrong key.
        assert_eq!(
            open_all(&BlobKey::generate(), id, &s, &bytes),
            Err(BlobError::Open)
        );
        // Wrong promised length: a shorter stream pretending to be complete.
        let short = BlobSummary {
            len: 2 * CHUNK,
            ..s
        };
        assert_eq!(
            open_all(&key, id, &short, &bytes[..2]),
            Err(BlobError::Open)
        );
        // Wrong digest.
        let bad = BlobSummary {
            sha256: [1; 32],
            ..s
        };
        assert_eq!(open_all(&key, id, &bad, &bytes), Err(BlobError::Digest));
    }

    #[test]
    fn streamed_blobs_without_digest_are_still_bound() {
        let key = BlobKey::generate();
        let id = BlobId::generate();
        let data = pattern(2 * CHUNK_LEN + 77);
        let mut sealer = BlobStreamSealer::new(&key, id).without_digest();
        let mut chunks = Vec::new();
        for p in data.chunks(CHUNK_LEN) {
            chunks.extend(sealer.push(p).unwrap());
        }
        let (last, s) = sealer.finish().unwrap();
        chunks.extend(last);
        assert_eq!((s.len, s.sha256), (data.len() as u64, NO_DIGEST));
        let bytes: Vec<Vec<u8>> = chunks.into_iter().map(|c| c.bytes).collect();
        assert_eq!(open_all(&key, id, &s, &bytes).unwrap(), data);
        // Without a digest, truncation, reordering, tampering and a wrong
        // length still fail: the STREAM construction carries the binding.
        assert_eq!(
            open_all(&key, id, &s, &bytes[..2]),
            Err(BlobError::Truncated)
        );
        let mut r = bytes.clone();
        r.swap(0, 1);
        assert_eq!(open_all(&key, id, &s, &r), Err(BlobError::Open));
        let mut t = bytes.clone();
        t[2][30] ^= 1;
        assert_eq!(open_all(&key, id, &s, &t), Err(BlobError::Open));
        let short = BlobSummary {
            len: 2 * CHUNK,
            ..s
        };
        assert_eq!(
            open_all(&key, id, &short, &bytes[..2]),
            Err(BlobError::Open)
        );
    }

    #[test]
    fn a_full_chunk_relabelled_last_fails() {
        // The attacker drops chunk 1 of 2 and claims a 1-chunk blob: chunk 0
        // was sealed with last = 0, so it does not open as the last chunk.
        let key = BlobKey::generate();
        let id = BlobId::generate();
        let data = pattern(CHUNK_LEN + 1);
        let (chunks, s) = seal_all(&key, id, &data, CHUNK_LEN);
        let mut o = BlobOpener::new(&key, id, CHUNK, s.sha256).unwrap();
        assert_eq!(o.open_chunk(&chunks[0].bytes), Err(BlobError::Open));
        // And the opener stays failed.
        assert_eq!(o.next_sealed_len(), None);
        assert_eq!(o.open_chunk(&chunks[0].bytes), Err(BlobError::Open));
        assert_eq!(o.finish(), Err(BlobError::Open));
    }

    #[test]
    fn every_bit_flip_fails() {
        let key = BlobKey::from_bytes([3; 32]);
        let id = BlobId([4; 16]);
        let data = pattern(50);
        let (chunks, s) = seal_all(&key, id, &data, 50);
        let sealed = &chunks[0].bytes;
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[i] ^= 1 << bit;
                let mut o = BlobOpener::new(&key, id, s.len, s.sha256).unwrap();
                assert_eq!(
                    o.open_chunk(&bad),
                    Err(BlobError::Open),
                    "byte {i} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn resume_reseals_only_the_missing_tail() {
        let key = BlobKey::generate();
        let id = BlobId::generate();
        let data = pattern(3 * CHUNK_LEN + 9);
        let (full, s) = seal_all(&key, id, &data, 4096);
        let layout = BlobLayout::new(s.len).unwrap();
        // The relay kept two whole chunks and a few bytes of the third.
        let kept = layout.whole_chunks_len(2 * SEALED + 1234);
        let from = layout.resume_index(kept);
        assert_eq!(from, 2);
        let mut r = BlobStreamSealer::new(&key, id).resume_from(from);
        let mut tail = Vec::new();
        for p in data.chunks(4096) {
            tail.extend(r.push(p).unwrap());
        }
        let (last, s2) = r.finish().unwrap();
        tail.extend(last);
        assert_eq!(s2, s);
        assert_eq!(tail.iter().map(|c| c.index).collect::<Vec<_>>(), vec![2, 3]);
        let mut stream: Vec<Vec<u8>> = full[..2].iter().map(|c| c.bytes.clone()).collect();
        stream.extend(tail.into_iter().map(|c| c.bytes));
        assert_eq!(open_all(&key, id, &s, &stream).unwrap(), data);
    }

    #[test]
    fn download_resumes_from_written_plaintext() {
        let key = BlobKey::generate();
        let id = BlobId::generate();
        let data = pattern(2 * CHUNK_LEN + 3);
        let (chunks, s) = seal_all(&key, id, &data, CHUNK_LEN);
        let mut o = BlobOpener::new(&key, id, s.len, s.sha256).unwrap();
        o.resume_chunk(&data[..CHUNK_LEN]).unwrap();
        assert_eq!(o.next_index(), 1);
        assert_eq!(o.layout().sealed_offset(1), SEALED);
        assert_eq!(o.opened_len(), CHUNK);
        o.open_chunk(&chunks[1].bytes).unwrap();
        o.open_chunk(&chunks[2].bytes).unwrap();
        o.finish().unwrap();
        // A wrong-length prefix, or different bytes, do not pass.
        let mut o = BlobOpener::new(&key, id, s.len, s.sha256).unwrap();
        assert_eq!(o.resume_chunk(&data[..10]), Err(BlobError::Digest));
        let mut o = BlobOpener::new(&key, id, s.len, s.sha256).unwrap();
        o.resume_chunk(&[0; CHUNK_LEN]).unwrap();
        o.open_chunk(&chunks[1].bytes).unwrap();
        o.open_chunk(&chunks[2].bytes).unwrap();
        assert_eq!(o.finish(), Err(BlobError::Digest));
    }

    #[test]
    fn sealer_refuses_bad_chunk_lengths() {
        let s = BlobSealer::new(&BlobKey::generate(), BlobId::generate());
        assert_eq!(s.seal_chunk(0, &[1; 10], false), Err(BlobError::ChunkLen));
        assert_eq!(s.seal_chunk(1, &[], true), Err(BlobError::ChunkLen));
        assert_eq!(
            s.seal_chunk(0, &vec![0; CHUNK_LEN + 1], true),
            Err(BlobError::ChunkLen)
        );
        assert!(s.seal_chunk(0, &[], true).is_ok());
        assert!(s.seal_chunk(5, &vec![0; CHUNK_LEN], false).is_ok());
    }

    #[test]
    fn blob_id_text_form_is_canonical() {
        let id = BlobId(std::array::from_fn(|i| i as u8 * 17));
        let s = id.to_string();
        assert_eq!(s, "00112233445566778899aabbccddeeff");
        assert_eq!(s.parse::<BlobId>(), Ok(id));
        for bad in [
            "",
            "00112233445566778899AABBCCDDEEFF",
            "0011",
            "../../etc/passwd00000000000000",
            "00112233445566778899aabbccddeeff00",
        ] {
            assert_eq!(bad.parse::<BlobId>(), Err(BlobIdError), "{bad}");
        }
    }

    #[test]
    fn key_debug_is_redacted() {
        let k = BlobKey::from_bytes([0xab; 32]);
        assert_eq!(format!("{k:?}"), "BlobKey(<redacted>)");
        let s = BlobSealer::new(&k, BlobId([1; 16]));
        assert!(!format!("{s:?}").contains("abab"));
    }
}
