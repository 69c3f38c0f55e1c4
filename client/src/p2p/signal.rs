//! Sealed signalling payloads: what goes inside a `Signal` frame.
//!
//! The relay forwards `Signal { peer, kind, payload }` between devices of one
//! user and can read and change anything it forwards. An SDP offer or answer
//! carries the DTLS certificate fingerprint that authenticates the direct
//! link, so a relay that could swap it could sit in the middle of the
//! "direct" link. Every payload is therefore sealed under the **signal key**,
//! `HKDF-SHA256(data key, info = "clipmesh/v1/signal")`, with the same
//! envelope construction as clips (XChaCha20-Poly1305, the 18-byte header as
//! AAD). Only devices of the account hold the data key.
//!
//! Plaintext of a sealed signal:
//!
//! ```text
//! version u8 = 1 | kind u8 | target u64 | session u64 | body (rest)
//! ```
//!
//! A receiver accepts a payload only when it opens under the signal key,
//! the envelope's sender is the device the relay says sent it, the sealed
//! `kind` equals the frame's `kind`, the sealed `target` is this device, and
//! the envelope sequence number is higher than every earlier one from that
//! sender (replays are refused). `session` names one connection attempt:
//! the offerer picks it at random and answers, candidates and `Bye` carry
//! it back.

use clipmesh_proto::{
    ClipKey, DataKey, DeviceId, Envelope, EnvelopeHeader, EnvelopeKind, SignalKind,
};
use hkdf::Hkdf;
use sha2::Sha256;
use std::collections::HashMap;
use thiserror::Error;
use zeroize::Zeroize;

/// HKDF info string of the signal key.
pub const INFO_SIGNAL: &[u8] = b"clipmesh/v1/signal";
/// Version byte of the sealed plaintext.
pub const SIGNAL_VERSION: u8 = 1;
/// Fixed part of the plaintext: version, kind, target, session.
const FIXED: usize = 1 + 1 + 8 + 8;

/// Derives the signal key from the account's data key.
pub fn signal_key(data_key: &DataKey) -> ClipKey {
    let hk = Hkdf::<Sha256>::new(None, data_key.expose());
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's output limit: this cannot fail.
    if hk.expand(INFO_SIGNAL, &mut out).is_err() {
        out = [0u8; 32];
    }
    let key = ClipKey::from_bytes(out);
    out.zeroize();
    key
}

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

impl std::fmt::Debug for SignalMsg {
    // SDP holds addresses and fingerprints: print its length only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalMsg")
            .field("kind", &self.kind)
            .field("target", &self.target)
            .field("session", &self.session)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Why a received signalling payload was refused. Carries no payload bytes.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum SignalError {
    /// It does not open under the signal key (tampered, forged, or sealed by
    /// a device of another account).
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
}

/// Seals and opens signals for one device, remembering the sequence
/// numbers seen per sender.
pub struct SignalCodec {
    key: ClipKey,
    me: DeviceId,
    next_seq: u64,
    highest: HashMap<DeviceId, u64>,
}

impl std::fmt::Debug for SignalCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalCodec")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl SignalCodec {
    /// A codec for device `me`. `first_seq` is the first sequence number it
    /// seals with (callers use the wall clock in milliseconds, so a restarted
    /// device keeps counting upwards).
    pub fn new(key: ClipKey, me: DeviceId, first_seq: u64) -> Self {
        Self {
            key,
            me,
            next_seq: first_seq.max(1),
            highest: HashMap::new(),
        }
    }

    /// Seals `msg` as this device.
    pub fn seal(&mut self, msg: &SignalMsg) -> Vec<u8> {
        let mut plain = Vec::with_capacity(FIXED + msg.body.len());
        plain.push(SIGNAL_VERSION);
        plain.push(msg.kind as u8);
        plain.extend_from_slice(&msg.target.0.to_be_bytes());
        plain.extend_from_slice(&msg.session.to_be_bytes());
        plain.extend_from_slice(msg.body.as_bytes());
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        let sealed = Envelope::seal(
            &self.key,
            &EnvelopeHeader {
                kind: EnvelopeKind::Clip,
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
        let (header, plain) = Envelope::open(&self.key, payload).map_err(|_| SignalError::Open)?;
        if header.sender != from {
            return Err(SignalError::Sender);
        }
        let msg = parse(&plain)?;
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

    /// Forgets what was seen from `peer` (it went offline; a restarted
    /// device may count from a lower number).
    pub fn forget(&mut self, peer: DeviceId) {
        self.highest.remove(&peer);
    }
}

fn parse(plain: &[u8]) -> Result<SignalMsg, SignalError> {
    if plain.len() < FIXED || plain[0] != SIGNAL_VERSION {
        return Err(SignalError::Malformed);
    }
    let kind = match plain[1] {
        1 => SignalKind::Offer,
        2 => SignalKind::Answer,
        3 => SignalKind::Candidate,
        4 => SignalKind::Bye,
        _ => return Err(SignalError::Malformed),
    };
    let mut b = [0u8; 8];
    b.copy_from_slice(&plain[2..10]);
    let target = DeviceId(u64::from_be_bytes(b));
    b.copy_from_slice(&plain[10..18]);
    let session = u64::from_be_bytes(b);
    let body = std::str::from_utf8(&plain[FIXED..])
        .map_err(|_| SignalError::Malformed)?
        .to_owned();
    Ok(SignalMsg {
        kind,
        target,
        session,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (SignalCodec, SignalCodec) {
        let dk = DataKey::generate();
        (
            SignalCodec::new(signal_key(&dk), DeviceId(1), 100),
            SignalCodec::new(signal_key(&dk), DeviceId(2), 100),
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
        let mut other = SignalCodec::new(signal_key(&DataKey::generate()), DeviceId(1), 1);
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
    fn debug_prints_no_sdp() {
        let s = format!("{:?}", offer(2));
        assert!(!s.contains("sdp"), "{s}");
        assert!(s.contains("body_len: 7"), "{s}");
    }

    #[test]
    fn signal_key_differs_from_clip_key() {
        let dk = DataKey::generate();
        assert_ne!(signal_key(&dk), dk.clip_key());
        assert_eq!(signal_key(&dk), signal_key(&dk));
    }
}
