//! The relay's HTTP JSON API, from the client side.
//!
//! Blocking (ureq); async callers wrap calls in `spawn_blocking`. Every
//! failure maps to one [`ApiError`] whose `Display` is the one line the
//! command line prints.

use crate::tls::TrustRoots;
use clipmesh_proto::api::v2;
use clipmesh_proto::api::{
    DevicesResponse, ErrorBody, LoginRequest, LoginResponse, PreloginRequest, PreloginResponse,
    RenewResponse, SignupRequest,
};
use clipmesh_proto::{ApiErrorCode, DeviceId};
use serde::de::DeserializeOwned;
use std::time::Duration;
use thiserror::Error;

/// Timeout for one HTTP request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an API call failed.
#[derive(Debug, Error)]
pub enum ApiError {
    /// No answer: DNS, TCP, TLS or timeout.
    #[error("relay unreachable at {server}: {detail}")]
    Unreachable {
        /// The relay URL.
        server: String,
        /// Short reason.
        detail: String,
    },
    /// The relay said the password (auth key) is wrong.
    #[error("wrong username or password")]
    InvalidCredentials,
    /// The account is disabled.
    #[error("this account is disabled on the relay")]
    AccountDisabled,
    /// Signup is closed on this relay.
    #[error("signup is closed on this relay; ask its administrator for an account")]
    SignupClosed,
    /// The username is taken.
    #[error("that username is taken")]
    UsernameTaken,
    /// The token is no longer valid.
    #[error("this device's session was revoked; run `clipmesh login` again")]
    Unauthorized,
    /// Too many attempts.
    #[error("too many attempts; try again in {0} s")]
    RateLimited(u64),
    /// Any other error answer.
    #[error("relay refused the request ({status} {code}): {message}")]
    Other {
        /// HTTP status.
        status: u16,
        /// The error code from the body.
        code: String,
        /// The relay's message.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from the relay: {0}")]
    BadResponse(String),
}

/// A client for one relay.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    /// A client for the relay at `server` (e.g. `http://127.0.0.1:8080`).
    pub fn new(server: &str) -> Self {
        Self::with_roots(server, &TrustRoots::webpki())
    }

    /// A client trusting `roots` for `https://`.
    pub fn with_roots(server: &str, roots: &TrustRoots) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(roots.ureq_config())
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .user_agent(concat!("clipmesh/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            base: server.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1/{path}", self.base)
    }

    fn unreachable(&self, e: ureq::Error) -> ApiError {
        ApiError::Unreachable {
            server: self.base.clone(),
            detail: e.to_string(),
        }
    }

    /// `POST /prelogin`.
    pub fn prelogin(&self, username: &str) -> Result<PreloginResponse, ApiError> {
        let resp = self
            .agent
            .post(&self.url("prelogin"))
            .send_json(PreloginRequest {
                username: username.to_owned(),
            })
            .map_err(|e| self.unreachable(e))?;
        json_or_error(resp)
    }

    /// `POST /signup`.
    pub fn signup(&self, req: &SignupRequest) -> Result<LoginResponse, ApiError> {
        let resp = self
            .agent
            .post(&self.url("signup"))
            .send_json(req)
            .map_err(|e| self.unreachable(e))?;
        json_or_error(resp)
    }

    /// `POST /login`.
    pub fn login(&self, req: &LoginRequest) -> Result<LoginResponse, ApiError> {
        let resp = self
            .agent
            .post(&self.url("login"))
            .send_json(req)
            .map_err(|e| self.unreachable(e))?;
        json_or_error(resp)
    }

    /// `POST /session/renew`: a new token for this device's session (the
    /// old one works until the new one is first used).
    pub fn renew(&self, token: &str) -> Result<RenewResponse, ApiError> {
        let resp = self
            .agent
            .post(&self.url("session/renew"))
            .header("Authorization", &bearer(token))
            .send_empty()
            .map_err(|e| self.unreachable(e))?;
        json_or_error(resp)
    }

    /// `POST /logout`: revokes this device's session.
    pub fn logout(&self, token: &str) -> Result<(), ApiError> {
        let resp = self
            .agent
            .post(&self.url("logout"))
            .header("Authorization", &bearer(token))
            .send_empty()
            .map_err(|e| self.unreachable(e))?;
        empty_or_error(resp)
    }

    /// `PUT /clipcascade`: turns ClipCascade compatibility on (with the
    /// password's SHA3-512 hex) or off for this account.
    pub fn set_clipcascade(
        &self,
        token: &str,
        login_hash: Option<&str>,
        mode: Option<&str>,
    ) -> Result<(), ApiError> {
        let resp = self
            .agent
            .put(&self.url("clipcascade"))
            .header("Authorization", &bearer(token))
            .send_json(clipmesh_proto::api::ClipCascadeRequest {
                login_hash: login_hash.map(str::to_owned),
                mode: mode.map(str::to_owned),
            })
            .map_err(|e| self.unreachable(e))?;
        empty_or_error(resp)
    }

    /// `GET /devices`.
    pub fn devices(&self, token: &str) -> Result<DevicesResponse, ApiError> {
        let resp = self
            .agent
            .get(&self.url("devices"))
            .header("Authorization", &bearer(token))
            .call()
            .map_err(|e| self.unreachable(e))?;
        json_or_error(resp)
    }

    fn post_v2<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &B,
    ) -> Result<T, ApiError> {
        let mut req = self.agent.post(&format!("{}/api/v2/{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", &bearer(t));
        }
        let resp = req.send_json(body).map_err(|e| self.unreachable(e))?;
        json_or_error(resp)
    }

    fn post_v2_empty<B: serde::Serialize>(
        &self,
        path: &str,
        token: &str,
        body: &B,
    ) -> Result<(), ApiError> {
        let resp = self
            .agent
            .post(&format!("{}/api/v2/{path}", self.base))
            .header("Authorization", &bearer(token))
            .send_json(body)
            .map_err(|e| self.unreachable(e))?;
        empty_or_error(resp)
    }

    /// `POST /api/v2/signup/start`.
    pub fn v2_signup_start(
        &self,
        req: &v2::RegisterStartRequest,
    ) -> Result<v2::RegisterStartResponse, ApiError> {
        self.post_v2("signup/start", None, req)
    }

    /// `POST /api/v2/signup/finish`.
    pub fn v2_signup_finish(
        &self,
        req: &v2::SignupFinishRequest,
    ) -> Result<v2::LoginV2Response, ApiError> {
        self.post_v2("signup/finish", None, req)
    }

    /// `POST /api/v2/login/start`.
    pub fn v2_login_start(
        &self,
        req: &v2::LoginStartRequest,
    ) -> Result<v2::LoginStartResponse, ApiError> {
        self.post_v2("login/start", None, req)
    }

    /// `POST /api/v2/login/finish`.
    pub fn v2_login_finish(
        &self,
        req: &v2::LoginFinishRequest,
    ) -> Result<v2::LoginV2Response, ApiError> {
        self.post_v2("login/finish", None, req)
    }

    /// `POST /api/v2/register/start` for this device's own account.
    pub fn v2_register_start(
        &self,
        token: &str,
        req: &v2::OwnRegisterStartRequest,
    ) -> Result<v2::RegisterStartResponse, ApiError> {
        self.post_v2("register/start", Some(token), req)
    }

    /// `POST /api/v2/upgrade`.
    pub fn v2_upgrade(&self, token: &str, req: &v2::UpgradeRequest) -> Result<(), ApiError> {
        self.post_v2_empty("upgrade", token, req)
    }

    /// `POST /api/v2/password/start`.
    pub fn v2_password_start(
        &self,
        token: &str,
        req: &v2::PasswordStartRequest,
    ) -> Result<v2::PasswordStartResponse, ApiError> {
        self.post_v2("password/start", Some(token), req)
    }

    /// `POST /api/v2/password/finish`.
    pub fn v2_password_finish(
        &self,
        token: &str,
        req: &v2::PasswordFinishRequest,
    ) -> Result<(), ApiError> {
        self.post_v2_empty("password/finish", token, req)
    }

    /// `PUT /api/v2/device-key`.
    pub fn v2_put_device_key(
        &self,
        token: &str,
        req: &v2::DeviceKeyRequest,
    ) -> Result<(), ApiError> {
        let resp = self
            .agent
            .put(&format!("{}/api/v2/device-key", self.base))
            .header("Authorization", &bearer(token))
            .send_json(req)
            .map_err(|e| self.unreachable(e))?;
        empty_or_error(resp)
    }

    /// `GET /api/v2/device-keys`.
    pub fn v2_device_keys(&self, token: &str) -> Result<v2::DeviceKeysResponse, ApiError> {
        let resp = self
            .agent
            .get(&format!("{}/api/v2/device-keys", self.base))
            .header("Authorization", &bearer(token))
            .call()
            .map_err(|e| self.unreachable(e))?;
        json_or_error(resp)
    }

    /// `GET /api/v2/epoch-wrap` (404: the relay has no key epochs).
    pub fn v2_epoch_wrap(&self, token: &str) -> Result<v2::EpochWrapResponse, ApiError> {
        let resp = self
            .agent
            .get(&format!("{}/api/v2/epoch-wrap", self.base))
            .header("Authorization", &bearer(token))
            .call()
            .map_err(|e| self.unreachable(e))?;
        json_or_error(resp)
    }

    /// `DELETE /devices/{id}`.
    pub fn revoke(&self, token: &str, id: DeviceId) -> Result<(), ApiError> {
        let resp = self
            .agent
            .delete(&self.url(&format!("devices/{}", id.0)))
            .header("Authorization", &bearer(token))
            .call()
            .map_err(|e| self.unreachable(e))?;
        empty_or_error(resp)
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn json_or_error<T: DeserializeOwned>(
    mut resp: ureq::http::Response<ureq::Body>,
) -> Result<T, ApiError> {
    if resp.status().is_success() {
        resp.body_mut()
            .read_json::<T>()
            .map_err(|e| ApiError::BadResponse(e.to_string()))
    } else {
        Err(error_from(resp))
    }
}

fn empty_or_error(resp: ureq::http::Response<ureq::Body>) -> Result<(), ApiError> {
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(error_from(resp))
    }
}

fn error_from(mut resp: ureq::http::Response<ureq::Body>) -> ApiError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body: Option<ErrorBody> = resp.body_mut().read_json().ok();
    let code = body.as_ref().map(|b| b.error.as_str()).unwrap_or("");
    match (status, ApiErrorCode::parse(code)) {
        (_, Some(ApiErrorCode::InvalidCredentials)) => ApiError::InvalidCredentials,
        (_, Some(ApiErrorCode::AccountDisabled)) => ApiError::AccountDisabled,
        (_, Some(ApiErrorCode::SignupClosed)) => ApiError::SignupClosed,
        (_, Some(ApiErrorCode::UsernameTaken)) => ApiError::UsernameTaken,
        (_, Some(ApiErrorCode::RateLimited)) | (429, _) => {
            ApiError::RateLimited(retry_after.unwrap_or(60))
        }
        (401, _) | (_, Some(ApiErrorCode::Unauthorized)) => ApiError::Unauthorized,
        _ => ApiError::Other {
            status,
            code: code.to_owned(),
            message: body
                .map(|b| b.message)
                .unwrap_or_else(|| "no details".to_owned()),
        },
    }
}
