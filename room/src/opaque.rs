//! The relay side of protocol v2's OPAQUE login that does no IO, shared by
//! both relay hosts: input validation of the `/api/v2` bodies, the answer
//! to `login/start` (real record, or OPAQUE's fake one for unknown and
//! not-yet-upgraded accounts), the table of half-finished logins, and the
//! rule for when v1 login still works.
//!
//! A host keeps the [`ServerSetup`] (secret, 0600, outside the database),
//! loads the account, calls [`login_start`], parks the state in a
//! [`PendingLogins`] under a fresh id, and on `login/finish` takes it back
//! (single use) and calls [`login_finish`]. Time is an argument
//! (`now_ms`), so the table is tested on a virtual clock.
//!
//! **Invariant:** an answer to `login/start` never depends on whether the
//! account exists or has upgraded: unknown names and v1-only accounts get
//! OPAQUE's fake record, and the parameters shown for them are the ones a
//! v1 prelogin shows, so the v2 path reveals nothing the v1 path did not.

use crate::validate::{hex_n, Invalid};
use clipmesh_proto::device::DEVICE_PUBLIC_LEN;
use clipmesh_proto::epoch::{CERT_LEN, DEVICE_WRAPPED_LEN, EXPORT_WRAPPED_LEN};
use clipmesh_proto::opaque::{
    self, len, LoginFinishBytes, LoginRequestBytes, LoginResponseBytes, OpaqueError,
    RegistrationRecord, RegistrationRequestBytes, RegistrationResponseBytes, ServerLogin,
    ServerSetup, SessionKey,
};
use clipmesh_proto::{DevicePublic, DeviceWrappedKey, ExportWrappedKey, KdfParams, UserId};
use rand::{CryptoRng, RngCore};
use std::collections::HashMap;

/// How long a half-finished login may wait for its KE3.
pub const LOGIN_TTL_MS: u64 = 60_000;
/// Most half-finished logins a host keeps; more are refused (429) until
/// some finish or expire, so a flood of `login/start` cannot grow memory.
pub const MAX_PENDING_LOGINS: usize = 4096;
/// Length of a login id before hex (128 random bits).
pub const LOGIN_ID_BYTES: usize = 16;

/// What a host knows about an account at `login/start`.
#[derive(Clone, Debug)]
pub struct AccountAuth {
    /// The account.
    pub user: UserId,
    /// Its OPAQUE record; `None` while the account is still v1.
    pub record: Option<RegistrationRecord>,
    /// The parameters stored with the account.
    pub kdf: KdfParams,
}

/// Whether a v1 (`auth_key`) login, password change or upgrade may still
/// be tried for an account: only until it has an OPAQUE record.
pub fn v1_login_allowed(has_record: bool) -> bool {
    !has_record
}

/// `RegistrationRequest` hex.
pub fn registration_request(field: &str, s: &str) -> Result<RegistrationRequestBytes, Invalid> {
    let b = hex_n::<{ len::REGISTRATION_REQUEST }>(field, s)?;
    RegistrationRequestBytes::from_slice(&b).map_err(|_| Invalid(format!("{field} is malformed")))
}

/// `CredentialRequest` (KE1) hex.
pub fn login_request(field: &str, s: &str) -> Result<LoginRequestBytes, Invalid> {
    let b = hex_n::<{ len::CREDENTIAL_REQUEST }>(field, s)?;
    LoginRequestBytes::from_slice(&b).map_err(|_| Invalid(format!("{field} is malformed")))
}

/// `CredentialFinalization` (KE3) hex.
pub fn login_finish_bytes(field: &str, s: &str) -> Result<LoginFinishBytes, Invalid> {
    let b = hex_n::<{ len::CREDENTIAL_FINALIZATION }>(field, s)?;
    LoginFinishBytes::from_slice(&b).map_err(|_| Invalid(format!("{field} is malformed")))
}

/// A registration record: the right length and valid group elements
/// (checked by OPAQUE's own parser before anything is stored).
pub fn record(s: &str) -> Result<RegistrationRecord, Invalid> {
    let b = hex_n::<{ len::RECORD }>("record", s)?;
    let r =
        RegistrationRecord::from_slice(&b).map_err(|_| Invalid("record is malformed".into()))?;
    opaque::server_registration_finish(&r).map_err(|_| Invalid("record is malformed".into()))
}

/// Key-stretching parameters of a new record: within what clients compute
/// and at least the documented floor (v2 has no legacy accounts below it).
pub fn record_kdf(kdf: &KdfParams) -> Result<KdfParams, Invalid> {
    kdf.check().map_err(|e| Invalid(format!("kdf: {e}")))?;
    kdf.check_floor()
        .map_err(|e| Invalid(format!("kdf: {e}")))?;
    Ok(*kdf)
}

/// The epoch key wrapped under the export key.
pub fn export_wrap(s: &str) -> Result<ExportWrappedKey, Invalid> {
    let b = hex_n::<EXPORT_WRAPPED_LEN>("export_wrap", s)?;
    ExportWrappedKey::from_slice(&b).ok_or_else(|| Invalid("export_wrap is malformed".into()))
}

/// A device's public keys (both points must decode).
pub fn device_public(s: &str) -> Result<DevicePublic, Invalid> {
    let b = hex_n::<DEVICE_PUBLIC_LEN>("public_key", s)?;
    DevicePublic::from_slice(&b).ok_or_else(|| Invalid("public_key is malformed".into()))
}

/// A device certificate.
pub fn cert(s: &str) -> Result<[u8; CERT_LEN], Invalid> {
    hex_n::<CERT_LEN>("cert", s)
}

/// An epoch key wrapped to a device (`password/finish` with a new epoch).
pub fn device_wrap(s: &str) -> Result<DeviceWrappedKey, Invalid> {
    let b = hex_n::<DEVICE_WRAPPED_LEN>("wraps", s)?;
    DeviceWrappedKey::from_slice(&b).ok_or_else(|| Invalid("wraps is malformed".into()))
}

/// A login id from `login/start`.
pub fn login_id(s: &str) -> Result<[u8; LOGIN_ID_BYTES], Invalid> {
    hex_n::<LOGIN_ID_BYTES>("login_id", s)
}

/// The relay's answer to a registration start for `username`.
pub fn register_start(
    setup: &ServerSetup,
    request: &RegistrationRequestBytes,
    username: &str,
) -> Result<RegistrationResponseBytes, Invalid> {
    opaque::server_registration_start(setup, request, username)
        .map_err(|_| Invalid("request is malformed".into()))
}

/// The relay's answer to KE1. `account` is what the host found under
/// `username` (`None`: no such account); `shown_kdf` is what a v1 prelogin
/// would show for the name (the host's fake parameters for unknown users).
/// Returns the state to park and the KE2 plus parameters to send.
pub fn login_start<R: RngCore + CryptoRng>(
    rng: &mut R,
    setup: &ServerSetup,
    account: Option<&AccountAuth>,
    request: &LoginRequestBytes,
    username: &str,
    shown_kdf: KdfParams,
) -> Result<(ServerLogin, LoginResponseBytes, KdfParams), Invalid> {
    let (record, kdf) = match account {
        Some(a) => (a.record.as_ref(), a.kdf),
        None => (None, shown_kdf),
    };
    let (state, ke2) = opaque::server_login_start(rng, setup, record, request, username)
        .map_err(|_| Invalid("request is malformed".into()))?;
    Ok((state, ke2, kdf))
}

/// The relay's check of KE3: `Ok` proves the client knew the password of
/// the record the login started with.
pub fn login_finish(
    state: ServerLogin,
    finish: &LoginFinishBytes,
) -> Result<SessionKey, OpaqueError> {
    opaque::server_login_finish(state, finish)
}

/// Who a parked login is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginFor {
    /// The name the login was started with.
    pub username: String,
    /// The account, if the name had a v2 record (`None`: the login can only
    /// fail, as with a wrong password).
    pub user: Option<UserId>,
}

struct Parked {
    state: zeroize::Zeroizing<Vec<u8>>,
    who: LoginFor,
    expires_ms: u64,
}

/// The table is full: try again shortly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many logins in progress")]
pub struct PendingFull;

/// Half-finished logins, keyed by a random id, each usable once and for
/// [`LOGIN_TTL_MS`]. A replayed KE3 finds nothing.
#[derive(Default)]
pub struct PendingLogins {
    map: HashMap<[u8; LOGIN_ID_BYTES], Parked>,
}

impl std::fmt::Debug for PendingLogins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PendingLogins({} parked)", self.map.len())
    }
}

impl PendingLogins {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many logins are parked (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Parks `state` for `who` and returns its id as hex. Expired entries
    /// are swept first; a full table refuses.
    pub fn park<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        state: &ServerLogin,
        who: LoginFor,
        now_ms: u64,
    ) -> Result<String, PendingFull> {
        if self.map.len() >= MAX_PENDING_LOGINS {
            self.sweep(now_ms);
        }
        if self.map.len() >= MAX_PENDING_LOGINS {
            return Err(PendingFull);
        }
        let mut id = [0u8; LOGIN_ID_BYTES];
        rng.fill_bytes(&mut id);
        self.map.insert(
            id,
            Parked {
                state: state.to_bytes(),
                who,
                expires_ms: now_ms.saturating_add(LOGIN_TTL_MS),
            },
        );
        Ok(hex::encode(id))
    }

    /// Takes the login `id` out of the table (so it cannot be finished
    /// twice). `None` if unknown or expired.
    pub fn take(
        &mut self,
        id: &[u8; LOGIN_ID_BYTES],
        now_ms: u64,
    ) -> Option<(ServerLogin, LoginFor)> {
        let p = self.map.remove(id)?;
        if now_ms >= p.expires_ms {
            return None;
        }
        let state = ServerLogin::from_bytes(&p.state).ok()?;
        Some((state, p.who))
    }

    /// Drops every expired entry.
    pub fn sweep(&mut self, now_ms: u64) {
        self.map.retain(|_, p| now_ms < p.expires_ms);
    }
}

/// Length of the secret seed a host may derive its [`ServerSetup`] from.
pub const SETUP_SEED_LEN: usize = 32;

/// The [`ServerSetup`] derived from a secret seed (ChaCha20 seeded with it
/// drives the setup's key generation). The Worker host keeps only the seed,
/// as a Worker secret, so an operator makes it with any random-bytes tool.
/// **Invariant:** the derivation never changes for a given seed (a test
/// pins one seed's public key): a different setup would lock out every v2
/// account.
pub fn setup_from_seed(seed: &[u8; SETUP_SEED_LEN]) -> ServerSetup {
    use rand_chacha::rand_core::SeedableRng;
    ServerSetup::generate(&mut rand_chacha::ChaCha20Rng::from_seed(*seed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clipmesh_proto::opaque::{ClientLogin, ClientRegistration};
    use rand::rngs::OsRng;

    fn small() -> KdfParams {
        KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
            ..KdfParams::default()
        }
    }

    fn registered(setup: &ServerSetup, user: &str, pw: &[u8]) -> RegistrationRecord {
        let (c, req) = ClientRegistration::start(&mut OsRng, pw).unwrap();
        let resp = register_start(setup, &req, user).unwrap();
        let (rec, _) = c.finish(&mut OsRng, pw, user, &resp, &small()).unwrap();
        record(&rec.to_hex()).unwrap()
    }

    fn account(rec: Option<RegistrationRecord>) -> AccountAuth {
        AccountAuth {
            user: UserId(7),
            record: rec,
            kdf: small(),
        }
    }

    #[test]
    fn setup_from_seed_is_stable() {
        // Pinned: a change here means every Worker's v2 accounts would be
        // locked out after an upgrade of opaque-ke or rand_chacha.
        let a = setup_from_seed(&[7; SETUP_SEED_LEN]);
        assert_eq!(
            hex::encode(a.public_key()),
            "88036de3d85ffd08f5f56d53185809ea86b2a73aa5e60a0fc2d1fd2a96043c13"
        );
        assert_eq!(
            a.to_bytes(),
            setup_from_seed(&[7; SETUP_SEED_LEN]).to_bytes()
        );
        assert_ne!(
            a.public_key(),
            setup_from_seed(&[8; SETUP_SEED_LEN]).public_key()
        );
        // A login against a record made under the derived setup works.
        let mut table = PendingLogins::new();
        let rec = registered(&a, "ann", b"pw");
        assert!(run(&a, &mut table, Some(&account(Some(rec))), "ann", b"pw").is_ok());
    }

    /// Runs a login through the table; `Ok` only if the relay accepts KE3.
    fn run(
        setup: &ServerSetup,
        table: &mut PendingLogins,
        acc: Option<&AccountAuth>,
        user: &str,
        pw: &[u8],
    ) -> Result<(), String> {
        let (c, ke1) = ClientLogin::start(&mut OsRng, pw).unwrap();
        let ke1 = login_request("request", &ke1.to_hex()).unwrap();
        let (state, ke2, kdf) = login_start(&mut OsRng, setup, acc, &ke1, user, small()).unwrap();
        let who = LoginFor {
            username: user.into(),
            user: acc.and_then(|a| a.record.as_ref().map(|_| a.user)),
        };
        let id = table.park(&mut OsRng, &state, who, 0).unwrap();
        let out = c.finish(pw, user, &ke2, &kdf).map_err(|e| e.to_string())?;
        let (state, _) = table.take(&login_id(&id).unwrap(), 1).ok_or("gone")?;
        login_finish(state, &out.finish).map_err(|e| e.to_string())?;
        Ok(())
    }

    #[test]
    fn real_record_logs_in_and_fake_ones_fail_like_a_wrong_password() {
        let setup = ServerSetup::generate(&mut OsRng);
        let mut t = PendingLogins::new();
        let acc = account(Some(registered(&setup, "ann", b"pw")));
        run(&setup, &mut t, Some(&acc), "ann", b"pw").unwrap();
        assert_eq!(
            run(&setup, &mut t, Some(&acc), "ann", b"nope").unwrap_err(),
            "login failed"
        );
        // Unknown name and a v1-only account: the client cannot tell them
        // from a wrong password.
        assert_eq!(
            run(&setup, &mut t, None, "nobody", b"pw").unwrap_err(),
            "login failed"
        );
        assert_eq!(
            run(&setup, &mut t, Some(&account(None)), "ann", b"pw").unwrap_err(),
            "login failed"
        );
        assert!(v1_login_allowed(false));
        assert!(!v1_login_allowed(true));
    }

    #[test]
    fn parked_logins_are_single_use_expire_and_are_bounded() {
        let setup = ServerSetup::generate(&mut OsRng);
        let (_, ke1) = ClientLogin::start(&mut OsRng, b"pw").unwrap();
        let (state, _, _) = login_start(&mut OsRng, &setup, None, &ke1, "a", small()).unwrap();
        let who = LoginFor {
            username: "a".into(),
            user: None,
        };
        let mut t = PendingLogins::new();
        let id = login_id(&t.park(&mut OsRng, &state, who.clone(), 1000).unwrap()).unwrap();
        assert_eq!(t.take(&id, 1001).unwrap().1, who);
        assert!(t.take(&id, 1002).is_none(), "a login finishes once");
        let id = login_id(&t.park(&mut OsRng, &state, who.clone(), 1000).unwrap()).unwrap();
        assert!(t.take(&id, 1000 + LOGIN_TTL_MS).is_none(), "expired");
        for _ in 0..MAX_PENDING_LOGINS {
            t.park(&mut OsRng, &state, who.clone(), 0).unwrap();
        }
        assert_eq!(
            t.park(&mut OsRng, &state, who.clone(), 1).unwrap_err(),
            PendingFull
        );
        // Once they expire, there is room again.
        t.park(&mut OsRng, &state, who, LOGIN_TTL_MS).unwrap();
        assert_eq!(t.len(), 1);
        assert!(format!("{t:?}").contains("1 parked"));
    }

    #[test]
    fn hostile_bodies_are_invalid_not_panics() {
        assert!(record(&"ff".repeat(len::RECORD)).is_err());
        assert!(record("00").is_err());
        assert!(device_public(&"00".repeat(DEVICE_PUBLIC_LEN - 1)).is_err());
        assert!(device_public(&"zz".repeat(DEVICE_PUBLIC_LEN)).is_err());
        assert!(export_wrap(&"00".repeat(EXPORT_WRAPPED_LEN - 1)).is_err());
        assert!(login_request("request", "zz").is_err());
        assert!(login_id("00").is_err());
        let weak = KdfParams {
            m_kib: 19 * 1024,
            t: 2,
            ..KdfParams::default()
        };
        assert!(record_kdf(&weak).is_err());
        assert!(record_kdf(&KdfParams::default()).is_ok());
        let setup = ServerSetup::generate(&mut OsRng);
        let junk = login_request("request", &"ff".repeat(len::CREDENTIAL_REQUEST)).unwrap();
        assert!(login_start(&mut OsRng, &setup, None, &junk, "a", small()).is_err());
    }
}
