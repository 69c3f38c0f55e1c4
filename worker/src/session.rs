//! Session tokens: checked through KV (a cache with a TTL) in front of D1,
//! and revoked in both.
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
}

#[derive(Deserialize)]
struct Row {
    user_id: u64,
    device_id: u64,
    name: String,
    disabled: u32,
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
    let cached = kv.get(&key).json::<Session>().await.ok().flatten();
    let session = match cached {
        Some(s) => s,
        None => {
            let db = env.d1(DB)?;
            let row: Option<Row> = db
                .prepare(
                    "SELECT d.user_id AS user_id, d.id AS device_id, d.name AS name, u.disabled AS disabled \
                     FROM sessions s JOIN devices d ON d.id = s.device_id JOIN users u ON u.id = d.user_id \
                     WHERE s.token_sha256 = ?1",
                )
                .bind(&[JsValue::from_str(&hex::encode(hash))])?
                .first(None)
                .await?;
            let Some(r) = row else {
                return Err(ApiError::unauthorized());
            };
            let s = Session {
                user: UserId(r.user_id),
                device: DeviceId(r.device_id),
                device_name: r.name,
                disabled: r.disabled != 0,
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
    let changed = res
        .get(1)
        .and_then(|r| r.meta().ok().flatten())
        .and_then(|m| m.changes)
        .unwrap_or(0);
    Ok(changed > 0)
}

/// A D1 integer parameter (D1 numbers are f64; ids stay below 2^53).
pub fn js_u64(v: u64) -> JsValue {
    JsValue::from_f64(v as f64)
}
