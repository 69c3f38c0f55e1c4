//! [`ApiError`]: every non-2xx answer of the HTTP API, as an
//! [`ErrorBody`] with a stable [`ApiErrorCode`] (shared with the client
//! through `clipmesh-proto`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use clipmesh_proto::api::{ApiErrorCode, ErrorBody};
use std::time::Duration;

/// An error answer: status, stable code, one human line.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ApiErrorCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: ApiErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ApiErrorCode::BadRequest, message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::Unauthorized,
            "missing, invalid or revoked token",
        )
    }

    /// 404 `not_found`.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ApiErrorCode::NotFound,
            format!("{what} not found"),
        )
    }

    /// 500 `internal` (details go to the log, not the client).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiErrorCode::Internal,
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
                ApiErrorCode::RateLimited,
                format!("too many attempts; retry in {} s", secs.max(1)),
            )
        }
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: &str, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ApiErrorCode::Unavailable,
                message,
            )
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

    /// The stable code.
    pub fn code(&self) -> ApiErrorCode {
        self.code
    }

    /// The human message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<crate::auth::HashError> for ApiError {
    fn from(e: crate::auth::HashError) -> Self {
        match e {
            crate::auth::HashError::Busy => Self::unavailable("server busy; retry shortly", 1),
            e => Self::internal(e),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody::new(self.code, self.message);
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}
