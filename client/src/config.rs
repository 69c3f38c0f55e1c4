//! The client's configuration: where it lives and what it holds.
//!
//! One directory per device (`--config-dir` / `CLIPMESH_CONFIG_DIR`, default
//! the platform config directory, e.g. `~/.config/clipmesh` on Linux) holds:
//!
//! | file          | written by          | contents                                   |
//! |---------------|---------------------|--------------------------------------------|
//! | `config.toml` | `login`, the user   | `[account]` (server, user, device) and `[sync]` options |
//! | `secrets.json`| `login` (0600)      | token and data key, only if no OS keyring  |
//! | `state.json`  | the client          | per-device seq counter, last room seq seen |
//! | `control.sock`| `run`               | the daemon's control socket (0600)         |
//!
//! `login` rewrites `config.toml` but keeps the `[sync]` section as it was.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Environment variable that overrides the config directory.
pub const ENV_CONFIG_DIR: &str = "CLIPMESH_CONFIG_DIR";
/// Environment variable choosing the secret store: `auto` (default),
/// `keyring` or `file`.
pub const ENV_SECRET_STORE: &str = "CLIPMESH_SECRET_STORE";
/// Name of the config file inside the config directory.
pub const CONFIG_FILE: &str = "config.toml";

/// Default for [`SyncOptions::max_item_bytes`]: fits one relay frame at the
/// relay's default 1 MiB limit with room for the envelope.
pub const DEFAULT_MAX_ITEM_BYTES: u64 = 1_000_000;

/// Errors reading or writing configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// No platform config directory and none given.
    #[error("no config directory: pass --config-dir or set {ENV_CONFIG_DIR}")]
    NoDir,
    /// The file could not be read or written.
    #[error("config file {path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this struct.
    #[error("config file {path}: {message}")]
    Parse {
        /// Which file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

/// The whole `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Set by `signup`/`login`, cleared by `logout`.
    pub account: Option<Account>,
    /// What to sync.
    pub sync: SyncOptions,
}

/// Which relay account this device is logged in to. Not secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Relay base URL, e.g. `https://relay.example.org`.
    pub server: String,
    /// Account name.
    pub username: String,
    /// Account id on the relay.
    pub user_id: u64,
    /// This device's id on the relay.
    pub device_id: u64,
    /// The name this device logged in with.
    pub device_name: String,
    /// Where the token and data key are: `keyring` or `file`.
    pub secret_store: String,
    /// PEM file of the only certificates trusted for this relay (private
    /// CA or self-signed relay). Default: none, i.e. Mozilla's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// What the daemon syncs. Every field has a default; an empty `[sync]`
/// section (or none) means "sync text and HTML both ways".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncOptions {
    /// Publish local changes but never apply received clips. Default false.
    pub send_only: bool,
    /// Apply received clips but never publish local changes. Default false.
    pub receive_only: bool,
    /// Largest item synced, in bytes of payload. Default 1 000 000.
    pub max_item_bytes: u64,
    /// Sync plain text. Default true.
    pub text: bool,
    /// Sync HTML. Default true.
    pub html: bool,
    /// Sync images (when the clipboard module supports them). Default true.
    pub image: bool,
    /// Sync file lists (when supported). Default false.
    pub files: bool,
    /// Also watch and write the X11 PRIMARY selection. Default false.
    pub primary: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            send_only: false,
            receive_only: false,
            max_item_bytes: DEFAULT_MAX_ITEM_BYTES,
            text: true,
            html: true,
            image: true,
            files: false,
            primary: false,
        }
    }
}

impl SyncOptions {
    /// Whether this content type is switched on.
    pub fn allows(&self, content: &clipmesh_proto::ClipContent) -> bool {
        use clipmesh_proto::ClipContent as C;
        match content {
            C::Text(_) => self.text,
            C::Html { .. } => self.html,
            C::Image { .. } | C::ImageBlob { .. } => self.image,
            C::Files(_) => self.files,
        }
    }

    /// Whether the content fits [`SyncOptions::max_item_bytes`].
    pub fn fits(&self, content: &clipmesh_proto::ClipContent) -> bool {
        content.payload_len() as u64 <= self.max_item_bytes
    }
}

/// Picks the config directory: the flag, then the environment (clap folds
/// both into `explicit`), then the platform default.
pub fn config_dir(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    directories::ProjectDirs::from("org", "clipmesh", "clipmesh")
        .map(|d| d.config_dir().to_path_buf())
        .ok_or(ConfigError::NoDir)
}

/// Creates the directory (0700 on Unix) if needed.
pub fn ensure_dir(dir: &Path) -> Result<(), ConfigError> {
    let io = |source| ConfigError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(io)
}

impl Config {
    /// Loads `config.toml` from `dir`; a missing file is the default config.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let path = dir.join(CONFIG_FILE);
        match std::fs::read_to_string(&path) {
            Ok(s) => toml::from_str(&s).map_err(|e| ConfigError::Parse {
                path,
                message: e.message().to_owned(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Io { path, source }),
        }
    }

    /// Writes `config.toml` atomically (write to a temporary file, rename).
    pub fn save(&self, dir: &Path) -> Result<(), ConfigError> {
        ensure_dir(dir)?;
        let path = dir.join(CONFIG_FILE);
        let body = toml::to_string_pretty(self).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let text = format!(
            "# clipmesh client configuration. See docs/client.md for every option.\n\
             # [account] is written by `clipmesh login`; [sync] is yours to edit.\n\n{body}"
        );
        crate::state::write_atomic(&path, text.as_bytes(), false).map_err(|source| {
            ConfigError::Io {
                path: path.clone(),
                source,
            }
        })
    }
}

/// Turns a relay base URL into its WebSocket URL.
pub fn ws_url(server: &str) -> String {
    let base = server.trim_end_matches('/');
    let rest = if let Some(r) = base.strip_prefix("https://") {
        format!("wss://{r}")
    } else if let Some(r) = base.strip_prefix("http://") {
        format!("ws://{r}")
    } else {
        base.to_owned()
    };
    format!("{rest}/api/v1/ws")
}

/// Normalises a relay URL given by the user: adds `https://` when no scheme
/// is given, drops a trailing slash. Rejects other schemes.
pub fn normalize_server(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    if s.is_empty() {
        return Err("empty server URL".into());
    }
    if s.starts_with("http://") || s.starts_with("https://") {
        Ok(s.to_owned())
    } else if s.contains("://") {
        Err(format!(
            "unsupported URL scheme in {s:?}: use http:// or https://"
        ))
    } else {
        Ok(format!("https://{s}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c, Config::default());
        assert!(c.sync.text && c.sync.html && !c.sync.files);
        assert_eq!(c.sync.max_item_bytes, DEFAULT_MAX_ITEM_BYTES);
    }

    #[test]
    fn partial_sync_section_keeps_other_defaults() {
        let c: Config = toml::from_str("[sync]\nreceive_only = true\n").unwrap();
        assert!(c.sync.receive_only && c.sync.text);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<Config>("[sync]\nsend_onyl = true\n").is_err());
    }

    #[test]
    fn save_load_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config {
            account: Some(Account {
                server: "http://127.0.0.1:1".into(),
                username: "ann".into(),
                user_id: 1,
                device_id: 2,
                device_name: "box".into(),
                secret_store: "file".into(),
                ca_file: None,
            }),
            sync: SyncOptions {
                primary: true,
                ..SyncOptions::default()
            },
        };
        c.save(dir.path()).unwrap();
        assert_eq!(Config::load(dir.path()).unwrap(), c);
    }

    #[test]
    fn urls() {
        assert_eq!(ws_url("http://h:1/"), "ws://h:1/api/v1/ws");
        assert_eq!(ws_url("https://h"), "wss://h/api/v1/ws");
        assert_eq!(
            normalize_server("relay.example/").unwrap(),
            "https://relay.example"
        );
        assert!(normalize_server("ftp://x").is_err());
    }
}
