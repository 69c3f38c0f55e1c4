//! The v2 envelope: sealed under the epoch's clip key (kind 1, a clip) or
//! signal key (kind 2, direct-link signalling, [`crate::signal`]) and signed
//! by the sending device.
//!
//! ```text
//! header (22 B, the AAD) : version u8 = 2 | kind u8 | sender u64 | seq u64 | epoch u32
//! nonce  (24 B)          : random per envelope
//! body                   : XChaCha20-Poly1305(clip key of epoch, nonce, aad = header, plaintext) | tag (16 B)
//! signature (64 B)       : Ed25519(sender, "clipmesh/v2/envelope" | header | nonce | body | tag)
//! ```
//!
//! The receiver looks the sender up in its own pinned roster (never in what
//! the relay says), checks the signature, then opens the body with the key of
//! the epoch in the header. Every failure is the one [`OpenError`]. Another
//! device of the same account holds the clip key but not the sender's signing
//! key, so it can read but not forge; the relay can do neither.

use crate::codec::{DecodeError, Reader, Writer};
use crate::device::{DevicePublic, DeviceSecrets, SIGNATURE_LEN};
use crate::envelope::{EnvelopeKind, OpenError};
use crate::epoch::Epoch;
use crate::ids::DeviceId;
use crate::keys::{random_nonce, ClipKey, NONCE_LEN, TAG_LEN};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};

/// Envelope format version of this module.
pub const SIGNED_ENVELOPE_VERSION: u8 = 2;
/// Length of the v2 header.
pub const SIGNED_HEADER_LEN: usize = 22;
/// Bytes a v2 envelope adds around its plaintext.
pub const SIGNED_OVERHEAD: usize = SIGNED_HEADER_LEN + NONCE_LEN + TAG_LEN + SIGNATURE_LEN;
/// Domain prefix of the envelope signature.
pub const SIGNATURE_DOMAIN: &[u8] = b"clipmesh/v2/envelope";

/// The authenticated, unencrypted part of a v2 envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedHeader {
    /// What the ciphertext holds.
    pub kind: EnvelopeKind,
    /// The device that sealed and signed it.
    pub sender: DeviceId,
    /// The sender's per-device sequence number (starts at 1, never reused).
    pub seq: u64,
    /// The key epoch it is sealed under.
    pub epoch: Epoch,
}

impl SignedHeader {
    /// The 22 header bytes, which are also the AAD.
    pub fn encode(&self) -> [u8; SIGNED_HEADER_LEN] {
        let mut w = Writer::with_capacity(SIGNED_HEADER_LEN);
        w.u8(SIGNED_ENVELOPE_VERSION);
        w.u8(self.kind as u8);
        w.u64(self.sender.0);
        w.u64(self.seq);
        w.u32(self.epoch.0);
        let v = w.into_inner();
        let mut out = [0u8; SIGNED_HEADER_LEN];
        out.copy_from_slice(&v);
        out
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != SIGNED_ENVELOPE_VERSION {
            return Err(DecodeError::Version(version));
        }
        let kind = match r.u8()? {
            1 => EnvelopeKind::Clip,
            2 => EnvelopeKind::Signal,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "envelope kind",
                    tag,
                })
            }
        };
        Ok(Self {
            kind,
            sender: DeviceId(r.u64()?),
            seq: r.u64()?,
            epoch: Epoch(r.u32()?),
        })
    }
}

/// Seals, signs, checks and opens v2 envelopes.
#[derive(Debug)]
pub struct SignedEnvelope;

impl SignedEnvelope {
    /// Seals `plaintext` under `key` (the clip key of `header.epoch`) with a
    /// random nonce and signs it with the sender's `signer`.
    pub fn seal(
        key: &ClipKey,
        signer: &DeviceSecrets,
        header: &SignedHeader,
        plaintext: &[u8],
    ) -> Vec<u8> {
        Self::seal_with_nonce(key, signer, header, &random_nonce(), plaintext)
    }

    /// Seals with a caller-chosen nonce. Only for test vectors.
    pub fn seal_with_nonce(
        key: &ClipKey,
        signer: &DeviceSecrets,
        header: &SignedHeader,
        nonce: &[u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Vec<u8> {
        let aad = header.encode();
        let mut out = Vec::with_capacity(SIGNED_OVERHEAD + plaintext.len());
        out.extend_from_slice(&aad);
        out.extend_from_slice(nonce);
        out.extend_from_slice(plaintext);
        let cipher = XChaCha20Poly1305::new(Key::from_slice(key.expose()));
        let body = &mut out[SIGNED_HEADER_LEN + NONCE_LEN..];
        // XChaCha20-Poly1305 accepts up to 256 GiB per message; frames are
        // bounded to a few MiB long before this point.
        #[allow(clippy::expect_used)]
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(nonce), &aad, body)
            .expect("invariant: plaintext is within AEAD length limits");
        out.extend_from_slice(&tag);
        let sig = signer.sign(&signed_message(&out));
        out.extend_from_slice(&sig);
        out
    }

    /// Reads the header without checking anything else (routing, choosing
    /// the sender's key and the epoch's key).
    pub fn peek_header(envelope: &[u8]) -> Result<SignedHeader, DecodeError> {
        let mut r = Reader::new(envelope);
        let h = SignedHeader::read(&mut r)?;
        if r.remaining() < NONCE_LEN + TAG_LEN + SIGNATURE_LEN {
            return Err(DecodeError::Truncated);
        }
        Ok(h)
    }

    /// Checks the signature against `sender` (from the receiver's pinned
    /// roster, for `header.sender`), then opens with `key` (the clip key of
    /// `header.epoch`). The caller must pick both from the header it peeked
    /// and compare the returned header with it.
    pub fn open(
        key: &ClipKey,
        sender: &DevicePublic,
        envelope: &[u8],
    ) -> Result<(SignedHeader, Vec<u8>), OpenError> {
        let header = Self::peek_header(envelope).map_err(|_| OpenError)?;
        let (signed, sig) = envelope.split_at(envelope.len() - SIGNATURE_LEN);
        let mut s = [0u8; SIGNATURE_LEN];
        s.copy_from_slice(sig);
        sender.verify(&signed_message(signed), &s)?;
        let (aad, rest) = signed.split_at(SIGNED_HEADER_LEN);
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

fn signed_message(sealed: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_DOMAIN.len() + sealed.len());
    m.extend_from_slice(SIGNATURE_DOMAIN);
    m.extend_from_slice(sealed);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epoch::EpochKey;
    use rand::rngs::OsRng;

    fn header() -> SignedHeader {
        SignedHeader {
            kind: EnvelopeKind::Clip,
            sender: DeviceId(3),
            seq: 9,
            epoch: Epoch(2),
        }
    }

    #[test]
    fn seal_open_roundtrip() {
        let key = EpochKey::generate(&mut OsRng).clip_key(Epoch(2));
        let dev = DeviceSecrets::generate(&mut OsRng);
        let env = SignedEnvelope::seal(&key, &dev, &header(), b"hello");
        assert_eq!(env.len(), SIGNED_OVERHEAD + 5);
        assert_eq!(SignedEnvelope::peek_header(&env).unwrap(), header());
        let (h, pt) = SignedEnvelope::open(&key, &dev.public(), &env).unwrap();
        assert_eq!(h, header());
        assert_eq!(pt, b"hello");
    }

    #[test]
    fn another_device_of_the_account_cannot_forge() {
        // Device B holds the same clip key and re-seals A's header with its
        // own signature: receivers that pinned A's key refuse it.
        let key = EpochKey::generate(&mut OsRng).clip_key(Epoch(2));
        let a = DeviceSecrets::generate(&mut OsRng);
        let b = DeviceSecrets::generate(&mut OsRng);
        let forged = SignedEnvelope::seal(&key, &b, &header(), b"evil");
        assert_eq!(
            SignedEnvelope::open(&key, &a.public(), &forged),
            Err(OpenError)
        );
    }

    #[test]
    fn every_tamper_fails_the_same_way() {
        let key = EpochKey::generate(&mut OsRng).clip_key(Epoch(2));
        let dev = DeviceSecrets::generate(&mut OsRng);
        let env = SignedEnvelope::seal(&key, &dev, &header(), b"hello world");
        for i in 0..env.len() {
            let mut bad = env.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                SignedEnvelope::open(&key, &dev.public(), &bad),
                Err(OpenError),
                "byte {i}"
            );
        }
        for n in 0..env.len() {
            assert_eq!(
                SignedEnvelope::open(&key, &dev.public(), &env[..n]),
                Err(OpenError)
            );
        }
        let other = EpochKey::generate(&mut OsRng).clip_key(Epoch(2));
        assert_eq!(
            SignedEnvelope::open(&other, &dev.public(), &env),
            Err(OpenError)
        );
    }

    #[test]
    fn v1_envelopes_are_not_v2() {
        let key = EpochKey::generate(&mut OsRng).clip_key(Epoch(0));
        let v1 = crate::Envelope::seal(
            &key,
            &crate::EnvelopeHeader {
                kind: EnvelopeKind::Clip,
                sender: DeviceId(1),
                seq: 1,
            },
            b"x",
        );
        assert!(matches!(
            SignedEnvelope::peek_header(&v1),
            Err(DecodeError::Version(1))
        ));
    }
}
