//! Secrets the relay handles: device tokens, the Argon2id PHC hash of each
//! account's `auth_key`, and deterministic fake pre-login salts.
//!
//! **Invariant:** the relay never stores a token or an `auth_key`, only
//! SHA-256 of the token and an Argon2id hash of the key, and never logs
//! either.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::Semaphore;

/// Length of a device token before encoding, bytes.
pub const TOKEN_BYTES: usize = 32;
/// Length of an encoded token (base64url, no padding).
pub const TOKEN_CHARS: usize = 43;

/// Errors from hashing.
#[derive(Debug, Error)]
pub enum HashError {
    /// The configured parameters are invalid.
    #[error("invalid hash parameters")]
    Params,
    /// Hashing failed.
    #[error("hashing failed")]
    Hash,
    /// The worker task failed.
    #[error("hash task failed")]
    Join,
}

/// A fresh device token and the hash the relay stores.
pub fn new_token() -> (String, [u8; 32]) {
    let mut raw = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = token_hash(&token);
    (token, hash)
}

/// SHA-256 of a token's text, the form sessions are stored under.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `s` has the shape of a token (cheap check before a DB lookup).
pub fn token_shape_ok(s: &str) -> bool {
    s.len() == TOKEN_CHARS
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The deterministic fake salt for an unknown user:
/// `HMAC-SHA256(server secret, username)[..16]`.
pub fn fake_salt(secret: &[u8], username: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) {
        mac.update(b"clipmesh/v1/fake-salt\0");
        mac.update(username.as_bytes());
        out.copy_from_slice(&mac.finalize().into_bytes()[..16]);
    }
    out
}

/// Hashes and verifies `auth_key`s with Argon2id, off the async runtime and
/// with bounded concurrency so a login flood cannot exhaust memory.
#[derive(Clone)]
pub struct Hasher {
    params: argon2::Params,
    permits: Arc<Semaphore>,
    /// A hash of a random key, verified against for unknown users so their
    /// logins take as long as real ones.
    dummy: Arc<str>,
}

impl Hasher {
    /// A hasher with the given Argon2id cost and concurrency.
    pub fn new(m_kib: u32, t: u32, p: u32, concurrency: usize) -> Result<Self, HashError> {
        let params = argon2::Params::new(m_kib, t, p, None).map_err(|_| HashError::Params)?;
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let dummy = hash_sync(&params, &key)?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy: dummy.into(),
        })
    }

    /// The PHC string of `Argon2id(auth_key, random salt)`.
    pub async fn hash(&self, auth_key: [u8; 32]) -> Result<String, HashError> {
        let _permit = self.permits.acquire().await.map_err(|_| HashError::Join)?;
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || hash_sync(&params, &auth_key))
            .await
            .map_err(|_| HashError::Join)?
    }

    /// The PHC string of `Argon2id(secret, random salt)` for a secret of
    /// any length (the ClipCascade verifier hashes a 128-character hex).
    pub async fn hash_bytes(&self, secret: Vec<u8>) -> Result<String, HashError> {
        let _permit = self.permits.acquire().await.map_err(|_| HashError::Join)?;
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || hash_sync(&params, &secret))
            .await
            .map_err(|_| HashError::Join)?
    }

    /// [`Hasher::verify`] for a secret of any length.
    pub async fn verify_bytes(&self, phc: Option<String>, secret: Vec<u8>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy.to_string());
        tokio::task::spawn_blocking(move || known && verify_sync(&phc, &secret))
            .await
            .unwrap_or(false)
    }

    /// Checks `auth_key` against a stored PHC string. With `None` (unknown
    /// user) it verifies against a dummy hash and returns false, so timing
    /// does not reveal whether the account exists.
    pub async fn verify(&self, phc: Option<String>, auth_key: [u8; 32]) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy.to_string());
        tokio::task::spawn_blocking(move || known && verify_sync(&phc, &auth_key))
            .await
            .unwrap_or(false)
    }
}

/// Hashes one key synchronously with the given cost (admin CLI).
pub fn hash_blocking(m_kib: u32, t: u32, p: u32, key: &[u8]) -> Result<String, HashError> {
    let params = argon2::Params::new(m_kib, t, p, None).map_err(|_| HashError::Params)?;
    hash_sync(&params, key)
}

fn hash_sync(params: &argon2::Params, key: &[u8]) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|_| HashError::Hash)?;
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params.clone(),
    );
    Ok(argon
        .hash_password(key, &salt)
        .map_err(|_| HashError::Hash)?
        .to_string())
}

fn verify_sync(phc: &str, key: &[u8]) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    argon2::Argon2::default()
        .verify_password(key, &parsed)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_shape_and_distinct_hashes() {
        let (a, ha) = new_token();
        let (b, hb) = new_token();
        assert!(token_shape_ok(&a) && token_shape_ok(&b));
        assert_ne!(ha, hb);
        assert_eq!(token_hash(&a), ha);
        assert!(!token_shape_ok("short"));
        assert!(!token_shape_ok(&format!("{}=", &a[..42])));
    }

    #[test]
    fn fake_salt_is_deterministic_per_secret_and_name() {
        assert_eq!(fake_salt(b"s", "ann"), fake_salt(b"s", "ann"));
        assert_ne!(fake_salt(b"s", "ann"), fake_salt(b"s", "bob"));
        assert_ne!(fake_salt(b"s", "ann"), fake_salt(b"t", "ann"));
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let h = Hasher::new(64, 1, 1, 2).unwrap();
        let phc = h.hash([3; 32]).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(h.verify(Some(phc.clone()), [3; 32]).await);
        assert!(!h.verify(Some(phc), [4; 32]).await);
        assert!(!h.verify(None, [3; 32]).await);
    }
}
