//! The sealed clip envelope.
//!
//! ```text
//! header (18 B, the AAD) : version u8 = 1 | kind u8 | sender u64 | seq u64
//! nonce  (24 B)          : random per envelope
//! body                   : XChaCha20-Poly1305(clip_key, nonce, aad = header, plaintext) | tag (16 B)
//! ```
//!
//! The relay can read the header (it is not secret, only authenticated) but
//! everything about the content — type, MIME, file names, the timestamp — is
//! inside the ciphertext. Opening fails in exactly one way, [`OpenError`],
//! whatever went wrong.

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::DeviceId;
use crate::keys::{random_nonce, ClipKey, NONCE_LEN, TAG_LEN};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use std::fmt;

/// Envelope format version.
pub const ENVELOPE_VERSION: u8 = 1;
/// Length of the envelope header.
pub const HEADER_LEN: usize = 18;
/// Bytes an envelope adds around its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

pub use crate::keys::OpenError;

/// What the ciphertext holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EnvelopeKind {
    /// A [`crate::ClipItem`] ([`crate::seal_clip`], [`crate::open_clip`]).
    Clip = 1,
    /// A sealed signalling message ([`crate::signal`]).
    Signal = 2,
}

impl EnvelopeKind {
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            1 => Ok(Self::Clip),
            2 => Ok(Self::Signal),
            tag => Err(DecodeError::UnknownTag {
                what: "envelope kind",
                tag,
            }),
        }
    }
}

/// The authenticated, unencrypted part of an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// What the ciphertext holds.
    pub kind: EnvelopeKind,
    /// The device that sealed it.
    pub sender: DeviceId,
    /// The sender's per-device sequence number (starts at 1, never reused).
    pub seq: u64,
}

impl EnvelopeHeader {
    /// The 18 header bytes, which are also the AAD.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut w = Writer::with_capacity(HEADER_LEN);
        w.u8(ENVELOPE_VERSION);
        w.u8(self.kind as u8);
        w.u64(self.sender.0);
        w.u64(self.seq);
        let v = w.into_inner();
        let mut out = [0u8; HEADER_LEN];
        out.copy_from_slice(&v);
        out
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != ENVELOPE_VERSION {
            return Err(DecodeError::Version(version));
        }
        Ok(Self {
            kind: EnvelopeKind::from_u8(r.u8()?)?,
            sender: DeviceId(r.u64()?),
            seq: r.u64()?,
        })
    }
}

/// Seals and opens envelopes.
pub struct Envelope;

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Envelope")
    }
}

impl Envelope {
    /// Seals `plaintext` under `key` with a random nonce.
    pub fn seal(key: &ClipKey, header: &EnvelopeHeader, plaintext: &[u8]) -> Vec<u8> {
        Self::seal_with_nonce(key, header, &random_nonce(), plaintext)
    }

    /// Seals with a caller-chosen nonce. Only for test vectors.
    pub fn seal_with_nonce(
        key: &ClipKey,
        header: &EnvelopeHeader,
        nonce: &[u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Vec<u8> {
        let aad = header.encode();
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.extend_from_slice(&aad);
        out.extend_from_slice(nonce);
        out.extend_from_slice(plaintext);
        let cipher = XChaCha20Poly1305::new(Key::from_slice(key.expose()));
        let body = &mut out[HEADER_LEN + NONCE_LEN..];
        // XChaCha20-Poly1305 accepts up to 256 GiB per message; frames are
        // bounded to a few MiB long before this point.
        #[allow(clippy::expect_used)]
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(nonce), &aad, body)
            .expect("invariant: plaintext is within AEAD length limits");
        out.extend_from_slice(&tag);
        out
    }

    /// Reads the header without opening the body (for dedupe and routing).
    pub fn peek_header(envelope: &[u8]) -> Result<EnvelopeHeader, DecodeError> {
        let mut r = Reader::new(envelope);
        let h = EnvelopeHeader::read(&mut r)?;
        if r.remaining() < NONCE_LEN + TAG_LEN {
            return Err(DecodeError::Truncated);
        }
        Ok(h)
    }

    /// Opens an envelope, returning its header and plaintext.
    pub fn open(key: &ClipKey, envelope: &[u8]) -> Result<(EnvelopeHeader, Vec<u8>), OpenError> {
        let header = Self::peek_header(envelope).map_err(|_| OpenError)?;
        let (aad, rest) = envelope.split_at(HEADER_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let (ct, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let mut buf = ct.to_vec();
        let cipher = XChaCha20Poly1305::new(Key::from_slice(key.expose()));
        cipher
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                aad,
                &mut buf,
                Tag::from_slice(tag),
            )
            .map_err(|_| OpenError)?;
        Ok((header, buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::DataKey;

    fn header() -> EnvelopeHeader {
        EnvelopeHeader {
            kind: EnvelopeKind::Clip,
            sender: DeviceId(3),
            seq: 9,
        }
    }

    #[test]
    fn seal_open_roundtrip() {
        let key = DataKey::generate().clip_key();
        let env = Envelope::seal(&key, &header(), b"hello");
        assert_eq!(env.len(), OVERHEAD + 5);
        let (h, pt) = Envelope::open(&key, &env).unwrap();
        assert_eq!(h, header());
        assert_eq!(pt, b"hello");
    }

    #[test]
    fn every_tamper_fails_the_same_way() {
        let key = DataKey::generate().clip_key();
        let env = Envelope::seal(&key, &header(), b"hello world");
        for i in 0..env.len() {
            let mut bad = env.clone();
            bad[i] ^= 0x01;
            assert_eq!(Envelope::open(&key, &bad), Err(OpenError), "byte {i}");
        }
        for n in 0..env.len() {
            assert_eq!(Envelope::open(&key, &env[..n]), Err(OpenError));
        }
        let other = DataKey::generate().clip_key();
        assert_eq!(Envelope::open(&other, &env), Err(OpenError));
    }

    #[test]
    fn empty_plaintext_is_fine() {
        let key = DataKey::generate().clip_key();
        let env = Envelope::seal(&key, &header(), b"");
        assert_eq!(Envelope::open(&key, &env).unwrap().1, b"");
    }
}
