//! Request extractors: [`ApiJson`] (a bounded JSON body whose rejections
//! are [`ApiError`]s) and [`Authed`] (a device token resolved to a live
//! session, within its idle and absolute lifetimes), shared by the HTTP
//! handlers and the WebSocket upgrade.

use crate::app::AppState;
use crate::auth;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::store::{SessionInfo, SessionLifetimes};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use clipmesh_proto::api::ApiErrorCode;
use serde::de::DeserializeOwned;
use std::sync::Arc;

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
                    ApiErrorCode::PayloadTooLarge,
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
    let now = state.clock.unix_now();
    let life = lifetimes(state);
    let session = state
        .store
        .call(move |db| db.use_session(&hash, now, life))
        .await?;
    match session {
        Some(s) if s.disabled => {
            Metrics::add(&state.metrics.auth_failures, 1);
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ApiErrorCode::AccountDisabled,
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

/// The configured session lifetimes.
pub fn lifetimes(state: &AppState) -> SessionLifetimes {
    SessionLifetimes::new(
        state.config.auth.session_idle_s,
        state.config.auth.session_max_s,
    )
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
