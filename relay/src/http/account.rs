//! Account endpoints: prelogin, signup, login, logout, devices, password.

use crate::app::AppState;
use crate::auth;
use crate::config::SignupPolicy;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authed};
use crate::metrics::Metrics;
use crate::store::{CreateUser, Logout, NewCredentials, UserRow};
use crate::validate;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use clipmesh_proto::api::ApiErrorCode;
use clipmesh_proto::api::{
    ChangePasswordRequest, DeviceRecord, DevicesResponse, LoginRequest, LoginResponse,
    PreloginRequest, PreloginResponse, RenewResponse, SignupRequest,
};
use clipmesh_proto::{DeviceId, KdfParams};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

type S = State<Arc<AppState>>;

pub(super) async fn prelogin(
    State(s): S,
    ApiJson(req): ApiJson<PreloginRequest>,
) -> Result<Json<PreloginResponse>, ApiError> {
    validate::username(&req.username)?;
    let name = req.username.clone();
    let user = s.store.call(move |db| db.user_by_name(&name)).await?;
    // A v2 account has no v1 salt: it answers like an unknown name, so v1
    // prelogin reveals nothing about which accounts have upgraded.
    Ok(Json(match user.filter(|u| !u.v2) {
        Some(u) => PreloginResponse {
            salt: hex::encode(&u.salt),
            kdf: u.kdf,
        },
        None => PreloginResponse {
            salt: hex::encode(auth::fake_salt(&s.secret, &req.username)),
            kdf: auth::fake_kdf(&s.secret, &req.username, &kdf_census(&s).await?),
        },
    }))
}

/// The KDF parameter sets in use, from a cache refreshed every
/// [`crate::app::KDF_CENSUS_TTL`] (so prelogin floods cost no table scans).
pub(super) async fn kdf_census(s: &AppState) -> Result<Vec<(KdfParams, u64)>, ApiError> {
    let now = Instant::now();
    if let Some((at, c)) = &*lock(&s.kdf_census) {
        if now.saturating_duration_since(*at) < crate::app::KDF_CENSUS_TTL {
            return Ok(c.clone());
        }
    }
    let census = s.store.call(|db| db.kdf_census()).await?;
    *lock(&s.kdf_census) = Some((now, census.clone()));
    Ok(census)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The cache is replaced whole, so a poisoned value is still consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn login_response(
    user: &UserRow,
    device: DeviceId,
    token: String,
    is_admin: bool,
) -> Json<LoginResponse> {
    Json(LoginResponse {
        user_id: user.id,
        device_id: device,
        token,
        wrapped_data_key: hex::encode(&user.wrapped_data_key),
        salt: hex::encode(&user.salt),
        kdf: user.kdf,
        is_admin,
    })
}

pub(super) async fn signup(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SignupRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    validate::username(&req.username)?;
    validate::device_name(&req.device_name)?;
    let creds = validate::credentials(&req.salt, &req.kdf, &req.wrapped_data_key)?;
    let auth_key = validate::key_hex("auth_key", &req.auth_key)?;
    // Everything cheap is decided before the expensive hash: the policy, the
    // setup token and the per-network signup budget.
    let admission = admit_signup(&s, peer, &headers, req.setup_token.as_deref()).await?;
    let auth_hash = s.hasher.hash(auth_key).await?;
    let creds = NewCredentials { auth_hash, ..creds };
    let (token, token_hash) = auth::new_token();
    let (name, device_name, c2) = (req.username.clone(), req.device_name.clone(), creds.clone());
    let now = s.clock.unix_now();
    let res = s
        .store
        .call(move |db| {
            db.create_user(
                &name,
                &c2,
                // Re-checked inside the transaction.
                |existing| admission.allows(existing),
                Some((&device_name, &token_hash)),
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
            tracing::info!(%user, %device, is_admin, "account created");
            // The network it signed up from is known to it (its logins from
            // there take the hasher's known lane).
            let ip = s.trusted.client_ip(peer, &headers);
            s.login_guard.remember(&req.username, ip, Instant::now());
            if is_admin {
                s.setup.consumed();
            }
            let row = UserRow {
                id: user,
                username: req.username,
                salt: creds.salt,
                kdf: creds.kdf,
                auth_hash: String::new(),
                wrapped_data_key: creds.wrapped_data_key,
                is_admin,
                disabled: false,
                created_at: 0,
                v2: false,
            };
            Ok(login_response(&row, device, token, is_admin))
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

/// What [`admit_signup`] decided: the policy in force and whether this
/// signup makes the relay's first account.
#[derive(Clone, Copy)]
pub(super) struct SignupAdmission {
    policy: SignupPolicy,
    first: bool,
}

impl SignupAdmission {
    /// The re-check inside the creating transaction, given the user count
    /// it sees: the setup token was checked only for a first account, so it
    /// admits only one.
    pub(super) fn allows(self, existing: u64) -> bool {
        match self.policy {
            SignupPolicy::Open => existing > 0 || self.first,
            SignupPolicy::Closed => false,
            SignupPolicy::First => existing == 0 && self.first,
        }
    }
}

/// The cheap checks every signup (v1 and v2) passes before any expensive
/// work: the signup policy, the setup token for the first account, and the
/// per-network signup budget.
pub(super) async fn admit_signup(
    s: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    setup_token: Option<&str>,
) -> Result<SignupAdmission, ApiError> {
    let policy = s.config.signup;
    if policy == SignupPolicy::Closed {
        return Err(signup_closed());
    }
    let existing = s.store.call(|db| db.user_count()).await?;
    if policy == SignupPolicy::First && existing > 0 {
        return Err(signup_closed());
    }
    let first = existing == 0;
    if first && !s.setup.matches(setup_token) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ApiErrorCode::SetupTokenRequired,
            "the first account needs the relay's setup token (printed at its start, \
             also in setup-token in its data directory)",
        ));
    }
    let ip = s.trusted.client_ip(peer, headers);
    s.signup_guard
        .admit(ip, Instant::now())
        .map_err(ApiError::rate_limited)?;
    Ok(SignupAdmission { policy, first })
}

pub(super) fn signup_closed() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ApiErrorCode::SignupClosed,
        "signup is closed on this relay; ask its operator for an account",
    )
}

/// The login throttle for `name` from `ip` (shared by every login flavour:
/// the API login, password change and the ClipCascade form login).
pub(crate) fn check_throttle(
    s: &AppState,
    name: &str,
    ip: std::net::IpAddr,
) -> Result<(), ApiError> {
    s.login_guard
        .check(name, ip, Instant::now())
        .map_err(ApiError::rate_limited)
}

/// A failed login for `name` from `ip`.
pub(crate) fn record_failure(s: &AppState, name: &str, ip: std::net::IpAddr) {
    Metrics::add(&s.metrics.auth_failures, 1);
    s.login_guard.failure(name, ip, Instant::now());
}

/// A login succeeded: the (account, network) counter starts over.
pub(crate) fn record_success(s: &AppState, name: &str, ip: std::net::IpAddr) {
    s.login_guard.success(name, ip);
    s.login_guard.remember(name, ip, Instant::now());
}

pub(super) fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ApiErrorCode::InvalidCredentials,
        "wrong username or password",
    )
}

pub(super) async fn login(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    validate::username(&req.username)?;
    validate::device_name(&req.device_name)?;
    let auth_key = validate::key_hex("auth_key", &req.auth_key)?;
    let ip = s.trusted.client_ip(peer, &headers);
    check_throttle(&s, &req.username, ip)?;
    let name = req.username.clone();
    let user = s.store.call(move |db| db.user_by_name(&name)).await?;
    // v1 login works only until the account has upgraded to v2: after
    // that it is checked against the dummy hash, like an unknown name.
    let phc = user
        .as_ref()
        .filter(|u| clipmesh_room::opaque::v1_login_allowed(u.v2))
        .map(|u| u.auth_hash.clone());
    // A network this account logged in from before skips the queue that
    // floods from elsewhere fill (`Hasher`'s known lane).
    let ok = if s.login_guard.is_known(&req.username, ip, Instant::now()) {
        s.hasher.verify_known(phc, auth_key).await?
    } else {
        s.hasher.verify(phc, auth_key).await?
    };
    let Some(user) = user.filter(|u| ok && !u.v2) else {
        record_failure(&s, &req.username, ip);
        tracing::debug!(%ip, "login failed");
        return Err(invalid_credentials());
    };
    if user.disabled {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ApiErrorCode::AccountDisabled,
            "this account is disabled",
        ));
    }
    record_success(&s, &req.username, ip);
    let (token, token_hash) = auth::new_token();
    let (uid, dname) = (user.id, req.device_name.clone());
    let now = s.clock.unix_now();
    let device = s
        .store
        .call(move |db| db.create_session(uid, &dname, &token_hash, now))
        .await?;
    tracing::info!(user = %user.id, %device, "device logged in");
    let is_admin = user.is_admin;
    Ok(login_response(&user, device, token, is_admin))
}

pub(super) async fn logout(State(s): S, Authed(me): Authed) -> Result<StatusCode, ApiError> {
    let (user, device) = (me.user, me.device);
    s.store
        .call(move |db| db.delete_device(user, device))
        .await?;
    s.registry.revoke(user, Some(device)).await;
    tracing::info!(%user, %device, "device logged out");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/session/renew`: a new token for the calling device, its
/// absolute lifetime starting now. The token it replaces works until the
/// new one is first used, then never again, so a copy in an old backup
/// cannot keep itself alive.
pub(super) async fn renew(
    State(s): S,
    headers: HeaderMap,
    Authed(me): Authed,
) -> Result<Json<RenewResponse>, ApiError> {
    let old = crate::extract::bearer(&headers)
        .map(auth::token_hash)
        .ok_or_else(ApiError::unauthorized)?;
    let (token, new_hash) = auth::new_token();
    let now = s.clock.unix_now();
    let renewed = s
        .store
        .call(move |db| db.renew_session(&old, &new_hash, now))
        .await?;
    if !renewed {
        return Err(ApiError::unauthorized());
    }
    tracing::debug!(user = %me.user, device = %me.device, "session renewed");
    Ok(Json(RenewResponse {
        token,
        max_lifetime_s: s.config.auth.session_max_s,
        idle_lifetime_s: s.config.auth.session_idle_s,
    }))
}

pub(super) async fn devices(
    State(s): S,
    Authed(me): Authed,
) -> Result<Json<DevicesResponse>, ApiError> {
    let user = me.user;
    let rows = s.store.call(move |db| db.list_devices(user)).await?;
    let online = s.registry.online(user).await;
    Ok(Json(DevicesResponse {
        devices: rows
            .into_iter()
            .map(|d| DeviceRecord {
                id: d.id,
                online: online.contains(&d.id),
                current: d.id == me.device,
                name: d.name,
                created_at: d.created_at,
                last_seen_at: d.last_seen_at,
            })
            .collect(),
    }))
}

pub(super) async fn delete_device(
    State(s): S,
    Authed(me): Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let device = DeviceId(validate::path_id(&id)?);
    let user = me.user;
    // Ending another device's session without a new epoch would leave it
    // the current key (docs/crypto.md, "Key epochs").
    let found = s
        .store
        .call(move |db| {
            let epoch = db.v2_account_by_id(user)?.map_or(0, |a| a.epoch);
            if !clipmesh_room::epoch::v1_revoke_allowed(epoch, me.device, device) {
                // Refused for a device of this account; any other id is not
                // found, as at epoch 0.
                let mine = db.list_devices(user)?.iter().any(|d| d.id == device);
                return Ok(if mine { None } else { Some(false) });
            }
            db.delete_device(user, device).map(Some)
        })
        .await?;
    match found {
        None => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ApiErrorCode::BadRequest,
                clipmesh_room::epoch::V1_REVOKE_NEEDS_EPOCH,
            ))
        }
        Some(false) => return Err(ApiError::not_found("device")),
        Some(true) => {}
    }
    s.registry.revoke(user, Some(device)).await;
    tracing::info!(%user, %device, "device revoked");
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn change_password(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Authed(me): Authed,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    let current = validate::key_hex("current_auth_key", &req.current_auth_key)?;
    let new_key = validate::key_hex("new_auth_key", &req.new_auth_key)?;
    let creds = validate::credentials(&req.new_salt, &req.new_kdf, &req.new_wrapped_data_key)?;
    let user_id = me.user;
    let user = s
        .store
        .call(move |db| db.user_by_id(user_id))
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let ip = s.trusted.client_ip(peer, &headers);
    check_throttle(&s, &user.username, ip)?;
    let phc =
        Some(user.auth_hash.clone()).filter(|_| clipmesh_room::opaque::v1_login_allowed(user.v2));
    if !s.hasher.verify(phc, current).await? {
        record_failure(&s, &user.username, ip);
        return Err(invalid_credentials());
    }
    let auth_hash = s.hasher.hash(new_key).await?;
    let creds = NewCredentials { auth_hash, ..creds };
    let logout = if req.end_other_sessions {
        Logout::AllBut(me.device)
    } else {
        Logout::None
    };
    let revoked = s
        .store
        .call(move |db| db.update_credentials(user_id, &creds, logout, false))
        .await?;
    for d in &revoked {
        s.registry.revoke(user_id, Some(*d)).await;
    }
    tracing::info!(user = %user_id, revoked = revoked.len(), "password changed");
    Ok(StatusCode::NO_CONTENT)
}
