//! Session tokens: checked through KV (a cache with a TTL) in front of D1,
//! and revoked in both.
//!
//! **Lifetimes,** as the native relay's: a session ends `SESSION_MAX_S`
//! after its token was issued and `SESSION_IDLE_S` after it was last used;
//! the device row goes with it. The absolute lifetime is checked on every
//! request (the cache entry carries `issued_at`); the idle one when D1 is
//! read, which a session in use does at least every `SESSION_CACHE_TTL_S`,
//! so an idle session ends at most that much late. `last_used_at` is
//! written at most once a minute. `POST /api/v1/session/renew` issues a new
//! token with a fresh lifetime; the old one is accepted until the new one
//! is first used, which forgets it (in D1 and in the cache).
//!
//! KV holds `sess:<hex sha256(token)>` → [`Session`] for
//! `SESSION_CACHE_TTL_S`; a miss reads D1 and fills the cache. Revoking a
//! device deletes its D1 rows and its KV entry, so a revoked token stops
//! working at once in this location (KV is eventually consistent across
//! Cloudflare's locations, for at most the TTL; see `docs/cloudflare.md`).

use crate::api::ApiError;
use crate::config::Settings;
use clipmesh_proto::{DeviceId, UserId};
use clipmesh_room::auth;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;
use worker::{Env, Request};

/// The D1 binding.
pub const DB: &str = "DB";
/// The KV binding.
pub const SESSIONS: &str = "SESSIONS";

/// An authenticated device.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    /// The account.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
    /// The device's name.
    pub device_name: String,
    /// Whether the account is disabled.
    pub disabled: bool,
    /// When the token was issued, Unix seconds (starts the absolute
    /// lifetime).
    #[serde(default)]
    pub issued_at: i64,
}

/// A session's `last_used_at` is rewritten at most this often, seconds
/// (the native relay's `SESSION_TOUCH_S`).
const SESSION_TOUCH_S: i64 = 60;

/// Whether a session issued at `issued_at` and last used at
/// `last_used_at` has ended at `now` (the native relay's rule).
fn expired(s: &Settings, issued_at: i64, last_used_at: i64, now: i64) -> bool {
    let f = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    now.saturating_sub(issued_at) > f(s.session_max_s)
        || now.saturating_sub(last_used_at) > f(s.session_idle_s)
}

#[derive(Deserialize)]
struct Row {
    user_id: u64,
    device_id: u64,
    name: String,
    disabled: u32,
    issued_at: i64,
    last_used_at: i64,
    /// Whether the token is the session's current one (not the one a
    /// renewal replaced).
    current: u32,
    prev_sha256: Option<String>,
}

/// The KV key of a token hash.
pub fn cache_key(hash: &[u8; 32]) -> String {
    format!("sess:{}", hex::encode(hash))
}

/// The token of a request: `Authorization: Bearer`, or for WebSockets the
/// `clipmesh.token.<token>` subprotocol. Also whether `clipmesh.v1` was
/// offered.
pub fn request_token(req: &Request) -> (Option<String>, bool) {
    let h = req.headers();
    if let Some(t) = h
        .get("Authorization")
        .ok()
        .flatten()
        .and_then(|v| auth::bearer(&v).map(str::to_owned))
    {
        let v1 = h
            .get("Sec-WebSocket-Protocol")
            .ok()
            .flatten()
            .is_some_and(|p| auth::protocol_token([p.as_str()]).1);
        return (Some(t), v1);
    }
    let protos = h.get("Sec-WebSocket-Protocol").ok().flatten();
    match protos {
        Some(p) => {
            let (t, v1) = auth::protocol_token([p.as_str()]);
            (t.map(str::to_owned), v1)
        }
        None => (None, false),
    }
}

/// Resolves a token to a live session of an enabled account.
pub async fn authenticate(
    env: &Env,
    settings: &Settings,
    token: Option<&str>,
) -> Result<Session, ApiError> {
    let Some(token) = token.filter(|t| auth::token_shape_ok(t)) else {
        return Err(ApiError::unauthorized());
    };
    let hash = auth::token_hash(token);
    let key = cache_key(&hash);
    let kv = env.kv(SESSIONS)?;
    let now = crate::api::unix_now();
    let cached = kv.get(&key).json::<Session>().await.ok().flatten();
    let session = match cached {
        Some(s) => {
            if expired(settings, s.issued_at, now, now) {
                delete_device(env, s.user, s.device).await?;
                return Err(ApiError::unauthorized());
            }
            s
        }
        None => {
            let db = env.d1(DB)?;
            let hex_hash = JsValue::from_str(&hex::encode(hash));
            let row: Option<Row> = db
                .prepare(
                    "SELECT d.user_id AS user_id, d.id AS device_id, d.name AS name, u.disabled AS disabled, \
                     s.issued_at AS issued_at, s.last_used_at AS last_used_at, \
                     s.token_sha256 = ?1 AS current, s.prev_sha256 AS prev_sha256 \
                     FROM sessions s JOIN devices d ON d.id = s.device_id JOIN users u ON u.id = d.user_id \
                     WHERE s.token_sha256 = ?1 OR s.prev_sha256 = ?1",
                )
                .bind(std::slice::from_ref(&hex_hash))?
                .first(None)
                .await?;
            let Some(r) = row else {
                return Err(ApiError::unauthorized());
            };
            let (user, device) = (UserId(r.user_id), DeviceId(r.device_id));
            if expired(settings, r.issued_at, r.last_used_at, now) {
                delete_device(env, user, device).await?;
                return Err(ApiError::unauthorized());
            }
            let current = r.current != 0;
            if current && (r.prev_sha256.is_some() || now - r.last_used_at >= SESSION_TOUCH_S) {
                // The new token's first use forgets the one it replaced.
                db.prepare(
                    "UPDATE sessions SET last_used_at = ?2, prev_sha256 = NULL WHERE token_sha256 = ?1",
                )
                .bind(&[hex_hash, JsValue::from_f64(now as f64)])?
                .run()
                .await?;
                if let Some(prev) = &r.prev_sha256 {
                    kv.delete(&format!("sess:{prev}"))
                        .await
                        .map_err(ApiError::internal)?;
                }
            }
            let s = Session {
                user,
                device,
                device_name: r.name,
                disabled: r.disabled != 0,
                issued_at: r.issued_at,
            };
            if let Ok(put) = kv.put(&key, &s) {
                let _ = put
                    .expiration_ttl(settings.session_cache_ttl_s)
                    .execute()
                    .await;
            }
            s
        }
    };
    if session.disabled {
        return Err(ApiError::new(
            401,
            "account_disabled",
            "this account is disabled",
        ));
    }
    Ok(session)
}

/// Deletes a device, its session and the session's cache entry. Returns
/// whether the device existed for `user`.
pub async fn delete_device(env: &Env, user: UserId, device: DeviceId) -> Result<bool, ApiError> {
    let db = env.d1(DB)?;
    #[derive(Deserialize)]
    struct Tok {
        token_sha256: String,
    }
    let tok: Option<Tok> = db
        .prepare(
            "SELECT s.token_sha256 AS token_sha256 FROM sessions s JOIN devices d ON d.id = s.device_id \
             WHERE d.id = ?1 AND d.user_id = ?2",
        )
        .bind(&[js_u64(device.0), js_u64(user.0)])?
        .first(None)
        .await?;
    let res = db
        .batch(vec![
            db.prepare("DELETE FROM sessions WHERE device_id = ?1 AND device_id IN (SELECT id FROM devices WHERE user_id = ?2)")
                .bind(&[js_u64(device.0), js_u64(user.0)])?,
            db.prepare("DELETE FROM devices WHERE id = ?1 AND user_id = ?2")
                .bind(&[js_u64(device.0), js_u64(user.0)])?,
        ])
        .await?;
    if let Some(t) = tok {
        env.kv(SESSIONS)?
            .delete(&format!("sess:{}", t.token_sha256))
            .await
            .map_err(ApiError::internal)?;
    }
    let changed = res.get(1).map_or(0, changes);
    Ok(changed > 0)
}

/// Replaces the token of the session that `old` resolves to (its current
/// token, or the one the last renewal replaced while the new one is
/// unused) with `new`, restarting its absolute lifetime; `old` stays
/// accepted until `new` is first used. False if no session has `old`.
pub async fn renew(env: &Env, old: &[u8; 32], new: &[u8; 32]) -> Result<bool, ApiError> {
    let now = JsValue::from_f64(crate::api::unix_now() as f64);
    let r = env
        .d1(DB)?
        .prepare(
            "UPDATE sessions SET token_sha256 = ?2, prev_sha256 = ?1, issued_at = ?3, last_used_at = ?3 \
             WHERE token_sha256 = ?1 OR prev_sha256 = ?1",
        )
        .bind(&[
            JsValue::from_str(&hex::encode(old)),
            JsValue::from_str(&hex::encode(new)),
            now,
        ])?
        .run()
        .await?;
    // The old token's cache entry carries the old issue time: drop it.
    env.kv(SESSIONS)?
        .delete(&cache_key(old))
        .await
        .map_err(ApiError::internal)?;
    Ok(changes(&r) > 0)
}

/// Drops a session's cache entry (by the token's SHA-256, hex) from KV,
/// once its D1 rows are gone.
pub async fn forget_token(env: &Env, token_sha256: &str) -> Result<(), ApiError> {
    env.kv(SESSIONS)?
        .delete(&format!("sess:{token_sha256}"))
        .await
        .map_err(ApiError::internal)
}

/// A D1 integer parameter (D1 numbers are f64; ids stay below 2^53).
pub fn js_u64(v: u64) -> JsValue {
    JsValue::from_f64(v as f64)
}

/// How many rows a D1 statement changed (0 when D1 reports nothing).
pub fn changes(r: &worker::D1Result) -> u64 {
    r.meta().ok().flatten().and_then(|m| m.changes).unwrap_or(0) as u64
}

/// The hashes of the session tokens of `user`'s devices, or of one of them
/// when `device` is given: the current token and the one its last renewal
/// replaced, to drop from KV once their rows are gone.
pub async fn token_hashes(
    env: &Env,
    user: UserId,
    device: Option<&JsValue>,
) -> Result<Vec<String>, ApiError> {
    #[derive(Deserialize)]
    struct Tok {
        token_sha256: String,
        prev_sha256: Option<String>,
    }
    let db = env.d1(DB)?;
    let query = match device {
        None => db
            .prepare(
                "SELECT s.token_sha256 AS token_sha256, s.prev_sha256 AS prev_sha256 \
                 FROM sessions s JOIN devices d ON d.id = s.device_id WHERE d.user_id = ?1",
            )
            .bind(&[js_u64(user.0)])?,
        Some(device) => db
            .prepare(
                "SELECT s.token_sha256 AS token_sha256, s.prev_sha256 AS prev_sha256 \
                 FROM sessions s JOIN devices d ON d.id = s.device_id \
                 WHERE d.user_id = ?1 AND d.id = ?2",
            )
            .bind(&[js_u64(user.0), device.clone()])?,
    };
    let rows: Vec<Tok> = query.all().await?.results()?;
    Ok(rows
        .into_iter()
        .flat_map(|t| std::iter::once(t.token_sha256).chain(t.prev_sha256))
        .collect())
}
