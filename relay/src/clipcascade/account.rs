//! Turning ClipCascade compatibility on or off for an account: the
//! `PUT /api/v1/clipcascade` endpoint (`clipmesh signup/login
//! --clipcascade-compat`) and the hashing the operator's CLI shares.
//!
//! The verifier is an Argon2id PHC hash of the lowercase SHA3-512 hex of
//! the password: what ClipCascade clients send as their "password".

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authed};
use crate::store::CcMode;
use axum::extract::State;
use axum::http::StatusCode;
use clipmesh_proto::api::ApiErrorCode;
use clipmesh_proto::api::ClipCascadeRequest;
use sha3::{Digest, Sha3_512};
use std::sync::Arc;

/// The lowercase hex SHA3-512 of a password: a ClipCascade login hash.
pub fn login_hash(password: &str) -> String {
    hex::encode(Sha3_512::digest(password.as_bytes()))
}

/// Checks a login hash's shape and lowercases it.
pub fn normalise_login_hash(s: &str) -> Result<String, ApiError> {
    if s.len() != super::login::PASSWORD_HEX_LEN || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "login_hash must be 128 hex characters (SHA3-512)",
        ));
    }
    Ok(s.to_ascii_lowercase())
}

/// `PUT /api/v1/clipcascade`.
pub(crate) async fn set(
    State(s): State<Arc<AppState>>,
    Authed(me): Authed,
    ApiJson(req): ApiJson<ClipCascadeRequest>,
) -> Result<StatusCode, ApiError> {
    if !s.config.clipcascade.enabled {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ApiErrorCode::ClipcascadeDisabled,
            "ClipCascade compatibility is off on this relay",
        ));
    }
    let mode = match req.mode.as_deref() {
        None => None,
        Some(m) => {
            Some(CcMode::parse(m).ok_or_else(|| ApiError::bad_request("mode must be P2S or P2P"))?)
        }
    };
    let verifier = match req.login_hash.as_deref() {
        Some(h) => {
            let h = normalise_login_hash(h)?;
            Some(s.hasher.hash_bytes(h.into_bytes()).await?)
        }
        None => None,
    };
    let user = me.user;
    let on = verifier.is_some();
    let ended = s
        .store
        .call(move |db| {
            if let Some(m) = mode {
                db.set_cc_mode(user, m)?;
            }
            db.set_cc_verifier(user, verifier.as_deref())
        })
        .await?;
    for d in ended {
        s.registry.revoke(user, Some(d)).await;
    }
    tracing::info!(%user, on, "clipcascade compatibility changed");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_hash_known_answer() {
        // From the protocol description.
        assert_eq!(
            login_hash("secret"),
            "b778a39a3663719dfc5e48c9d78431b1e45c2af9df538782bf199c189dabeac7\
             680ada57dcec8eee91c4e3bf3bfa9af6ffde90cd1d249d1c6121d7b759a001b1"
        );
        assert!(normalise_login_hash(&login_hash("x").to_uppercase()).is_ok());
        assert!(normalise_login_hash("abc").is_err());
    }
}
