//! The token and pre-login rules both relay hosts share: the shape of a
//! device token, the hash sessions are stored under, fresh tokens, and the
//! deterministic fake salt and KDF parameters for unknown users.
//!
//! **Invariant:** a host never stores a token, only [`token_hash`] of it,
//! and never logs either.

use base64::Engine;
use clipmesh_proto::KdfParams;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Length of a device token before encoding, bytes.
pub const TOKEN_BYTES: usize = 32;
/// Length of an encoded token (base64url, no padding).
pub const TOKEN_CHARS: usize = 43;

/// A fresh device token and the hash a host stores.
pub fn new_token() -> (String, [u8; 32]) {
    let mut raw = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = token_hash(&token);
    (token, hash)
}

/// SHA-256 of a token's text, the form sessions are stored under.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `s` has the shape of a token (cheap check before a lookup).
pub fn token_shape_ok(s: &str) -> bool {
    s.len() == TOKEN_CHARS
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The deterministic fake salt for an unknown user:
/// `HMAC-SHA256(server secret, "clipmesh/v1/fake-salt\0" || username)[..16]`.
pub fn fake_salt(secret: &[u8], username: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) {
        mac.update(b"clipmesh/v1/fake-salt\0");
        mac.update(username.as_bytes());
        out.copy_from_slice(&mac.finalize().into_bytes()[..16]);
    }
    out
}

/// The KDF parameters shown for an unknown user: one of the parameter sets
/// in use on this host (`census`: each set and how many accounts use it),
/// picked with the same odds as a random real account and fixed per name by
/// `HMAC-SHA256(server secret, "clipmesh/v1/fake-kdf\0" || username)`. So an
/// account with unusual parameters looks like any unknown name that happens
/// to draw them. With no accounts, the defaults.
pub fn fake_kdf(secret: &[u8], username: &str, census: &[(KdfParams, u64)]) -> KdfParams {
    let total: u64 = census.iter().map(|(_, n)| *n).sum();
    if total == 0 {
        return KdfParams::default();
    }
    let mut draw = [0u8; 8];
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) {
        mac.update(b"clipmesh/v1/fake-kdf\0");
        mac.update(username.as_bytes());
        draw.copy_from_slice(&mac.finalize().into_bytes()[..8]);
    }
    let mut pick = u64::from_le_bytes(draw) % total;
    for (kdf, n) in census {
        if pick < *n {
            return *kdf;
        }
        pick -= n;
    }
    KdfParams::default()
}

/// The token in an `Authorization` header value (`Bearer <token>`, scheme
/// case-insensitive).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The subprotocol browsers offer (with `clipmesh.token.<token>`).
pub const SUBPROTOCOL: &str = "clipmesh.v1";
/// Prefix of the subprotocol entry carrying the token.
pub const TOKEN_PROTOCOL_PREFIX: &str = "clipmesh.token.";

/// The token and whether `clipmesh.v1` was offered, from the values of
/// every `Sec-WebSocket-Protocol` header.
pub fn protocol_token<'a>(values: impl IntoIterator<Item = &'a str>) -> (Option<&'a str>, bool) {
    let mut token = None;
    let mut v1 = false;
    for v in values {
        for p in v.split(',').map(str::trim) {
            if p == SUBPROTOCOL {
                v1 = true;
            } else if let Some(t) = p.strip_prefix(TOKEN_PROTOCOL_PREFIX) {
                token = Some(t);
            }
        }
    }
    (token, v1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_shape_and_distinct_hashes() {
        let (a, ha) = new_token();
        let (b, hb) = new_token();
        assert!(token_shape_ok(&a) && token_shape_ok(&b));
        assert_ne!(ha, hb);
        assert_eq!(token_hash(&a), ha);
        assert!(!token_shape_ok("short"));
        assert!(!token_shape_ok(&format!("{}=", &a[..42])));
    }

    #[test]
    fn fake_kdf_follows_the_accounts() {
        let odd = KdfParams {
            m_kib: 65 * 1024,
            ..KdfParams::default()
        };
        assert_eq!(fake_kdf(b"s", "x", &[]), KdfParams::default());
        // One account with unusual parameters: every unknown name shows them.
        assert_eq!(fake_kdf(b"s", "nobody", &[(odd, 1)]), odd);
        // A mix: both appear across names, each name always the same.
        let census = [(KdfParams::default(), 3), (odd, 1)];
        let picks: Vec<_> = (0..200)
            .map(|i| fake_kdf(b"s", &format!("u{i}"), &census))
            .collect();
        assert!(picks.contains(&odd) && picks.contains(&KdfParams::default()));
        assert_eq!(fake_kdf(b"s", "u7", &census), picks[7]);
    }

    #[test]
    fn fake_salt_is_deterministic_per_secret_and_name() {
        assert_eq!(fake_salt(b"s", "ann"), fake_salt(b"s", "ann"));
        assert_ne!(fake_salt(b"s", "ann"), fake_salt(b"s", "bob"));
        assert_ne!(fake_salt(b"s", "ann"), fake_salt(b"t", "ann"));
    }

    #[test]
    fn bearer_and_subprotocol_tokens() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        let (t, v1) = protocol_token(["clipmesh.v1, clipmesh.token.xyz"]);
        assert_eq!((t, v1), (Some("xyz"), true));
        assert_eq!(protocol_token(["other"]), (None, false));
    }
}
