//! Protocol v2 accounts under `/api/v2` on D1 (`docs/protocol.md`,
//! "Accounts, v2"): OPAQUE signup, login and password change, the v1 → v2
//! upgrade in place, device public keys and key epochs (a new epoch's
//! wraps, certificates and revokes in `password/finish`, checked by
//! `clipmesh_room::epoch`; `epoch-wrap`; the room's 1012 reconnect).
//! Same paths, bodies, status
//! codes and error codes as the native relay's `http/v2.rs`; the rules
//! (input checks, fake records for unknown and v1-only names, when v1 login
//! still works) are `clipmesh_room::opaque`.
//!
//! - The OPAQUE server setup is derived from the Worker secret
//!   `OPAQUE_SEED` (32 random bytes, hex) with
//!   [`clipmesh_room::opaque::setup_from_seed`]. Without it every v2
//!   endpoint answers 503 and v1 keeps working.
//! - A Worker keeps no memory between requests, so a half-finished login
//!   is parked in D1 (`pending_logins`), not in memory as natively: the
//!   row is keyed by the SHA-256 of the login id, holds the OPAQUE server
//!   state sealed (ChaCha20-Poly1305, key derived from the seed, the login
//!   id as associated data), expires after
//!   [`LOGIN_TTL_MS`](clipmesh_room::opaque::LOGIN_TTL_MS) and is taken
//!   with one `DELETE … RETURNING`, so a replayed KE3 finds nothing. At
//!   most [`MAX_PENDING_LOGINS`](clipmesh_room::opaque::MAX_PENDING_LOGINS)
//!   unexpired rows exist; more starts are 429.
//! - Logins and password changes go through the login throttle
//!   ([`crate::throttle`]) as natively: a start counts against the account
//!   from that network until a finish that verifies clears it; a finish
//!   that does not verify counts against the network.

use crate::account::{self, UserRow};
use crate::api::{self, ApiError};
use crate::config::{Settings, SignupPolicy};
use crate::session::{self, js_u64, Session, DB};
use crate::throttle;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use clipmesh_proto::api::v2::{
    DeviceKeyRecord, DeviceKeyRequest, DeviceKeysResponse, EpochWrapRecord, EpochWrapResponse,
    LoginFinishRequest, LoginStartRequest, LoginStartResponse, LoginV2Response,
    OwnRegisterStartRequest, PasswordFinishRequest, PasswordStartRequest, PasswordStartResponse,
    RegisterStartRequest, RegisterStartResponse, SignupFinishRequest, UpgradeRequest,
};
use clipmesh_proto::opaque::{RegistrationRecord, ServerLogin, ServerSetup};
use clipmesh_proto::{DeviceId, KdfParams, UserId};
use clipmesh_room::epoch::{self, AccountDevice};
use clipmesh_room::opaque::{self as rules, AccountAuth, LoginFor};
use clipmesh_room::{auth, validate};
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use wasm_bindgen::JsValue;
use worker::{Env, Request, Response};

type Answer = Result<Response, ApiError>;

/// The Worker's OPAQUE secrets.
struct Opaque {
    setup: ServerSetup,
    /// Seals parked login states.
    seal: ChaCha20Poly1305,
}

/// Reads `OPAQUE_SEED` (a secret; a plain var is accepted for local runs)
/// and derives the setup.
fn opaque(env: &Env) -> Result<Opaque, ApiError> {
    let seed = env
        .secret("OPAQUE_SEED")
        .map(|s| s.to_string())
        .or_else(|_| env.var("OPAQUE_SEED").map(|s| s.to_string()))
        .ok()
        .and_then(|s| hex::decode(s.trim()).ok())
        .and_then(|b| <[u8; rules::SETUP_SEED_LEN]>::try_from(b).ok())
        .ok_or_else(|| {
            worker::console_error!("OPAQUE_SEED is not set (64 hex digits); v2 is off");
            ApiError::unavailable("protocol v2 accounts are not configured on this relay", 60)
        })?;
    let mut h = Sha256::new();
    h.update(b"clipmesh-worker pending-login seal v1\0");
    h.update(seed);
    let key: [u8; 32] = h.finalize().into();
    Ok(Opaque {
        setup: rules::setup_from_seed(&seed),
        seal: ChaCha20Poly1305::new(Key::from_slice(&key)),
    })
}

fn invalid_credentials() -> ApiError {
    ApiError::new(401, "invalid_credentials", "wrong username or password")
}

fn record_of(hex_record: &str) -> Result<RegistrationRecord, ApiError> {
    RegistrationRecord::from_hex(hex_record).map_err(|_| ApiError::internal("stored record"))
}

fn kdf_of(json: &str) -> Result<KdfParams, ApiError> {
    serde_json::from_str(json).map_err(ApiError::internal)
}

/// An account's v2 columns.
#[derive(Deserialize)]
struct V2Row {
    id: u64,
    username: String,
    kdf: String,
    opaque_record: Option<String>,
    epoch: u32,
    export_wrap: Option<String>,
    is_admin: u32,
    disabled: u32,
}

const V2_COLUMNS: &str =
    "id, username, kdf, opaque_record, epoch, export_wrap, is_admin, disabled FROM users";

async fn v2_by_name(env: &Env, name: &str) -> Result<Option<V2Row>, ApiError> {
    Ok(env
        .d1(DB)?
        .prepare(format!("SELECT {V2_COLUMNS} WHERE username = ?1"))
        .bind(&[JsValue::from_str(name)])?
        .first(None)
        .await?)
}

async fn v2_by_id(env: &Env, user: UserId) -> Result<Option<V2Row>, ApiError> {
    Ok(env
        .d1(DB)?
        .prepare(format!("SELECT {V2_COLUMNS} WHERE id = ?1"))
        .bind(&[js_u64(user.0)])?
        .first(None)
        .await?)
}

/// The caller's session. Handlers with a body read it first (see
/// [`api::body`]): a 401 answered before the body is read makes the runtime
/// close the client's keep-alive connection.
async fn me(req: &Request, env: &Env, s: &Settings) -> Result<Session, ApiError> {
    let (token, _) = session::request_token(req);
    session::authenticate(env, s, token.as_deref()).await
}

fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

/// Parks a started login in D1; a full table is a 429.
async fn park(
    env: &Env,
    o: &Opaque,
    state: &ServerLogin,
    who: &LoginFor,
) -> Result<String, ApiError> {
    let db = env.d1(DB)?;
    let now = now_ms();
    #[derive(Deserialize)]
    struct N {
        n: u64,
    }
    let live: Option<N> = db
        .prepare("SELECT COUNT(*) AS n FROM pending_logins WHERE expires_at > ?1")
        .bind(&[JsValue::from_f64(now as f64)])?
        .first(None)
        .await?;
    if live.map_or(0, |n| n.n) >= rules::MAX_PENDING_LOGINS as u64 {
        return Err(
            ApiError::new(429, "rate_limited", "too many logins in progress").retry_after(1),
        );
    }
    let mut id = [0u8; rules::LOGIN_ID_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = o
        .seal
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &state.to_bytes(),
                aad: &id,
            },
        )
        .map_err(|_| ApiError::internal("sealing a login state"))?;
    let mut stored = nonce.to_vec();
    stored.extend_from_slice(&sealed);
    let user = who.user.map_or(JsValue::NULL, |u| js_u64(u.0));
    db.batch(vec![
        db.prepare("DELETE FROM pending_logins WHERE expires_at <= ?1")
            .bind(&[JsValue::from_f64(now as f64)])?,
        db.prepare(
            "INSERT INTO pending_logins (id_sha256, sealed, username, user_id, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&[
            JsValue::from_str(&hex::encode(Sha256::digest(id))),
            JsValue::from_str(&hex::encode(stored)),
            JsValue::from_str(&who.username),
            user,
            JsValue::from_f64((now + rules::LOGIN_TTL_MS) as f64),
        ])?,
    ])
    .await?;
    Ok(hex::encode(id))
}

/// Takes a parked login (once) and checks KE3; `Ok` names the account.
async fn finish_parked(
    env: &Env,
    s: &Settings,
    o: &Opaque,
    (login_id, finish): (&str, &str),
    net: std::net::IpAddr,
) -> Result<(UserId, String), ApiError> {
    let id = rules::login_id(login_id)?;
    let ke3 = rules::login_finish_bytes("finish", finish)?;
    #[derive(Deserialize)]
    struct Row {
        sealed: String,
        username: String,
        user_id: Option<u64>,
    }
    let row: Option<Row> = env
        .d1(DB)?
        .prepare(
            "DELETE FROM pending_logins WHERE id_sha256 = ?1 AND expires_at > ?2 \
             RETURNING sealed, username, user_id",
        )
        .bind(&[
            JsValue::from_str(&hex::encode(Sha256::digest(id))),
            JsValue::from_f64(now_ms() as f64),
        ])?
        .first(None)
        .await?;
    let Some(row) = row else {
        return Err(invalid_credentials());
    };
    let stored = hex::decode(&row.sealed).map_err(ApiError::internal)?;
    if stored.len() < 12 {
        return Err(ApiError::internal("short login state"));
    }
    let (nonce, sealed) = stored.split_at(12);
    let state = o
        .seal
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: &id,
            },
        )
        .map_err(|_| ApiError::internal("unsealing a login state"))?;
    let state = zeroize::Zeroizing::new(state);
    let state = ServerLogin::from_bytes(&state).map_err(|_| ApiError::internal("login state"))?;
    let ok = rules::login_finish(state, &ke3).is_ok();
    match row.user_id.filter(|_| ok) {
        Some(user) => Ok((UserId(user), row.username)),
        None => {
            // The start already counted against the account.
            throttle::net_failure(env, s, net).await?;
            Err(invalid_credentials())
        }
    }
}

/// The answer to a successful v2 login or signup.
fn login_answer(row: &V2Row, device: DeviceId, token: String) -> Answer {
    api::ok_json(&LoginV2Response {
        user_id: UserId(row.id),
        device_id: device,
        token,
        kdf: kdf_of(&row.kdf)?,
        epoch: row.epoch,
        export_wrap: row.export_wrap.clone().unwrap_or_default(),
        is_admin: row.is_admin != 0,
    })
}

/// `POST /api/v2/signup/start`: registration step 1 for a new name (any
/// name, taken or not: the answer reveals nothing without the password).
pub async fn signup_start(mut req: Request, env: &Env) -> Answer {
    let s = Settings::from_env(env);
    let req: RegisterStartRequest = api::json(&mut req, s.max_json).await?;
    validate::username(&req.username)?;
    if s.signup == SignupPolicy::Closed {
        return Err(account::signup_closed());
    }
    let request = rules::registration_request("request", &req.request)?;
    let o = opaque(env)?;
    let response = rules::register_start(&o.setup, &request, &req.username)?;
    api::ok_json(&RegisterStartResponse {
        response: response.to_hex(),
    })
}

/// `POST /api/v2/signup/finish`: creates the account from its record.
pub async fn signup_finish(mut http: Request, env: &Env) -> Answer {
    let s = Settings::from_env(env);
    let req: SignupFinishRequest = api::json(&mut http, s.max_json).await?;
    validate::username(&req.username)?;
    validate::device_name(&req.device_name)?;
    let record = rules::record(&req.record)?;
    let kdf = rules::record_kdf(&req.kdf)?;
    let wrap = rules::export_wrap(&req.export_wrap)?;
    if s.signup == SignupPolicy::Closed {
        return Err(account::signup_closed());
    }
    opaque(env)?;
    account::check_setup_token(env, req.setup_token.as_deref()).await?;
    crate::turnstile::check_signup(&http, env, throttle::client_ip(&http)).await?;
    throttle::admit_signup(env, &s, throttle::client_net(&http)).await?;
    let kdf = serde_json::to_string(&kdf).map_err(ApiError::internal)?;
    let guard = match s.signup {
        SignupPolicy::First => "WHERE NOT EXISTS (SELECT 1 FROM users)",
        _ => "",
    };
    let sql = format!(
        "INSERT INTO users (username, salt, kdf, auth_hash, wrapped_data_key, opaque_record, epoch, \
         export_wrap, is_admin, disabled, created_at) \
         SELECT ?1, '', ?2, '', '', ?3, ?4, ?5, NOT EXISTS (SELECT 1 FROM users), 0, ?6 {guard}"
    );
    let inserted = env
        .d1(DB)?
        .prepare(sql)
        .bind(&[
            JsValue::from_str(&req.username),
            JsValue::from_str(&kdf),
            JsValue::from_str(&record.to_hex()),
            JsValue::from_f64(f64::from(req.epoch)),
            JsValue::from_str(&hex::encode(wrap.0)),
            JsValue::from_f64(api::unix_now() as f64),
        ])?
        .run()
        .await;
    account::insert_outcome(inserted)?;
    let row = v2_by_name(env, &req.username)
        .await?
        .ok_or_else(|| ApiError::internal("user row missing after insert"))?;
    let (token, token_hash) = auth::new_token();
    let device = account::new_session(env, row.id, &req.device_name, &token_hash).await?;
    login_answer(&row, device, token)
}

/// `POST /api/v2/login/start`: KE1 → KE2. Unknown names and accounts still
/// on v1 get OPAQUE's fake record and the parameters a v1 prelogin shows.
pub async fn login_start(mut req: Request, env: &Env) -> Answer {
    let s = Settings::from_env(env);
    let net = throttle::client_net(&req);
    let req: LoginStartRequest = api::json(&mut req, s.max_json).await?;
    validate::username(&req.username)?;
    let ke1 = rules::login_request("request", &req.request)?;
    let o = opaque(env)?;
    throttle::check(env, &req.username, net).await?;
    // Counted now, cleared by a finish that verifies: a guesser learns
    // whether its guess was right from KE2 alone and never sends KE3.
    throttle::attempt(env, &s, &req.username, net).await?;
    let row = v2_by_name(env, &req.username).await?;
    let account = match &row {
        Some(r) => Some(AccountAuth {
            user: UserId(r.id),
            record: r.opaque_record.as_deref().map(record_of).transpose()?,
            kdf: kdf_of(&r.kdf)?,
        }),
        None => None,
    };
    let shown = match &account {
        Some(a) => a.kdf,
        None => account::fake_kdf(env, &req.username).await?,
    };
    let (state, ke2, kdf) = rules::login_start(
        &mut rand::rngs::OsRng,
        &o.setup,
        account.as_ref(),
        &ke1,
        &req.username,
        shown,
    )?;
    let who = LoginFor {
        username: req.username.clone(),
        user: account.filter(|a| a.record.is_some()).map(|a| a.user),
    };
    let login_id = park(env, &o, &state, &who).await?;
    api::ok_json(&LoginStartResponse {
        login_id,
        response: ke2.to_hex(),
        kdf,
    })
}

/// `POST /api/v2/login/finish`: KE3; success logs a new device in.
pub async fn login_finish(mut req: Request, env: &Env) -> Answer {
    let s = Settings::from_env(env);
    let net = throttle::client_net(&req);
    let req: LoginFinishRequest = api::json(&mut req, s.max_json).await?;
    validate::device_name(&req.device_name)?;
    let o = opaque(env)?;
    let (user, username) = finish_parked(env, &s, &o, (&req.login_id, &req.finish), net).await?;
    let row = v2_by_id(env, user).await?.ok_or_else(invalid_credentials)?;
    if row.disabled != 0 {
        return Err(ApiError::new(
            403,
            "account_disabled",
            "this account is disabled",
        ));
    }
    throttle::success(env, &username, net).await?;
    let (token, token_hash) = auth::new_token();
    let device = account::new_session(env, row.id, &req.device_name, &token_hash).await?;
    login_answer(&row, device, token)
}

/// `POST /api/v2/register/start` (token): registration step 1 for the
/// caller's own account (the upgrade uses it).
pub async fn register_start(mut req: Request, env: &Env) -> Answer {
    let s = Settings::from_env(env);
    let raw = api::body(&mut req).await?;
    let me = me(&req, env, &s).await?;
    let body: OwnRegisterStartRequest = api::parse(&raw, s.max_json)?;
    let request = rules::registration_request("request", &body.request)?;
    let o = opaque(env)?;
    let row = v2_by_id(env, me.user)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let response = rules::register_start(&o.setup, &request, &row.username)?;
    api::ok_json(&RegisterStartResponse {
        response: response.to_hex(),
    })
}

/// `POST /api/v2/upgrade` (token of a v1 session): v1 → v2 in place, with
/// the v1 `auth_key` as proof; v1 login stops working for the account.
pub async fn upgrade(mut req: Request, env: &Env) -> Answer {
    let s = Settings::from_env(env);
    let raw = api::body(&mut req).await?;
    let me = me(&req, env, &s).await?;
    let net = throttle::client_net(&req);
    let body: UpgradeRequest = api::parse(&raw, s.max_json)?;
    let current = validate::key_hex("current_auth_key", &body.current_auth_key)?;
    let record = rules::record(&body.record)?;
    let kdf = rules::record_kdf(&body.kdf)?;
    let wrap = rules::export_wrap(&body.export_wrap)?;
    opaque(env)?;
    let row: Option<UserRow> = account::user_by_id(env, me.user).await?;
    let row = row.ok_or_else(ApiError::unauthorized)?;
    throttle::check(env, &row.username, net).await?;
    let v1 = rules::v1_login_allowed(row.is_v2());
    if !account::verify_v1(&s, v1.then_some(row.auth_hash.as_str()), &current) {
        throttle::failure(env, &s, &row.username, net).await?;
        return Err(invalid_credentials());
    }
    let kdf = serde_json::to_string(&kdf).map_err(ApiError::internal)?;
    let r = env
        .d1(DB)?
        .prepare(
            "UPDATE users SET opaque_record = ?2, kdf = ?3, epoch = 0, export_wrap = ?4, \
             auth_hash = '', salt = '', wrapped_data_key = '' \
             WHERE id = ?1 AND opaque_record IS NULL",
        )
        .bind(&[
            js_u64(me.user.0),
            JsValue::from_str(&record.to_hex()),
            JsValue::from_str(&kdf),
            JsValue::from_str(&hex::encode(wrap.0)),
        ])?
        .run()
        .await?;
    if session::changes(&r) == 0 {
        return Err(invalid_credentials());
    }
    api::no_content()
}

/// `POST /api/v2/password/start` (token): a fresh login with the current
/// password plus a registration start for the new one.
pub async fn password_start(mut req: Request, env: &Env) -> Answer {
    let s = Settings::from_env(env);
    let raw = api::body(&mut req).await?;
    let me = me(&req, env, &s).await?;
    let net = throttle::client_net(&req);
    let body: PasswordStartRequest = api::parse(&raw, s.max_json)?;
    let ke1 = rules::login_request("login", &body.login)?;
    let reg = rules::registration_request("registration", &body.registration)?;
    let o = opaque(env)?;
    let row = v2_by_id(env, me.user)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    throttle::check(env, &row.username, net).await?;
    throttle::attempt(env, &s, &row.username, net).await?;
    let Some(record) = row.opaque_record.as_deref().map(record_of).transpose()? else {
        return Err(ApiError::bad_request(
            "this account still uses v1 login: log in again with this client to upgrade it",
        ));
    };
    let kdf = kdf_of(&row.kdf)?;
    let account = AccountAuth {
        user: me.user,
        record: Some(record),
        kdf,
    };
    let (state, ke2, kdf) = rules::login_start(
        &mut rand::rngs::OsRng,
        &o.setup,
        Some(&account),
        &ke1,
        &row.username,
        kdf,
    )?;
    let registration = rules::register_start(&o.setup, &reg, &row.username)?;
    let who = LoginFor {
        username: row.username.clone(),
        user: Some(me.user),
    };
    let login_id = park(env, &o, &state, &who).await?;
    api::ok_json(&PasswordStartResponse {
        login_id,
        response: ke2.to_hex(),
        kdf,
        registration: registration.to_hex(),
    })
}

/// `POST /api/v2/password/finish` (token): KE3 for the current password,
/// then the new record and export wrap replace the old ones; with
/// `end_other_sessions`, every other device is logged out.
pub async fn password_finish(mut req: Request, env: &Env) -> Answer {
    let s = Settings::from_env(env);
    let raw = api::body(&mut req).await?;
    let me = me(&req, env, &s).await?;
    let net = throttle::client_net(&req);
    let body: PasswordFinishRequest = api::parse(&raw, s.max_json)?;
    let record = rules::record(&body.record)?;
    let kdf = rules::record_kdf(&body.kdf)?;
    let wrap = rules::export_wrap(&body.export_wrap)?;
    let o = opaque(env)?;
    let (user, username) = finish_parked(env, &s, &o, (&body.login_id, &body.finish), net).await?;
    if user != me.user {
        return Err(invalid_credentials());
    }
    throttle::success(env, &username, net).await?;
    let row = v2_by_id(env, user)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let new_epoch = epoch::epoch_step(row.epoch, &body)?;
    let rotation = if new_epoch {
        Some(epoch::check_rotation(
            me.device,
            &account_devices(env, user).await?,
            &body,
        )?)
    } else {
        None
    };
    let kdf = serde_json::to_string(&kdf).map_err(ApiError::internal)?;
    let db = env.d1(DB)?;
    let (u, e) = (js_u64(user.0), JsValue::from_f64(f64::from(body.epoch)));
    let mut batch = vec![db
        .prepare(
            "UPDATE users SET opaque_record = ?2, kdf = ?3, epoch = ?4, export_wrap = ?5 WHERE id = ?1",
        )
        .bind(&[
            u.clone(),
            JsValue::from_str(&record.to_hex()),
            JsValue::from_str(&kdf),
            e.clone(),
            JsValue::from_str(&hex::encode(wrap.0)),
        ])?];
    // A new epoch, in the same batch (one D1 transaction): the revoked
    // devices go (sessions, then the device), every older wrap is replaced
    // by the new ones, the remaining devices' certificates move to it.
    let mut revoked_tokens = Vec::new();
    if let Some(r) = &rotation {
        for d in &r.revoke {
            let d = js_u64(d.0);
            revoked_tokens.extend(session::token_hashes(env, user, Some(&d)).await?);
            batch.push(
                db.prepare(
                    "DELETE FROM sessions WHERE device_id = ?1 \
                     AND device_id IN (SELECT id FROM devices WHERE user_id = ?2)",
                )
                .bind(&[d.clone(), u.clone()])?,
            );
            batch.push(
                db.prepare("DELETE FROM devices WHERE id = ?1 AND user_id = ?2")
                    .bind(&[d, u.clone()])?,
            );
        }
        batch.push(
            db.prepare("DELETE FROM epoch_wraps WHERE user_id = ?1")
                .bind(std::slice::from_ref(&u))?,
        );
        let (sender, public, cert) = (
            js_u64(r.sender.0),
            JsValue::from_str(&hex::encode(&r.sender_public)),
            JsValue::from_str(&hex::encode(&r.sender_cert)),
        );
        for (d, w) in &r.wraps {
            batch.push(
                db.prepare(
                    "INSERT INTO epoch_wraps (device_id, user_id, epoch, sender, sender_public, sender_cert, wrap) \
                     SELECT id, user_id, ?3, ?4, ?5, ?6, ?7 FROM devices WHERE id = ?1 AND user_id = ?2",
                )
                .bind(&[
                    js_u64(d.0),
                    u.clone(),
                    e.clone(),
                    sender.clone(),
                    public.clone(),
                    cert.clone(),
                    JsValue::from_str(&hex::encode(w)),
                ])?,
            );
        }
        for (d, c) in &r.certs {
            batch.push(
                db.prepare(
                    "UPDATE devices SET key_epoch = ?3, key_cert = ?4 \
                     WHERE id = ?1 AND user_id = ?2 AND public_key IS NOT NULL",
                )
                .bind(&[
                    js_u64(d.0),
                    u.clone(),
                    e.clone(),
                    JsValue::from_str(&hex::encode(c)),
                ])?,
            );
        }
    }
    db.batch(batch).await?;
    for t in revoked_tokens {
        session::forget_token(env, &t).await?;
    }
    if let Some(r) = &rotation {
        for d in &r.revoke {
            crate::room::revoke(env, user, *d).await;
        }
    }
    if body.end_other_sessions {
        for d in account::device_ids(env, user).await? {
            if d != me.device && session::delete_device(env, user, d).await? {
                crate::room::revoke(env, user, d).await;
            }
        }
    }
    if new_epoch {
        // Online devices reconnect and pick the new epoch up on join.
        crate::room::rekey(env, user).await;
    }
    api::no_content()
}

/// The account's devices with their published keys, for
/// [`epoch::check_rotation`].
async fn account_devices(env: &Env, user: UserId) -> Result<Vec<AccountDevice>, ApiError> {
    #[derive(Deserialize)]
    struct D {
        id: u64,
        public_key: Option<String>,
    }
    let rows: Vec<D> = env
        .d1(DB)?
        .prepare("SELECT id, public_key FROM devices WHERE user_id = ?1 ORDER BY id")
        .bind(&[js_u64(user.0)])?
        .all()
        .await?
        .results()?;
    rows.into_iter()
        .map(|d| {
            Ok(AccountDevice {
                id: DeviceId(d.id),
                public_key: d
                    .public_key
                    .map(|k| hex::decode(k).map_err(ApiError::internal))
                    .transpose()?,
            })
        })
        .collect()
}

/// `PUT /api/v2/device-key` (token): publishes the caller's public keys
/// with their certificate; a different key for a device that has one is
/// refused (409).
pub async fn put_device_key(mut req: Request, env: &Env) -> Answer {
    let s = Settings::from_env(env);
    let raw = api::body(&mut req).await?;
    let me = me(&req, env, &s).await?;
    let body: DeviceKeyRequest = api::parse(&raw, s.max_json)?;
    let public = rules::device_public(&body.public_key)?;
    let cert = rules::cert(&body.cert)?;
    let row = v2_by_id(env, me.user)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    if row.opaque_record.is_none() {
        return Err(ApiError::bad_request("device keys need a v2 account"));
    }
    if body.epoch > row.epoch {
        return Err(ApiError::bad_request("epoch is newer than the account's"));
    }
    let key = hex::encode(public.to_bytes());
    let db = env.d1(DB)?;
    // One statement: set the key unless the device has a different one.
    let r = db
        .prepare(
            "UPDATE devices SET public_key = ?3, key_epoch = ?4, key_cert = ?5 \
             WHERE id = ?1 AND user_id = ?2 AND (public_key IS NULL OR public_key = ?3)",
        )
        .bind(&[
            js_u64(me.device.0),
            js_u64(me.user.0),
            JsValue::from_str(&key),
            JsValue::from_f64(f64::from(body.epoch)),
            JsValue::from_str(&hex::encode(cert)),
        ])?
        .run()
        .await?;
    if session::changes(&r) == 0 {
        return Err(ApiError::new(
            409,
            "bad_request",
            "this device already has a different public key",
        ));
    }
    api::no_content()
}

/// `GET /api/v2/device-keys` (token): the account's devices and keys.
pub async fn device_keys(req: Request, env: &Env) -> Answer {
    let s = Settings::from_env(env);
    let me = me(&req, env, &s).await?;
    let row = v2_by_id(env, me.user)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    #[derive(Deserialize)]
    struct D {
        id: u64,
        name: String,
        public_key: Option<String>,
        key_epoch: Option<u32>,
        key_cert: Option<String>,
    }
    let rows: Vec<D> = env
        .d1(DB)?
        .prepare(
            "SELECT id, name, public_key, key_epoch, key_cert FROM devices \
             WHERE user_id = ?1 ORDER BY id",
        )
        .bind(&[js_u64(me.user.0)])?
        .all()
        .await?
        .results()?;
    api::ok_json(&DeviceKeysResponse {
        epoch: row.epoch,
        devices: rows
            .into_iter()
            .map(|d| DeviceKeyRecord {
                id: DeviceId(d.id),
                name: d.name,
                public_key: d.public_key,
                epoch: d.key_epoch,
                cert: d.key_cert,
            })
            .collect(),
    })
}

/// `GET /api/v2/epoch-wrap` (token): the current epoch's key wrapped to
/// the caller by the device that started the epoch, with that device's
/// public key and its certificate under the previous epoch (`wrap: null`
/// when there is none). The Worker can open none of it; the caller checks
/// the signer against its roster.
pub async fn epoch_wrap(req: Request, env: &Env) -> Answer {
    let s = Settings::from_env(env);
    let me = me(&req, env, &s).await?;
    #[derive(Deserialize)]
    struct W {
        epoch: u32,
        sender: u64,
        sender_public: String,
        sender_cert: String,
        wrap: String,
    }
    let w: Option<W> = env
        .d1(DB)?
        .prepare(
            "SELECT w.epoch AS epoch, w.sender AS sender, w.sender_public AS sender_public, \
             w.sender_cert AS sender_cert, w.wrap AS wrap \
             FROM epoch_wraps w JOIN users u ON u.id = w.user_id \
             WHERE w.device_id = ?1 AND w.user_id = ?2 AND w.epoch = u.epoch",
        )
        .bind(&[js_u64(me.device.0), js_u64(me.user.0)])?
        .first(None)
        .await?;
    api::ok_json(&EpochWrapResponse {
        wrap: w.map(|w| EpochWrapRecord {
            epoch: w.epoch,
            sender: DeviceId(w.sender),
            sender_public: w.sender_public,
            sender_cert: w.sender_cert,
            wrap: w.wrap,
        }),
    })
}
