//! Key epochs (protocol v2): one random data key per epoch, how it is
//! delivered to devices, and what is derived from it.
//!
//! ```text
//! epoch_key (32 random B, epoch n)
//!   ──HKDF-SHA256(salt = "clipmesh/v2/epoch" | n u32 BE, info "clipmesh/v2/clip")──▶ clip key of epoch n
//!   ──HKDF-SHA256(salt = same,                      info "clipmesh/v2/roster")──▶ roster key of epoch n
//!
//! to a device (X25519 + Ed25519, by the device that starts the epoch):
//!   eph ← random X25519; shared = X25519(eph, recipient.x25519)   (all-zero refused)
//!   k   = HKDF-SHA256(salt = eph_pub | recipient.x25519, ikm = shared, info "clipmesh/v2/epoch-wrap")
//!   aad = "clipmesh/v2/epoch-wrap" | n u32 BE | sender u64 BE | recipient u64 BE
//!   body = eph_pub (32) | nonce (24) | XChaCha20-Poly1305(k, nonce, aad, epoch_key) (48)
//!   wire = body | Ed25519(sender, aad | body) (64)                           = 168 B
//!
//! under the password (OPAQUE export key, for a device that joins with the password):
//!   aad  = "clipmesh/v2/epoch-export-wrap" | n u32 BE
//!   wire = nonce (24) | XChaCha20-Poly1305(export_kek, nonce, aad, epoch_key) (48)   = 72 B
//!
//! device certificate (who belongs to the account in epoch n):
//!   cert = HMAC-SHA256(roster key of n, "clipmesh/v2/device-cert" | n u32 BE | device u64 BE | DevicePublic)
//! ```
//!
//! The relay stores and forwards all of these; it cannot open or forge any
//! of them. A revoked device is not a recipient of the next epoch's wraps and
//! does not know the new password, so it learns nothing sealed after it.

use crate::device::{DevicePublic, DeviceSecrets, SIGNATURE_LEN};
use crate::envelope::OpenError;
use crate::ids::DeviceId;
use crate::keys::{random_nonce, ClipKey, KEY_LEN, NONCE_LEN, TAG_LEN};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Salt prefix of the per-epoch derivations.
pub const EPOCH_SALT_PREFIX: &[u8] = b"clipmesh/v2/epoch";
/// HKDF info of the clip key of an epoch.
pub const INFO_CLIP_V2: &[u8] = b"clipmesh/v2/clip";
/// HKDF info of the roster (device certificate) key of an epoch.
pub const INFO_ROSTER: &[u8] = b"clipmesh/v2/roster";
/// HKDF info and AAD prefix of an epoch key wrapped to a device.
pub const INFO_EPOCH_WRAP: &[u8] = b"clipmesh/v2/epoch-wrap";
/// AAD prefix of an epoch key wrapped under the export KEK.
pub const EXPORT_WRAP_AAD: &[u8] = b"clipmesh/v2/epoch-export-wrap";
/// Domain prefix of a device certificate.
pub const CERT_DOMAIN: &[u8] = b"clipmesh/v2/device-cert";
/// Length of [`DeviceWrappedKey`].
pub const DEVICE_WRAPPED_LEN: usize = 32 + NONCE_LEN + KEY_LEN + TAG_LEN + SIGNATURE_LEN;
/// Length of [`ExportWrappedKey`].
pub const EXPORT_WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;
/// Length of a device certificate.
pub const CERT_LEN: usize = 32;

/// A key epoch number. Epoch 0 is the v1 data key of an upgraded account;
/// new v2 accounts start at 1. Each revoke or password change adds one.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u32);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

impl Epoch {
    /// The next epoch, or `None` at the (unreachable) top.
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }

    fn salt(self) -> Vec<u8> {
        let mut s = EPOCH_SALT_PREFIX.to_vec();
        s.extend_from_slice(&self.0.to_be_bytes());
        s
    }
}

fn hkdf32(salt: Option<&[u8]>, ikm: &[u8], info: &[u8]) -> [u8; KEY_LEN] {
    let hk = Hkdf::<Sha256>::new(salt, ikm);
    let mut out = [0u8; KEY_LEN];
    // 32 bytes is far below HKDF-SHA256's output limit.
    #[allow(clippy::expect_used)]
    hk.expand(info, &mut out)
        .expect("invariant: 32-byte HKDF output is always valid");
    out
}

fn aead_seal(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    pt: &[u8; KEY_LEN],
) -> [u8; KEY_LEN + TAG_LEN] {
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let mut buf = *pt;
    // Encrypting 32 bytes cannot exceed the AEAD's length limit.
    #[allow(clippy::expect_used)]
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut buf)
        .expect("invariant: 32-byte plaintext is within AEAD limits");
    let mut out = [0u8; KEY_LEN + TAG_LEN];
    out[..KEY_LEN].copy_from_slice(&buf);
    out[KEY_LEN..].copy_from_slice(&tag);
    buf.zeroize();
    out
}

fn aead_open(
    key: &[u8; KEY_LEN],
    nonce: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> Result<EpochKey, OpenError> {
    if ct.len() != KEY_LEN + TAG_LEN || nonce.len() != NONCE_LEN {
        return Err(OpenError);
    }
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let mut buf = [0u8; KEY_LEN];
    buf.copy_from_slice(&ct[..KEY_LEN]);
    cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            aad,
            &mut buf,
            Tag::from_slice(&ct[KEY_LEN..]),
        )
        .map_err(|_| OpenError)?;
    let k = EpochKey(buf);
    buf.zeroize();
    Ok(k)
}

/// The random data key of one epoch. Zeroized on drop; `Debug` is redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct EpochKey([u8; KEY_LEN]);

impl fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EpochKey(<redacted>)")
    }
}

/// The key-encryption key an OPAQUE registration provides (from its export
/// key). Wraps the current epoch key for devices that join with the password.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct ExportKek([u8; KEY_LEN]);

impl fmt::Debug for ExportKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExportKek(<redacted>)")
    }
}

impl ExportKek {
    /// Wraps raw bytes (test vectors).
    pub fn from_bytes(b: [u8; KEY_LEN]) -> Self {
        Self(b)
    }

    /// The raw bytes. Never log or persist them.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Wraps `key` of `epoch` with a random nonce.
    pub fn wrap(&self, epoch: Epoch, key: &EpochKey) -> ExportWrappedKey {
        self.wrap_with_nonce(epoch, key, &random_nonce())
    }

    /// Wraps with a caller-chosen nonce. Only for test vectors.
    pub fn wrap_with_nonce(
        &self,
        epoch: Epoch,
        key: &EpochKey,
        nonce: &[u8; NONCE_LEN],
    ) -> ExportWrappedKey {
        let aad = export_aad(epoch);
        let ct = aead_seal(&self.0, nonce, &aad, &key.0);
        let mut out = [0u8; EXPORT_WRAPPED_LEN];
        out[..NONCE_LEN].copy_from_slice(nonce);
        out[NONCE_LEN..].copy_from_slice(&ct);
        ExportWrappedKey(out)
    }

    /// Unwraps; the epoch is authenticated, so a wrap of another epoch fails.
    pub fn unwrap(&self, epoch: Epoch, wrapped: &ExportWrappedKey) -> Result<EpochKey, OpenError> {
        let (nonce, ct) = wrapped.0.split_at(NONCE_LEN);
        aead_open(&self.0, nonce, &export_aad(epoch), ct)
    }
}

fn export_aad(epoch: Epoch) -> Vec<u8> {
    let mut a = EXPORT_WRAP_AAD.to_vec();
    a.extend_from_slice(&epoch.0.to_be_bytes());
    a
}

fn device_aad(epoch: Epoch, sender: DeviceId, recipient: DeviceId) -> Vec<u8> {
    let mut a = INFO_EPOCH_WRAP.to_vec();
    a.extend_from_slice(&epoch.0.to_be_bytes());
    a.extend_from_slice(&sender.0.to_be_bytes());
    a.extend_from_slice(&recipient.0.to_be_bytes());
    a
}

impl EpochKey {
    /// A fresh random epoch key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut k = [0u8; KEY_LEN];
        rng.fill_bytes(&mut k);
        Self(k)
    }

    /// Wraps raw bytes: test vectors, and the v1 data key of an upgraded
    /// account, which becomes epoch 0.
    pub fn from_bytes(b: [u8; KEY_LEN]) -> Self {
        Self(b)
    }

    /// The raw bytes. Never log or persist them outside a secret store.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key that seals and opens envelopes of `epoch`.
    pub fn clip_key(&self, epoch: Epoch) -> ClipKey {
        ClipKey::from_bytes(hkdf32(Some(&epoch.salt()), &self.0, INFO_CLIP_V2))
    }

    fn roster_key(&self, epoch: Epoch) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(hkdf32(Some(&epoch.salt()), &self.0, INFO_ROSTER))
    }

    fn cert_mac(&self, epoch: Epoch, device: DeviceId, public: &DevicePublic) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        #[allow(clippy::expect_used)]
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.roster_key(epoch).as_ref())
            .expect("invariant: HMAC takes any key length");
        m.update(CERT_DOMAIN);
        m.update(&epoch.0.to_be_bytes());
        m.update(&device.0.to_be_bytes());
        m.update(&public.to_bytes());
        m
    }

    /// Certifies that `device` with `public` belongs to the account in
    /// `epoch`. Only holders of this epoch's key can make one; the relay
    /// stores it with the device's public key.
    pub fn certify(&self, epoch: Epoch, device: DeviceId, public: &DevicePublic) -> [u8; CERT_LEN] {
        self.cert_mac(epoch, device, public)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Checks a certificate in constant time.
    pub fn verify_cert(
        &self,
        epoch: Epoch,
        device: DeviceId,
        public: &DevicePublic,
        cert: &[u8],
    ) -> Result<(), OpenError> {
        self.cert_mac(epoch, device, public)
            .verify_slice(cert)
            .map_err(|_| OpenError)
    }

    /// Wraps this key of `epoch` to `recipient`, signed by `sender`.
    pub fn wrap_to_device<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
        epoch: Epoch,
        sender: (DeviceId, &DeviceSecrets),
        recipient: (DeviceId, &DevicePublic),
    ) -> Result<DeviceWrappedKey, OpenError> {
        let mut eph = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(eph.as_mut());
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        self.wrap_to_device_with(&eph, &nonce, epoch, sender, recipient)
    }

    /// [`EpochKey::wrap_to_device`] with a caller-chosen ephemeral secret
    /// and nonce. Only for test vectors.
    pub fn wrap_to_device_with(
        &self,
        eph_secret: &[u8; 32],
        nonce: &[u8; NONCE_LEN],
        epoch: Epoch,
        sender: (DeviceId, &DeviceSecrets),
        recipient: (DeviceId, &DevicePublic),
    ) -> Result<DeviceWrappedKey, OpenError> {
        let eph = x25519_dalek::StaticSecret::from(*eph_secret);
        let eph_pub = x25519_dalek::PublicKey::from(&eph).to_bytes();
        let shared = eph.diffie_hellman(&x25519_dalek::PublicKey::from(recipient.1.x25519));
        if !shared.was_contributory() {
            return Err(OpenError);
        }
        let k = Zeroizing::new(wrap_kek(shared.as_bytes(), &eph_pub, &recipient.1.x25519));
        let aad = device_aad(epoch, sender.0, recipient.0);
        let ct = aead_seal(&k, nonce, &aad, &self.0);
        let mut out = [0u8; DEVICE_WRAPPED_LEN];
        out[..32].copy_from_slice(&eph_pub);
        out[32..32 + NONCE_LEN].copy_from_slice(nonce);
        out[32 + NONCE_LEN..DEVICE_WRAPPED_LEN - SIGNATURE_LEN].copy_from_slice(&ct);
        let mut signed = aad;
        signed.extend_from_slice(&out[..DEVICE_WRAPPED_LEN - SIGNATURE_LEN]);
        let sig = sender.1.sign(&signed);
        out[DEVICE_WRAPPED_LEN - SIGNATURE_LEN..].copy_from_slice(&sig);
        Ok(DeviceWrappedKey(out))
    }
}

fn wrap_kek(shared: &[u8; 32], eph_pub: &[u8; 32], recipient: &[u8; 32]) -> [u8; KEY_LEN] {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph_pub);
    salt[32..].copy_from_slice(recipient);
    hkdf32(Some(&salt), shared, INFO_EPOCH_WRAP)
}

/// An epoch key wrapped to one device and signed by the device that made
/// the epoch: `eph_pub (32) | nonce (24) | ciphertext+tag (48) | signature (64)`.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceWrappedKey(pub [u8; DEVICE_WRAPPED_LEN]);

impl fmt::Debug for DeviceWrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceWrappedKey({DEVICE_WRAPPED_LEN} bytes)")
    }
}

impl DeviceWrappedKey {
    /// Parses the wire form (exact length only).
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(Self(b.try_into().ok()?))
    }

    /// Lower-case hex (JSON API).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses [`DeviceWrappedKey::to_hex`].
    pub fn from_hex(s: &str) -> Option<Self> {
        Self::from_slice(&hex::decode(s).ok()?)
    }

    /// Checks the sender's signature, then opens the key with the
    /// recipient's secrets. `sender_public` must come from the recipient's
    /// own pinned roster, never from the relay's word alone. Fails in one way.
    pub fn open(
        &self,
        epoch: Epoch,
        sender: (DeviceId, &DevicePublic),
        recipient: (DeviceId, &DeviceSecrets),
    ) -> Result<EpochKey, OpenError> {
        let body_len = DEVICE_WRAPPED_LEN - SIGNATURE_LEN;
        let aad = device_aad(epoch, sender.0, recipient.0);
        let mut signed = aad.clone();
        signed.extend_from_slice(&self.0[..body_len]);
        let mut sig = [0u8; SIGNATURE_LEN];
        sig.copy_from_slice(&self.0[body_len..]);
        sender.1.verify(&signed, &sig)?;
        let mut eph_pub = [0u8; 32];
        eph_pub.copy_from_slice(&self.0[..32]);
        let shared = recipient.1.dh(&eph_pub)?;
        let k = Zeroizing::new(wrap_kek(&shared, &eph_pub, &recipient.1.public().x25519));
        aead_open(
            &k,
            &self.0[32..32 + NONCE_LEN],
            &aad,
            &self.0[32 + NONCE_LEN..body_len],
        )
    }
}

/// An epoch key wrapped under an [`ExportKek`]: `nonce (24) | ciphertext+tag (48)`.
#[derive(Clone, PartialEq, Eq)]
pub struct ExportWrappedKey(pub [u8; EXPORT_WRAPPED_LEN]);

impl fmt::Debug for ExportWrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExportWrappedKey({EXPORT_WRAPPED_LEN} bytes)")
    }
}

impl ExportWrappedKey {
    /// Parses the wire form (exact length only).
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(Self(b.try_into().ok()?))
    }

    /// Lower-case hex (JSON API).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses [`ExportWrappedKey::to_hex`].
    pub fn from_hex(s: &str) -> Option<Self> {
        Self::from_slice(&hex::decode(s).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    #[test]
    fn device_wrap_roundtrip_and_every_failure_is_one_error() {
        let ek = EpochKey::generate(&mut OsRng);
        let a = DeviceSecrets::generate(&mut OsRng);
        let b = DeviceSecrets::generate(&mut OsRng);
        let c = DeviceSecrets::generate(&mut OsRng);
        let (da, db, dc) = (DeviceId(1), DeviceId(2), DeviceId(3));
        let e = Epoch(4);
        let w = ek
            .wrap_to_device(&mut OsRng, e, (da, &a), (db, &b.public()))
            .unwrap();
        assert_eq!(w.open(e, (da, &a.public()), (db, &b)).unwrap(), ek);
        // Wrong recipient, wrong epoch, wrong claimed sender, forged sender key.
        assert!(w.open(e, (da, &a.public()), (dc, &c)).is_err());
        assert!(w.open(e, (da, &a.public()), (db, &c)).is_err());
        assert!(w.open(Epoch(5), (da, &a.public()), (db, &b)).is_err());
        assert!(w.open(e, (dc, &a.public()), (db, &b)).is_err());
        assert!(w.open(e, (da, &c.public()), (db, &b)).is_err());
        for i in 0..DEVICE_WRAPPED_LEN {
            let mut bad = w.clone();
            bad.0[i] ^= 1;
            assert!(
                bad.open(e, (da, &a.public()), (db, &b)).is_err(),
                "byte {i}"
            );
        }
    }

    #[test]
    fn wrap_to_low_order_key_is_refused() {
        let ek = EpochKey::generate(&mut OsRng);
        let a = DeviceSecrets::generate(&mut OsRng);
        let mut evil = a.public();
        evil.x25519 = [0; 32];
        assert!(ek
            .wrap_to_device(
                &mut OsRng,
                Epoch(1),
                (DeviceId(1), &a),
                (DeviceId(2), &evil)
            )
            .is_err());
    }

    #[test]
    fn export_wrap_binds_the_epoch() {
        let kek = ExportKek::from_bytes([9; 32]);
        let ek = EpochKey::generate(&mut OsRng);
        let w = kek.wrap(Epoch(2), &ek);
        assert_eq!(kek.unwrap(Epoch(2), &w).unwrap(), ek);
        assert!(kek.unwrap(Epoch(3), &w).is_err());
        assert!(ExportKek::from_bytes([8; 32]).unwrap(Epoch(2), &w).is_err());
    }

    #[test]
    fn clip_keys_differ_per_epoch_and_certs_bind_everything() {
        let ek = EpochKey::from_bytes([3; 32]);
        assert_ne!(ek.clip_key(Epoch(1)), ek.clip_key(Epoch(2)));
        let p = DeviceSecrets::from_bytes(&[4; 64]).public();
        let cert = ek.certify(Epoch(1), DeviceId(7), &p);
        assert!(ek.verify_cert(Epoch(1), DeviceId(7), &p, &cert).is_ok());
        assert!(ek.verify_cert(Epoch(2), DeviceId(7), &p, &cert).is_err());
        assert!(ek.verify_cert(Epoch(1), DeviceId(8), &p, &cert).is_err());
        let q = DeviceSecrets::from_bytes(&[5; 64]).public();
        assert!(ek.verify_cert(Epoch(1), DeviceId(7), &q, &cert).is_err());
        assert!(EpochKey::from_bytes([6; 32])
            .verify_cert(Epoch(1), DeviceId(7), &p, &cert)
            .is_err());
        assert_eq!(format!("{ek:?}"), "EpochKey(<redacted>)");
    }
}
