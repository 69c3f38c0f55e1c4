//! `clipmesh-worker`: the clipmesh relay on Cloudflare Workers and Durable
//! Objects, a thin host around the same sans-IO core as the native relay
//! (`clipmesh-room`: room state, connection decisions, input validation and
//! token rules).
//!
//! - The Worker ([`fetch`]) serves `/healthz`, `/readyz` and the JSON API
//!   under `/api/v1` with the native relay's paths and bodies: accounts,
//!   devices and sessions live in **D1** ([`account`], [`admin`]), logins
//!   go through the same throttle rules ([`throttle`]), and the optional
//!   rate-limiting binding guards the tokenless ones and optional
//!   Turnstile the signups ([`turnstile`]); session tokens are
//!   looked up through **KV** with a TTL in front of D1 ([`session`]);
//!   blobs are stored on **R2** with their rows in D1 ([`blobs`]).
//! - `/api/v1/ws` is authenticated here and handed to the user's
//!   [`room::UserRoom`] Durable Object (`idFromName(user_id)`), which holds
//!   the user's sockets with the Hibernation API and drives
//!   `clipmesh_room::RoomState`.
//! - A cron trigger runs [`sweep`]: expired blobs' R2 objects, stale
//!   throttle rows and expired half-finished logins.
//!
//! **Architecture Invariant:** this crate decides nothing about the
//! protocol that the native relay also decides: room behaviour, inbound
//! frame handling, validation and token rules come from `clipmesh-room`.
//! What must differ is listed in `docs/protocol.md`.

pub mod account;
pub mod admin;
pub mod api;
pub mod blobs;
pub mod config;
pub mod opaque;
pub mod room;
pub mod session;
pub mod sweep;
pub mod throttle;
pub mod turnstile;

use api::ApiError;
use worker::{event, Context, Env, Method, Request, Response, Result};

/// The Worker's entry point: routes one request.
#[event(fetch)]
pub async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let path = req.path();
    let method = req.method();
    let out = route(req, &env, &method, &path).await;
    match out {
        Ok(r) => Ok(r),
        Err(e) => e.into_response(),
    }
}

async fn route(
    req: Request,
    env: &Env,
    method: &Method,
    path: &str,
) -> std::result::Result<Response, ApiError> {
    use Method::{Delete, Get, Post, Put};
    if *method == Post && guarded(path) {
        if let Err(e) = throttle::rate_limit(env, throttle::client_net(&req)).await {
            // Read the body before answering (see `api::body`).
            let mut req = req;
            api::body(&mut req).await?;
            return Err(e);
        }
    }
    match (method, path) {
        (Get, "/healthz") => Ok(Response::ok("ok\n")?),
        (Get, "/readyz") => account::readyz(env).await,
        (Post, "/api/v1/prelogin") => account::prelogin(req, env).await,
        (Post, "/api/v1/signup") => account::signup(req, env).await,
        (Post, "/api/v1/login") => account::login(req, env).await,
        (Post, "/api/v1/logout") => account::logout(req, env).await,
        (Post, "/api/v1/session/renew") => account::renew(req, env).await,
        (Get, "/api/v1/devices") => account::devices(req, env).await,
        (Post, "/api/v1/password") => account::change_password(req, env).await,
        (Get, "/api/v1/admin/users") => admin::list_users(req, env).await,
        (Delete, p) if p.starts_with("/api/v1/devices/") => {
            let id = &p["/api/v1/devices/".len()..];
            account::delete_device(req, env, id).await
        }
        (_, p) if p.starts_with("/api/v1/blobs/") => {
            let id = p["/api/v1/blobs/".len()..].to_owned();
            blobs::handle(req, env, method, &id).await
        }
        (Post, "/api/v2/signup/start") => opaque::signup_start(req, env).await,
        (Post, "/api/v2/signup/finish") => opaque::signup_finish(req, env).await,
        (Post, "/api/v2/login/start") => opaque::login_start(req, env).await,
        (Post, "/api/v2/login/finish") => opaque::login_finish(req, env).await,
        (Post, "/api/v2/register/start") => opaque::register_start(req, env).await,
        (Post, "/api/v2/upgrade") => opaque::upgrade(req, env).await,
        (Post, "/api/v2/password/start") => opaque::password_start(req, env).await,
        (Post, "/api/v2/password/finish") => opaque::password_finish(req, env).await,
        (Put, "/api/v2/device-key") => opaque::put_device_key(req, env).await,
        (Get, "/api/v2/device-keys") => opaque::device_keys(req, env).await,
        (Get, "/api/v2/epoch-wrap") => opaque::epoch_wrap(req, env).await,
        (Get, "/api/v1/ws") => room::upgrade(req, env).await,
        (Get, "/api/v1/status") => room::status(req, env).await,
        (_, p) if p.starts_with("/api/v1/admin/users/") => {
            let rest = &p["/api/v1/admin/users/".len()..];
            match (method, rest.split_once('/')) {
                (Get, Some((id, "status"))) => room::admin_status(req, env, id).await,
                (Get, Some((id, "blobs"))) => admin::user_blobs(req, env, id).await,
                (Post, Some((id, "disable"))) => admin::disable_user(req, env, id).await,
                (Delete, None) => admin::delete_user(req, env, rest).await,
                (_, Some((_, "status" | "blobs" | "disable"))) | (_, None) => {
                    Err(ApiError::new(405, "bad_request", "method not allowed"))
                }
                _ => Err(ApiError::not_found("route")),
            }
        }
        (_, p) if known_path(p) => Err(ApiError::new(405, "bad_request", "method not allowed")),
        _ => Err(ApiError::not_found("route")),
    }
}

/// The endpoints a client calls without a token, which the optional
/// rate-limiting binding guards ([`throttle::rate_limit`]).
fn guarded(p: &str) -> bool {
    matches!(
        p,
        "/api/v1/prelogin"
            | "/api/v1/signup"
            | "/api/v1/login"
            | "/api/v2/signup/start"
            | "/api/v2/signup/finish"
            | "/api/v2/login/start"
            | "/api/v2/login/finish"
    )
}

fn known_path(p: &str) -> bool {
    matches!(
        p,
        "/healthz"
            | "/readyz"
            | "/api/v1/prelogin"
            | "/api/v1/signup"
            | "/api/v1/login"
            | "/api/v1/logout"
            | "/api/v1/session/renew"
            | "/api/v1/devices"
            | "/api/v1/ws"
            | "/api/v1/status"
            | "/api/v1/password"
            | "/api/v1/admin/users"
            | "/api/v2/signup/start"
            | "/api/v2/signup/finish"
            | "/api/v2/login/start"
            | "/api/v2/login/finish"
            | "/api/v2/register/start"
            | "/api/v2/upgrade"
            | "/api/v2/password/start"
            | "/api/v2/password/finish"
            | "/api/v2/device-key"
            | "/api/v2/device-keys"
            | "/api/v2/epoch-wrap"
    ) || p.starts_with("/api/v1/devices/")
}
