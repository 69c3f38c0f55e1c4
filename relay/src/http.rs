//! The HTTP layer: the router and the operational endpoints (`/healthz`,
//! `/readyz`, `/metrics`). Account and admin handlers live in `http/`; the
//! shared state is [`crate::app`], errors [`crate::error`], extractors
//! [`crate::extract`].
//!
//! Every non-2xx answer is an [`clipmesh_proto::ErrorBody`] with a stable
//! code. Request bodies are limited to `limits.max_json` bytes (413) and
//! parsed by [`crate::extract::ApiJson`], which answers type errors with 400
//! and the parser's message.

mod account;
mod admin;
mod v2;

pub(crate) use account::{
    check_throttle as check_login_throttle, record_failure as record_login_failure,
    record_success as record_login_success,
};

use crate::app::AppState;
use crate::error::ApiError;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use clipmesh_proto::api::ApiErrorCode;
use std::sync::Arc;

/// The router for the whole relay.
pub fn router(state: Arc<AppState>) -> Router {
    let max_json = state.config.limits.max_json;
    Router::new()
        .route("/api/v1/prelogin", post(account::prelogin))
        .route("/api/v1/signup", post(account::signup))
        .route("/api/v1/login", post(account::login))
        .route("/api/v1/logout", post(account::logout))
        .route("/api/v1/session/renew", post(account::renew))
        .route("/api/v1/devices", get(account::devices))
        .route("/api/v1/devices/{id}", delete(account::delete_device))
        .route("/api/v1/password", post(account::change_password))
        .route("/api/v2/signup/start", post(v2::signup_start))
        .route("/api/v2/signup/finish", post(v2::signup_finish))
        .route("/api/v2/login/start", post(v2::login_start))
        .route("/api/v2/login/finish", post(v2::login_finish))
        .route("/api/v2/register/start", post(v2::register_start))
        .route("/api/v2/upgrade", post(v2::upgrade))
        .route("/api/v2/password/start", post(v2::password_start))
        .route("/api/v2/password/finish", post(v2::password_finish))
        .route("/api/v2/device-key", put(v2::put_device_key))
        .route("/api/v2/device-keys", get(v2::device_keys))
        .route("/api/v2/epoch-wrap", get(v2::epoch_wrap))
        .route("/api/v1/admin/users", get(admin::list_users))
        .route(
            "/api/v1/admin/users/{id}/disable",
            post(admin::disable_user),
        )
        .route("/api/v1/admin/users/{id}", delete(admin::delete_user))
        .route("/api/v1/ws", get(crate::ws::upgrade))
        .merge(crate::blobs::routes())
        .merge(crate::clipcascade::routes(&state.config.clipcascade))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_json))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(axum::extract::State(s): axum::extract::State<Arc<AppState>>) -> Response {
    match s.store.call(|db| db.ping()).await {
        Ok(()) if !s.shutdown.is_cancelled() => "ready\n".into_response(),
        Ok(()) => ApiError::unavailable("shutting down", 1).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            ApiError::unavailable("database unavailable", 5).into_response()
        }
    }
}

async fn metrics(
    axum::extract::State(s): axum::extract::State<Arc<AppState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Response {
    // Loopback only unless configured public; a forwarded request came
    // through a proxy from somewhere else, whatever the peer address.
    let local = peer.ip().is_loopback() && !headers.contains_key("x-forwarded-for");
    if !s.config.metrics_public && !local {
        return StatusCode::NOT_FOUND.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        format!(
            "{}# HELP clipmesh_relay_hashes_total Argon2id hashes and verifications computed.\n\
             # TYPE clipmesh_relay_hashes_total counter\nclipmesh_relay_hashes_total {}\n",
            s.metrics.render(),
            s.hasher.computed()
        ),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ApiErrorCode::BadRequest,
        "method not allowed",
    )
}
