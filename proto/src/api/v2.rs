//! JSON bodies of the protocol v2 account API under `/api/v2`: OPAQUE
//! signup, login and password change, the v1 → v2 upgrade, and device
//! public keys (`docs/protocol.md`, "Accounts, v2"; `docs/crypto.md`).
//!
//! Every binary value travels as lower-case hex of a fixed length: the
//! OPAQUE messages ([`crate::opaque::len`]), the 72-byte export wrap of the
//! epoch key ([`crate::epoch::EXPORT_WRAPPED_LEN`]), the 64-byte device
//! public key ([`crate::device::DEVICE_PUBLIC_LEN`]) and the 32-byte device
//! certificate ([`crate::epoch::CERT_LEN`]). Nothing here lets anyone test a
//! password guess offline.

use crate::ids::{DeviceId, UserId};
use crate::keys::KdfParams;
use serde::{Deserialize, Serialize};

/// `POST /api/v2/signup/start`: OPAQUE registration, step 1.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterStartRequest {
    /// The account name (the OPAQUE credential identifier).
    pub username: String,
    /// `RegistrationRequest`, 32 bytes as hex.
    pub request: String,
}

/// Answer to a registration start.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterStartResponse {
    /// `RegistrationResponse`, 64 bytes as hex.
    pub response: String,
}

/// `POST /api/v2/signup/finish`: creates the account from its OPAQUE
/// record and logs its first device in.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupFinishRequest {
    /// The account name (the one given to `signup/start`).
    pub username: String,
    /// The OPAQUE registration record, 192 bytes as hex.
    pub record: String,
    /// The Argon2id parameters of OPAQUE's key-stretching function.
    pub kdf: KdfParams,
    /// The account's first epoch (1 for a new account).
    pub epoch: u32,
    /// The epoch key wrapped under the export key, 72 bytes as hex.
    pub export_wrap: String,
    /// Name for the first device.
    pub device_name: String,
    /// The relay's one-time setup token; required for the first account of
    /// a relay, ignored after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_token: Option<String>,
}

/// `POST /api/v2/login/start`: OPAQUE KE1. The answer for an unknown user,
/// or an account that has not upgraded from v1, is made from OPAQUE's fake
/// record and looks the same; that login fails at `login/finish`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginStartRequest {
    /// The account name.
    pub username: String,
    /// `CredentialRequest` (KE1), 96 bytes as hex.
    pub request: String,
}

/// Answer to `login/start`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginStartResponse {
    /// Names the relay's half-finished login; single use, short-lived.
    pub login_id: String,
    /// `CredentialResponse` (KE2), 320 bytes as hex.
    pub response: String,
    /// The key-stretching parameters to finish with (the client checks them
    /// against its floor and its pin before stretching anything).
    pub kdf: KdfParams,
}

/// `POST /api/v2/login/finish`: OPAQUE KE3; success logs a device in.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginFinishRequest {
    /// From `login/start`.
    pub login_id: String,
    /// `CredentialFinalization` (KE3), 64 bytes as hex.
    pub finish: String,
    /// Name for this device.
    pub device_name: String,
}

/// Answer to v2 signup, login and upgrade.
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginV2Response {
    /// The account.
    pub user_id: UserId,
    /// The device just created (or, for an upgrade, the device upgrading).
    pub device_id: DeviceId,
    /// Long-lived device token (256 random bits, base64url). Secret.
    pub token: String,
    /// The key-stretching parameters of the account's record.
    pub kdf: KdfParams,
    /// The account's current epoch.
    pub epoch: u32,
    /// The current epoch key wrapped under the export key, 72 bytes as hex.
    pub export_wrap: String,
    /// Whether this account administers the relay.
    pub is_admin: bool,
}

/// `POST /api/v2/upgrade` (bearer token of a v1 session): moves a v1
/// account to OPAQUE in place. The v1 data key becomes epoch 0; the relay
/// deletes the v1 auth hash, so v1 login stops working for the account.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeRequest {
    /// The v1 `auth_key`, hex: proof of the v1 login, checked like a v1
    /// password change.
    pub current_auth_key: String,
    /// The OPAQUE registration record, made with `register/start`.
    pub record: String,
    /// The key-stretching parameters of the record.
    pub kdf: KdfParams,
    /// The v1 data key (epoch 0) wrapped under the export key, hex.
    pub export_wrap: String,
}

/// `POST /api/v2/register/start` (bearer token): registration step 1 for
/// the caller's own account, used by the upgrade.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnRegisterStartRequest {
    /// `RegistrationRequest`, 32 bytes as hex.
    pub request: String,
}

/// `POST /api/v2/password/start` (bearer token): a fresh OPAQUE login with
/// the current password and a registration start for the new one.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordStartRequest {
    /// KE1 made with the current password, hex.
    pub login: String,
    /// `RegistrationRequest` made with the new password, hex.
    pub registration: String,
}

/// Answer to `password/start`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PasswordStartResponse {
    /// Names the relay's half-finished login.
    pub login_id: String,
    /// KE2 for the current password, hex.
    pub response: String,
    /// The current record's parameters.
    pub kdf: KdfParams,
    /// `RegistrationResponse` for the new password, hex.
    pub registration: String,
}

/// `POST /api/v2/password/finish` (bearer token): proves the current
/// password (KE3) and replaces the record and the export wrap.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordFinishRequest {
    /// From `password/start`.
    pub login_id: String,
    /// KE3 for the current password, hex.
    pub finish: String,
    /// The new record, hex.
    pub record: String,
    /// The new record's parameters (never below the floor).
    pub kdf: KdfParams,
    /// The epoch the new export wrap holds (the current one, or the next
    /// when the change starts a new epoch).
    pub epoch: u32,
    /// That epoch's key wrapped under the new export key, hex.
    pub export_wrap: String,
    /// Revoke every other device's session.
    #[serde(default)]
    pub end_other_sessions: bool,
    /// Devices whose sessions end with this change (a revoke). Only with a
    /// new epoch (`epoch` = the account's current epoch + 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoke: Vec<DeviceId>,
    /// A new epoch: its key wrapped to each remaining device with a public
    /// key, by this device (`docs/crypto.md`, "Key epochs").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wraps: Vec<WrapUpload>,
    /// A new epoch: each remaining device's certificate under it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certs: Vec<CertUpload>,
    /// A new epoch: this device's certificate under the *previous* epoch,
    /// so a device that never saw this one can check the wraps' signer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_cert: Option<String>,
}

/// A new epoch's key wrapped to one device ([`crate::DeviceWrappedKey`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrapUpload {
    /// The recipient.
    pub device: DeviceId,
    /// The wrap, 168 bytes as hex.
    pub wrap: String,
}

/// A device's certificate under a new epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertUpload {
    /// The device.
    pub device: DeviceId,
    /// The certificate, 32 bytes as hex.
    pub cert: String,
}

/// The current epoch's key wrapped to the calling device
/// ([`EpochWrapResponse`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochWrapRecord {
    /// The epoch of the wrapped key.
    pub epoch: u32,
    /// The device that started the epoch and signed the wrap.
    pub sender: DeviceId,
    /// Its public keys, hex (checked against the recipient's roster, or
    /// with `sender_cert`).
    pub sender_public: String,
    /// Its certificate under epoch `epoch - 1`, hex.
    pub sender_cert: String,
    /// The wrap, 168 bytes as hex.
    pub wrap: String,
}

/// `PUT /api/v2/device-key` (bearer token): the caller's public keys and
/// their certificate under an epoch's roster key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceKeyRequest {
    /// X25519 public ‖ Ed25519 public, 64 bytes as hex.
    pub public_key: String,
    /// The epoch whose roster key made `cert`.
    pub epoch: u32,
    /// The certificate, 32 bytes as hex.
    pub cert: String,
}

/// One device's published key in `GET /api/v2/device-keys`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceKeyRecord {
    /// The device.
    pub id: DeviceId,
    /// Its name.
    pub name: String,
    /// Its public keys, hex; absent until the device published them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The epoch of `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u32>,
    /// The certificate, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
}

/// `GET /api/v2/device-keys`: the account's roster as the relay has it
/// (clients trust only what verifies against their own epoch keys).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceKeysResponse {
    /// The account's current epoch.
    pub epoch: u32,
    /// Every device with a live session.
    pub devices: Vec<DeviceKeyRecord>,
}

/// `GET /api/v2/epoch-wrap`: the current epoch's key wrapped to the calling
/// device. A relay without key epochs answers 404.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochWrapResponse {
    /// The wrap, if the device that started the current epoch made one for
    /// the caller (none at epoch 1 of a new account, or epoch 0).
    pub wrap: Option<EpochWrapRecord>,
}
