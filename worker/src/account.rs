//! Account endpoints on D1: prelogin, signup, login, logout, devices,
//! device revoke, password change, and `/readyz`. Same paths, bodies, status codes and
//! error codes as the native relay's `http/account.rs`; the validation and
//! token rules are `clipmesh-room`'s.

use crate::api::{self, ApiError};
use crate::config::{Settings, SignupPolicy};
use crate::session::{self, js_u64, DB};
use crate::throttle;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use clipmesh_proto::api::{
    ChangePasswordRequest, DeviceRecord, DevicesResponse, LoginRequest, LoginResponse,
    PreloginRequest, PreloginResponse, SignupRequest,
};
use clipmesh_proto::{DeviceId, KdfParams, UserId};
use clipmesh_room::{auth, validate};
use rand::RngCore;
use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::{Env, Request, Response};

type Answer = Result<Response, ApiError>;

/// The secret behind fake pre-login salts (`FAKE_SALT_SECRET`, a Worker
/// secret). Without it the Worker refuses pre-login rather than answering
/// with salts that would reveal which accounts exist.
fn fake_salt_secret(env: &Env) -> Result<String, ApiError> {
    env.secret("FAKE_SALT_SECRET")
        .map(|s| s.to_string())
        .or_else(|_| env.var("FAKE_SALT_SECRET").map(|s| s.to_string()))
        .ok()
        .filter(|s| s.len() >= 16)
        .ok_or_else(|| ApiError::internal("FAKE_SALT_SECRET is not set"))
}

/// An account's v1 columns, and whether it has moved to v2.
#[derive(Deserialize)]
pub(crate) struct UserRow {
    id: u64,
    pub(crate) username: String,
    salt: String,
    kdf: String,
    pub(crate) auth_hash: String,
    wrapped_data_key: String,
    is_admin: u32,
    disabled: u32,
    opaque_record: Option<String>,
}

impl UserRow {
    /// Whether the account has an OPAQUE record (v1 login has stopped).
    pub(crate) fn is_v2(&self) -> bool {
        self.opaque_record.is_some()
    }
}

const USER_COLUMNS: &str =
    "id, username, salt, kdf, auth_hash, wrapped_data_key, is_admin, disabled, opaque_record FROM users";

async fn user_by_name(env: &Env, name: &str) -> Result<Option<UserRow>, ApiError> {
    Ok(env
        .d1(DB)?
        .prepare(format!("SELECT {USER_COLUMNS} WHERE username = ?1"))
        .bind(&[JsValue::from_str(name)])?
        .first(None)
        .await?)
}

/// The account `user`.
pub(crate) async fn user_by_id(env: &Env, user: UserId) -> Result<Option<UserRow>, ApiError> {
    Ok(env
        .d1(DB)?
        .prepare(format!("SELECT {USER_COLUMNS} WHERE id = ?1"))
        .bind(&[js_u64(user.0)])?
        .first(None)
        .await?)
}

/// The ids of `user`'s devices.
pub(crate) async fn device_ids(env: &Env, user: UserId) -> Result<Vec<DeviceId>, ApiError> {
    #[derive(Deserialize)]
    struct D {
        id: u64,
    }
    let rows: Vec<D> = env
        .d1(DB)?
        .prepare("SELECT id FROM devices WHERE user_id = ?1")
        .bind(&[js_u64(user.0)])?
        .all()
        .await?
        .results()?;
    Ok(rows.into_iter().map(|d| DeviceId(d.id)).collect())
}

/// The fake KDF parameters pre-login shows for a name without an account.
pub(crate) async fn fake_kdf(env: &Env, username: &str) -> Result<KdfParams, ApiError> {
    Ok(auth::fake_kdf(
        fake_salt_secret(env)?.as_bytes(),
        username,
        &kdf_census(env).await?,
    ))
}

/// `GET /readyz`: D1 answers.
pub async fn readyz(env: &Env) -> Answer {
    let db = env.d1(DB)?;
    match db
        .prepare("SELECT 1 AS one")
        .first::<serde_json::Value>(None)
        .await
    {
        Ok(_) => Ok(Response::ok("ready\n")?),
        Err(e) => {
            worker::console_warn!("readiness check failed: {e}");
            Err(ApiError::unavailable("database unavailable", 5))
        }
    }
}

/// `POST /api/v1/prelogin`.
pub async fn prelogin(mut req: Request, env: &Env) -> Answer {
    let s = Settings::from_env(env);
    let req: PreloginRequest = api::json(&mut req, s.max_json).await?;
    validate::username(&req.username)?;
    // A v2 account has no v1 salt: it answers like an unknown name, so v1
    // prelogin reveals nothing about which accounts have upgraded.
    let user = user_by_name(env, &req.username)
        .await?
        .filter(|u| !u.is_v2());
    let resp = match user {
        Some(u) => PreloginResponse {
            salt: u.salt,
            kdf: serde_json::from_str(&u.kdf).map_err(ApiError::internal)?,
        },
        None => PreloginResponse {
            salt: hex::encode(auth::fake_salt(
                fake_salt_secret(env)?.as_bytes(),
                &req.username,
            )),
            kdf: fake_kdf(env, &req.username).await?,
        },
    };
    api::ok_json(&resp)
}

/// How long an isolate reuses its KDF census (as the native relay's
/// `KDF_CENSUS_TTL`), so prelogin floods cost no table scans.
const KDF_CENSUS_TTL_MS: u64 = 60_000;

/// The parameter sets in use, each with its number of accounts.
type Census = Vec<(KdfParams, u64)>;

thread_local! {
    /// This isolate's cached census: when it was read (Unix ms), and the sets.
    static CENSUS: std::cell::RefCell<Option<(u64, Census)>> =
        const { std::cell::RefCell::new(None) };
}

/// The KDF parameter sets in use and how many accounts use each, the
/// input of [`auth::fake_kdf`] (the same query as the native relay's).
async fn kdf_census(env: &Env) -> Result<Census, ApiError> {
    let now = worker::Date::now().as_millis();
    let cached = CENSUS.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(at, _)| now.saturating_sub(*at) < KDF_CENSUS_TTL_MS)
            .map(|(_, v)| v.clone())
    });
    if let Some(c) = cached {
        return Ok(c);
    }
    #[derive(Deserialize)]
    struct Row {
        kdf: String,
        n: u64,
    }
    let rows: Vec<Row> = env
        .d1(DB)?
        .prepare("SELECT kdf, COUNT(*) AS n FROM users GROUP BY kdf ORDER BY n DESC, kdf ASC")
        .all()
        .await?
        .results()?;
    let census = rows
        .into_iter()
        .map(|r| {
            Ok((
                serde_json::from_str(&r.kdf).map_err(ApiError::internal)?,
                r.n,
            ))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    CENSUS.with(|c| *c.borrow_mut() = Some((now, census.clone())));
    Ok(census)
}

fn argon(s: &Settings) -> Result<argon2::Argon2<'static>, ApiError> {
    let params =
        argon2::Params::new(s.hash_m_kib, s.hash_t, 1, None).map_err(ApiError::internal)?;
    Ok(argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

fn hash_key(s: &Settings, key: &[u8; 32]) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(ApiError::internal)?;
    Ok(argon(s)?
        .hash_password(key, &salt)
        .map_err(ApiError::internal)?
        .to_string())
}

fn verify_key(phc: &str, key: &[u8; 32]) -> bool {
    PasswordHash::new(phc).is_ok_and(|p| argon2::Argon2::default().verify_password(key, &p).is_ok())
}

/// Checks a v1 `auth_key` against `phc`; without one (no account, or an
/// account that has moved to v2) it hashes anyway, so timing does not
/// tell the cases apart, and fails.
pub(crate) fn verify_v1(s: &Settings, phc: Option<&str>, key: &[u8; 32]) -> bool {
    match phc {
        Some(p) => verify_key(p, key),
        None => {
            let _ = hash_key(s, key);
            false
        }
    }
}

/// Inserts a device and its session (one D1 batch, a transaction) and
/// returns the device id.
pub(crate) async fn new_session(
    env: &Env,
    user: u64,
    device_name: &str,
    token_hash: &[u8; 32],
) -> Result<DeviceId, ApiError> {
    let db = env.d1(DB)?;
    let now = JsValue::from_f64(api::unix_now() as f64);
    let hash = JsValue::from_str(&hex::encode(token_hash));
    db.batch(vec![
        db.prepare(
            "INSERT INTO devices (user_id, name, created_at, last_seen_at) VALUES (?1, ?2, ?3, ?3)",
        )
        .bind(&[js_u64(user), JsValue::from_str(device_name), now.clone()])?,
        db.prepare(
            "INSERT INTO sessions (token_sha256, device_id, created_at, issued_at, last_used_at) \
             VALUES (?1, last_insert_rowid(), ?2, ?2, ?2)",
        )
        .bind(&[hash.clone(), now])?,
    ])
    .await?;
    #[derive(Deserialize)]
    struct D {
        device_id: u64,
    }
    let d: Option<D> = db
        .prepare("SELECT device_id FROM sessions WHERE token_sha256 = ?1")
        .bind(&[hash])?
        .first(None)
        .await?;
    d.map(|d| DeviceId(d.device_id))
        .ok_or_else(|| ApiError::internal("session row missing after insert"))
}

/// The first account's setup token, as natively: with the Worker secret
/// `SETUP_TOKEN` set, a signup while no account exists must present it
/// (`setup_token`), else 403 `setup_token_required`; the first account
/// becomes the admin. Without the secret, nothing is checked (the first
/// signup of a fresh deployment becomes the admin: set it before the
/// Worker is reachable, see `docs/cloudflare.md`).
pub(crate) async fn check_setup_token(env: &Env, presented: Option<&str>) -> Result<(), ApiError> {
    use sha2::{Digest, Sha256};
    let Some(token) = env
        .secret("SETUP_TOKEN")
        .map(|s| s.to_string())
        .or_else(|_| env.var("SETUP_TOKEN").map(|s| s.to_string()))
        .ok()
        .filter(|s| !s.is_empty())
    else {
        return Ok(());
    };
    let any: Option<serde_json::Value> = env
        .d1(DB)?
        .prepare("SELECT 1 AS one FROM users LIMIT 1")
        .first(None)
        .await?;
    if any.is_some() {
        return Ok(());
    }
    // Digests compared, so the time taken says nothing about the token.
    if presented.is_some_and(|p| Sha256::digest(p) == Sha256::digest(&token)) {
        return Ok(());
    }
    Err(ApiError::new(
        403,
        "setup_token_required",
        "the first account needs the relay's setup token (the Worker secret SETUP_TOKEN)",
    ))
}

pub(crate) fn signup_closed() -> ApiError {
    ApiError::new(
        403,
        "signup_closed",
        "signup is closed on this relay; ask its operator for an account",
    )
}

/// `POST /api/v1/signup`.
pub async fn signup(mut http: Request, env: &Env) -> Answer {
    let s = Settings::from_env(env);
    let req: SignupRequest = api::json(&mut http, s.max_json).await?;
    validate::username(&req.username)?;
    validate::device_name(&req.device_name)?;
    let creds = validate::credentials(&req.salt, &req.kdf, &req.wrapped_data_key)?;
    let auth_key = validate::key_hex("auth_key", &req.auth_key)?;
    if s.signup == SignupPolicy::Closed {
        return Err(signup_closed());
    }
    check_setup_token(env, req.setup_token.as_deref()).await?;
    crate::turnstile::check_signup(&http, env, throttle::client_ip(&http)).await?;
    throttle::admit_signup(env, &s, throttle::client_net(&http)).await?;
    let auth_hash = hash_key(&s, &auth_key)?;
    let db = env.d1(DB)?;
    let kdf = serde_json::to_string(&creds.kdf).map_err(ApiError::internal)?;
    // One statement decides the policy and admin flag atomically.
    let guard = match s.signup {
        SignupPolicy::First => "WHERE NOT EXISTS (SELECT 1 FROM users)",
        _ => "",
    };
    let sql = format!(
        "INSERT INTO users (username, salt, kdf, auth_hash, wrapped_data_key, is_admin, disabled, created_at) \
         SELECT ?1, ?2, ?3, ?4, ?5, NOT EXISTS (SELECT 1 FROM users), 0, ?6 {guard}"
    );
    let inserted = db
        .prepare(sql)
        .bind(&[
            JsValue::from_str(&req.username),
            JsValue::from_str(&hex::encode(creds.salt)),
            JsValue::from_str(&kdf),
            JsValue::from_str(&auth_hash),
            JsValue::from_str(&hex::encode(creds.wrapped_data_key)),
            JsValue::from_f64(api::unix_now() as f64),
        ])?
        .run()
        .await;
    insert_outcome(inserted)?;
    let user = user_by_name(env, &req.username)
        .await?
        .ok_or_else(|| ApiError::internal("user row missing after insert"))?;
    let (token, token_hash) = auth::new_token();
    let device = new_session(env, user.id, &req.device_name, &token_hash).await?;
    login_response(&user, device, token)
}

/// What a signup's `INSERT … SELECT` did: no row is a closed signup, a
/// unique violation a taken name.
pub(crate) fn insert_outcome(inserted: worker::Result<worker::D1Result>) -> Result<(), ApiError> {
    match inserted {
        Ok(r) if crate::session::changes(&r) == 0 => Err(signup_closed()),
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("UNIQUE") => Err(ApiError::new(
            409,
            "username_taken",
            "that username is taken",
        )),
        Err(e) => Err(ApiError::internal(e)),
    }
}

fn login_response(u: &UserRow, device: DeviceId, token: String) -> Answer {
    api::ok_json(&LoginResponse {
        user_id: UserId(u.id),
        device_id: device,
        token,
        wrapped_data_key: u.wrapped_data_key.clone(),
        salt: u.salt.clone(),
        kdf: serde_json::from_str(&u.kdf).map_err(ApiError::internal)?,
        is_admin: u.is_admin != 0,
    })
}

/// `POST /api/v1/login`.
pub async fn login(mut req: Request, env: &Env) -> Answer {
    let s = Settings::from_env(env);
    let net = throttle::client_net(&req);
    let req: LoginRequest = api::json(&mut req, s.max_json).await?;
    validate::username(&req.username)?;
    validate::device_name(&req.device_name)?;
    let auth_key = validate::key_hex("auth_key", &req.auth_key)?;
    throttle::check(env, &req.username, net).await?;
    let user = user_by_name(env, &req.username).await?;
    // v1 login works only until the account has upgraded to v2: after
    // that it is checked like an unknown name.
    let phc = user
        .as_ref()
        .filter(|u| clipmesh_room::opaque::v1_login_allowed(u.is_v2()))
        .map(|u| u.auth_hash.as_str());
    let ok = verify_v1(&s, phc, &auth_key);
    let Some(user) = user.filter(|u| ok && !u.is_v2()) else {
        throttle::failure(env, &s, &req.username, net).await?;
        return Err(invalid_credentials());
    };
    if user.disabled != 0 {
        return Err(ApiError::new(
            403,
            "account_disabled",
            "this account is disabled",
        ));
    }
    throttle::success(env, &req.username, net).await?;
    let (token, token_hash) = auth::new_token();
    let device = new_session(env, user.id, &req.device_name, &token_hash).await?;
    login_response(&user, device, token)
}

fn invalid_credentials() -> ApiError {
    ApiError::new(401, "invalid_credentials", "wrong username or password")
}

/// `POST /api/v1/password` (token): a v1 password change, as natively: the
/// current `auth_key` (through the login throttle) proves the password, then
/// the new salt, parameters, `auth_key` hash and wrapped data key replace
/// the old ones; with `end_other_sessions` every other device is logged out
/// and its socket closed. The data key stays, so the stored clip stays
/// readable.
pub async fn change_password(mut req: Request, env: &Env) -> Answer {
    let s = Settings::from_env(env);
    // The body first (see `api::body`), checked after the token, as
    // natively.
    let raw = api::body(&mut req).await?;
    let (token, _) = session::request_token(&req);
    let me = session::authenticate(env, &s, token.as_deref()).await?;
    let net = throttle::client_net(&req);
    let body: ChangePasswordRequest = api::parse(&raw, s.max_json)?;
    let current = validate::key_hex("current_auth_key", &body.current_auth_key)?;
    let new_key = validate::key_hex("new_auth_key", &body.new_auth_key)?;
    let creds = validate::credentials(&body.new_salt, &body.new_kdf, &body.new_wrapped_data_key)?;
    let user = user_by_id(env, me.user)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    throttle::check(env, &user.username, net).await?;
    let v1 = clipmesh_room::opaque::v1_login_allowed(user.is_v2());
    if !verify_v1(&s, v1.then_some(user.auth_hash.as_str()), &current) {
        throttle::failure(env, &s, &user.username, net).await?;
        return Err(invalid_credentials());
    }
    let auth_hash = hash_key(&s, &new_key)?;
    let kdf = serde_json::to_string(&creds.kdf).map_err(ApiError::internal)?;
    let changed = env
        .d1(DB)?
        .prepare(
            "UPDATE users SET salt = ?2, kdf = ?3, auth_hash = ?4, wrapped_data_key = ?5 \
             WHERE id = ?1 AND opaque_record IS NULL",
        )
        .bind(&[
            js_u64(me.user.0),
            JsValue::from_str(&hex::encode(creds.salt)),
            JsValue::from_str(&kdf),
            JsValue::from_str(&auth_hash),
            JsValue::from_str(&hex::encode(creds.wrapped_data_key)),
        ])?
        .run()
        .await?;
    if crate::session::changes(&changed) == 0 {
        // The account moved to v2 meanwhile.
        return Err(invalid_credentials());
    }
    if body.end_other_sessions {
        for d in device_ids(env, me.user).await? {
            if d != me.device && session::delete_device(env, me.user, d).await? {
                crate::room::revoke(env, me.user, d).await;
            }
        }
    }
    api::no_content()
}

/// `POST /api/v1/session/renew`: a new token for the caller's device with
/// a fresh absolute lifetime; the old token is accepted until the new one
/// is first used (a device that lost this answer can renew again).
pub async fn renew(mut req: Request, env: &Env) -> Answer {
    // Any body is ignored, but read (see `api::body`).
    api::body(&mut req).await?;
    let s = Settings::from_env(env);
    let (token, _) = session::request_token(&req);
    session::authenticate(env, &s, token.as_deref()).await?;
    let old = auth::token_hash(token.as_deref().unwrap_or_default());
    let (token, new_hash) = auth::new_token();
    if !session::renew(env, &old, &new_hash).await? {
        return Err(ApiError::unauthorized());
    }
    api::ok_json(&clipmesh_proto::api::RenewResponse {
        token,
        max_lifetime_s: s.session_max_s,
        idle_lifetime_s: s.session_idle_s,
    })
}

/// `POST /api/v1/logout`: ends this device's session and closes its socket.
pub async fn logout(mut req: Request, env: &Env) -> Answer {
    // Any body is ignored, but read (see `api::body`).
    api::body(&mut req).await?;
    let s = Settings::from_env(env);
    let (token, _) = session::request_token(&req);
    let me = session::authenticate(env, &s, token.as_deref()).await?;
    session::delete_device(env, me.user, me.device).await?;
    crate::room::revoke(env, me.user, me.device).await;
    api::no_content()
}

#[derive(Deserialize)]
struct DeviceRow {
    id: u64,
    name: String,
    created_at: i64,
    last_seen_at: i64,
}

/// `GET /api/v1/devices`.
pub async fn devices(req: Request, env: &Env) -> Answer {
    let s = Settings::from_env(env);
    let (token, _) = session::request_token(&req);
    let me = session::authenticate(env, &s, token.as_deref()).await?;
    let rows: Vec<DeviceRow> = env
        .d1(DB)?
        .prepare(
            "SELECT id, name, created_at, last_seen_at FROM devices WHERE user_id = ?1 ORDER BY id",
        )
        .bind(&[js_u64(me.user.0)])?
        .all()
        .await?
        .results()?;
    let online = crate::room::online(env, me.user).await;
    api::ok_json(&DevicesResponse {
        devices: rows
            .into_iter()
            .map(|d| DeviceRecord {
                id: DeviceId(d.id),
                online: online.contains(&DeviceId(d.id)),
                current: d.id == me.device.0,
                name: d.name,
                created_at: d.created_at,
                last_seen_at: d.last_seen_at,
            })
            .collect(),
    })
}

/// `DELETE /api/v1/devices/{id}`: revokes a device of the same user.
pub async fn delete_device(req: Request, env: &Env, id: &str) -> Answer {
    let s = Settings::from_env(env);
    let (token, _) = session::request_token(&req);
    let me = session::authenticate(env, &s, token.as_deref()).await?;
    let device = DeviceId(validate::path_id(id)?);
    // Without a new epoch the device would keep the current key.
    let db = env.d1(DB)?;
    let epoch: u32 = db
        .prepare("SELECT epoch FROM users WHERE id = ?1")
        .bind(&[js_u64(me.user.0)])?
        .first(Some("epoch"))
        .await?
        .unwrap_or(0);
    if !clipmesh_room::epoch::v1_revoke_allowed(epoch, me.device, device) {
        // Refused for a device of this account; any other id is not found,
        // as at epoch 0.
        let mine: Option<u32> = db
            .prepare("SELECT 1 AS one FROM devices WHERE id = ?1 AND user_id = ?2")
            .bind(&[js_u64(device.0), js_u64(me.user.0)])?
            .first(Some("one"))
            .await?;
        if mine.is_none() {
            return Err(ApiError::not_found("device"));
        }
        let msg = clipmesh_room::epoch::V1_REVOKE_NEEDS_EPOCH;
        return Err(ApiError::new(409, "bad_request", msg));
    }
    if !session::delete_device(env, me.user, device).await? {
        return Err(ApiError::not_found("device"));
    }
    crate::room::revoke(env, me.user, device).await;
    api::no_content()
}
