//! Secrets the relay handles: device tokens, the Argon2id PHC hash of each
//! account's `auth_key`, and deterministic fake pre-login salts. The token
//! and fake-salt rules are `clipmesh_room::auth`, shared with the Worker.
//!
//! **Invariant:** the relay never stores a token or an `auth_key`, only
//! SHA-256 of the token and an Argon2id hash of the key, and never logs
//! either.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::Semaphore;

pub use clipmesh_room::auth::{
    bearer, fake_salt, new_token, token_hash, token_shape_ok, TOKEN_BYTES, TOKEN_CHARS,
};

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
