//! Admin endpoints on D1, as the native relay's `http/admin.rs`: list,
//! disable and delete users, for accounts with `is_admin` (others get 403
//! `forbidden`); an admin cannot disable or delete their own account here
//! (400). The per-room status (`room::admin_status`) and a user's R2
//! usage ([`user_blobs`]) are the Worker's own.
//!
//! Disabling a user closes its sockets with 4001 and drops its sessions'
//! KV cache entries, so its tokens answer 401 `account_disabled` at once
//! (a cached entry would otherwise carry the old flag for up to
//! `SESSION_CACHE_TTL_S`). Deleting one removes its rows (epoch wraps,
//! sessions, devices, blobs, half-finished logins, the account), its R2
//! objects, its sessions' cache entries, and its room's sockets and
//! storage.

use crate::api::{self, ApiError};
use crate::config::Settings;
use crate::session::{self, js_u64, Session, DB};
use clipmesh_proto::api::{UserRecord, UsersResponse};
use clipmesh_proto::UserId;
use clipmesh_room::validate;
use serde::Deserialize;
use worker::{Env, Request, Response};

type Answer = Result<Response, ApiError>;

/// The caller's session, if it belongs to an admin (401 without a valid
/// token, 403 for other accounts).
pub async fn require_admin(req: &Request, env: &Env) -> Result<Session, ApiError> {
    let s = Settings::from_env(env);
    let (token, _) = session::request_token(req);
    let me = session::authenticate(env, &s, token.as_deref()).await?;
    #[derive(Deserialize)]
    struct Admin {
        is_admin: u32,
    }
    let admin: Option<Admin> = env
        .d1(DB)?
        .prepare("SELECT is_admin FROM users WHERE id = ?1")
        .bind(&[js_u64(me.user.0)])?
        .first(None)
        .await?;
    if admin.is_none_or(|a| a.is_admin == 0) {
        return Err(ApiError::new(
            403,
            "forbidden",
            "this needs an admin account",
        ));
    }
    Ok(me)
}

fn target(me: &Session, id: &str) -> Result<UserId, ApiError> {
    let user = UserId(validate::path_id(id)?);
    if user == me.user {
        return Err(ApiError::bad_request(
            "an admin cannot disable or delete their own account here",
        ));
    }
    Ok(user)
}

/// `GET /api/v1/admin/users`: every user with its device count.
pub async fn list_users(req: Request, env: &Env) -> Answer {
    require_admin(&req, env).await?;
    #[derive(Deserialize)]
    struct Row {
        id: u64,
        username: String,
        is_admin: u32,
        disabled: u32,
        created_at: i64,
        devices: u32,
    }
    let rows: Vec<Row> = env
        .d1(DB)?
        .prepare(
            "SELECT u.id AS id, u.username AS username, u.is_admin AS is_admin, u.disabled AS disabled, \
             u.created_at AS created_at, \
             (SELECT COUNT(*) FROM devices d WHERE d.user_id = u.id) AS devices \
             FROM users u ORDER BY u.id",
        )
        .all()
        .await?
        .results()?;
    api::ok_json(&UsersResponse {
        users: rows
            .into_iter()
            .map(|r| UserRecord {
                id: UserId(r.id),
                username: r.username,
                is_admin: r.is_admin != 0,
                disabled: r.disabled != 0,
                created_at: r.created_at,
                devices: r.devices,
            })
            .collect(),
    })
}

/// `POST /api/v1/admin/users/{id}/disable`.
pub async fn disable_user(mut req: Request, env: &Env, id: &str) -> Answer {
    // Any body is ignored, but read (see `api::body`).
    api::body(&mut req).await?;
    let me = require_admin(&req, env).await?;
    let user = target(&me, id)?;
    let changed = env
        .d1(DB)?
        .prepare("UPDATE users SET disabled = 1 WHERE id = ?1")
        .bind(&[js_u64(user.0)])?
        .run()
        .await?;
    if session::changes(&changed) == 0 {
        return Err(ApiError::not_found("user"));
    }
    for t in session::token_hashes(env, user, None).await? {
        session::forget_token(env, &t).await?;
    }
    crate::room::revoke_all(env, user, false).await;
    api::no_content()
}

/// `DELETE /api/v1/admin/users/{id}`.
pub async fn delete_user(req: Request, env: &Env, id: &str) -> Answer {
    let me = require_admin(&req, env).await?;
    let user = target(&me, id)?;
    let db = env.d1(DB)?;
    let exists: Option<serde_json::Value> = db
        .prepare("SELECT id FROM users WHERE id = ?1")
        .bind(&[js_u64(user.0)])?
        .first(None)
        .await?;
    if exists.is_none() {
        return Err(ApiError::not_found("user"));
    }
    let tokens = session::token_hashes(env, user, None).await?;
    let keys = crate::blobs::user_objects(env, user)
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let u = js_u64(user.0);
    let one = |sql: &str| -> worker::Result<worker::D1PreparedStatement> {
        db.prepare(sql).bind(std::slice::from_ref(&u))
    };
    let res = db
        .batch(vec![
            one("DELETE FROM epoch_wraps WHERE user_id = ?1")?,
            one("DELETE FROM sessions WHERE device_id IN (SELECT id FROM devices WHERE user_id = ?1)")?,
            one("DELETE FROM devices WHERE user_id = ?1")?,
            one("DELETE FROM blobs WHERE user_id = ?1")?,
            one("DELETE FROM pending_logins WHERE user_id = ?1")?,
            one("DELETE FROM users WHERE id = ?1")?,
        ])
        .await?;
    let deleted = res.last().map_or(0, session::changes);
    for t in tokens {
        session::forget_token(env, &t).await?;
    }
    crate::blobs::delete_objects(env, keys).await?;
    crate::room::revoke_all(env, user, true).await;
    if deleted == 0 {
        // Deleted by a concurrent request between the check and the batch.
        return Err(ApiError::not_found("user"));
    }
    api::no_content()
}

/// `GET /api/v1/admin/users/{id}/blobs` (the Worker's own, like the room
/// status): how many R2 objects and bytes user `id` holds now, expired or
/// not (`{"objects": N, "bytes": B}`), which shows what the cron sweep
/// removed.
pub async fn user_blobs(req: Request, env: &Env, id: &str) -> Answer {
    require_admin(&req, env).await?;
    let user = UserId(validate::path_id(id)?);
    let objects = crate::blobs::user_objects(env, user).await?;
    let bytes: u64 = objects.iter().map(|(_, n)| n).sum();
    api::ok_json(&serde_json::json!({"objects": objects.len(), "bytes": bytes}))
}
