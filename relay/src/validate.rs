//! Validation of untrusted API input: names, hex keys, KDF parameters.
//! Every failure is a 400 with a message naming the field.

use crate::http::ApiError;
use crate::store::NewCredentials;
use clipmesh_proto::api::{MAX_DEVICE_NAME, MAX_USERNAME};
use clipmesh_proto::keys::{KEY_LEN, SALT_LEN, WRAPPED_LEN};
use clipmesh_proto::KdfParams;

fn name(field: &str, s: &str, max: usize) -> Result<(), ApiError> {
    let chars = s.chars().count();
    if chars == 0 || chars > max || s.len() > max * 4 {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1 to {max} characters"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must not contain control characters"
        )));
    }
    if s.trim() != s {
        return Err(ApiError::bad_request(format!(
            "{field} must not start or end with whitespace"
        )));
    }
    Ok(())
}

/// A username: 1..=64 characters, no control characters, not padded.
pub fn username(s: &str) -> Result<(), ApiError> {
    name("username", s, MAX_USERNAME)
}

/// A device name: 1..=64 bytes (it travels in frames capped at 64 bytes),
/// no control characters.
pub fn device_name(s: &str) -> Result<(), ApiError> {
    name("device_name", s, MAX_DEVICE_NAME)?;
    if s.len() > MAX_DEVICE_NAME {
        return Err(ApiError::bad_request(format!(
            "device_name must be at most {MAX_DEVICE_NAME} bytes"
        )));
    }
    Ok(())
}

/// Hex of exactly `N` bytes.
pub fn hex_n<const N: usize>(field: &str, s: &str) -> Result<[u8; N], ApiError> {
    let err = || ApiError::bad_request(format!("{field} must be {} hex characters", N * 2));
    if s.len() != N * 2 {
        return Err(err());
    }
    let v = hex::decode(s).map_err(|_| err())?;
    v.try_into().map_err(|_| err())
}

/// A 32-byte key as hex.
pub fn key_hex(field: &str, s: &str) -> Result<[u8; KEY_LEN], ApiError> {
    hex_n::<KEY_LEN>(field, s)
}

/// Salt, KDF parameters and wrapped data key of a signup or password
/// change. The returned credentials have an empty `auth_hash`.
pub fn credentials(salt: &str, kdf: &KdfParams, wrapped: &str) -> Result<NewCredentials, ApiError> {
    let salt = hex_n::<SALT_LEN>("salt", salt)?;
    kdf.check()
        .map_err(|e| ApiError::bad_request(format!("kdf: {e}")))?;
    let wrapped = hex_n::<WRAPPED_LEN>("wrapped_data_key", wrapped)?;
    Ok(NewCredentials {
        salt: salt.to_vec(),
        kdf: *kdf,
        auth_hash: String::new(),
        wrapped_data_key: wrapped.to_vec(),
    })
}

/// A numeric id in a path.
pub fn path_id(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>()
        .ok()
        .filter(|&v| v > 0 && v <= i64::MAX as u64)
        .ok_or_else(|| ApiError::bad_request("id must be a positive integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(username("ann").is_ok());
        assert!(username("Ünïcødé ok").is_ok());
        assert!(username("").is_err());
        assert!(username(&"a".repeat(65)).is_err());
        assert!(username(&"é".repeat(64)).is_ok());
        assert!(username("a\u{7}b").is_err());
        assert!(username(" ann").is_err());
        assert!(device_name(&"é".repeat(40)).is_err());
    }

    #[test]
    fn hex_fields() {
        assert!(key_hex("k", &"ab".repeat(32)).is_ok());
        assert!(key_hex("k", &"ab".repeat(31)).is_err());
        assert!(key_hex("k", &"zz".repeat(32)).is_err());
        assert!(path_id("0").is_err());
        assert_eq!(path_id("12").unwrap(), 12);
    }
}
