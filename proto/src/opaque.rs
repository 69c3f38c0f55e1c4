//! OPAQUE login (RFC 9807) for protocol v2: the relay stores a registration
//! record and never sees anything that allows an offline attack on the
//! password, not even at login.
//!
//! ```text
//! suite      : OPRF ristretto255-SHA512, 3DH over ristretto255, SHA-512
//! KSF        : Argon2id(oprf_output, salt = 16 zero bytes, m, t, p) — the account's pinned KdfParams
//! identities : client = username, server = SERVER_ID; context = CONTEXT
//! export key : 64 B, never leaves the device ──HKDF-SHA256("clipmesh/v2/export-kek")──▶ ExportKek
//! ```
//!
//! The KSF salt is constant because the OPRF output it stretches is already
//! unique per user and per relay (RFC 9807 §3.3.2 recommends the same). The
//! relay-side OPRF key comes from the relay's [`ServerSetup`] seed and the
//! username, so a prelogin for an unknown user gets an answer computed
//! the same way as a real one: [`server_login_start`] with `record = None`
//! uses OPAQUE's fake record.
//!
//! The functions here are thin, typed wrappers: every message crosses the wire
//! as bytes, every secret type zeroizes and prints as `<redacted>`, and every
//! failure is one [`OpaqueError`] without detail about which check failed.

use crate::keys::{KdfParams, KEY_LEN};
use generic_array::{ArrayLength, GenericArray};
use hkdf::Hkdf;
use opaque_ke::errors::InternalError;
use opaque_ke::key_exchange::tripledh::TripleDh;
use opaque_ke::rand::{CryptoRng, RngCore};
use opaque_ke::{
    ClientLoginFinishParameters, ClientRegistrationFinishParameters, CredentialFinalization,
    CredentialRequest, CredentialResponse, Identifiers, RegistrationRequest, RegistrationResponse,
    RegistrationUpload, Ristretto255, ServerLoginStartParameters,
};
use sha2::Sha256;
use std::fmt;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The server identity bound into every OPAQUE envelope and handshake.
pub const SERVER_ID: &[u8] = b"clipmesh-relay";
/// The 3DH context string (the preamble both sides must agree on).
pub const CONTEXT: &[u8] = b"clipmesh/v2/opaque";
/// HKDF info that turns the OPAQUE export key into the [`ExportKek`].
pub const INFO_EXPORT_KEK: &[u8] = b"clipmesh/v2/export-kek";
/// Salt given to Argon2id inside the KSF (see the module doc).
pub const KSF_SALT: [u8; 16] = [0; 16];
/// Length of the OPAQUE export key (SHA-512 output).
pub const EXPORT_KEY_LEN: usize = 64;

/// Lengths of the wire messages of this suite.
pub mod len {
    /// `RegistrationRequest`: blinded element.
    pub const REGISTRATION_REQUEST: usize = 32;
    /// `RegistrationResponse`: evaluated element and server public key.
    pub const REGISTRATION_RESPONSE: usize = 64;
    /// `RegistrationUpload`, which is also the record the relay stores.
    pub const RECORD: usize = 192;
    /// `CredentialRequest` (KE1).
    pub const CREDENTIAL_REQUEST: usize = 96;
    /// `CredentialResponse` (KE2).
    pub const CREDENTIAL_RESPONSE: usize = 320;
    /// `CredentialFinalization` (KE3).
    pub const CREDENTIAL_FINALIZATION: usize = 64;
}

/// What can go wrong in an OPAQUE exchange. Deliberately coarse: a wrong
/// password, a substituted record and a tampered message look the same.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum OpaqueError {
    /// A message did not parse (wrong length, invalid group element).
    #[error("malformed opaque message")]
    Malformed,
    /// The password is wrong, or the relay's answer was not made from this
    /// account's record.
    #[error("login failed")]
    LoginFailed,
    /// The KSF parameters are outside what this build computes.
    #[error("kdf parameters out of range")]
    BadParams,
}

/// The cipher suite: ristretto255 for the OPRF and 3DH, Argon2id as the KSF.
#[derive(Debug, Clone, Copy)]
pub struct Suite;

impl opaque_ke::CipherSuite for Suite {
    type OprfCs = Ristretto255;
    type KeGroup = Ristretto255;
    type KeyExchange = TripleDh;
    type Ksf = Argon2Ksf;
}

/// Argon2id as OPAQUE's key-stretching function, with the account's
/// parameters. The default is [`KdfParams::default`] (64 MiB, t = 3, p = 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Argon2Ksf(pub KdfParams);

impl opaque_ke::ksf::Ksf for Argon2Ksf {
    fn hash<L: ArrayLength<u8>>(
        &self,
        input: GenericArray<u8, L>,
    ) -> Result<GenericArray<u8, L>, InternalError> {
        self.0.check().map_err(|_| InternalError::KsfError)?;
        let params = argon2::Params::new(self.0.m_kib, self.0.t, self.0.p, Some(L::USIZE))
            .map_err(|_| InternalError::KsfError)?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = GenericArray::default();
        argon
            .hash_password_into(&input, &KSF_SALT, &mut out)
            .map_err(|_| InternalError::KsfError)?;
        Ok(out)
    }
}

fn identifiers(username: &str) -> Identifiers<'_> {
    Identifiers {
        client: Some(username.as_bytes()),
        server: Some(SERVER_ID),
    }
}

macro_rules! wire_bytes {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(Vec<u8>);

        impl $name {
            /// Parses the wire form; only the exact length is accepted (the
            /// group elements are checked when the message is used).
            pub fn from_slice(b: &[u8]) -> Result<Self, OpaqueError> {
                if b.len() != $len {
                    return Err(OpaqueError::Malformed);
                }
                Ok(Self(b.to_vec()))
            }

            /// The wire bytes.
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }

            /// Lower-case hex, as used in the JSON API.
            pub fn to_hex(&self) -> String {
                hex::encode(&self.0)
            }

            /// Parses hex of the exact length.
            pub fn from_hex(s: &str) -> Result<Self, OpaqueError> {
                Self::from_slice(&hex::decode(s).map_err(|_| OpaqueError::Malformed)?)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({} bytes)"), self.0.len())
            }
        }
    };
}

wire_bytes!(
    /// Client → relay, signup step 1 (blinded password).
    RegistrationRequestBytes,
    len::REGISTRATION_REQUEST
);
wire_bytes!(
    /// Relay → client, signup step 1 answer.
    RegistrationResponseBytes,
    len::REGISTRATION_RESPONSE
);
wire_bytes!(
    /// Client → relay, signup step 2: the record the relay stores (the
    /// client's public key, a masking key and the sealed envelope). Testing a
    /// password guess against it needs the relay's OPRF seed as well, and then
    /// costs one Argon2id per guess; nothing seen on the wire allows it.
    RegistrationRecord,
    len::RECORD
);
wire_bytes!(
    /// Client → relay, login step 1 (KE1).
    LoginRequestBytes,
    len::CREDENTIAL_REQUEST
);
wire_bytes!(
    /// Relay → client, login step 1 answer (KE2).
    LoginResponseBytes,
    len::CREDENTIAL_RESPONSE
);
wire_bytes!(
    /// Client → relay, login step 2 (KE3).
    LoginFinishBytes,
    len::CREDENTIAL_FINALIZATION
);

/// The OPAQUE export key: 64 bytes only the client can compute, stable for
/// one registration (a password change makes a new one).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ExportKey([u8; EXPORT_KEY_LEN]);

impl ExportKey {
    /// Wraps raw bytes (test vectors).
    pub fn from_bytes(b: [u8; EXPORT_KEY_LEN]) -> Self {
        Self(b)
    }

    /// The raw bytes. Never log or persist them.
    pub fn expose(&self) -> &[u8; EXPORT_KEY_LEN] {
        &self.0
    }

    /// The key-encryption key this registration provides:
    /// `HKDF-SHA256(ikm = export_key, info = "clipmesh/v2/export-kek")`.
    pub fn kek(&self) -> ExportKek {
        let hk = Hkdf::<Sha256>::new(None, &self.0);
        let mut out = [0u8; KEY_LEN];
        // 32 bytes is far below HKDF-SHA256's output limit.
        #[allow(clippy::expect_used)]
        hk.expand(INFO_EXPORT_KEK, &mut out)
            .expect("invariant: 32-byte HKDF output is always valid");
        ExportKek::from_bytes(out)
    }
}

impl fmt::Debug for ExportKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExportKey(<redacted>)")
    }
}

/// Session key both sides share after a successful login. The relay may use
/// it to bind the session token it issues; it never protects clips.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SessionKey([u8; EXPORT_KEY_LEN]);

impl SessionKey {
    /// The raw bytes. Never log or persist them.
    pub fn expose(&self) -> &[u8; EXPORT_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

pub use crate::epoch::ExportKek;

fn to64(b: &[u8]) -> [u8; EXPORT_KEY_LEN] {
    let mut out = [0u8; EXPORT_KEY_LEN];
    out.copy_from_slice(b);
    out
}

/// Client state between the two steps of signup (or a password change).
pub struct ClientRegistration {
    state: opaque_ke::ClientRegistration<Suite>,
}

impl fmt::Debug for ClientRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientRegistration(<redacted>)")
    }
}

impl ClientRegistration {
    /// Signup step 1: blinds the password.
    pub fn start<R: RngCore + CryptoRng>(
        rng: &mut R,
        password: &[u8],
    ) -> Result<(Self, RegistrationRequestBytes), OpaqueError> {
        let r = opaque_ke::ClientRegistration::<Suite>::start(rng, password)
            .map_err(|_| OpaqueError::Malformed)?;
        Ok((
            Self { state: r.state },
            RegistrationRequestBytes(r.message.serialize().to_vec()),
        ))
    }

    /// Signup step 2: stretches the password with `ksf` and seals the
    /// envelope. Returns the record to upload and the export key.
    pub fn finish<R: RngCore + CryptoRng>(
        self,
        rng: &mut R,
        password: &[u8],
        username: &str,
        response: &RegistrationResponseBytes,
        ksf: &KdfParams,
    ) -> Result<(RegistrationRecord, ExportKey), OpaqueError> {
        ksf.check().map_err(|_| OpaqueError::BadParams)?;
        let msg = RegistrationResponse::<Suite>::deserialize(response.as_bytes())
            .map_err(|_| OpaqueError::Malformed)?;
        let ksf = Argon2Ksf(*ksf);
        let r = self
            .state
            .finish(
                rng,
                password,
                msg,
                ClientRegistrationFinishParameters::new(identifiers(username), Some(&ksf)),
            )
            .map_err(|_| OpaqueError::Malformed)?;
        Ok((
            RegistrationRecord(r.message.serialize().to_vec()),
            ExportKey(to64(&r.export_key)),
        ))
    }
}

/// Client state between the two steps of login.
pub struct ClientLogin {
    state: opaque_ke::ClientLogin<Suite>,
}

impl fmt::Debug for ClientLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientLogin(<redacted>)")
    }
}

/// What a successful client login yields.
#[derive(Debug)]
pub struct ClientLoginOutput {
    /// KE3, to send to the relay.
    pub finish: LoginFinishBytes,
    /// The export key of this registration.
    pub export_key: ExportKey,
    /// The session key shared with the relay.
    pub session_key: SessionKey,
}

impl ClientLogin {
    /// Login step 1: blinds the password and starts the key exchange.
    pub fn start<R: RngCore + CryptoRng>(
        rng: &mut R,
        password: &[u8],
    ) -> Result<(Self, LoginRequestBytes), OpaqueError> {
        let r = opaque_ke::ClientLogin::<Suite>::start(rng, password)
            .map_err(|_| OpaqueError::Malformed)?;
        Ok((
            Self { state: r.state },
            LoginRequestBytes(r.message.serialize().to_vec()),
        ))
    }

    /// Login step 2: stretches with `ksf`, opens the envelope and
    /// authenticates the relay. A wrong password, a fake record and a
    /// tampered answer all give [`OpaqueError::LoginFailed`].
    ///
    /// The caller must have checked `ksf` against the parameters it pinned
    /// (`docs/crypto.md`, "Pinned parameters") before calling this.
    pub fn finish(
        self,
        password: &[u8],
        username: &str,
        response: &LoginResponseBytes,
        ksf: &KdfParams,
    ) -> Result<ClientLoginOutput, OpaqueError> {
        ksf.check().map_err(|_| OpaqueError::BadParams)?;
        let msg = CredentialResponse::<Suite>::deserialize(response.as_bytes())
            .map_err(|_| OpaqueError::Malformed)?;
        let ksf = Argon2Ksf(*ksf);
        let r = self
            .state
            .finish(
                password,
                msg,
                ClientLoginFinishParameters::new(Some(CONTEXT), identifiers(username), Some(&ksf)),
            )
            .map_err(|_| OpaqueError::LoginFailed)?;
        Ok(ClientLoginOutput {
            finish: LoginFinishBytes(r.message.serialize().to_vec()),
            export_key: ExportKey(to64(&r.export_key)),
            session_key: SessionKey(to64(&r.session_key)),
        })
    }
}

/// The relay's long-term OPAQUE secrets: an OPRF seed and a 3DH key pair
/// (plus the fake key pair used for unknown users). Generated once per relay
/// and kept in its data directory with mode 0600; losing it invalidates every
/// registration.
pub struct ServerSetup(opaque_ke::ServerSetup<Suite>);

impl fmt::Debug for ServerSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerSetup(<redacted>)")
    }
}

impl ServerSetup {
    /// A fresh setup.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self(opaque_ke::ServerSetup::new(rng))
    }

    /// The stored form. Secret: write it only to a 0600 file.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(self.0.serialize().to_vec())
    }

    /// Parses the stored form.
    pub fn from_bytes(b: &[u8]) -> Result<Self, OpaqueError> {
        opaque_ke::ServerSetup::<Suite>::deserialize(b)
            .map(Self)
            .map_err(|_| OpaqueError::Malformed)
    }

    /// The relay's public 3DH key (clients may pin it; it is also authenticated
    /// inside every envelope).
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.0.keypair().public().serialize());
        out
    }
}

/// Relay side of signup step 1. `username` is the credential identifier:
/// the OPRF key is derived from it and the setup's seed.
pub fn server_registration_start(
    setup: &ServerSetup,
    request: &RegistrationRequestBytes,
    username: &str,
) -> Result<RegistrationResponseBytes, OpaqueError> {
    let msg = RegistrationRequest::<Suite>::deserialize(request.as_bytes())
        .map_err(|_| OpaqueError::Malformed)?;
    let r = opaque_ke::ServerRegistration::<Suite>::start(&setup.0, msg, username.as_bytes())
        .map_err(|_| OpaqueError::Malformed)?;
    Ok(RegistrationResponseBytes(r.message.serialize().to_vec()))
}

/// Relay side of signup step 2: checks that the uploaded record parses (its
/// group elements are valid) before it is stored.
pub fn server_registration_finish(
    record: &RegistrationRecord,
) -> Result<RegistrationRecord, OpaqueError> {
    let upload = RegistrationUpload::<Suite>::deserialize(record.as_bytes())
        .map_err(|_| OpaqueError::Malformed)?;
    let r = opaque_ke::ServerRegistration::<Suite>::finish(upload);
    Ok(RegistrationRecord(r.serialize().to_vec()))
}

/// Relay state between the two steps of login.
pub struct ServerLogin(opaque_ke::ServerLogin<Suite>);

impl fmt::Debug for ServerLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerLogin(<redacted>)")
    }
}

impl ServerLogin {
    /// The state as bytes, for a relay that keeps it between two HTTP
    /// requests. Secret: keep it in memory only.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(self.0.serialize().to_vec())
    }

    /// Parses [`ServerLogin::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Result<Self, OpaqueError> {
        opaque_ke::ServerLogin::<Suite>::deserialize(b)
            .map(Self)
            .map_err(|_| OpaqueError::Malformed)
    }
}

/// Relay side of login step 1. With `record = None` (unknown user) OPAQUE
/// answers from a fake record, indistinguishable on the wire; the login then
/// fails at step 2 as a wrong password would.
pub fn server_login_start<R: RngCore + CryptoRng>(
    rng: &mut R,
    setup: &ServerSetup,
    record: Option<&RegistrationRecord>,
    request: &LoginRequestBytes,
    username: &str,
) -> Result<(ServerLogin, LoginResponseBytes), OpaqueError> {
    let msg = CredentialRequest::<Suite>::deserialize(request.as_bytes())
        .map_err(|_| OpaqueError::Malformed)?;
    let record = match record {
        Some(r) => Some(
            opaque_ke::ServerRegistration::<Suite>::deserialize(r.as_bytes())
                .map_err(|_| OpaqueError::Malformed)?,
        ),
        None => None,
    };
    let r = opaque_ke::ServerLogin::start(
        rng,
        &setup.0,
        record,
        msg,
        username.as_bytes(),
        ServerLoginStartParameters {
            context: Some(CONTEXT),
            identifiers: identifiers(username),
        },
    )
    .map_err(|_| OpaqueError::Malformed)?;
    Ok((
        ServerLogin(r.state),
        LoginResponseBytes(r.message.serialize().to_vec()),
    ))
}

/// Relay side of login step 2: verifies the client's KE3. Success proves the
/// client knew the password of the stored record.
pub fn server_login_finish(
    state: ServerLogin,
    finish: &LoginFinishBytes,
) -> Result<SessionKey, OpaqueError> {
    let msg = CredentialFinalization::<Suite>::deserialize(finish.as_bytes())
        .map_err(|_| OpaqueError::Malformed)?;
    let r = state.0.finish(msg).map_err(|_| OpaqueError::LoginFailed)?;
    Ok(SessionKey(to64(&r.session_key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    fn small() -> KdfParams {
        KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
            ..KdfParams::default()
        }
    }

    fn register(setup: &ServerSetup, user: &str, pw: &[u8]) -> (RegistrationRecord, ExportKey) {
        let (c, req) = ClientRegistration::start(&mut OsRng, pw).unwrap();
        let resp = server_registration_start(setup, &req, user).unwrap();
        let (rec, ek) = c.finish(&mut OsRng, pw, user, &resp, &small()).unwrap();
        (server_registration_finish(&rec).unwrap(), ek)
    }

    fn login(
        setup: &ServerSetup,
        rec: Option<&RegistrationRecord>,
        user: &str,
        pw: &[u8],
        ksf: &KdfParams,
    ) -> Result<(ClientLoginOutput, SessionKey), OpaqueError> {
        let (c, req) = ClientLogin::start(&mut OsRng, pw)?;
        let (s, resp) = server_login_start(&mut OsRng, setup, rec, &req, user)?;
        let out = c.finish(pw, user, &resp, ksf)?;
        let sk = server_login_finish(s, &out.finish)?;
        Ok((out, sk))
    }

    #[test]
    fn signup_then_login_gives_the_same_export_key() {
        let setup = ServerSetup::generate(&mut OsRng);
        let (rec, ek) = register(&setup, "alice", b"correct horse");
        assert_eq!(rec.as_bytes().len(), len::RECORD);
        let (out, sk) = login(&setup, Some(&rec), "alice", b"correct horse", &small()).unwrap();
        assert_eq!(out.export_key.expose(), ek.expose());
        assert_eq!(out.session_key, sk);
    }

    #[test]
    fn wrong_password_wrong_user_wrong_ksf_and_unknown_user_fail_alike() {
        let setup = ServerSetup::generate(&mut OsRng);
        let (rec, _) = register(&setup, "alice", b"pw");
        let e = login(&setup, Some(&rec), "alice", b"pw2", &small()).unwrap_err();
        assert_eq!(e, OpaqueError::LoginFailed);
        // The record is bound to the username: another name cannot use it.
        let e = login(&setup, Some(&rec), "bob", b"pw", &small()).unwrap_err();
        assert_eq!(e, OpaqueError::LoginFailed);
        let other = KdfParams { t: 2, ..small() };
        let e = login(&setup, Some(&rec), "alice", b"pw", &other).unwrap_err();
        assert_eq!(e, OpaqueError::LoginFailed);
        let e = login(&setup, None, "nobody", b"pw", &small()).unwrap_err();
        assert_eq!(e, OpaqueError::LoginFailed);
    }

    #[test]
    fn another_relay_setup_cannot_answer() {
        let setup = ServerSetup::generate(&mut OsRng);
        let other = ServerSetup::generate(&mut OsRng);
        let (rec, _) = register(&setup, "alice", b"pw");
        let e = login(&other, Some(&rec), "alice", b"pw", &small()).unwrap_err();
        assert_eq!(e, OpaqueError::LoginFailed);
    }

    #[test]
    fn setup_roundtrips_and_debug_is_redacted() {
        let setup = ServerSetup::generate(&mut OsRng);
        let again = ServerSetup::from_bytes(&setup.to_bytes()).unwrap();
        assert_eq!(setup.public_key(), again.public_key());
        assert_eq!(format!("{setup:?}"), "ServerSetup(<redacted>)");
        let ek = ExportKey::from_bytes([7; 64]);
        assert_eq!(format!("{ek:?}"), "ExportKey(<redacted>)");
        assert!(ServerSetup::from_bytes(&[1, 2, 3]).is_err());
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let setup = ServerSetup::generate(&mut OsRng);
        assert!(RegistrationRecord::from_slice(&[0; 10]).is_err());
        let junk = LoginRequestBytes::from_slice(&[0xff; len::CREDENTIAL_REQUEST]).unwrap();
        assert_eq!(
            server_login_start(&mut OsRng, &setup, None, &junk, "a").unwrap_err(),
            OpaqueError::Malformed
        );
        let junk = RegistrationRecord::from_slice(&[0xff; len::RECORD]).unwrap();
        assert!(server_registration_finish(&junk).is_err());
    }
}
