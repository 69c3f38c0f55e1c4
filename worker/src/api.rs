//! JSON errors and bodies, answered like the native relay's: every non-2xx
//! answer is an `ErrorBody` with a stable code; request bodies over
//! `max_json` are 413 and bad JSON is 400 with the parser's message.

use clipmesh_proto::api::ErrorBody;
use clipmesh_room::validate::Invalid;
use serde::de::DeserializeOwned;
use worker::{Request, Response};

/// An error answer: status, stable code, one human line.
#[derive(Debug)]
pub struct ApiError {
    status: u16,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(401, "unauthorized", "missing, invalid or revoked token")
    }

    /// 404 `not_found`.
    pub fn not_found(what: &str) -> Self {
        Self::new(404, "not_found", format!("{what} not found"))
    }

    /// 500 `internal`; the detail goes to the Worker's log only.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        worker::console_error!("internal error: {e}");
        Self::new(500, "internal", "internal error")
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: &str, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(503, "unavailable", message)
        }
    }

    /// The same error with a `Retry-After` of `secs`.
    pub fn retry_after(self, secs: u64) -> Self {
        Self {
            retry_after: Some(secs),
            ..self
        }
    }

    /// The JSON answer.
    pub fn into_response(self) -> worker::Result<Response> {
        let body = ErrorBody {
            error: self.code.to_owned(),
            message: self.message,
        };
        let mut r = Response::from_json(&body)?.with_status(self.status);
        if let Some(s) = self.retry_after {
            r.headers_mut().set("Retry-After", &s.to_string())?;
        }
        Ok(r)
    }
}

impl From<worker::Error> for ApiError {
    fn from(e: worker::Error) -> Self {
        Self::internal(e)
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        Self::bad_request(e.0)
    }
}

/// Reads a JSON body of at most `max` bytes.
pub async fn json<T: DeserializeOwned>(req: &mut Request, max: usize) -> Result<T, ApiError> {
    let bytes = body(req).await?;
    parse(&bytes, max)
}

/// Reads the whole request body. Every handler reads its body before it
/// answers, also with an error: answering early and dropping the rest
/// makes the runtime reset a client that is still sending, and close a
/// keep-alive connection the client would reuse. (The Workers runtime
/// itself caps request bodies.)
pub async fn body(req: &mut Request) -> Result<Vec<u8>, ApiError> {
    req.bytes()
        .await
        .map_err(|_| ApiError::bad_request("could not read request body"))
}

/// Parses a body read with [`body`]: over `max` bytes is 413, bad JSON 400.
pub fn parse<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, ApiError> {
    if bytes.len() > max {
        return Err(too_large());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn too_large() -> ApiError {
    ApiError::new(413, "payload_too_large", "request body too large")
}

/// A 200 JSON answer.
pub fn ok_json<T: serde::Serialize>(v: &T) -> Result<Response, ApiError> {
    Ok(Response::from_json(v)?)
}

/// A 204 answer.
pub fn no_content() -> Result<Response, ApiError> {
    Ok(Response::empty()?.with_status(204))
}

/// Seconds since the Unix epoch, from the Worker's clock.
pub fn unix_now() -> i64 {
    (worker::Date::now().as_millis() / 1000) as i64
}
