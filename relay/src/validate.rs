//! Validation of untrusted API input: names, hex keys, KDF parameters.
//! Every failure is a 400 with a message naming the field.
//!
//! The rules live in `clipmesh_room::validate`, shared with the Worker
//! host; this module turns them into [`ApiError`]s and store types.

use crate::error::ApiError;
use crate::store::NewCredentials;
use clipmesh_proto::keys::KEY_LEN;
use clipmesh_proto::KdfParams;
use clipmesh_room::validate as rules;

impl From<rules::Invalid> for ApiError {
    fn from(e: rules::Invalid) -> Self {
        ApiError::bad_request(e.0)
    }
}

/// A username: 1..=64 characters, no control characters, not padded.
pub fn username(s: &str) -> Result<(), ApiError> {
    Ok(rules::username(s)?)
}

/// A device name: 1..=64 bytes (it travels in frames capped at 64 bytes),
/// no control characters.
pub fn device_name(s: &str) -> Result<(), ApiError> {
    Ok(rules::device_name(s)?)
}

/// Hex of exactly `N` bytes.
pub fn hex_n<const N: usize>(field: &str, s: &str) -> Result<[u8; N], ApiError> {
    Ok(rules::hex_n::<N>(field, s)?)
}

/// A 32-byte key as hex.
pub fn key_hex(field: &str, s: &str) -> Result<[u8; KEY_LEN], ApiError> {
    hex_n::<KEY_LEN>(field, s)
}

/// Salt, KDF parameters and wrapped data key of a signup or password
/// change. The returned credentials have an empty `auth_hash`.
pub fn credentials(salt: &str, kdf: &KdfParams, wrapped: &str) -> Result<NewCredentials, ApiError> {
    let c = rules::credentials(salt, kdf, wrapped)?;
    Ok(NewCredentials {
        salt: c.salt.to_vec(),
        kdf: c.kdf,
        auth_hash: String::new(),
        wrapped_data_key: c.wrapped_data_key.to_vec(),
    })
}

/// A numeric id in a path.
pub fn path_id(s: &str) -> Result<u64, ApiError> {
    Ok(rules::path_id(s)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_400_naming_the_field() {
        let e = username("").unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        assert!(e.message().contains("username"));
        assert_eq!(path_id("12").unwrap(), 12);
        assert!(key_hex("k", &"ab".repeat(31)).is_err());
    }
}
