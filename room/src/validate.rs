//! Validation of untrusted API input shared by both relay hosts: names,
//! hex keys, KDF parameters, path ids. Every failure is an [`Invalid`]
//! whose message names the field; hosts answer it with 400 `bad_request`.

use clipmesh_proto::api::{MAX_DEVICE_NAME, MAX_USERNAME};
use clipmesh_proto::keys::{SALT_LEN, WRAPPED_LEN};
use clipmesh_proto::KdfParams;

/// Input that fails validation; the message names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn name(field: &str, s: &str, max: usize) -> Result<(), Invalid> {
    let chars = s.chars().count();
    if chars == 0 || chars > max || s.len() > max * 4 {
        return Err(Invalid(format!("{field} must be 1 to {max} characters")));
    }
    if s.chars().any(char::is_control) {
        return Err(Invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    if s.trim() != s {
        return Err(Invalid(format!(
            "{field} must not start or end with whitespace"
        )));
    }
    Ok(())
}

/// A username: 1..=64 characters, no control characters, not padded.
pub fn username(s: &str) -> Result<(), Invalid> {
    name("username", s, MAX_USERNAME)
}

/// A device name: 1..=64 bytes (it travels in frames capped at 64 bytes),
/// no control characters.
pub fn device_name(s: &str) -> Result<(), Invalid> {
    name("device_name", s, MAX_DEVICE_NAME)?;
    if s.len() > MAX_DEVICE_NAME {
        return Err(Invalid(format!(
            "device_name must be at most {MAX_DEVICE_NAME} bytes"
        )));
    }
    Ok(())
}

/// Hex of exactly `N` bytes.
pub fn hex_n<const N: usize>(field: &str, s: &str) -> Result<[u8; N], Invalid> {
    let err = || Invalid(format!("{field} must be {} hex characters", N * 2));
    if s.len() != N * 2 {
        return Err(err());
    }
    let v = hex::decode(s).map_err(|_| err())?;
    v.try_into().map_err(|_| err())
}

/// A 32-byte key as hex.
pub fn key_hex(field: &str, s: &str) -> Result<[u8; 32], Invalid> {
    hex_n::<32>(field, s)
}

/// Checked salt, KDF parameters and wrapped data key of a signup or
/// password change.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The Argon2id salt.
    pub salt: [u8; SALT_LEN],
    /// The client's KDF parameters (within the accepted bounds).
    pub kdf: KdfParams,
    /// The data key wrapped under the KEK.
    pub wrapped_data_key: [u8; WRAPPED_LEN],
}

/// Salt, KDF parameters and wrapped data key of a signup or password
/// change.
pub fn credentials(salt: &str, kdf: &KdfParams, wrapped: &str) -> Result<Credentials, Invalid> {
    let salt = hex_n::<SALT_LEN>("salt", salt)?;
    // The floor, not only computability: a client that signs up (or changes
    // its password) below it would make every later login refuse the
    // parameters, and weak parameters make a stolen database cheap to crack.
    kdf.check_floor()
        .map_err(|e| Invalid(format!("kdf: {e}")))?;
    let wrapped_data_key = hex_n::<WRAPPED_LEN>("wrapped_data_key", wrapped)?;
    Ok(Credentials {
        salt,
        kdf: *kdf,
        wrapped_data_key,
    })
}

/// A numeric id in a path.
pub fn path_id(s: &str) -> Result<u64, Invalid> {
    s.parse::<u64>()
        .ok()
        .filter(|&v| v > 0 && v <= i64::MAX as u64)
        .ok_or_else(|| Invalid("id must be a positive integer".into()))
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
    fn credentials_below_the_kdf_floor_are_refused() {
        let (salt, wrapped) = ("ab".repeat(SALT_LEN), "cd".repeat(WRAPPED_LEN));
        assert!(credentials(&salt, &KdfParams::default(), &wrapped).is_ok());
        let weak = KdfParams {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
            ..KdfParams::default()
        };
        assert!(weak.check().is_ok(), "computable, only weak");
        let e = credentials(&salt, &weak, &wrapped).unwrap_err();
        assert!(e.to_string().starts_with("kdf: "), "{e}");
    }

    #[test]
    fn hex_fields() {
        assert!(key_hex("k", &"ab".repeat(32)).is_ok());
        assert!(key_hex("k", &"ab".repeat(31)).is_err());
        assert!(key_hex("k", &"zz".repeat(32)).is_err());
        assert!(path_id("0").is_err());
        assert_eq!(path_id("12").unwrap(), 12);
        assert_eq!(
            path_id("x").unwrap_err().to_string(),
            "id must be a positive integer"
        );
    }
}
