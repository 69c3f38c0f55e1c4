//! The HTTP layer: the router, shared [`AppState`], JSON errors and
//! extractors, and the operational endpoints (`/healthz`, `/readyz`,
//! `/metrics`). Account and admin handlers live in `http/`.
//!
//! Every non-2xx answer is an [`ErrorBody`] with a stable code. Request
//! bodies are limited to `limits.max_json` bytes (413) and parsed by
//! [`ApiJson`], which answers type errors with 400 and the parser's message.

mod account;
mod admin;

pub(crate) use account::{
    check_throttle as check_login_throttle, record_failure as record_login_failure,
    record_success as record_login_success,
};

use crate::auth::{self, Hasher};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::net::TrustedProxies;
use crate::registry::Registry;
use crate::store::{SessionInfo, Store};
use crate::throttle::Throttle;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use clipmesh_proto::api::ErrorBody;
use serde::de::DeserializeOwned;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything handlers share.
pub struct AppState {
    /// The configuration.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// Argon2id hashing of auth keys.
    pub hasher: Hasher,
    /// User rooms.
    pub registry: Arc<Registry>,
    /// Large sealed items.
    pub blobs: Arc<crate::blobs::BlobStore>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Login back-off per account name.
    pub throttle_users: Mutex<Throttle<String>>,
    /// Login back-off per client IP.
    pub throttle_ips: Mutex<Throttle<IpAddr>>,
    /// Server secret for fake pre-login salts.
    pub secret: Vec<u8>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted: TrustedProxies,
    /// Server shutdown.
    pub shutdown: CancellationToken,
    /// Owns connection tasks.
    pub tracker: TaskTracker,
    /// Source of connection ids.
    pub next_conn: AtomicU64,
    /// ClipCascade P2P signalling sessions, per user.
    pub signals: crate::clipcascade::SignalHub,
}

/// The router for the whole relay.
pub fn router(state: Arc<AppState>) -> Router {
    let max_json = state.config.limits.max_json;
    Router::new()
        .route("/api/v1/prelogin", post(account::prelogin))
        .route("/api/v1/signup", post(account::signup))
        .route("/api/v1/login", post(account::login))
        .route("/api/v1/logout", post(account::logout))
        .route("/api/v1/devices", get(account::devices))
        .route("/api/v1/devices/{id}", delete(account::delete_device))
        .route("/api/v1/password", post(account::change_password))
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

/// An error answer: status, stable code, one human line.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing, invalid or revoked token",
        )
    }

    /// 404 `not_found`.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 500 `internal` (details go to the log, not the client).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// 429 `rate_limited` with `Retry-After`.
    pub fn rate_limited(wait: Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Self {
            retry_after: Some(secs.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many attempts; retry in {} s", secs.max(1)),
            )
        }
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: &str, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Seconds the client should wait, for 429 and 503 answers.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// The human message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_owned(),
            message: self.message,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// A JSON body whose rejections are [`ApiError`]s: 413 over the size limit,
/// 400 with the parser's message for bad JSON or wrong types.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body too large",
                )
            } else {
                ApiError::bad_request("could not read request body")
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// An authenticated device (from `Authorization: Bearer <token>`).
pub struct Authed(pub SessionInfo);

/// Resolves a token to a live session of an enabled account.
pub async fn authenticate(state: &AppState, token: Option<&str>) -> Result<SessionInfo, ApiError> {
    let Some(token) = token.filter(|t| auth::token_shape_ok(t)) else {
        Metrics::add(&state.metrics.auth_failures, 1);
        return Err(ApiError::unauthorized());
    };
    let hash = auth::token_hash(token);
    let session = state.store.call(move |db| db.session(&hash)).await?;
    match session {
        Some(s) if s.disabled => {
            Metrics::add(&state.metrics.auth_failures, 1);
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "account_disabled",
                "this account is disabled",
            ))
        }
        Some(s) => Ok(s),
        None => {
            Metrics::add(&state.metrics.auth_failures, 1);
            Err(ApiError::unauthorized())
        }
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    auth::bearer(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

impl FromRequestParts<Arc<AppState>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        authenticate(state, bearer(&parts.headers))
            .await
            .map(Authed)
    }
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

async fn metrics(axum::extract::State(s): axum::extract::State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "bad_request",
        "method not allowed",
    )
}
