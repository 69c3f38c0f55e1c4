//! Sealed signalling payloads: what goes inside a [`crate::Frame::Signal`].
//!
//! The relay forwards `Signal { peer, kind, payload }` between devices of one
//! user and can read and change anything it forwards. An SDP offer or answer
//! carries the DTLS certificate fingerprint that authenticates the direct
//! link, so a relay that could swap it could sit in the middle of the
//! "direct" link. Every payload is therefore an envelope of kind
//! [`EnvelopeKind::Signal`] sealed under the **signal key**
//! ([`crate::DataKey::signal_key`]), with the same construction as clips
//! (XChaCha20-Poly1305, the 18-byte header as AAD). Only devices of the
//! account hold the data key.
//!
//! Plaintext of a sealed signal ([`SignalMsg::encode`]):
//!
//! ```text
//! version u8 = 1 | kind u8 (Signal.kind's values) | target u64 | session u64 | body (rest, UTF-8)
//! ```
//!
//! **Protocol v2:** a codec with a signer ([`SignalCodec::set_signer`])
//! seals every payload as a signed v2 envelope ([`crate::SignedEnvelope`],
//! kind `Signal`) under the same signal key, and opens a signed payload only
//! with the sender's key from the receiver's pinned roster
//! ([`SignalCodec::set_peer_keys`]); an unsigned payload from a peer whose
//! key it holds is refused ([`SignalError::Unsigned`]). So another device of
//! the account cannot pass itself off as a third one in signalling either.
//!
//! A receiver ([`SignalCodec::open`]) accepts a payload only when it opens
//! under the signal key as a `Signal` envelope, the envelope's sender is the
//! device the relay says sent it, the sealed `kind` equals the frame's
//! `kind`, the sealed `target` is this device, and the envelope sequence
//! number is higher than every earlier one from that sender (replays are
//! refused). `session` names one connection attempt: the offerer picks it at
//! random and answers, candidates and `Bye` carry it back.

use crate::codec::{DecodeError, Reader, Writer};
use crate::device::{DevicePublic, DeviceSecrets};
use crate::envelope::{Envelope, EnvelopeHeader, EnvelopeKind};
use crate::epoch::Epoch;
use crate::frame::SignalKind;
use crate::ids::DeviceId;
use crate::keys::ClipKey;
use crate::signed::{SignedEnvelope, SignedHeader, SIGNED_ENVELOPE_VERSION};
use std::collections::HashMap;
use std::fmt;
use thiserror::Error;
use zeroize::Zeroize;

/// Version byte of the sealed plaintext.
pub const SIGNAL_VERSION: u8 = 1;
/// Fixed part of the plaintext: version, kind, target, session.
pub const SIGNAL_FIXED_LEN: usize = 1 + 1 + 8 + 8;

/// One signalling message, opened.
#[derive(Clone, PartialEq, Eq)]
pub struct SignalMsg {
    /// What it is.
    pub kind: SignalKind,
    /// The device it is meant for.
    pub target: DeviceId,
    /// The connection attempt it belongs to.
    pub session: u64,
    /// SDP, an ICE candidate line, or empty.
    pub body: String,
}

impl fmt::Debug for SignalMsg {
    // SDP holds addresses and fingerprints: print its length only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalMsg")
            .field("kind", &self.kind)
            .field("target", &self.target)
            .field("session", &self.session)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl SignalMsg {
    /// The plaintext bytes (sealed by [`SignalCodec::seal`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(SIGNAL_FIXED_LEN + self.body.len());
        w.u8(SIGNAL_VERSION);
        w.u8(self.kind as u8);
        w.u64(self.target.0);
        w.u64(self.session);
        w.raw(self.body.as_bytes());
        w.into_inner()
    }

    /// Parses a plaintext. Total: any input gives a message or an error.
    pub fn decode(plain: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(plain);
        let version = r.u8()?;
        if version != SIGNAL_VERSION {
            return Err(DecodeError::Version(version));
        }
        let kind = SignalKind::from_u8(r.u8()?)?;
        let target = DeviceId(r.u64()?);
        let session = r.u64()?;
        let body = std::str::from_utf8(r.rest())
            .map_err(|_| DecodeError::Utf8("signal body"))?
            .to_owned();
        Ok(Self {
            kind,
            target,
            session,
            body,
        })
    }
}

/// Why a received signalling payload was refused. Carries no payload bytes.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum SignalError {
    /// It does not open under the signal key as a signal (tampered, forged,
    /// sealed by a device of another account, or a clip envelope).
    #[error("could not open (tampered, forged or wrong key)")]
    Open,
    /// The sealed sender is not the device the relay named.
    #[error("sealed sender does not match the relay's")]
    Sender,
    /// The sealed kind is not the frame's kind.
    #[error("sealed kind does not match the frame's")]
    Kind,
    /// It is meant for another device.
    #[error("meant for another device")]
    Target,
    /// Its sequence number is not newer than one already seen (a replay).
    #[error("replayed")]
    Replay,
    /// The plaintext is malformed.
    #[error("malformed")]
    Malformed,
    /// Unsigned, from a device whose signing key this device holds.
    #[error("unsigned, from a device that signs")]
    Unsigned,
}

/// Seals and opens signals for one device, remembering the sequence
/// numbers seen per sender.
pub struct SignalCodec {
    key: ClipKey,
    me: DeviceId,
    next_seq: u64,
    highest: HashMap<DeviceId, u64>,
    /// v2: this device's signing key and the epoch it seals under.
    signer: Option<(DeviceSecrets, Epoch)>,
    /// v2: the peers' pinned public keys.
    peers: HashMap<DeviceId, DevicePublic>,
}

impl fmt::Debug for SignalCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalCodec")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl SignalCodec {
    /// A codec for device `me` with the signal key. `first_seq` is the first
    /// sequence number it seals with (callers use the wall clock, so a
    /// restarted device keeps counting upwards).
    pub fn new(key: ClipKey, me: DeviceId, first_seq: u64) -> Self {
        Self {
            key,
            me,
            next_seq: first_seq.max(1),
            highest: HashMap::new(),
            signer: None,
            peers: HashMap::new(),
        }
    }

    /// Signs what it seals from now on (a v2 device), as of `epoch`.
    pub fn set_signer(&mut self, secrets: DeviceSecrets, epoch: Epoch) {
        self.signer = Some((secrets, epoch));
    }

    /// The peers' public keys, as this device pinned them: signed payloads
    /// open only with these, and an unsigned one from any of them is
    /// refused.
    pub fn set_peer_keys(&mut self, peers: HashMap<DeviceId, DevicePublic>) {
        self.peers = peers;
    }

    /// Seals `msg` as this device.
    pub fn seal(&mut self, msg: &SignalMsg) -> Vec<u8> {
        let mut plain = msg.encode();
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        if let Some((signer, epoch)) = &self.signer {
            let header = SignedHeader {
                kind: EnvelopeKind::Signal,
                sender: self.me,
                seq,
                epoch: *epoch,
            };
            let sealed = SignedEnvelope::seal(&self.key, signer, &header, &plain);
            plain.zeroize();
            return sealed;
        }
        let sealed = Envelope::seal(
            &self.key,
            &EnvelopeHeader {
                kind: EnvelopeKind::Signal,
                sender: self.me,
                seq,
            },
            &plain,
        );
        plain.zeroize();
        sealed
    }

    /// Opens a payload the relay says `from` sent with `kind`.
    pub fn open(
        &mut self,
        from: DeviceId,
        kind: SignalKind,
        payload: &[u8],
    ) -> Result<SignalMsg, SignalError> {
        let (header, mut plain) = if payload.first() == Some(&SIGNED_ENVELOPE_VERSION) {
            let peeked = SignedEnvelope::peek_header(payload).map_err(|_| SignalError::Open)?;
            if peeked.sender != from {
                return Err(SignalError::Sender);
            }
            let public = self.peers.get(&from).ok_or(SignalError::Open)?;
            let (h, plain) =
                SignedEnvelope::open(&self.key, public, payload).map_err(|_| SignalError::Open)?;
            (
                EnvelopeHeader {
                    kind: h.kind,
                    sender: h.sender,
                    seq: h.seq,
                },
                plain,
            )
        } else {
            let (h, mut plain) =
                Envelope::open(&self.key, payload).map_err(|_| SignalError::Open)?;
            if self.signer.is_some() && self.peers.contains_key(&from) {
                plain.zeroize();
                return Err(SignalError::Unsigned);
            }
            (h, plain)
        };
        if header.kind != EnvelopeKind::Signal {
            plain.zeroize();
            return Err(SignalError::Open);
        }
        if header.sender != from {
            plain.zeroize();
            return Err(SignalError::Sender);
        }
        let msg = SignalMsg::decode(&plain);
        plain.zeroize();
        let msg = msg.map_err(|_| SignalError::Malformed)?;
        if msg.kind != kind {
            return Err(SignalError::Kind);
        }
        if msg.target != self.me {
            return Err(SignalError::Target);
        }
        let h = self.highest.entry(from).or_insert(0);
        if header.seq <= *h {
            return Err(SignalError::Replay);
        }
        *h = header.seq;
        Ok(msg)
    }

    /// Seals and opens with `key` from now on (the account moved to a new
    /// key epoch; the signal key is a subkey of the epoch key).
    pub fn set_key(&mut self, key: ClipKey, epoch: Epoch) {
        self.key = key;
        if let Some((_, e)) = &mut self.signer {
            *e = epoch;
        }
    }

    /// Forgets what was seen from `peer` (it went offline; a restarted
    /// device may count from a lower number).
    pub fn forget(&mut self, peer: DeviceId) {
        self.highest.remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::DataKey;

    fn pair() -> (SignalCodec, SignalCodec) {
        let dk = DataKey::generate();
        (
            SignalCodec::new(dk.signal_key(), DeviceId(1), 100),
            SignalCodec::new(dk.signal_key(), DeviceId(2), 100),
        )
    }

    fn offer(target: u64) -> SignalMsg {
        SignalMsg {
            kind: SignalKind::Offer,
            target: DeviceId(target),
            session: 7,
            body: "v=0 sdp".into(),
        }
    }

    #[test]
    fn roundtrip_and_replay() {
        let (mut a, mut b) = pair();
        let sealed = a.seal(&offer(2));
        let got = b.open(DeviceId(1), SignalKind::Offer, &sealed).unwrap();
        assert_eq!(got, offer(2));
        assert_eq!(
            b.open(DeviceId(1), SignalKind::Offer, &sealed),
            Err(SignalError::Replay)
        );
        // After the peer went offline its counter may restart.
        b.forget(DeviceId(1));
        assert!(b.open(DeviceId(1), SignalKind::Offer, &sealed).is_ok());
    }

    #[test]
    fn a_new_epochs_key_replaces_the_old_one() {
        let (mut a, mut b) = pair();
        let next = DataKey::generate().signal_key();
        a.set_key(next.clone(), Epoch(2));
        let sealed = a.seal(&offer(2));
        assert_eq!(
            b.open(DeviceId(1), SignalKind::Offer, &sealed),
            Err(SignalError::Open),
            "the old key opens nothing sealed under the new one"
        );
        b.set_key(next, Epoch(2));
        assert!(b.open(DeviceId(1), SignalKind::Offer, &sealed).is_ok());
    }

    #[test]
    fn signed_signals_open_only_with_the_senders_pinned_key() {
        use rand::rngs::OsRng;
        let (mut a, mut b) = pair();
        let (sa, sc) = (
            DeviceSecrets::generate(&mut OsRng),
            DeviceSecrets::generate(&mut OsRng),
        );
        a.set_signer(sa.clone(), Epoch(1));
        b.set_signer(DeviceSecrets::generate(&mut OsRng), Epoch(1));
        let sealed = a.seal(&offer(2));
        assert_eq!(sealed[0], SIGNED_ENVELOPE_VERSION);
        // B has no key for A yet: refused.
        assert_eq!(
            b.open(DeviceId(1), SignalKind::Offer, &sealed),
            Err(SignalError::Open)
        );
        b.set_peer_keys(HashMap::from([(DeviceId(1), sa.public())]));
        assert_eq!(
            b.open(DeviceId(1), SignalKind::Offer, &sealed).unwrap(),
            offer(2)
        );
        // Device 3 of the account (same signal key) signs as device 1.
        let mut c = SignalCodec::new(a.key.clone(), DeviceId(1), 10_000);
        c.set_signer(sc, Epoch(1));
        assert_eq!(
            b.open(DeviceId(1), SignalKind::Offer, &c.seal(&offer(2))),
            Err(SignalError::Open)
        );
        // Or sends it unsigned.
        let mut unsigned = SignalCodec::new(a.key.clone(), DeviceId(1), 20_000);
        assert_eq!(
            b.open(DeviceId(1), SignalKind::Offer, &unsigned.seal(&offer(2))),
            Err(SignalError::Unsigned)
        );
        // The relay names another sender.
        let again = a.seal(&offer(2));
        assert_eq!(
            b.open(DeviceId(3), SignalKind::Offer, &again),
            Err(SignalError::Sender)
        );
    }

    #[test]
    fn tampered_forged_and_misrouted_payloads_are_refused() {
        let (mut a, mut b) = pair();
        let sealed = a.seal(&offer(2));
        // Any flipped bit (the relay editing a fingerprint) fails to open.
        for i in [0, 20, sealed.len() / 2, sealed.len() - 1] {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(b.open(DeviceId(1), SignalKind::Offer, &t).is_err(), "{i}");
        }
        // Garbage and empty payloads: errors, never panics.
        assert_eq!(
            b.open(DeviceId(1), SignalKind::Offer, b"v=0 forged sdp"),
            Err(SignalError::Open)
        );
        assert_eq!(
            b.open(DeviceId(1), SignalKind::Offer, &[]),
            Err(SignalError::Open)
        );
        // Sealed by another account.
        let mut other = SignalCodec::new(DataKey::generate().signal_key(), DeviceId(1), 1);
        assert_eq!(
            b.open(DeviceId(1), SignalKind::Offer, &other.seal(&offer(2))),
            Err(SignalError::Open)
        );
        // The relay relabels the sender or the kind.
        assert_eq!(
            b.open(DeviceId(3), SignalKind::Offer, &sealed),
            Err(SignalError::Sender)
        );
        assert_eq!(
            b.open(DeviceId(1), SignalKind::Answer, &sealed),
            Err(SignalError::Kind)
        );
        // Meant for device 3, delivered to 2.
        let to3 = a.seal(&offer(3));
        assert_eq!(
            b.open(DeviceId(1), SignalKind::Offer, &to3),
            Err(SignalError::Target)
        );
    }

    #[test]
    fn a_clip_envelope_under_the_signal_key_is_not_a_signal() {
        let dk = DataKey::generate();
        let mut b = SignalCodec::new(dk.signal_key(), DeviceId(2), 1);
        let plain = offer(2).encode();
        let as_clip = Envelope::seal(
            &dk.signal_key(),
            &EnvelopeHeader {
                kind: EnvelopeKind::Clip,
                sender: DeviceId(1),
                seq: 5,
            },
            &plain,
        );
        assert_eq!(
            b.open(DeviceId(1), SignalKind::Offer, &as_clip),
            Err(SignalError::Open)
        );
    }

    #[test]
    fn plaintext_layout_and_malformed_inputs() {
        let enc = offer(2).encode();
        assert_eq!(enc.len(), SIGNAL_FIXED_LEN + 7);
        assert_eq!(&enc[..2], &[SIGNAL_VERSION, SignalKind::Offer as u8]);
        assert_eq!(SignalMsg::decode(&enc).unwrap(), offer(2));
        for n in 0..SIGNAL_FIXED_LEN {
            assert!(SignalMsg::decode(&enc[..n]).is_err(), "{n}");
        }
        let mut bad = enc.clone();
        bad[0] = 9;
        assert_eq!(SignalMsg::decode(&bad), Err(DecodeError::Version(9)));
        let mut bad = enc.clone();
        bad[1] = 0;
        assert!(SignalMsg::decode(&bad).is_err());
        let mut bad = enc;
        bad.push(0xff);
        assert_eq!(
            SignalMsg::decode(&bad),
            Err(DecodeError::Utf8("signal body"))
        );
    }

    #[test]
    fn debug_prints_no_sdp() {
        let s = format!("{:?}", offer(2));
        assert!(!s.contains("sdp"), "{s}");
        assert!(s.contains("body_len: 7"), "{s}");
    }

    #[test]
    fn signal_key_differs_from_clip_key() {
        let dk = DataKey::generate();
        assert_ne!(dk.signal_key(), dk.clip_key());
        assert_eq!(dk.signal_key(), dk.signal_key());
    }
}
