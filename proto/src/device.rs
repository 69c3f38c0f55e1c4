//! Device key pairs (protocol v2): X25519 to receive epoch keys, Ed25519 to
//! sign what the device sends, and the safety number users compare.
//!
//! ```text
//! DeviceSecrets  = x25519 secret (32) | ed25519 seed (32)      → OS secret store only
//! DevicePublic   = x25519 public (32) | ed25519 public (32)    → relay keeps it with the session
//! fingerprint    = SHA-256("clipmesh/v2/fingerprint" | DevicePublic)[..30]
//!                  → six 5-digit groups, each 5 bytes big-endian mod 100000
//! ```
//!
//! Why signatures and not per-device MAC keys: a MAC key derived from the
//! shared epoch key is known to every device of the account, so any of them
//! could forge a third device's clips. Pairwise MAC keys would fix that but
//! need one tag per recipient. An Ed25519 signature (64 bytes) is verifiable
//! by everyone and forgeable by no one but the sender. `docs/crypto.md` has
//! the trade-off.

use crate::envelope::OpenError;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use std::fmt;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

/// Length of [`DevicePublic`] on the wire.
pub const DEVICE_PUBLIC_LEN: usize = 64;
/// Length of [`DeviceSecrets`] in the secret store.
pub const DEVICE_SECRETS_LEN: usize = 64;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Domain prefix of the fingerprint hash.
pub const FINGERPRINT_DOMAIN: &[u8] = b"clipmesh/v2/fingerprint";

/// A device's private keys. Zeroized on drop; `Debug` is redacted.
#[derive(Clone)]
pub struct DeviceSecrets {
    x25519: StaticSecret,
    ed25519: SigningKey,
}

impl fmt::Debug for DeviceSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceSecrets(<redacted>)")
    }
}

impl DeviceSecrets {
    /// Fresh key pairs from `rng`.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut b = Zeroizing::new([0u8; DEVICE_SECRETS_LEN]);
        rng.fill_bytes(b.as_mut());
        Self::from_bytes(&b)
    }

    /// From the stored form: X25519 secret, then the Ed25519 seed.
    pub fn from_bytes(b: &[u8; DEVICE_SECRETS_LEN]) -> Self {
        let mut x = [0u8; 32];
        let mut e = [0u8; 32];
        x.copy_from_slice(&b[..32]);
        e.copy_from_slice(&b[32..]);
        let out = Self {
            x25519: StaticSecret::from(x),
            ed25519: SigningKey::from_bytes(&e),
        };
        x.zeroize();
        e.zeroize();
        out
    }

    /// The stored form. Secret: only for the OS secret store.
    pub fn to_bytes(&self) -> Zeroizing<[u8; DEVICE_SECRETS_LEN]> {
        let mut out = Zeroizing::new([0u8; DEVICE_SECRETS_LEN]);
        out[..32].copy_from_slice(self.x25519.as_bytes());
        out[32..].copy_from_slice(self.ed25519.as_bytes());
        out
    }

    /// The public half, to register with the relay.
    pub fn public(&self) -> DevicePublic {
        DevicePublic {
            x25519: XPublic::from(&self.x25519).to_bytes(),
            ed25519: self.ed25519.verifying_key().to_bytes(),
        }
    }

    /// Ed25519 signature over `msg` (deterministic, RFC 8032).
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.ed25519.sign(msg).to_bytes()
    }

    /// X25519 with `peer`. Fails on a low-order peer key (all-zero output),
    /// which only a hostile relay would hand out.
    pub(crate) fn dh(&self, peer: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, OpenError> {
        let shared = self.x25519.diffie_hellman(&XPublic::from(*peer));
        if !shared.was_contributory() {
            return Err(OpenError);
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }
}

/// A device's public keys, as the relay stores and hands them out.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevicePublic {
    /// X25519 public key (receives wrapped epoch keys).
    pub x25519: [u8; 32],
    /// Ed25519 public key (verifies the device's envelopes and wraps).
    pub ed25519: [u8; 32],
}

impl fmt::Debug for DevicePublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevicePublic({})", self.fingerprint())
    }
}

impl DevicePublic {
    /// The 64-byte wire form.
    pub fn to_bytes(&self) -> [u8; DEVICE_PUBLIC_LEN] {
        let mut out = [0u8; DEVICE_PUBLIC_LEN];
        out[..32].copy_from_slice(&self.x25519);
        out[32..].copy_from_slice(&self.ed25519);
        out
    }

    /// Parses the wire form. The Ed25519 key must be a valid point; the
    /// X25519 key is checked when it is used.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        if b.len() != DEVICE_PUBLIC_LEN {
            return None;
        }
        let mut x = [0u8; 32];
        let mut e = [0u8; 32];
        x.copy_from_slice(&b[..32]);
        e.copy_from_slice(&b[32..]);
        VerifyingKey::from_bytes(&e).ok()?;
        Some(Self {
            x25519: x,
            ed25519: e,
        })
    }

    /// Lower-case hex of the wire form (JSON API).
    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    /// Parses [`DevicePublic::to_hex`].
    pub fn from_hex(s: &str) -> Option<Self> {
        Self::from_slice(&hex::decode(s).ok()?)
    }

    /// Verifies an Ed25519 signature by this device (strict: no malleable
    /// or small-order signatures). Fails in one way.
    pub fn verify(&self, msg: &[u8], sig: &[u8; SIGNATURE_LEN]) -> Result<(), OpenError> {
        let key = VerifyingKey::from_bytes(&self.ed25519).map_err(|_| OpenError)?;
        key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
            .map_err(|_| OpenError)
    }

    /// The safety number shown by `clipmesh devices`: 30 digits in six
    /// groups, the same on every device that holds the same public keys.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(FINGERPRINT_DOMAIN);
        h.update(self.to_bytes());
        let d = h.finalize();
        let mut groups = [0u32; 6];
        for (i, g) in groups.iter_mut().enumerate() {
            let mut v: u64 = 0;
            for b in &d[i * 5..i * 5 + 5] {
                v = (v << 8) | u64::from(*b);
            }
            *g = (v % 100_000) as u32;
        }
        Fingerprint(groups)
    }
}

/// A device's safety number: six groups of five digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u32; 6]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{g:05}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    #[test]
    fn secrets_roundtrip_and_redact() {
        let s = DeviceSecrets::generate(&mut OsRng);
        let again = DeviceSecrets::from_bytes(&s.to_bytes());
        assert_eq!(s.public(), again.public());
        assert_eq!(format!("{s:?}"), "DeviceSecrets(<redacted>)");
    }

    #[test]
    fn sign_verify_and_tamper() {
        let s = DeviceSecrets::generate(&mut OsRng);
        let p = s.public();
        let sig = s.sign(b"msg");
        assert_eq!(p.verify(b"msg", &sig), Ok(()));
        assert_eq!(p.verify(b"msh", &sig), Err(OpenError));
        let other = DeviceSecrets::generate(&mut OsRng).public();
        assert_eq!(other.verify(b"msg", &sig), Err(OpenError));
    }

    #[test]
    fn public_wire_roundtrip_and_bad_input() {
        let p = DeviceSecrets::generate(&mut OsRng).public();
        assert_eq!(DevicePublic::from_hex(&p.to_hex()), Some(p));
        assert_eq!(DevicePublic::from_slice(&[0; 63]), None);
        assert_eq!(DevicePublic::from_hex("zz"), None);
    }

    #[test]
    fn low_order_peer_is_refused() {
        let s = DeviceSecrets::generate(&mut OsRng);
        assert!(s.dh(&[0; 32]).is_err());
    }

    #[test]
    fn fingerprint_has_six_groups() {
        let p = DeviceSecrets::from_bytes(&[1; 64]).public();
        let f = p.fingerprint().to_string();
        assert_eq!(f.len(), 6 * 5 + 5);
        assert_eq!(f.split(' ').count(), 6);
    }
}
