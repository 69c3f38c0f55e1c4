//! Protocol v2 account endpoints under `/api/v2` (`docs/protocol.md`,
//! "Accounts, v2"): OPAQUE signup, login and password change, the v1 → v2
//! upgrade, and device public keys.
//!
//! The rules are `clipmesh_room::opaque` (shared with the Worker host);
//! this module moves them between axum, the store and [`OpaqueHost`].
//! Login is throttled per (name, network) like v1 login, except that a v2
//! login counts as a failure from its *start* until it succeeds: an OPAQUE
//! guesser learns whether a guess was right from KE2 alone and need never
//! send KE3. Every failure answers `invalid_credentials`, whatever failed.
//!
//! [`OpaqueHost`]: crate::opaque::OpaqueHost

use super::account::{
    admit_signup, check_throttle, invalid_credentials, kdf_census, record_failure, record_success,
    signup_closed,
};
use crate::app::AppState;
use crate::auth;
use crate::config::SignupPolicy;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authed};
use crate::store::{CreateUser, Logout, V2Credentials};
use crate::validate;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use clipmesh_proto::api::v2::{
    DeviceKeyRecord, DeviceKeyRequest, DeviceKeysResponse, EpochWrapRecord, EpochWrapResponse,
    LoginFinishRequest, LoginStartRequest, LoginStartResponse, LoginV2Response,
    OwnRegisterStartRequest, PasswordFinishRequest, PasswordStartRequest, PasswordStartResponse,
    RegisterStartRequest, RegisterStartResponse, SignupFinishRequest, UpgradeRequest,
};
use clipmesh_proto::api::ApiErrorCode;
use clipmesh_proto::opaque::RegistrationRecord;
use clipmesh_proto::{DeviceId, KdfParams, UserId};
use clipmesh_room::epoch::{self, AccountDevice};
use clipmesh_room::opaque::{self as rules, AccountAuth, LoginFor};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

type S = State<Arc<AppState>>;

fn record_of(bytes: &[u8]) -> Result<RegistrationRecord, ApiError> {
    RegistrationRecord::from_slice(bytes).map_err(|_| ApiError::internal("stored record"))
}

/// `POST /api/v2/signup/start`: OPAQUE registration step 1 for a new name.
/// Answers for any name (taken or not): the answer is the OPRF evaluation
/// the name's login would use, which reveals nothing without the password.
pub(super) async fn signup_start(
    State(s): S,
    ApiJson(req): ApiJson<RegisterStartRequest>,
) -> Result<Json<RegisterStartResponse>, ApiError> {
    validate::username(&req.username)?;
    if s.config.signup == SignupPolicy::Closed {
        return Err(signup_closed());
    }
    let request = rules::registration_request("request", &req.request)?;
    let response = rules::register_start(&s.opaque.setup, &request, &req.username)?;
    Ok(Json(RegisterStartResponse {
        response: response.to_hex(),
    }))
}

/// `POST /api/v2/signup/finish`: creates the account from its record.
pub(super) async fn signup_finish(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SignupFinishRequest>,
) -> Result<Json<LoginV2Response>, ApiError> {
    validate::username(&req.username)?;
    validate::device_name(&req.device_name)?;
    let record = rules::record(&req.record)?;
    let kdf = rules::record_kdf(&req.kdf)?;
    let wrap = rules::export_wrap(&req.export_wrap)?;
    let admission = admit_signup(&s, peer, &headers, req.setup_token.as_deref()).await?;
    let creds = V2Credentials {
        record: record.as_bytes().to_vec(),
        kdf,
        epoch: req.epoch,
        export_wrap: wrap.0.to_vec(),
    };
    let (token, token_hash) = auth::new_token();
    let (name, device_name, c2) = (req.username.clone(), req.device_name.clone(), creds.clone());
    let now = s.clock.unix_now();
    let res = s
        .store
        .call(move |db| {
            db.create_user_v2(
                &name,
                &c2,
                |existing| admission.allows(existing),
                (&device_name, &token_hash),
                now,
            )
        })
        .await?;
    match res {
        CreateUser::Created {
            user,
            device: Some(device),
            is_admin,
        } => {
            tracing::info!(%user, %device, is_admin, "account created (v2)");
            if is_admin {
                s.setup.consumed();
            }
            Ok(Json(LoginV2Response {
                user_id: user,
                device_id: device,
                token,
                kdf,
                epoch: creds.epoch,
                export_wrap: req.export_wrap,
                is_admin,
            }))
        }
        CreateUser::Created { device: None, .. } => {
            Err(ApiError::internal("signup created no device"))
        }
        CreateUser::Taken => Err(ApiError::new(
            StatusCode::CONFLICT,
            ApiErrorCode::UsernameTaken,
            "that username is taken",
        )),
        CreateUser::Closed => Err(signup_closed()),
    }
}

/// The parameters a v1 prelogin shows for `username` when it has no
/// account: the same fake ones, so v2 reveals nothing v1 did not.
async fn shown_kdf(s: &AppState, username: &str) -> Result<KdfParams, ApiError> {
    Ok(auth::fake_kdf(&s.secret, username, &kdf_census(s).await?))
}

/// Parks a started login; a full table is a 429.
fn park(
    s: &AppState,
    state: &clipmesh_proto::opaque::ServerLogin,
    who: LoginFor,
) -> Result<String, ApiError> {
    let now = s.opaque.now_ms();
    s.opaque
        .pending()
        .park(&mut rand::rngs::OsRng, state, who, now)
        .map_err(|_| ApiError::rate_limited(std::time::Duration::from_secs(1)))
}

/// `POST /api/v2/login/start`: KE1 → KE2. Unknown names and accounts still
/// on v1 get OPAQUE's fake record.
pub(super) async fn login_start(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginStartRequest>,
) -> Result<Json<LoginStartResponse>, ApiError> {
    validate::username(&req.username)?;
    let ke1 = rules::login_request("request", &req.request)?;
    let ip = s.trusted.client_ip(peer, &headers);
    check_throttle(&s, &req.username, ip)?;
    // Counted now, cleared by a successful finish: a guesser learns
    // whether its guess was right from KE2 alone and never sends KE3.
    s.login_guard.attempt(&req.username, ip, Instant::now());
    let name = req.username.clone();
    let acc = s.store.call(move |db| db.v2_account_by_name(&name)).await?;
    let account = match &acc {
        Some(a) => Some(AccountAuth {
            user: a.user,
            record: a.record.as_deref().map(record_of).transpose()?,
            kdf: a.kdf,
        }),
        None => None,
    };
    let shown = match &account {
        Some(a) => a.kdf,
        None => shown_kdf(&s, &req.username).await?,
    };
    let (state, ke2, kdf) = rules::login_start(
        &mut rand::rngs::OsRng,
        &s.opaque.setup,
        account.as_ref(),
        &ke1,
        &req.username,
        shown,
    )?;
    let who = LoginFor {
        username: req.username.clone(),
        user: account.filter(|a| a.record.is_some()).map(|a| a.user),
    };
    let login_id = park(&s, &state, who)?;
    Ok(Json(LoginStartResponse {
        login_id,
        response: ke2.to_hex(),
        kdf,
    }))
}

/// Takes a parked login and checks KE3; `Ok` names the account.
fn finish_parked(
    s: &AppState,
    login_id: &str,
    finish: &str,
    ip: std::net::IpAddr,
) -> Result<(UserId, String), ApiError> {
    let id = rules::login_id(login_id)?;
    let ke3 = rules::login_finish_bytes("finish", finish)?;
    let now = s.opaque.now_ms();
    let Some((state, who)) = s.opaque.pending().take(&id, now) else {
        return Err(invalid_credentials());
    };
    let ok = rules::login_finish(state, &ke3).is_ok();
    match who.user.filter(|_| ok) {
        Some(user) => Ok((user, who.username)),
        None => {
            // The start already counted against the account.
            crate::metrics::Metrics::add(&s.metrics.auth_failures, 1);
            s.login_guard.net_failure(ip, Instant::now());
            tracing::debug!(%ip, "v2 login failed");
            Err(invalid_credentials())
        }
    }
}

/// `POST /api/v2/login/finish`: KE3; success logs a new device in.
pub(super) async fn login_finish(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginFinishRequest>,
) -> Result<Json<LoginV2Response>, ApiError> {
    validate::device_name(&req.device_name)?;
    let ip = s.trusted.client_ip(peer, &headers);
    let (user, username) = finish_parked(&s, &req.login_id, &req.finish, ip)?;
    let acc = s
        .store
        .call(move |db| db.v2_account_by_id(user))
        .await?
        .ok_or_else(invalid_credentials)?;
    if acc.disabled {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ApiErrorCode::AccountDisabled,
            "this account is disabled",
        ));
    }
    record_success(&s, &username, ip);
    let (token, token_hash) = auth::new_token();
    let dname = req.device_name.clone();
    let now = s.clock.unix_now();
    let device = s
        .store
        .call(move |db| db.create_session(user, &dname, &token_hash, now))
        .await?;
    tracing::info!(%user, %device, "device logged in (v2)");
    Ok(Json(LoginV2Response {
        user_id: user,
        device_id: device,
        token,
        kdf: acc.kdf,
        epoch: acc.epoch,
        export_wrap: hex::encode(acc.export_wrap.unwrap_or_default()),
        is_admin: acc.is_admin,
    }))
}

/// `POST /api/v2/register/start` (token): registration step 1 for the
/// caller's own account (the upgrade uses it).
pub(super) async fn register_start(
    State(s): S,
    Authed(me): Authed,
    ApiJson(req): ApiJson<OwnRegisterStartRequest>,
) -> Result<Json<RegisterStartResponse>, ApiError> {
    let request = rules::registration_request("request", &req.request)?;
    let user = me.user;
    let row = s
        .store
        .call(move |db| db.user_by_id(user))
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let response = rules::register_start(&s.opaque.setup, &request, &row.username)?;
    Ok(Json(RegisterStartResponse {
        response: response.to_hex(),
    }))
}

/// `POST /api/v2/upgrade` (token of a v1 session): v1 → v2 in place, with
/// the v1 `auth_key` as proof; v1 login stops working for the account.
pub(super) async fn upgrade(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Authed(me): Authed,
    ApiJson(req): ApiJson<UpgradeRequest>,
) -> Result<StatusCode, ApiError> {
    let current = validate::key_hex("current_auth_key", &req.current_auth_key)?;
    let record = rules::record(&req.record)?;
    let kdf = rules::record_kdf(&req.kdf)?;
    let wrap = rules::export_wrap(&req.export_wrap)?;
    let user = me.user;
    let row = s
        .store
        .call(move |db| db.user_by_id(user))
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let ip = s.trusted.client_ip(peer, &headers);
    check_throttle(&s, &row.username, ip)?;
    let phc = Some(row.auth_hash.clone()).filter(|_| rules::v1_login_allowed(row.v2));
    if !s.hasher.verify(phc, current).await? {
        record_failure(&s, &row.username, ip);
        return Err(invalid_credentials());
    }
    let creds = V2Credentials {
        record: record.as_bytes().to_vec(),
        kdf,
        epoch: 0,
        export_wrap: wrap.0.to_vec(),
    };
    if !s
        .store
        .call(move |db| db.upgrade_to_v2(user, &creds))
        .await?
    {
        return Err(invalid_credentials());
    }
    tracing::info!(%user, "account upgraded to v2");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v2/password/start` (token): a fresh login with the current
/// password plus a registration start for the new one.
pub(super) async fn password_start(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Authed(me): Authed,
    ApiJson(req): ApiJson<PasswordStartRequest>,
) -> Result<Json<PasswordStartResponse>, ApiError> {
    let ke1 = rules::login_request("login", &req.login)?;
    let reg = rules::registration_request("registration", &req.registration)?;
    let user = me.user;
    let row = s
        .store
        .call(move |db| db.user_by_id(user))
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let ip = s.trusted.client_ip(peer, &headers);
    check_throttle(&s, &row.username, ip)?;
    s.login_guard.attempt(&row.username, ip, Instant::now());
    let acc = s
        .store
        .call(move |db| db.v2_account_by_id(user))
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let Some(record) = acc.record.as_deref().map(record_of).transpose()? else {
        return Err(ApiError::bad_request(
            "this account still uses v1 login: log in again with this client to upgrade it",
        ));
    };
    let account = AccountAuth {
        user,
        record: Some(record),
        kdf: acc.kdf,
    };
    let (state, ke2, kdf) = rules::login_start(
        &mut rand::rngs::OsRng,
        &s.opaque.setup,
        Some(&account),
        &ke1,
        &row.username,
        acc.kdf,
    )?;
    let registration = rules::register_start(&s.opaque.setup, &reg, &row.username)?;
    let login_id = park(
        &s,
        &state,
        LoginFor {
            username: row.username,
            user: Some(user),
        },
    )?;
    Ok(Json(PasswordStartResponse {
        login_id,
        response: ke2.to_hex(),
        kdf,
        registration: registration.to_hex(),
    }))
}

/// `POST /api/v2/password/finish` (token): KE3 for the current password,
/// then the new record and export wrap replace the old in one transaction.
pub(super) async fn password_finish(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Authed(me): Authed,
    ApiJson(req): ApiJson<PasswordFinishRequest>,
) -> Result<StatusCode, ApiError> {
    let record = rules::record(&req.record)?;
    let kdf = rules::record_kdf(&req.kdf)?;
    let wrap = rules::export_wrap(&req.export_wrap)?;
    let ip = s.trusted.client_ip(peer, &headers);
    let (user, username) = finish_parked(&s, &req.login_id, &req.finish, ip)?;
    if user != me.user {
        return Err(invalid_credentials());
    }
    record_success(&s, &username, ip);
    let acc = s
        .store
        .call(move |db| db.v2_account_by_id(user))
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let new_epoch = epoch::epoch_step(acc.epoch, &req)?;
    let rotation = if new_epoch {
        let rows = s.store.call(move |db| db.device_keys(user)).await?;
        let devices: Vec<AccountDevice> = rows
            .into_iter()
            .map(|r| AccountDevice {
                id: r.id,
                public_key: r.public_key,
            })
            .collect();
        Some(epoch::check_rotation(me.device, &devices, &req)?)
    } else {
        None
    };
    let creds = V2Credentials {
        record: record.as_bytes().to_vec(),
        kdf,
        epoch: req.epoch,
        export_wrap: wrap.0.to_vec(),
    };
    let logout = if req.end_other_sessions {
        Logout::AllBut(me.device)
    } else {
        Logout::None
    };
    let revoked = s
        .store
        .call(move |db| db.update_v2_credentials(user, &creds, logout, rotation.as_ref()))
        .await?;
    for d in &revoked {
        s.registry.revoke(user, Some(*d)).await;
    }
    if new_epoch {
        // Online devices reconnect and pick the new epoch up on join.
        s.registry.rekey(user).await;
    }
    tracing::info!(%user, revoked = revoked.len(), epoch = req.epoch, "password changed (v2)");
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/v2/device-key` (token): publishes the caller's public keys
/// with their certificate. A device's keys are fixed for its session: a
/// different key for a device that already has one is refused (409); the
/// same key may be re-certified under a newer epoch.
pub(super) async fn put_device_key(
    State(s): S,
    Authed(me): Authed,
    ApiJson(req): ApiJson<DeviceKeyRequest>,
) -> Result<StatusCode, ApiError> {
    let public = rules::device_public(&req.public_key)?;
    let cert = rules::cert(&req.cert)?;
    let (user, device) = (me.user, me.device);
    let acc = s
        .store
        .call(move |db| db.v2_account_by_id(user))
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    if acc.record.is_none() {
        return Err(ApiError::bad_request("device keys need a v2 account"));
    }
    if req.epoch > acc.epoch {
        return Err(ApiError::bad_request("epoch is newer than the account's"));
    }
    let bytes = public.to_bytes();
    let stored = s.store.call(move |db| db.device_public_key(device)).await?;
    if stored.is_some_and(|k| k != bytes) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ApiErrorCode::BadRequest,
            "this device already has a different public key",
        ));
    }
    let epoch = req.epoch;
    s.store
        .call(move |db| db.set_device_key(user, device, &bytes, epoch, &cert))
        .await?;
    tracing::info!(%user, %device, "device key published");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v2/device-keys` (token): the account's devices and keys.
pub(super) async fn device_keys(
    State(s): S,
    Authed(me): Authed,
) -> Result<Json<DeviceKeysResponse>, ApiError> {
    let user = me.user;
    let (acc, rows) = s
        .store
        .call(move |db| Ok((db.v2_account_by_id(user)?, db.device_keys(user)?)))
        .await?;
    let acc = acc.ok_or_else(ApiError::unauthorized)?;
    Ok(Json(DeviceKeysResponse {
        epoch: acc.epoch,
        devices: rows
            .into_iter()
            .map(|d| DeviceKeyRecord {
                id: DeviceId(d.id.0),
                name: d.name,
                public_key: d.public_key.map(hex::encode),
                epoch: d.epoch,
                cert: d.cert.map(hex::encode),
            })
            .collect(),
    }))
}

/// `GET /api/v2/epoch-wrap` (token): the current epoch's key wrapped to
/// the caller by the device that started the epoch, with that device's
/// public key and its certificate under the previous epoch. The relay can
/// open none of it; the caller checks the signer against its roster.
pub(super) async fn epoch_wrap(
    State(s): S,
    Authed(me): Authed,
) -> Result<Json<EpochWrapResponse>, ApiError> {
    let (user, device) = (me.user, me.device);
    let wrap = s.store.call(move |db| db.epoch_wrap(user, device)).await?;
    Ok(Json(EpochWrapResponse {
        wrap: wrap.map(|w| EpochWrapRecord {
            epoch: w.epoch,
            sender: w.sender,
            sender_public: hex::encode(w.sender_public),
            sender_cert: hex::encode(w.sender_cert),
            wrap: hex::encode(w.wrap),
        }),
    }))
}
