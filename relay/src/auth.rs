//! Secrets the relay handles: device tokens, the Argon2id PHC hash of each
//! account's `auth_key`, and deterministic fake pre-login salts. The token
//! and fake-salt rules are `clipmesh_room::auth`, shared with the Worker.
//!
//! **Invariant:** the relay never stores a token or an `auth_key`, only
//! SHA-256 of the token and an Argon2id hash of the key, and never logs
//! either.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::Semaphore;

pub use clipmesh_room::auth::{
    bearer, fake_kdf, fake_salt, new_token, token_hash, token_shape_ok, TOKEN_BYTES, TOKEN_CHARS,
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
    /// Too many hashes are running or waiting; try again shortly (503).
    #[error("hasher busy")]
    Busy,
}

/// Hashes and verifies `auth_key`s with Argon2id, off the async runtime and
/// with bounded concurrency so a flood cannot exhaust memory or time.
///
/// Admission is bounded and never queues without limit: at most
/// `concurrency` hashes run and `queue` more wait; beyond that a call fails
/// at once with [`HashError::Busy`] (the HTTP layer answers 503 with
/// `Retry-After`). New hashes (signup, password change) additionally run one
/// at a time and never wait, so they can never take every running slot from
/// logins.
///
/// Two lanes: a login from a network that has logged in to that account
/// before ([`crate::throttle::LoginGuard::is_known`]) takes the *known*
/// lane ([`Hasher::verify_known`]); everything else shares the other lane,
/// which may hold at most `concurrency - 1` running or waiting slots (at
/// least 1) and its own admission queue. So a flood of logins or signups
/// from elsewhere — guesses against a user's name from many networks —
/// never stands between that user's own devices and the hasher: they wait
/// for at most one running hash.
#[derive(Clone)]
pub struct Hasher {
    params: argon2::Params,
    /// Hashes running at once.
    permits: Arc<Semaphore>,
    /// Hashes admitted at once (running or waiting for a permit).
    admitted: Arc<Semaphore>,
    /// New hashes (not verifications) in flight: one.
    new_hashes: Arc<Semaphore>,
    /// Slots of `permits` the unknown lane may hold or wait for at once.
    unknown_lane: Arc<Semaphore>,
    /// Admission of the known lane (running or waiting).
    known_admitted: Arc<Semaphore>,
    /// A hash of a random key, verified against for unknown users so their
    /// logins take as long as real ones.
    dummy: Arc<str>,
    /// Argon2 computations done (hash or verify), for metrics and tests.
    computed: Arc<AtomicU64>,
}

impl Hasher {
    /// A hasher with the given Argon2id cost and concurrency, and room for
    /// `queue` waiting calls.
    pub fn new(
        m_kib: u32,
        t: u32,
        p: u32,
        concurrency: usize,
        queue: usize,
    ) -> Result<Self, HashError> {
        let params = argon2::Params::new(m_kib, t, p, None).map_err(|_| HashError::Params)?;
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let dummy = hash_sync(&params, &key)?;
        let concurrency = concurrency.max(1);
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency)),
            admitted: Arc::new(Semaphore::new(concurrency.saturating_add(queue))),
            new_hashes: Arc::new(Semaphore::new(1)),
            unknown_lane: Arc::new(Semaphore::new(concurrency.saturating_sub(1).max(1))),
            known_admitted: Arc::new(Semaphore::new(concurrency.saturating_add(queue))),
            dummy: dummy.into(),
            computed: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Argon2 computations done so far (hashes and verifications).
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    /// The PHC string of `Argon2id(auth_key, random salt)`.
    pub async fn hash(&self, auth_key: [u8; 32]) -> Result<String, HashError> {
        self.hash_bytes(auth_key.to_vec()).await
    }

    /// The PHC string of `Argon2id(secret, random salt)` for a secret of
    /// any length (the ClipCascade verifier hashes a 128-character hex).
    /// Admitted like [`Hasher::hash`].
    pub async fn hash_bytes(&self, secret: Vec<u8>) -> Result<String, HashError> {
        let _one = self
            .new_hashes
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Busy)?;
        let _admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Busy)?;
        let _lane = self
            .unknown_lane
            .acquire()
            .await
            .map_err(|_| HashError::Join)?;
        let _permit = self.permits.acquire().await.map_err(|_| HashError::Join)?;
        let params = self.params.clone();
        self.computed.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || hash_sync(&params, &secret))
            .await
            .map_err(|_| HashError::Join)?
    }

    /// [`Hasher::verify`] for a secret of any length.
    pub async fn verify_bytes(
        &self,
        phc: Option<String>,
        secret: Vec<u8>,
    ) -> Result<bool, HashError> {
        self.verify_in(phc, secret, false).await
    }

    /// [`Hasher::verify`] in the known lane: for a login from a network
    /// that has logged in to this account before.
    pub async fn verify_known(
        &self,
        phc: Option<String>,
        auth_key: [u8; 32],
    ) -> Result<bool, HashError> {
        self.verify_in(phc, auth_key.to_vec(), true).await
    }

    async fn verify_in(
        &self,
        phc: Option<String>,
        secret: Vec<u8>,
        known: bool,
    ) -> Result<bool, HashError> {
        let admission = if known {
            &self.known_admitted
        } else {
            &self.admitted
        };
        let _admitted = admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Busy)?;
        let _lane = if known {
            None
        } else {
            Some(
                self.unknown_lane
                    .acquire()
                    .await
                    .map_err(|_| HashError::Join)?,
            )
        };
        let _permit = self.permits.acquire().await.map_err(|_| HashError::Join)?;
        let exists = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy.to_string());
        self.computed.fetch_add(1, Ordering::Relaxed);
        // The verification runs whether or not the user exists; only its
        // result is discarded for an unknown one.
        let ok = tokio::task::spawn_blocking(move || verify_sync(&phc, &secret))
            .await
            .map_err(|_| HashError::Join)?;
        Ok(exists && ok)
    }

    /// Checks `auth_key` against a stored PHC string. With `None` (unknown
    /// user) it verifies against a dummy hash of the same cost and returns
    /// false, so timing does not reveal whether the account exists.
    pub async fn verify(&self, phc: Option<String>, auth_key: [u8; 32]) -> Result<bool, HashError> {
        self.verify_bytes(phc, auth_key.to_vec()).await
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
        let h = Hasher::new(64, 1, 1, 2, 8).unwrap();
        let phc = h.hash([3; 32]).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(h.verify(Some(phc.clone()), [3; 32]).await.unwrap());
        assert!(!h.verify(Some(phc), [4; 32]).await.unwrap());
        assert!(!h.verify(None, [3; 32]).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_user_costs_a_full_verification() {
        // Cost high enough (ms) that skipping the hash (µs) is obvious.
        let h = Hasher::new(4096, 2, 1, 1, 8).unwrap();
        let phc = h.hash([1; 32]).await.unwrap();
        let before = h.computed();
        // Interleaved, so load from other tests hits both sides alike.
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        for _ in 0..9 {
            let t = std::time::Instant::now();
            assert!(!h.verify(Some(phc.clone()), [9; 32]).await.unwrap());
            known.push(t.elapsed());
            let t = std::time::Instant::now();
            assert!(!h.verify(None, [9; 32]).await.unwrap());
            unknown.push(t.elapsed());
        }
        assert_eq!(h.computed() - before, 18, "every call ran Argon2");
        known.sort();
        unknown.sort();
        let (known, unknown) = (known[4], unknown[4]);
        // Equal work; allow a wide margin for a noisy shared machine.
        assert!(
            unknown * 3 >= known,
            "unknown user answered in {unknown:?}, a real one in {known:?}"
        );
    }

    #[tokio::test]
    async fn admission_is_bounded_and_new_hashes_run_one_at_a_time() {
        let h = Hasher::new(2048, 4, 1, 1, 1).unwrap();
        let (a, b, c) = tokio::join!(
            h.verify(None, [1; 32]),
            h.verify(None, [1; 32]),
            h.verify(None, [1; 32])
        );
        let busy = [&a, &b, &c]
            .iter()
            .filter(|r| matches!(r, Err(HashError::Busy)))
            .count();
        assert_eq!(busy, 1, "one running + one waiting, the third refused");
        // A signup in flight (polled once: its hash is running) holds the
        // one new-hash slot, so a second is refused without waiting.
        let h = Hasher::new(8192, 8, 1, 4, 8).unwrap();
        let mut first = Box::pin(h.hash([1; 32]));
        assert!(futures_util::poll!(&mut first).is_pending());
        assert!(matches!(h.hash([2; 32]).await, Err(HashError::Busy)));
        assert!(first.await.is_ok());
    }
}
