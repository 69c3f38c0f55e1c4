//! JSON bodies of the relay's HTTP API under `/api/v1`.
//!
//! Binary values (salts, keys, wrapped keys) travel as lower-case hex.
//! `docs/protocol.md` lists every endpoint. The protocol v2 bodies (OPAQUE
//! login, device keys) are in [`v2`].

pub mod v2;

use crate::ids::{DeviceId, UserId};
use crate::keys::KdfParams;
use serde::{Deserialize, Serialize};

/// Longest accepted username, in bytes.
pub const MAX_USERNAME: usize = 64;
/// Longest accepted device name, in bytes.
pub const MAX_DEVICE_NAME: usize = crate::frame::MAX_DEVICE_NAME;

/// `POST /api/v1/prelogin`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreloginRequest {
    /// The account name.
    pub username: String,
}

/// Answer to `prelogin`: what the client needs to derive its keys. For an
/// unknown user the relay answers with a deterministic fake salt and the
/// default parameters, so the answer does not reveal whether an account
/// exists.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreloginResponse {
    /// The Argon2id salt, 16 bytes as hex.
    pub salt: String,
    /// The Argon2id parameters.
    pub kdf: KdfParams,
}

/// `POST /api/v1/signup`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// The account name.
    pub username: String,
    /// The salt the client chose, hex.
    pub salt: String,
    /// The parameters the client used.
    pub kdf: KdfParams,
    /// `auth_key`, 32 bytes as hex. The relay stores only its Argon2id hash.
    pub auth_key: String,
    /// The data key wrapped under the KEK, hex.
    pub wrapped_data_key: String,
    /// Name for the first device.
    pub device_name: String,
    /// The relay's one-time setup token; required for the first account of
    /// a relay (which becomes its admin), ignored after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_token: Option<String>,
}

/// `POST /api/v1/login`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The account name.
    pub username: String,
    /// `auth_key`, hex.
    pub auth_key: String,
    /// Name for this device.
    pub device_name: String,
}

/// Answer to signup and login.
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    /// The account.
    pub user_id: UserId,
    /// The device just created.
    pub device_id: DeviceId,
    /// Long-lived device token (256 random bits, base64url). Secret.
    pub token: String,
    /// The wrapped data key, hex.
    pub wrapped_data_key: String,
    /// The salt, hex (so a client can re-derive for a password change).
    pub salt: String,
    /// The KDF parameters.
    pub kdf: KdfParams,
    /// Whether this account administers the relay.
    pub is_admin: bool,
}

/// Answer to `POST /api/v1/session/renew` (authenticated with the current
/// token): a new token for the same device, whose absolute lifetime starts
/// now. The old token keeps working until the new one is first used.
#[derive(Clone, Serialize, Deserialize)]
pub struct RenewResponse {
    /// The new device token (256 random bits, base64url). Secret.
    pub token: String,
    /// Seconds the new token lives at most (the relay's
    /// `auth.session_max_s`), so the device knows when to renew again.
    pub max_lifetime_s: u64,
    /// Seconds a token may go unused before it ends (`auth.session_idle_s`).
    pub idle_lifetime_s: u64,
}

/// `POST /api/v1/password`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// The current `auth_key`, hex.
    pub current_auth_key: String,
    /// The new salt, hex.
    pub new_salt: String,
    /// The new parameters (may be stronger than the old).
    pub new_kdf: KdfParams,
    /// The new `auth_key`, hex.
    pub new_auth_key: String,
    /// The same data key wrapped under the new KEK, hex.
    pub new_wrapped_data_key: String,
    /// Revoke every other device's session.
    #[serde(default)]
    pub end_other_sessions: bool,
}

/// `PUT /api/v1/clipcascade`: turns ClipCascade compatibility on or off
/// for the caller's account (see `docs/crypto.md` on the weaker verifier).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipCascadeRequest {
    /// Lowercase hex SHA3-512 of the password (what ClipCascade clients
    /// send to log in); `None` turns compatibility off and ends every
    /// ClipCascade session of the account.
    pub login_hash: Option<String>,
    /// `"P2S"` or `"P2P"`, what `/server-mode` answers; unchanged if absent.
    #[serde(default)]
    pub mode: Option<String>,
}

/// One device in `GET /api/v1/devices`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The device id.
    pub id: DeviceId,
    /// Its name.
    pub name: String,
    /// Login time, seconds since the epoch.
    pub created_at: i64,
    /// Last time it authenticated, seconds since the epoch.
    pub last_seen_at: i64,
    /// Whether it has a socket open now.
    pub online: bool,
    /// Whether it is the device making the request.
    pub current: bool,
}

/// `GET /api/v1/devices`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevicesResponse {
    /// The user's devices with a live session.
    pub devices: Vec<DeviceRecord>,
}

/// One user in the admin listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The user id.
    pub id: UserId,
    /// The account name.
    pub username: String,
    /// Whether it administers the relay.
    pub is_admin: bool,
    /// Whether it is disabled.
    pub disabled: bool,
    /// Creation time, seconds since the epoch.
    pub created_at: i64,
    /// Devices with a live session.
    pub devices: u32,
}

/// `GET /api/v1/admin/users`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UsersResponse {
    /// Every user.
    pub users: Vec<UserRecord>,
}

/// Every non-2xx answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `"invalid_credentials"`: one of
    /// [`ApiErrorCode`]'s names. Kept a string on the wire so a client can
    /// still show a code a newer relay added.
    pub error: String,
    /// One human line.
    pub message: String,
}

impl ErrorBody {
    /// A body with a known code.
    pub fn new(code: ApiErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: code.as_str().to_owned(),
            message: message.into(),
        }
    }

    /// The code, if this build knows it.
    pub fn code(&self) -> Option<ApiErrorCode> {
        ApiErrorCode::parse(&self.error)
    }
}

macro_rules! api_error_codes {
    ($($(#[$doc:meta])* $name:ident = $s:literal,)*) => {
        /// The stable codes of [`ErrorBody::error`], shared by the relay
        /// (which answers with them) and the client (which maps them to its
        /// errors). `docs/protocol.md` lists them with their HTTP statuses.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ApiErrorCode {
            $($(#[$doc])* $name,)*
        }

        impl ApiErrorCode {
            /// Every code.
            pub const ALL: &'static [ApiErrorCode] = &[$(ApiErrorCode::$name,)*];

            /// The code as it travels.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ApiErrorCode::$name => $s,)*
                }
            }

            /// The code named `s`, if this build knows it.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($s => Some(ApiErrorCode::$name),)*
                    _ => None,
                }
            }
        }
    };
}

api_error_codes! {
    /// 400: malformed request, bad JSON, a field out of range.
    BadRequest = "bad_request",
    /// 401: missing, malformed, unknown or revoked token.
    Unauthorized = "unauthorized",
    /// 401: wrong username or password.
    InvalidCredentials = "invalid_credentials",
    /// 401/403: the account is disabled.
    AccountDisabled = "account_disabled",
    /// 403: this relay does not take sign-ups.
    SignupClosed = "signup_closed",
    /// 403: the relay's first account needs its one-time setup token.
    SetupTokenRequired = "setup_token_required",
    /// 409: the username is taken.
    UsernameTaken = "username_taken",
    /// 429: too many attempts (with `Retry-After`).
    RateLimited = "rate_limited",
    /// 404: no such route or record.
    NotFound = "not_found",
    /// 403: this needs an admin account.
    Forbidden = "forbidden",
    /// 413: the request body is over a limit.
    PayloadTooLarge = "payload_too_large",
    /// 503: shutting down or the database is unavailable (with `Retry-After`).
    Unavailable = "unavailable",
    /// 500: details are in the relay's log only.
    Internal = "internal",
    /// 404: no such blob.
    BlobNotFound = "blob_not_found",
    /// 410: the blob has expired.
    BlobExpired = "blob_expired",
    /// 413: the declared blob is over the relay's blob size limit.
    TooLarge = "too_large",
    /// 413: the account's blob quota would be exceeded.
    QuotaExceeded = "quota_exceeded",
    /// 409: `Upload-Offset` does not match, or another upload is running.
    OffsetMismatch = "offset_mismatch",
    /// 409: the upload stopped before the blob was complete.
    Incomplete = "incomplete",
    /// 404: ClipCascade compatibility is off on this relay.
    ClipcascadeDisabled = "clipcascade_disabled",
}

impl std::fmt::Display for ApiErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// Request types carry keys; print them without.
macro_rules! redacted_debug {
    ($t:ty, $($field:ident),*) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        }
    };
}

redacted_debug!(SignupRequest, username, device_name);
redacted_debug!(LoginRequest, username, device_name);
redacted_debug!(LoginResponse, user_id, device_id, is_admin);
redacted_debug!(ChangePasswordRequest, end_other_sessions);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_omits_secrets() {
        let r = LoginRequest {
            username: "ann".into(),
            auth_key: "deadbeef".into(),
            device_name: "laptop".into(),
        };
        let s = format!("{r:?}");
        assert!(s.contains("ann") && !s.contains("deadbeef"));
    }

    #[test]
    fn kdf_params_json_shape() {
        let s = serde_json::to_string(&KdfParams::default()).unwrap();
        assert_eq!(
            s,
            r#"{"alg":"argon2id","version":19,"m_kib":65536,"t":3,"p":4}"#
        );
    }

    #[test]
    fn error_codes_roundtrip_and_unknown_codes_stay_strings() {
        for &c in ApiErrorCode::ALL {
            assert_eq!(ApiErrorCode::parse(c.as_str()), Some(c));
            assert_eq!(ErrorBody::new(c, "m").code(), Some(c));
        }
        let body: ErrorBody =
            serde_json::from_str(r#"{"error":"from_the_future","message":"m"}"#).unwrap();
        assert_eq!(body.code(), None);
        assert_eq!(
            serde_json::to_string(&ErrorBody::new(ApiErrorCode::BlobExpired, "gone")).unwrap(),
            r#"{"error":"blob_expired","message":"gone"}"#
        );
    }
}
