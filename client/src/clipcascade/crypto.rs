//! ClipCascade's end-to-end encryption, as its clients do it, so a clipmesh
//! device on the ClipCascade profile reads and writes their payloads.
//!
//! - Key: PBKDF2-HMAC-SHA256 over the UTF-8 password, salted with the UTF-8
//!   bytes of username + password + custom salt (no separators), 664,937
//!   iterations by default, 32 bytes out.
//! - Cipher: AES-256-GCM, 16-byte tag, no AAD. We send a random 16-byte
//!   nonce (as the desktop client does) and accept 12- and 16-byte nonces.
//! - The encrypted payload is the JSON text
//!   `{"nonce":"<b64>","ciphertext":"<b64>","tag":"<b64>"}`.
//!
//! This is ClipCascade's design, weaker than clipmesh's own (the salt is
//! derived from the password, and the server sees a fast hash of the same
//! password at login): see `docs/crypto.md`. It exists so mixed fleets work.
//!
//! Opening fails in exactly one way ([`OpenError`]), with no detail.

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{Aes256Gcm, AesGcm, Nonce, Tag};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use sha3::Digest;
use zeroize::Zeroizing;

/// ClipCascade's default PBKDF2 iteration count.
pub const DEFAULT_ITERATIONS: u32 = 664_937;
/// The nonce length we send (the desktop client's).
pub const NONCE_LEN: usize = 16;
/// Fewest iterations accepted from configuration.
pub const MIN_ITERATIONS: u32 = 10_000;

/// AES-256-GCM with a 16-byte nonce.
type Aes256Gcm16 = AesGcm<Aes256, U16>;

/// A payload did not open: bad JSON, bad base64, bad nonce length, or a
/// failed tag check. Deliberately without detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("payload does not decrypt")]
pub struct OpenError;

/// The lowercase hex SHA3-512 of the password: what ClipCascade clients
/// send as `password` when they log in.
pub fn login_hash(password: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(hex::encode(sha3::Sha3_512::digest(password)))
}

/// The ClipCascade clip key.
pub struct CcKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for CcKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CcKey(<redacted>)")
    }
}

/// The plaintext is too long for AES-GCM (64 GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("item too large to encrypt")]
pub struct SealError;

#[derive(Deserialize)]
struct Sealed {
    nonce: String,
    ciphertext: String,
    tag: String,
}

impl CcKey {
    /// Derives the key as ClipCascade's clients do.
    pub fn derive(username: &str, password: &[u8], custom_salt: &str, iterations: u32) -> Self {
        let mut salt = Zeroizing::new(Vec::with_capacity(
            username.len() + password.len() + custom_salt.len(),
        ));
        salt.extend_from_slice(username.as_bytes());
        salt.extend_from_slice(password);
        salt.extend_from_slice(custom_salt.as_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, &salt, iterations, &mut key[..]);
        Self(key)
    }

    /// A key from its stored bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(Zeroizing::new(b))
    }

    /// The key's bytes (to store it in the secret store).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Encrypts `plaintext` into the payload JSON text.
    pub fn seal(&self, plaintext: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        self.seal_with_nonce(plaintext, &nonce)
    }

    fn seal_with_nonce(
        &self,
        plaintext: &[u8],
        nonce: &[u8; NONCE_LEN],
    ) -> Result<String, SealError> {
        let cipher = Aes256Gcm16::new(aes_gcm::Key::<Aes256Gcm16>::from_slice(&self.0[..]));
        let mut buf = plaintext.to_vec();
        let tag = cipher
            .encrypt_in_place_detached(Nonce::<U16>::from_slice(nonce), b"", &mut buf)
            .map_err(|_| SealError)?;
        // Base64 needs no JSON escaping.
        Ok(format!(
            "{{\"nonce\":\"{}\",\"ciphertext\":\"{}\",\"tag\":\"{}\"}}",
            B64.encode(nonce),
            B64.encode(&buf),
            B64.encode(tag)
        ))
    }

    /// Decrypts a payload JSON text, with a 12- or 16-byte nonce.
    pub fn open(&self, payload: &str) -> Result<Vec<u8>, OpenError> {
        let sealed: Sealed = serde_json::from_str(payload).map_err(|_| OpenError)?;
        let nonce = B64.decode(&sealed.nonce).map_err(|_| OpenError)?;
        let mut buf = B64.decode(&sealed.ciphertext).map_err(|_| OpenError)?;
        let tag = B64.decode(&sealed.tag).map_err(|_| OpenError)?;
        if tag.len() != 16 {
            return Err(OpenError);
        }
        let tag = Tag::from_slice(&tag);
        let ok = match nonce.len() {
            16 => Aes256Gcm16::new_from_slice(&self.0[..])
                .map_err(|_| OpenError)?
                .decrypt_in_place_detached(Nonce::<U16>::from_slice(&nonce), b"", &mut buf, tag),
            12 => Aes256Gcm::new_from_slice(&self.0[..])
                .map_err(|_| OpenError)?
                .decrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut buf, tag),
            _ => return Err(OpenError),
        };
        ok.map_err(|_| OpenError)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_key_and_login_hash() {
        // From the protocol description (docs/protocol.md).
        let k = CcKey::derive("alice", b"secret", "", DEFAULT_ITERATIONS);
        assert_eq!(
            hex::encode(k.expose()),
            "9a419e8741cc418c613e83f295d6cb9d6b2b49366404fc4d4e3807a7670b0a9b"
        );
        assert_eq!(
            login_hash(b"secret").as_str(),
            "b778a39a3663719dfc5e48c9d78431b1e45c2af9df538782bf199c189dabeac7\
             680ada57dcec8eee91c4e3bf3bfa9af6ffde90cd1d249d1c6121d7b759a001b1"
        );
        assert_eq!(format!("{k:?}"), "CcKey(<redacted>)");
    }

    #[test]
    fn seal_open_with_both_nonce_sizes_and_tamper_fails() {
        let k = CcKey::from_bytes([7; 32]);
        let p = k.seal(b"hello").unwrap();
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(B64.decode(v["nonce"].as_str().unwrap()).unwrap().len(), 16);
        assert_eq!(k.open(&p).unwrap(), b"hello");
        // A 12-byte nonce, as the Android client most likely sends.
        let nonce = [3u8; 12];
        let mut buf = b"from android".to_vec();
        let tag = Aes256Gcm::new_from_slice(&[7; 32])
            .unwrap()
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut buf)
            .unwrap();
        let p12 = serde_json::json!({
            "nonce": B64.encode(nonce),
            "ciphertext": B64.encode(&buf),
            "tag": B64.encode(tag),
        })
        .to_string();
        assert_eq!(k.open(&p12).unwrap(), b"from android");
        // Wrong key, tampered tag, bad nonce length, junk: one error.
        assert_eq!(CcKey::from_bytes([8; 32]).open(&p), Err(OpenError));
        let mut t = v.clone();
        t["tag"] = B64.encode([0u8; 16]).into();
        assert_eq!(k.open(&t.to_string()), Err(OpenError));
        let mut n = v.clone();
        n["nonce"] = B64.encode([0u8; 8]).into();
        assert_eq!(k.open(&n.to_string()), Err(OpenError));
        assert_eq!(k.open("not json"), Err(OpenError));
    }

    #[test]
    fn fixed_nonce_vector_is_stable() {
        // Pins our encoding: key 0x07*32, nonce 0x01*16, "hi".
        let k = CcKey::from_bytes([7; 32]);
        let p = k.seal_with_nonce(b"hi", &[1; 16]).unwrap();
        assert!(p.starts_with("{\"nonce\":\"AQEBAQEBAQEBAQEBAQEBAQ==\",\"ciphertext\":\""));
        assert_eq!(k.open(&p).unwrap(), b"hi");
    }
}
