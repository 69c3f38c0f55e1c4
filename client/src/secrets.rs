//! Where the device token, the data key and (protocol v2) the device's
//! key pairs are kept.
//!
//! Preferred: the OS keyring (Secret Service over D-Bus on Linux, Keychain
//! on macOS, Credential Manager on Windows). When there is none — a
//! headless server without a Secret Service, a locked keyring — the secrets
//! go to `secrets.json` in the config directory, created 0600 inside the
//! 0700 directory. `CLIPMESH_SECRET_STORE=file|keyring|auto` overrides the
//! choice.
//!
//! For a v2 account the data key is the current epoch's key (an upgraded
//! v1 account's epoch 0 is its v1 data key), and the device's X25519 and
//! Ed25519 secrets ([`DeviceSecrets`]) are stored with it. The OPAQUE
//! export key is never stored: it lives only during a login.
//!
//! None of it is ever logged: [`Secrets`] has a redacting `Debug`, the
//! token zeroizes on drop, the data key is a `DataKey` and the device
//! secrets a `DeviceSecrets` (both redacting, zeroizing).

use crate::config::ENV_SECRET_STORE;
use crate::state::write_atomic;
use clipmesh_proto::device::DEVICE_SECRETS_LEN;
use clipmesh_proto::{DataKey, DeviceSecrets};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
use thiserror::Error;
use zeroize::Zeroizing;

/// File name of the fallback store.
pub const SECRETS_FILE: &str = "secrets.json";
/// Keyring service name.
pub const KEYRING_SERVICE: &str = "clipmesh";

/// The device's secrets.
pub struct Secrets {
    /// Bearer token for the relay.
    pub token: Zeroizing<String>,
    /// The account's data key (v2: the current epoch's key).
    pub data_key: DataKey,
    /// v2: this device's X25519 and Ed25519 secrets (`None` on a v1 account).
    pub device: Option<DeviceSecrets>,
    /// v2: the epoch `data_key` belongs to (`None` on a v1 account).
    pub epoch: Option<u32>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

/// Where secrets are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The OS keyring.
    Keyring,
    /// `secrets.json`, 0600.
    File,
}

impl StoreKind {
    /// The name written to `config.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keyring => "keyring",
            Self::File => "file",
        }
    }

    /// Parses the name written to `config.toml`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "keyring" => Some(Self::Keyring),
            "file" => Some(Self::File),
            _ => None,
        }
    }
}

/// Errors of the secret store.
#[derive(Debug, Error)]
pub enum SecretsError {
    /// Nothing stored: the device is not logged in.
    #[error("not logged in: run `clipmesh login` first")]
    Missing,
    /// The store could not be read or written.
    #[error("secret store: {0}")]
    Store(String),
}

#[derive(Serialize, Deserialize)]
struct Stored {
    token: String,
    data_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epoch: Option<u32>,
}

impl Drop for Stored {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.token.zeroize();
        self.data_key.zeroize();
        if let Some(d) = &mut self.device {
            d.zeroize();
        }
    }
}

fn encode(s: &Secrets) -> Result<Zeroizing<String>, SecretsError> {
    let st = Stored {
        token: s.token.to_string(),
        data_key: hex::encode(s.data_key.expose()),
        device: s.device.as_ref().map(|d| hex::encode(*d.to_bytes())),
        epoch: s.epoch,
    };
    serde_json::to_string(&st)
        .map(Zeroizing::new)
        .map_err(|e| SecretsError::Store(e.to_string()))
}

fn decode(raw: &str) -> Result<Secrets, SecretsError> {
    let st: Stored =
        serde_json::from_str(raw).map_err(|_| SecretsError::Store("corrupt secrets".into()))?;
    let bytes = Zeroizing::new(
        hex::decode(&st.data_key).map_err(|_| SecretsError::Store("corrupt secrets".into()))?,
    );
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| SecretsError::Store("corrupt secrets".into()))?;
    let device = match &st.device {
        None => None,
        Some(h) => {
            let b = Zeroizing::new(
                hex::decode(h).map_err(|_| SecretsError::Store("corrupt secrets".into()))?,
            );
            let arr: &[u8; DEVICE_SECRETS_LEN] = b
                .as_slice()
                .try_into()
                .map_err(|_| SecretsError::Store("corrupt secrets".into()))?;
            Some(DeviceSecrets::from_bytes(arr))
        }
    };
    Ok(Secrets {
        token: Zeroizing::new(st.token.clone()),
        data_key: DataKey::from_bytes(arr),
        device,
        epoch: st.epoch,
    })
}

/// The keyring account name for a config directory: one entry per device.
fn keyring_user(dir: &Path) -> String {
    let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    format!("device:{}", canon.display())
}

/// What `CLIPMESH_SECRET_STORE` asks for (`None` = auto).
fn preference() -> Option<StoreKind> {
    match std::env::var(ENV_SECRET_STORE).ok().as_deref() {
        Some("file") => Some(StoreKind::File),
        Some("keyring") => Some(StoreKind::Keyring),
        _ => None,
    }
}

/// Saves secrets, preferring the keyring; returns where they went.
pub fn save(dir: &Path, secrets: &Secrets) -> Result<StoreKind, SecretsError> {
    let raw = encode(secrets)?;
    let pref = preference();
    if pref != Some(StoreKind::File) {
        match keyring_set(dir, &raw) {
            Ok(()) => {
                // Do not leave an older copy behind in a file.
                let _ = std::fs::remove_file(dir.join(SECRETS_FILE));
                return Ok(StoreKind::Keyring);
            }
            Err(e) if pref == Some(StoreKind::Keyring) => return Err(e),
            Err(e) => {
                tracing::info!(reason = %e, "no usable OS keyring; storing secrets in a 0600 file");
            }
        }
    }
    write_atomic(&dir.join(SECRETS_FILE), raw.as_bytes(), true)
        .map_err(|e| SecretsError::Store(format!("writing {SECRETS_FILE}: {e}")))?;
    Ok(StoreKind::File)
}

/// Loads secrets from where `save` put them.
pub fn load(dir: &Path, kind: StoreKind) -> Result<Secrets, SecretsError> {
    let raw = match kind {
        StoreKind::Keyring => keyring_get(dir)?,
        StoreKind::File => match std::fs::read_to_string(dir.join(SECRETS_FILE)) {
            Ok(s) => Zeroizing::new(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SecretsError::Missing)
            }
            Err(e) => return Err(SecretsError::Store(format!("reading {SECRETS_FILE}: {e}"))),
        },
    };
    decode(&raw)
}

/// Replaces the stored data key with the key of a new epoch (protocol v2:
/// after a revoke or password change), in the store the secrets are in.
pub fn set_epoch(
    dir: &Path,
    kind: StoreKind,
    epoch: u32,
    key: &clipmesh_proto::EpochKey,
) -> Result<(), SecretsError> {
    let mut s = load(dir, kind)?;
    s.data_key = DataKey::from_bytes(*key.expose());
    s.epoch = Some(epoch);
    let raw = encode(&s)?;
    match kind {
        StoreKind::Keyring => keyring_set(dir, &raw),
        StoreKind::File => write_atomic(&dir.join(SECRETS_FILE), raw.as_bytes(), true)
            .map_err(|e| SecretsError::Store(format!("writing {SECRETS_FILE}: {e}"))),
    }
}

/// Deletes secrets from both stores (best effort for the one not in use).
pub fn delete(dir: &Path, kind: StoreKind) -> Result<(), SecretsError> {
    let file = std::fs::remove_file(dir.join(SECRETS_FILE));
    match kind {
        StoreKind::Keyring => keyring_delete(dir),
        StoreKind::File => match file {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SecretsError::Store(format!("deleting {SECRETS_FILE}: {e}"))),
        },
    }
}

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
fn entry(dir: &Path) -> Result<keyring::Entry, SecretsError> {
    keyring::Entry::new(KEYRING_SERVICE, &keyring_user(dir))
        .map_err(|e| SecretsError::Store(e.to_string()))
}

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
fn keyring_set(dir: &Path, raw: &str) -> Result<(), SecretsError> {
    let e = entry(dir)?;
    e.set_password(raw)
        .map_err(|e| SecretsError::Store(e.to_string()))?;
    // Read back: some stores accept writes they cannot serve later.
    match e.get_password() {
        Ok(back) if back == raw => Ok(()),
        _ => Err(SecretsError::Store(
            "keyring did not keep the secret".into(),
        )),
    }
}

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
fn keyring_get(dir: &Path) -> Result<Zeroizing<String>, SecretsError> {
    match entry(dir)?.get_password() {
        Ok(s) => Ok(Zeroizing::new(s)),
        Err(keyring::Error::NoEntry) => Err(SecretsError::Missing),
        Err(e) => Err(SecretsError::Store(e.to_string())),
    }
}

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
fn keyring_delete(dir: &Path) -> Result<(), SecretsError> {
    match entry(dir)?.delete_credential() {
        Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(e) => Err(SecretsError::Store(e.to_string())),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn keyring_set(_dir: &Path, _raw: &str) -> Result<(), SecretsError> {
    Err(SecretsError::Store("no keyring on this platform".into()))
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn keyring_get(_dir: &Path) -> Result<Zeroizing<String>, SecretsError> {
    Err(SecretsError::Store("no keyring on this platform".into()))
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn keyring_delete(_dir: &Path) -> Result<(), SecretsError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_roundtrip_and_debug_redacts() {
        let s = Secrets {
            token: Zeroizing::new("tok-123".into()),
            data_key: DataKey::from_bytes([7; 32]),
            device: None,
            epoch: None,
        };
        let raw = encode(&s).unwrap();
        let back = decode(&raw).unwrap();
        assert_eq!(back.data_key, s.data_key);
        assert_eq!(*back.token, "tok-123");
        assert!(back.device.is_none() && back.epoch.is_none());
        assert!(!format!("{s:?}").contains("tok"));
        // v1 secrets written by an older client (no device fields) load.
        let old = r#"{"token":"t","data_key":"0707070707070707070707070707070707070707070707070707070707070707"}"#;
        assert!(decode(old).unwrap().device.is_none());
        // v2: the device key pairs round-trip.
        let dev = DeviceSecrets::from_bytes(&[9; DEVICE_SECRETS_LEN]);
        let v2 = Secrets {
            device: Some(DeviceSecrets::from_bytes(&[9; DEVICE_SECRETS_LEN])),
            epoch: Some(3),
            ..s
        };
        let back = decode(&encode(&v2).unwrap()).unwrap();
        assert_eq!(back.epoch, Some(3));
        assert_eq!(back.device.unwrap().public(), dev.public());
        assert!(!format!("{v2:?}").contains("0909"));
    }

    #[cfg(unix)]
    #[test]
    fn file_store_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = Secrets {
            token: Zeroizing::new("t".into()),
            data_key: DataKey::generate(),
            device: None,
            epoch: None,
        };
        let raw = encode(&s).unwrap();
        write_atomic(&dir.path().join(SECRETS_FILE), raw.as_bytes(), true).unwrap();
        let mode = std::fs::metadata(dir.path().join(SECRETS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = load(dir.path(), StoreKind::File).unwrap();
        assert_eq!(back.data_key, s.data_key);
        delete(dir.path(), StoreKind::File).unwrap();
        assert!(matches!(
            load(dir.path(), StoreKind::File),
            Err(SecretsError::Missing)
        ));
    }
}
