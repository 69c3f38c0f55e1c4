//! The key hierarchy, in the shape Bitwarden uses.
//!
//! ```text
//! password ──Argon2id(salt16, m, t, p)──▶ master (32 B)
//! master ──HKDF-SHA256(info "clipmesh/v1/auth")──▶ auth_key (32 B)  → sent to the relay at login
//! master ──HKDF-SHA256(info "clipmesh/v1/kek")───▶ kek (32 B)       → never leaves the device
//! data_key (32 random bytes per account) ──XChaCha20-Poly1305 under kek──▶ wrapped data key (relay stores)
//! data_key ──HKDF-SHA256(info "clipmesh/v1/clip")──▶ clip_key        → seals clip envelopes
//! data_key ──HKDF-SHA256(info "clipmesh/v1/signal")──▶ signal_key    → seals signalling envelopes
//! ```
//!
//! Every key type zeroizes on drop and prints as `Name(<redacted>)`.
//! `docs/crypto.md` has the full design and the threat model.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// HKDF info for the key sent to the relay to authenticate.
pub const INFO_AUTH: &[u8] = b"clipmesh/v1/auth";
/// HKDF info for the key-encryption key that wraps the data key.
pub const INFO_KEK: &[u8] = b"clipmesh/v1/kek";
/// HKDF info for the clip subkey derived from the data key.
pub const INFO_CLIP: &[u8] = b"clipmesh/v1/clip";
/// HKDF info for the signal subkey derived from the data key (seals WebRTC
/// signalling, [`crate::signal`]).
pub const INFO_SIGNAL: &[u8] = b"clipmesh/v1/signal";
/// Fixed associated data bound into the wrapped data key.
pub const WRAP_AAD: &[u8] = b"clipmesh/v1/wrapped-data-key";

/// Length of the Argon2id salt.
pub const SALT_LEN: usize = 16;
/// Length of every symmetric key.
pub const KEY_LEN: usize = 32;
/// Length of an XChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Length of a wrapped data key on the wire: nonce, ciphertext, tag.
pub const WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

/// The one way opening an envelope or unwrapping a key fails (re-exported
/// by [`crate::envelope`]).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("could not open envelope")]
pub struct OpenError;

/// Errors from key derivation.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KdfError {
    /// The parameters are outside what this build accepts.
    #[error("kdf parameters out of range")]
    BadParams,
    /// The parameters are below the security floor (a relay may be trying to
    /// downgrade the client so the auth key becomes cheap to brute-force).
    #[error("kdf parameters below the security floor")]
    TooWeak,
    /// The algorithm or version is not one this build knows.
    #[error("unknown kdf algorithm")]
    UnknownAlgorithm,
    /// The parameters are weaker than the ones this device pinned for the
    /// account at its first login (a relay trying a downgrade).
    #[error("kdf parameters weaker than the ones pinned for this account")]
    BelowPinned,
}

/// Argon2id parameters. Stored with the account and versioned so they can be
/// raised later (see `docs/crypto.md`, "Upgrading parameters").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Algorithm name; only `"argon2id"` today.
    pub alg: KdfAlg,
    /// Argon2 version number; only `0x13` (19).
    pub version: u32,
    /// Memory cost in KiB.
    pub m_kib: u32,
    /// Time cost (passes).
    pub t: u32,
    /// Parallelism (lanes).
    pub p: u32,
}

/// The KDF algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KdfAlg {
    /// Argon2id (RFC 9106).
    Argon2id,
}

impl Default for KdfParams {
    fn default() -> Self {
        Self {
            alg: KdfAlg::Argon2id,
            version: 0x13,
            m_kib: 64 * 1024,
            t: 3,
            p: 4,
        }
    }
}

impl KdfParams {
    /// Highest memory cost a client will spend (1 GiB), so a hostile relay
    /// cannot make login exhaust memory.
    pub const MAX_M_KIB: u32 = 1024 * 1024;
    /// Highest time cost a client will spend.
    pub const MAX_T: u32 = 32;
    /// Highest parallelism a client will use.
    pub const MAX_P: u32 = 16;
    /// Security floor for parameters offered by a relay at login: the
    /// documented default memory cost (64 MiB). Parallelism has no floor: a
    /// lower `p` at the same `m` and `t` costs an attacker as much.
    pub const FLOOR_M_KIB: u32 = 64 * 1024;
    /// Security floor for the time cost: the documented default.
    pub const FLOOR_T: u32 = 3;

    /// Checks that the parameters are computable and bounded.
    pub fn check(&self) -> Result<(), KdfError> {
        if self.version != 0x13 {
            return Err(KdfError::UnknownAlgorithm);
        }
        if self.p == 0
            || self.p > Self::MAX_P
            || self.t == 0
            || self.t > Self::MAX_T
            || self.m_kib < 8 * self.p
            || self.m_kib > Self::MAX_M_KIB
        {
            return Err(KdfError::BadParams);
        }
        Ok(())
    }

    /// [`KdfParams::check_floor`] plus the parameters this device pinned for
    /// the account after its first login: memory and time may only go up.
    /// Clients call this on every set of parameters a relay hands them.
    pub fn check_pinned(&self, pinned: Option<&KdfParams>) -> Result<(), KdfError> {
        self.check_floor()?;
        if let Some(pin) = pinned {
            if self.alg != pin.alg
                || self.version != pin.version
                || self.m_kib < pin.m_kib
                || self.t < pin.t
            {
                return Err(KdfError::BelowPinned);
            }
        }
        Ok(())
    }

    /// [`KdfParams::check`] plus the security floor. Clients call this on
    /// parameters a relay hands them at login.
    pub fn check_floor(&self) -> Result<(), KdfError> {
        self.check()?;
        if self.m_kib < Self::FLOOR_M_KIB || self.t < Self::FLOOR_T {
            return Err(KdfError::TooWeak);
        }
        Ok(())
    }
}

macro_rules! secret_key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; KEY_LEN]);

        impl $name {
            /// Wraps raw key bytes.
            pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                Self(bytes)
            }

            /// The raw key bytes. Callers must not log or persist them
            /// outside a secret store.
            pub fn expose(&self) -> &[u8; KEY_LEN] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                use subtle::ConstantTimeEq;
                self.0.ct_eq(&other.0).into()
            }
        }

        impl Eq for $name {}
    };
}

secret_key!(
    /// `Argon2id(password, salt)`. Exists only long enough to derive
    /// [`AuthKey`] and [`Kek`].
    MasterKey
);
secret_key!(
    /// Proves knowledge of the password to the relay. The relay stores only
    /// an Argon2id PHC hash of it.
    AuthKey
);
secret_key!(
    /// Key-encryption key: wraps the [`DataKey`]. Never leaves the device.
    Kek
);
secret_key!(
    /// The account's random data key. Stored by the relay only wrapped.
    DataKey
);
secret_key!(
    /// Subkey of the [`DataKey`] that seals clip envelopes.
    ClipKey
);

fn hkdf_expand(ikm: &[u8; KEY_LEN], info: &[u8]) -> [u8; KEY_LEN] {
    let hk = Hkdf::<Sha256>::new(None, ikm);
    let mut out = [0u8; KEY_LEN];
    // 32 bytes is far below HKDF-SHA256's 255 * 32 byte limit.
    #[allow(clippy::expect_used)]
    hk.expand(info, &mut out)
        .expect("invariant: 32-byte HKDF output is always valid");
    out
}

impl MasterKey {
    /// `Argon2id(password, salt, params)`.
    ///
    /// Takes 0.2–1.5 s at the default parameters; call it off the async
    /// runtime (`spawn_blocking`).
    pub fn derive(
        password: &[u8],
        salt: &[u8; SALT_LEN],
        params: &KdfParams,
    ) -> Result<Self, KdfError> {
        params.check()?;
        let p = argon2::Params::new(params.m_kib, params.t, params.p, Some(KEY_LEN))
            .map_err(|_| KdfError::BadParams)?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
        let mut out = [0u8; KEY_LEN];
        argon
            .hash_password_into(password, salt, &mut out)
            .map_err(|_| KdfError::BadParams)?;
        Ok(Self(out))
    }

    /// Splits the master key into the auth key and the KEK.
    pub fn split(&self) -> (AuthKey, Kek) {
        (
            AuthKey(hkdf_expand(&self.0, INFO_AUTH)),
            Kek(hkdf_expand(&self.0, INFO_KEK)),
        )
    }
}

/// A random 16-byte salt for a new account or a password change.
pub fn random_salt() -> [u8; SALT_LEN] {
    let mut s = [0u8; SALT_LEN];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

pub(crate) fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// A data key wrapped under a KEK: `nonce(24) | ciphertext(32) | tag(16)`.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDataKey(pub [u8; WRAPPED_LEN]);

impl fmt::Debug for WrappedDataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WrappedDataKey({} bytes)", WRAPPED_LEN)
    }
}

impl WrappedDataKey {
    /// Parses the wire form; any other length is an error.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(Self(b.try_into().ok()?))
    }

    /// Lower-case hex, as used in the JSON API.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses lower- or upper-case hex.
    pub fn from_hex(s: &str) -> Option<Self> {
        Self::from_slice(&hex::decode(s).ok()?)
    }
}

impl DataKey {
    /// A fresh random data key.
    pub fn generate() -> Self {
        let mut k = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut k);
        Self(k)
    }

    /// The subkey that seals clips.
    pub fn clip_key(&self) -> ClipKey {
        ClipKey(hkdf_expand(&self.0, INFO_CLIP))
    }

    /// The subkey that seals WebRTC signalling ([`crate::signal`]). A
    /// different key from [`DataKey::clip_key`], so a signal never opens as
    /// a clip. (Same key type: both seal [`crate::Envelope`]s.)
    pub fn signal_key(&self) -> ClipKey {
        ClipKey(hkdf_expand(&self.0, INFO_SIGNAL))
    }
}

impl Kek {
    /// Wraps `data_key` with a random nonce.
    pub fn wrap(&self, data_key: &DataKey) -> WrappedDataKey {
        self.wrap_with_nonce(data_key, &random_nonce())
    }

    /// Wraps with a caller-chosen nonce. Only for test vectors: reusing a
    /// nonce under one KEK is catastrophic.
    pub fn wrap_with_nonce(&self, data_key: &DataKey, nonce: &[u8; NONCE_LEN]) -> WrappedDataKey {
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&self.0));
        let mut buf = data_key.0;
        // Encrypting 32 bytes cannot exceed the AEAD's length limit.
        #[allow(clippy::expect_used)]
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(nonce), WRAP_AAD, &mut buf)
            .expect("invariant: 32-byte plaintext is within AEAD limits");
        let mut out = [0u8; WRAPPED_LEN];
        out[..NONCE_LEN].copy_from_slice(nonce);
        out[NONCE_LEN..NONCE_LEN + KEY_LEN].copy_from_slice(&buf);
        out[NONCE_LEN + KEY_LEN..].copy_from_slice(&tag);
        buf.zeroize();
        out.into()
    }

    /// Unwraps a data key. Fails in one way only, e.g. for a wrong password.
    pub fn unwrap(&self, wrapped: &WrappedDataKey) -> Result<DataKey, OpenError> {
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&self.0));
        let (nonce, rest) = wrapped.0.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(KEY_LEN);
        let mut buf = [0u8; KEY_LEN];
        buf.copy_from_slice(ct);
        cipher
            .decrypt_in_place_detached(XNonce::from_slice(nonce), WRAP_AAD, &mut buf, tag.into())
            .map_err(|_| OpenError)?;
        let key = DataKey(buf);
        buf.zeroize();
        Ok(key)
    }
}

impl From<[u8; WRAPPED_LEN]> for WrappedDataKey {
    fn from(b: [u8; WRAPPED_LEN]) -> Self {
        Self(b)
    }
}

/// Derives everything a client needs from the password in one call:
/// `(auth_key, kek)`.
pub fn derive_keys(
    password: &[u8],
    salt: &[u8; SALT_LEN],
    params: &KdfParams,
) -> Result<(AuthKey, Kek), KdfError> {
    Ok(MasterKey::derive(password, salt, params)?.split())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> KdfParams {
        KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
            ..KdfParams::default()
        }
    }

    #[test]
    fn debug_is_redacted() {
        let k = DataKey::from_bytes([0xab; 32]);
        let s = format!("{k:?}");
        assert_eq!(s, "DataKey(<redacted>)");
        assert!(!s.contains("ab"));
    }

    #[test]
    fn wrap_unwrap_roundtrip_and_wrong_kek_fails() {
        let (_, kek) = derive_keys(b"pw", &[1; 16], &small()).unwrap();
        let (_, other) = derive_keys(b"pw2", &[1; 16], &small()).unwrap();
        let dk = DataKey::generate();
        let w = kek.wrap(&dk);
        assert_eq!(kek.unwrap(&w).unwrap(), dk);
        assert_eq!(other.unwrap(&w), Err(OpenError));
    }

    #[test]
    fn auth_and_kek_differ() {
        let (a, k) = derive_keys(b"pw", &[2; 16], &small()).unwrap();
        assert_ne!(a.expose(), k.expose());
    }

    #[test]
    fn params_are_bounded() {
        assert_eq!(KdfParams::default().check_floor(), Ok(()));
        assert_eq!(small().check_floor(), Err(KdfError::TooWeak));
        let huge = KdfParams {
            m_kib: u32::MAX,
            ..KdfParams::default()
        };
        assert_eq!(huge.check(), Err(KdfError::BadParams));
        let bad_version = KdfParams {
            version: 0x10,
            ..KdfParams::default()
        };
        assert_eq!(bad_version.check(), Err(KdfError::UnknownAlgorithm));
        // The old floor (OWASP's 19 MiB, t = 2) is now refused.
        let owasp = KdfParams {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
            ..KdfParams::default()
        };
        assert_eq!(owasp.check_floor(), Err(KdfError::TooWeak));
    }

    #[test]
    fn pinned_parameters_only_go_up() {
        let d = KdfParams::default();
        assert_eq!(d.check_pinned(None), Ok(()));
        assert_eq!(d.check_pinned(Some(&d)), Ok(()));
        let up = KdfParams {
            m_kib: 128 * 1024,
            ..d
        };
        assert_eq!(up.check_pinned(Some(&d)), Ok(()));
        assert_eq!(d.check_pinned(Some(&up)), Err(KdfError::BelowPinned));
        let fewer_passes = KdfParams { t: 4, ..up };
        let pin = KdfParams { t: 5, ..up };
        assert_eq!(
            fewer_passes.check_pinned(Some(&pin)),
            Err(KdfError::BelowPinned)
        );
        assert_eq!(small().check_pinned(None), Err(KdfError::TooWeak));
    }
}
