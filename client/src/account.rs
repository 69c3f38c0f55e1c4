//! Signing up, logging in and out: the key hierarchy on the device.
//!
//! Protocol v2 (OPAQUE login, device keys, the v1 → v2 upgrade) is in
//! `account/v2.rs`; this file picks v2 or v1 per relay and account and stores the
//! result. The v1 flows:
//!
//! - **signup:** random salt, default Argon2id parameters, derive
//!   `auth_key` + `kek`, generate a data key, wrap it, `POST /signup`.
//! - **login:** `POST /prelogin` for salt and parameters, refuse parameters
//!   below the security floor or below the ones pinned for this account at
//!   an earlier login ([`crate::pins`]; a relay must not be able to make the
//!   auth key cheap to brute-force), derive, `POST /login`, unwrap the data
//!   key, pin the parameters.
//! - **logout:** `POST /logout`, then delete local secrets and the account
//!   section of the config even if the relay cannot be reached.
//!
//! These functions block (Argon2id takes about a second, HTTP is ureq);
//! async callers run them in `spawn_blocking`.

use crate::api::{Api, ApiError};
use crate::config::{normalize_server, Account, Config, ConfigError};
use crate::secrets::{self, Secrets, SecretsError, StoreKind};
use crate::tls::{TlsError, TrustRoots};
use clipmesh_proto::api::{LoginRequest, LoginResponse, SignupRequest};
use clipmesh_proto::keys::{random_salt, KdfError, SALT_LEN};
use clipmesh_proto::{
    DataKey, DeviceSecrets, Epoch, EpochKey, ExportWrappedKey, KdfParams, WrappedDataKey,
};
use std::path::Path;
use thiserror::Error;
use zeroize::Zeroizing;

mod v2;

pub use v2::{change_password, epochs_offered, PasswordChanged};

/// Why an account operation failed. `Display` is the one line printed.
#[derive(Debug, Error)]
pub enum AccountError {
    /// The relay call failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The password does not open the data key.
    #[error("wrong password")]
    WrongPassword,
    /// The relay offered key-derivation parameters this client refuses.
    #[error("the relay asked for unsafe key-derivation parameters ({0}); refusing to log in")]
    Kdf(KdfError),
    /// The relay's answer was malformed.
    #[error("unexpected answer from the relay: {0}")]
    BadResponse(&'static str),
    /// Local configuration problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The pinned-parameters file cannot be read or written.
    #[error("kdf pins: {0}")]
    Pins(std::io::Error),
    /// The secret store failed.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The URL is not usable.
    #[error("bad server URL: {0}")]
    Url(String),
    /// The CA file is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The command needs a logged-in device.
    #[error("not logged in: run `clipmesh login` first")]
    NotLoggedIn,
    /// This device logged in to the account with v2 before, and the relay
    /// now refuses v2 login or no longer offers it.
    #[error("v2 login failed for an account this device has used with v2 (wrong password, or the relay no longer offers v2); refusing to fall back to v1 login")]
    V2Pinned,
    /// The command needs a v2 (OPAQUE) account.
    #[error("this account still uses v1 login: run `clipmesh login` again to upgrade it first")]
    NotV2,
    /// The relay stores no key epochs, so a revoke cannot exclude a
    /// device's keys there.
    #[error(
        "this relay cannot start a new key epoch, so a revoke would not lock the device's keys out"
    )]
    NoEpochs,
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    BadRequest(&'static str),
    /// An OPAQUE message could not be made.
    #[error("login: {0}")]
    Opaque(clipmesh_proto::opaque::OpaqueError),
}

/// What `signup`/`login` need.
#[derive(Debug)]
pub struct Credentials<'a> {
    /// Relay base URL as the user typed it.
    pub server: &'a str,
    /// Account name.
    pub username: &'a str,
    /// The password (zeroized by the caller's `Zeroizing`).
    pub password: &'a [u8],
    /// This device's name.
    pub device_name: &'a str,
    /// PEM file of the certificates to trust instead of the built-in roots.
    pub ca_file: Option<&'a Path>,
    /// Allow plain `http://` to a host other than this machine.
    pub insecure_http: bool,
    /// The relay's one-time setup token (its first account needs it).
    pub setup_token: Option<&'a str>,
}

/// A logged-in device, loaded from its config directory.
#[derive(Debug)]
pub struct Device {
    /// The config (account section present).
    pub config: Config,
    /// The account section.
    pub account: Account,
    /// Token and data key.
    pub secrets: Secrets,
}

impl Device {
    /// Loads the account and secrets of the device in `dir`.
    pub fn load(dir: &Path) -> Result<Self, AccountError> {
        let config = Config::load(dir)?;
        let account = config.account.clone().ok_or(AccountError::NotLoggedIn)?;
        crate::config::check_plain_http(&account.server, account.insecure_http)
            .map_err(AccountError::Url)?;
        let kind = StoreKind::parse(&account.secret_store).unwrap_or(StoreKind::File);
        let secrets = secrets::load(dir, kind).map_err(|e| match e {
            SecretsError::Missing => AccountError::NotLoggedIn,
            e => AccountError::Secrets(e),
        })?;
        Ok(Self {
            config,
            account,
            secrets,
        })
    }

    /// The TLS roots this device trusts for its relay.
    pub fn roots(&self) -> Result<TrustRoots, AccountError> {
        Ok(TrustRoots::load(self.account.ca_file.as_deref())?)
    }

    /// An API client for this device's relay.
    pub fn api(&self) -> Result<Api, AccountError> {
        Ok(Api::with_roots(&self.account.server, &self.roots()?))
    }
}

/// Makes a CA file path absolute so later commands find it from any
/// working directory.
fn absolute(p: &Path) -> std::path::PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The normalised relay URL, refused before any socket opens if it is plain
/// `http://` to another machine without `insecure_http`.
fn checked_server(creds: &Credentials<'_>) -> Result<String, AccountError> {
    let server = normalize_server(creds.server).map_err(AccountError::Url)?;
    crate::config::check_plain_http(&server, creds.insecure_http).map_err(AccountError::Url)?;
    Ok(server)
}

/// Creates an account and logs this device in.
pub fn signup(dir: &Path, creds: &Credentials<'_>) -> Result<Account, AccountError> {
    signup_with_params(dir, creds, KdfParams::default())
}

/// [`signup`] with explicit KDF parameters (tests use cheap ones; they must
/// still pass the floor or later logins refuse them).
///
/// Signs up with protocol v2 (OPAQUE) when the relay offers it, and with v1
/// when it answers `/api/v2` with 404 (a relay of an older release).
pub fn signup_with_params(
    dir: &Path,
    creds: &Credentials<'_>,
    kdf: KdfParams,
) -> Result<Account, AccountError> {
    let server = checked_server(creds)?;
    let roots = TrustRoots::load(creds.ca_file)?;
    let api = Api::with_roots(&server, &roots);
    kdf.check_floor().map_err(AccountError::Kdf)?;
    match v2::signup(&api, creds, kdf) {
        Ok((resp, epoch_key)) => {
            let account = v2::store(dir, &server, creds, &api, resp, epoch_key)?;
            pin(dir, &server, creds.username, kdf)?;
            pin_v2(dir, &server, creds.username, kdf)?;
            Ok(account)
        }
        Err(AccountError::Api(e)) if v2::not_offered(&e) => {
            tracing::info!("the relay has no v2 accounts; signing up with v1");
            signup_v1(dir, &server, &api, creds, kdf)
        }
        Err(e) => Err(e),
    }
}

fn signup_v1(
    dir: &Path,
    server: &str,
    api: &Api,
    creds: &Credentials<'_>,
    kdf: KdfParams,
) -> Result<Account, AccountError> {
    let salt = random_salt();
    let (auth_key, kek) = clipmesh_proto::keys::derive_keys(creds.password, &salt, &kdf)
        .map_err(AccountError::Kdf)?;
    let data_key = DataKey::generate();
    let wrapped = kek.wrap(&data_key);
    let req = SignupRequest {
        username: creds.username.to_owned(),
        salt: hex::encode(salt),
        kdf,
        auth_key: hex::encode(auth_key.expose()),
        wrapped_data_key: wrapped.to_hex(),
        device_name: creds.device_name.to_owned(),
        setup_token: creds.setup_token.map(str::to_owned),
    };
    let resp = api.signup(&req)?;
    let account = store(
        dir,
        server,
        creds,
        resp.token.clone(),
        &resp,
        data_key,
        None,
    )?;
    pin(dir, server, creds.username, kdf)?;
    Ok(account)
}

/// Logs this device in to an existing account.
///
/// Tries protocol v2 (OPAQUE) first. If the relay has no v2 (404), or the
/// v2 login fails and this device never logged in to the account with v2,
/// it tries v1; a v1 login on a relay that has v2 then upgrades the account
/// in place (`docs/crypto.md`, "Upgrade from v1"). Once an account has
/// logged in with v2 on this device it is pinned to v2 ([`crate::pins`]):
/// v1 is never tried for it again, so a relay cannot make this device send
/// an `auth_key` for it.
pub fn login(dir: &Path, creds: &Credentials<'_>) -> Result<Account, AccountError> {
    let server = checked_server(creds)?;
    let roots = TrustRoots::load(creds.ca_file)?;
    let api = Api::with_roots(&server, &roots);
    let pins = crate::pins::Pins::load(dir).map_err(AccountError::Pins)?;
    let (pinned, pinned_v2) = (
        pins.get(&server, creds.username),
        pins.get_v2(&server, creds.username),
    );
    match v2::login(&api, creds, pinned_v2.or(pinned).as_ref())? {
        v2::Outcome::Done {
            resp,
            export_key,
            kdf,
        } => {
            let wrap = ExportWrappedKey::from_hex(&resp.export_wrap)
                .ok_or(AccountError::BadResponse("export wrap"))?;
            let epoch_key = export_key
                .kek()
                .unwrap(Epoch(resp.epoch), &wrap)
                .map_err(|_| AccountError::BadResponse("export wrap"))?;
            let account = v2::store(dir, &server, creds, &api, resp, epoch_key)?;
            pin_v2(dir, &server, creds.username, kdf)?;
            Ok(account)
        }
        v2::Outcome::NotOffered | v2::Outcome::Failed if pinned_v2.is_some() => {
            Err(AccountError::V2Pinned)
        }
        v2::Outcome::NotOffered => {
            let (resp, data_key, kdf, _) = login_v1(&api, creds, pinned.as_ref())?;
            let account = store(
                dir,
                &server,
                creds,
                resp.token.clone(),
                &resp,
                data_key,
                None,
            )?;
            pin(dir, &server, creds.username, kdf)?;
            Ok(account)
        }
        v2::Outcome::Failed => {
            let (resp, data_key, kdf, auth_key) = login_v1(&api, creds, pinned.as_ref())?;
            pin(dir, &server, creds.username, kdf)?;
            match v2::upgrade(&api, &resp.token, creds, &auth_key, &data_key, kdf) {
                Ok(()) => {
                    tracing::info!("account upgraded to protocol v2");
                    let v2resp = clipmesh_proto::api::v2::LoginV2Response {
                        user_id: resp.user_id,
                        device_id: resp.device_id,
                        token: resp.token.clone(),
                        kdf,
                        epoch: 0,
                        export_wrap: String::new(),
                        is_admin: resp.is_admin,
                    };
                    let key = EpochKey::from_bytes(*data_key.expose());
                    let account = v2::store(dir, &server, creds, &api, v2resp, key)?;
                    pin_v2(dir, &server, creds.username, kdf)?;
                    Ok(account)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not upgrade the account to v2; staying on v1");
                    store(
                        dir,
                        &server,
                        creds,
                        resp.token.clone(),
                        &resp,
                        data_key,
                        None,
                    )
                }
            }
        }
    }
}

/// v1 login: prelogin, the parameter checks, Argon2id, `POST /login`, and
/// the data key unwrapped.
fn login_v1(
    api: &Api,
    creds: &Credentials<'_>,
    pinned: Option<&KdfParams>,
) -> Result<(LoginResponse, DataKey, KdfParams, clipmesh_proto::AuthKey), AccountError> {
    let pre = api.prelogin(creds.username)?;
    pre.kdf.check_pinned(pinned).map_err(AccountError::Kdf)?;
    let salt: [u8; SALT_LEN] = hex::decode(&pre.salt)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(AccountError::BadResponse("salt"))?;
    let (auth_key, kek) = clipmesh_proto::keys::derive_keys(creds.password, &salt, &pre.kdf)
        .map_err(AccountError::Kdf)?;
    let req = LoginRequest {
        username: creds.username.to_owned(),
        auth_key: hex::encode(auth_key.expose()),
        device_name: creds.device_name.to_owned(),
    };
    let resp = api.login(&req)?;
    let wrapped = WrappedDataKey::from_hex(&resp.wrapped_data_key)
        .ok_or(AccountError::BadResponse("wrapped data key"))?;
    let data_key = kek
        .unwrap(&wrapped)
        .map_err(|_| AccountError::WrongPassword)?;
    Ok((resp, data_key, pre.kdf, auth_key))
}

/// Pins the parameters an account logged in with (they passed the floor and
/// any earlier pin, so a pin only goes up).
fn pin(dir: &Path, server: &str, username: &str, kdf: KdfParams) -> Result<(), AccountError> {
    let mut pins = crate::pins::Pins::load(dir).map_err(AccountError::Pins)?;
    pins.pin(server, username, kdf).map_err(AccountError::Pins)
}

/// Pins an account to v2 login on this device.
fn pin_v2(dir: &Path, server: &str, username: &str, kdf: KdfParams) -> Result<(), AccountError> {
    let mut pins = crate::pins::Pins::load(dir).map_err(AccountError::Pins)?;
    pins.pin_v2(server, username, kdf)
        .map_err(AccountError::Pins)
}

/// What a login leaves on the device.
struct Session {
    user_id: u64,
    device_id: u64,
    token: String,
    data_key: DataKey,
    v2: Option<(DeviceSecrets, u32)>,
}

fn store(
    dir: &Path,
    server: &str,
    creds: &Credentials<'_>,
    token: String,
    resp: &LoginResponse,
    data_key: DataKey,
    v2: Option<(DeviceSecrets, u32)>,
) -> Result<Account, AccountError> {
    store_session(
        dir,
        server,
        creds,
        Session {
            user_id: resp.user_id.0,
            device_id: resp.device_id.0,
            token,
            data_key,
            v2,
        },
    )
}

fn store_session(
    dir: &Path,
    server: &str,
    creds: &Credentials<'_>,
    session: Session,
) -> Result<Account, AccountError> {
    crate::config::ensure_dir(dir)?;
    let (device, epoch) = match session.v2 {
        Some((d, e)) => (Some(d), Some(e)),
        None => (None, None),
    };
    let secrets = Secrets {
        token: Zeroizing::new(session.token),
        data_key: session.data_key,
        device,
        epoch,
    };
    let kind = secrets::save(dir, &secrets)?;
    let mut config = Config::load(dir)?;
    let account = Account {
        server: server.to_owned(),
        username: creds.username.to_owned(),
        user_id: session.user_id,
        device_id: session.device_id,
        device_name: creds.device_name.to_owned(),
        secret_store: kind.as_str().to_owned(),
        ca_file: creds.ca_file.map(absolute),
        insecure_http: creds.insecure_http,
    };
    config.account = Some(account.clone());
    config.save(dir)?;
    // A new device starts its room view from scratch, and its roster too:
    // the pins were of another session's account (device ids are per relay).
    let _ = std::fs::remove_file(dir.join(crate::state::STATE_FILE));
    let _ = std::fs::remove_file(dir.join(crate::roster::ROSTER_FILE));
    crate::replay::ReplayFile::new(dir).remove();
    tracing::debug!(
        user = session.user_id,
        device = session.device_id,
        store = kind.as_str(),
        v2 = epoch.is_some(),
        "logged in"
    );
    Ok(account)
}

/// Revokes this device's session and forgets it locally. Local secrets are
/// deleted even when the relay cannot be reached; that error is returned
/// afterwards so the user knows the session may still be live.
pub fn logout(dir: &Path) -> Result<(), AccountError> {
    let mut config = Config::load(dir)?;
    let account = config.account.clone().ok_or(AccountError::NotLoggedIn)?;
    let kind = StoreKind::parse(&account.secret_store).unwrap_or(StoreKind::File);
    let remote: Result<(), AccountError> = match secrets::load(dir, kind) {
        Ok(s) => match TrustRoots::load(account.ca_file.as_deref()) {
            Ok(roots) => match Api::with_roots(&account.server, &roots).logout(&s.token) {
                // Already revoked: logging out is done.
                Ok(()) | Err(ApiError::Unauthorized) => Ok(()),
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        },
        Err(_) => Ok(()),
    };
    secrets::delete(dir, kind)?;
    config.account = None;
    config.save(dir)?;
    let _ = std::fs::remove_file(dir.join(crate::state::STATE_FILE));
    let _ = std::fs::remove_file(dir.join(crate::roster::ROSTER_FILE));
    remote
}
