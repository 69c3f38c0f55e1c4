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

/// Largest item that travels inside the envelope (text, HTML, a small
/// image): fits one relay frame at the relay's default 1 MiB limit with room
/// for the envelope. Also the default of [`SyncOptions::max_item_bytes`]'s
/// former meaning, kept for inline items whatever that option says.
pub const MAX_INLINE_ITEM_BYTES: u64 = 1_000_000;
/// Default for [`SyncOptions::max_item_bytes`]: 2 GiB (files and images
/// travel as blobs; the relay's default blob limit is 4 GiB).
pub const DEFAULT_MAX_ITEM_BYTES: u64 = 2 << 30;
/// Default for [`SyncOptions::inline_threshold`]: 64 KiB.
pub const DEFAULT_INLINE_THRESHOLD: u64 = 64 << 10;
/// Default for [`SyncOptions::auto_download_max`]: 256 MiB.
pub const DEFAULT_AUTO_DOWNLOAD_MAX: u64 = 256 << 20;
/// Default for [`SyncOptions::max_files`].
pub const DEFAULT_MAX_FILES: usize = 1_000;
/// Default for [`SyncOptions::max_image_bytes`]: 64 MiB.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 64 << 20;
/// Folder inside the platform download directory that received files go to.
pub const DOWNLOAD_SUBDIR: &str = "clipmesh";

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
    /// Plain `http://` to a host other than this machine was allowed at
    /// login (`--insecure-http`). Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_http: bool,
}

/// What the daemon syncs. Every field has a default; an empty `[sync]`
/// section (or none) means "sync text, HTML, images and files both ways".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncOptions {
    /// Publish local changes but never apply received clips. Default false.
    pub send_only: bool,
    /// Apply received clips but never publish local changes. Default false.
    pub receive_only: bool,
    /// Largest item synced, in bytes: all files of a file list together,
    /// or one image. Default 2 GiB. Text and HTML are also capped at
    /// [`MAX_INLINE_ITEM_BYTES`] (they travel inside one relay frame).
    pub max_item_bytes: u64,
    /// Files and images at least this large go through the relay's blob
    /// store; smaller ones travel inside the envelope. Default 64 KiB.
    pub inline_threshold: u64,
    /// Most files in one copied file list (directories walked
    /// recursively). Default 1000.
    pub max_files: usize,
    /// Largest image received into memory and put on the clipboard.
    /// Default 64 MiB.
    pub max_image_bytes: u64,
    /// Received items up to this size are downloaded at once; larger ones
    /// are refused with a message. Default 256 MiB.
    pub auto_download_max: u64,
    /// Where received files go (a fresh folder per transfer inside it).
    /// Default: the platform download folder + `/clipmesh`, else the data
    /// directory + `/downloads`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_dir: Option<PathBuf>,
    /// Sync plain text. Default true.
    pub text: bool,
    /// Sync HTML. Default true.
    pub html: bool,
    /// Sync images (when the clipboard module supports them). Default true.
    pub image: bool,
    /// Sync file lists (when supported). Default true: received items over
    /// [`SyncOptions::auto_download_max`] wait to be fetched, so the disk is
    /// protected without turning files off.
    pub files: bool,
    /// Also watch and write the X11 PRIMARY selection. Default false.
    pub primary: bool,
    /// Windows: let Windows' own cloud clipboard upload the items clipmesh
    /// puts on the clipboard. Default false: they are marked
    /// `CanUploadToCloudClipboard` = 0.
    pub windows_cloud_clipboard: bool,
    /// Received clips sealed longer ago than this many seconds are never
    /// applied (a relay replaying old clips). Default 86400 (one day).
    pub clip_ttl_s: u64,
    /// macOS only: how often, in ms, the pasteboard's change count is read
    /// (macOS has no change event). Default 250, accepted 50–5000; the X11,
    /// Wayland and Windows backends are event-driven and ignore it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_interval_ms: Option<u64>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            send_only: false,
            receive_only: false,
            max_item_bytes: DEFAULT_MAX_ITEM_BYTES,
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
            max_files: DEFAULT_MAX_FILES,
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            auto_download_max: DEFAULT_AUTO_DOWNLOAD_MAX,
            download_dir: None,
            text: true,
            html: true,
            image: true,
            files: true,
            primary: false,
            windows_cloud_clipboard: false,
            clip_ttl_s: crate::sync::DEFAULT_CLIP_TTL_MS / 1000,
            poll_interval_ms: None,
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

    /// Whether the content fits the limits: [`SyncOptions::max_item_bytes`]
    /// (and [`MAX_INLINE_ITEM_BYTES`] for what travels inline),
    /// [`SyncOptions::max_files`], [`SyncOptions::max_image_bytes`].
    pub fn fits(&self, content: &clipmesh_proto::ClipContent) -> bool {
        use clipmesh_proto::ClipContent as C;
        let size = item_size(content);
        match content {
            C::Text(_) | C::Html { .. } => size <= self.max_item_bytes.min(MAX_INLINE_ITEM_BYTES),
            C::Image { .. } => size <= self.max_item_bytes.min(self.max_image_bytes),
            C::ImageBlob { .. } => size <= self.max_item_bytes.min(self.max_image_bytes),
            C::Files(f) => f.len() <= self.max_files && size <= self.max_item_bytes,
        }
    }

    /// The clipboard watcher's settings for these options (what `clipmesh
    /// run` and the tray both start the watcher with). Files are read by the
    /// transfer path, not the watcher; the watcher holds images in memory,
    /// so the image limit bounds it as well.
    pub fn clipboard_config(&self) -> clipmesh_clipboard::ClipboardConfig {
        clipmesh_clipboard::ClipboardConfig {
            primary: self.primary,
            max_item_bytes: self.max_item_bytes.min(self.max_image_bytes),
            windows_cloud_clipboard: self.windows_cloud_clipboard,
            poll_interval: self.poll_interval_ms.map(std::time::Duration::from_millis),
        }
    }

    /// The download folder: [`SyncOptions::download_dir`] or the platform
    /// default (`None` only when the platform has no home directory).
    pub fn download_dir(&self) -> Option<PathBuf> {
        if let Some(d) = &self.download_dir {
            return Some(d.clone());
        }
        if let Some(d) = directories::UserDirs::new()
            .and_then(|u| u.download_dir().map(|d| d.join(DOWNLOAD_SUBDIR)))
        {
            return Some(d);
        }
        directories::ProjectDirs::from("org", "clipmesh", "clipmesh")
            .map(|p| p.data_dir().join("downloads"))
    }
}

/// The size of an item in bytes: text and HTML bytes, PNG bytes, or the
/// sum of a file list's sizes (inline or blob).
pub fn item_size(content: &clipmesh_proto::ClipContent) -> u64 {
    use clipmesh_proto::ClipContent as C;
    match content {
        C::ImageBlob { size, .. } => *size,
        C::Files(f) => f.iter().fold(0u64, |a, e| a.saturating_add(e.size)),
        other => other.payload_len() as u64,
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

/// Creates the directory (0700 on Unix) if needed. An existing directory
/// that others can read or enter (it holds the token and keys) is made
/// 0700 too, not trusted as it is.
pub fn ensure_dir(dir: &Path) -> Result<(), ConfigError> {
    let io = |source| ConfigError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if dir.is_dir() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::info!(dir = %dir.display(), "config directory was open to others; making it 0700");
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io)?;
            }
        }
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

/// Refuses a plain `http://` relay URL whose host is not this machine
/// (loopback), unless `allow_insecure` (`--insecure-http`). Pure: called
/// before any socket is opened. `https://` and loopback pass.
pub fn check_plain_http(url: &str, allow_insecure: bool) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Ok(());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback || allow_insecure {
        return Ok(());
    }
    Err(format!(
        "refusing plain http:// to {host}: anyone on the way could read and change the \
         traffic (tokens included); use https:// (see docs/relay.md) or pass --insecure-http"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn ensure_dir_tightens_an_existing_open_directory() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("cfg");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "mode {mode:o}");
    }

    #[test]
    fn plain_http_only_to_loopback_unless_allowed() {
        for ok in [
            "https://relay.example.org",
            "http://127.0.0.1:8787",
            "http://127.3.4.5",
            "http://[::1]:8787/x",
            "http://localhost:8787",
            "http://LOCALHOST",
        ] {
            assert_eq!(check_plain_http(ok, false), Ok(()), "{ok}");
        }
        for bad in [
            "http://relay.example.org",
            "http://192.0.2.1:8787",
            "http://[2001:db8::1]:80",
            "http://localhost.example.org",
            "http://127.0.0.1@192.0.2.1/",
        ] {
            let e = check_plain_http(bad, false).unwrap_err();
            assert!(e.contains("--insecure-http"), "{bad}: {e}");
            assert_eq!(check_plain_http(bad, true), Ok(()));
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c, Config::default());
        assert!(c.sync.text && c.sync.html && c.sync.image && c.sync.files);
        assert_eq!(c.sync.max_item_bytes, DEFAULT_MAX_ITEM_BYTES);
    }

    #[test]
    fn partial_sync_section_keeps_other_defaults() {
        let c: Config = toml::from_str("[sync]\nreceive_only = true\n").unwrap();
        assert!(c.sync.receive_only && c.sync.text);
    }

    #[test]
    fn limits_depend_on_how_the_item_travels() {
        use clipmesh_proto::content::{FileBody, FileEntry};
        use clipmesh_proto::ClipContent as C;
        let o = SyncOptions::default();
        assert!(!o.fits(&C::Text("x".repeat(1_000_001))));
        assert!(o.fits(&C::Text("x".repeat(1_000))));
        let file = |size| FileEntry {
            name: "f".into(),
            size,
            body: FileBody::Inline(Vec::new()),
        };
        assert!(o.fits(&C::Files(vec![file(1 << 30)])));
        assert!(!o.fits(&C::Files(vec![file(1 << 30), file(1 << 30), file(1)])));
        assert!(!o.fits(&C::Files(vec![file(1); DEFAULT_MAX_FILES + 1])));
        let tight = SyncOptions {
            download_dir: Some("dl".into()),
            ..SyncOptions::default()
        };
        assert_eq!(tight.download_dir().unwrap(), Path::new("dl"));
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
                insecure_http: false,
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
    fn poll_interval_is_optional() {
        let c: Config = toml::from_str("[sync]\npoll_interval_ms = 500\n").unwrap();
        assert_eq!(c.sync.poll_interval_ms, Some(500));
        let c: Config = toml::from_str("[sync]\n").unwrap();
        assert_eq!(c.sync.poll_interval_ms, None);
        assert!(!toml::to_string(&c).unwrap().contains("poll_interval_ms"));
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
