//! The relay's typed configuration: a TOML file with documented defaults,
//! overridden by a few command-line flags (see [`crate::cli`]).
//!
//! Every field has a default, so an empty file (or no file) is a valid
//! configuration. `docs/relay.md` lists every field.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Environment variable naming the config file (same as `--config`).
pub const ENV_CONFIG: &str = "CLIPMESH_RELAY_CONFIG";
/// Environment variable for the listen address (same as `--listen`).
pub const ENV_LISTEN: &str = "CLIPMESH_RELAY_LISTEN";
/// Environment variable for the data directory (same as `--data-dir`).
pub const ENV_DATA_DIR: &str = "CLIPMESH_RELAY_DATA_DIR";
/// Environment variable for the signup policy (same as `--signup`).
pub const ENV_SIGNUP: &str = "CLIPMESH_RELAY_SIGNUP";
/// Environment variable read by the log subscriber (standard `tracing` filter).
pub const ENV_LOG: &str = "RUST_LOG";

/// The default listen address: every interface, port 8787.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8787";
/// File name of the SQLite database inside the data directory.
pub const DB_FILE: &str = "relay.sqlite3";

/// Who may create accounts with `POST /api/v1/signup`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SignupPolicy {
    /// Anyone who can reach the relay.
    Open,
    /// Nobody; the operator adds accounts with `clipmesh-relay user add`.
    Closed,
    /// Only the first account (which becomes admin); then signup closes.
    #[default]
    First,
}

/// The whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default `0.0.0.0:8787`. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory holding the SQLite database. Default: the platform data
    /// directory (`~/.local/share/clipmesh-relay` on Linux).
    pub data_dir: Option<PathBuf>,
    /// Signup policy. Default `first`.
    pub signup: SignupPolicy,
    /// TLS certificate chain (PEM). TLS is on when both `tls_cert` and
    /// `tls_key` are set. Default: none (plain HTTP, e.g. behind a proxy).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM, PKCS#8, PKCS#1 or SEC1). Default: none.
    pub tls_key: Option<PathBuf>,
    /// Peers whose `X-Forwarded-For` header is believed, as IPs or CIDRs
    /// (e.g. `"127.0.0.1"`, `"10.0.0.0/8"`). Default: none.
    pub trusted_proxies: Vec<String>,
    /// Serve `GET /metrics` to any client. Default false: only to a client on
    /// this machine (a loopback peer with no `X-Forwarded-For`, so not
    /// through a local reverse proxy); others get 404.
    pub metrics_public: bool,
    /// Connection and frame limits.
    pub limits: Limits,
    /// Account hashing and login throttling.
    pub auth: AuthConfig,
    /// Room behaviour.
    pub room: RoomConfig,
    /// The ClipCascade compatibility surface (`docs/relay.md`, "Moving from
    /// ClipCascade").
    pub clipcascade: ClipCascadeConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 8787))),
            data_dir: None,
            signup: SignupPolicy::First,
            tls_cert: None,
            tls_key: None,
            trusted_proxies: Vec::new(),
            metrics_public: false,
            limits: Limits::default(),
            auth: AuthConfig::default(),
            room: RoomConfig::default(),
            clipcascade: ClipCascadeConfig::default(),
        }
    }
}

/// Limits. Each one, when hit, produces a documented close code or error.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket message (one frame), bytes. Default 1048576 (1 MiB).
    /// Larger frames close the socket with 1009.
    pub max_frame: u32,
    /// Most devices of one user online at once. Default 32. One more is
    /// closed with 4004.
    pub max_devices_per_user: usize,
    /// Most WebSocket connections in total. Default 200000. Upgrades beyond
    /// it get HTTP 503 with `Retry-After`.
    pub max_connections: usize,
    /// Frames queued towards one device before it counts as a slow consumer
    /// and is closed with 4005. Default 64.
    pub outbound_queue: usize,
    /// Bytes queued towards one device before it counts as a slow consumer
    /// (one frame always fits). Default 4194304 (4 MiB).
    pub outbound_queue_bytes: usize,
    /// Seconds a write to a device may stall before the device is dropped.
    /// Default 20.
    pub write_timeout_s: u64,
    /// Publish and signal frames per second per device (token bucket refill).
    /// Default 20.
    pub publish_per_s: f64,
    /// Token bucket size (burst). Default 60.
    pub publish_burst: f64,
    /// Rate-limited frames tolerated per 10 s before the socket closes with
    /// 4003. Default 50.
    pub rate_limit_strikes: u32,
    /// Undecodable or text frames tolerated before closing with 4002.
    /// Default 3.
    pub bad_frame_strikes: u32,
    /// Seconds of silence after which a socket is closed with 4006. Default 45.
    pub idle_timeout_s: u16,
    /// Ping interval advertised to clients in `Welcome`, seconds. Default 30.
    pub ping_interval_s: u16,
    /// Seconds a new socket has to send `Hello`. Default 10.
    pub hello_timeout_s: u64,
    /// WebSocket read buffer per connection, bytes. It is allocated for
    /// every socket, idle or not, so it is small; a larger frame grows it as
    /// needed. Default 1024.
    pub ws_read_buffer: usize,
    /// Bytes of outgoing frames collected before a write to the socket. Not
    /// allocated while a socket idles; larger means fewer writes when a
    /// backlog is flushed. Default 8192.
    pub ws_write_buffer: usize,
    /// Largest JSON request body, bytes. Default 65536 (larger: 413).
    pub max_json: usize,
    /// HTTP connections open at once before their WebSocket upgrade (or
    /// while serving API requests); more are closed on accept. Default 4096.
    pub max_http_connections: usize,
    /// HTTP connections open at once from one client network (an IPv4
    /// address or an IPv6 /64); more are closed on accept. Trusted proxies
    /// are exempt. Default 64.
    pub max_http_connections_per_ip: usize,
    /// Slots of `max_http_connections` that blob transfers (uploads and
    /// downloads, the only long-lived HTTP requests) can never take, so
    /// logins, the API and WebSocket joins still get in when transfers hold
    /// the rest. A transfer beyond `max_http_connections -
    /// http_reserved_connections` gets 503 with `Retry-After`. Default 512.
    pub http_reserved_connections: usize,
    /// Refused requests (401, 429 and 503 answers) per second one client
    /// network may cause on average; once its burst is spent, its new
    /// connections are closed on accept until the allowance refills.
    /// Trusted proxies are exempt. Default 2; 0 turns this off.
    pub http_refusals_per_ip_per_s: f64,
    /// Refused requests one client network may cause at once. Default 20.
    pub http_refusals_burst: f64,
    /// Blob transfers one user may run at once; more get 429 with
    /// `Retry-After`. Default 16.
    pub blob_transfers_per_user: usize,
    /// Seconds one write to an HTTP client may stay blocked (a client that
    /// stops reading a response, e.g. a blob download) before the
    /// connection ends. Default 30.
    pub http_write_timeout_s: u64,
    /// Slowest blob upload body accepted, bytes per second, averaged over
    /// each blob idle window (30 s): an upload below it ends as if broken
    /// off (what arrived is kept; the client resumes). Stops a trickle of
    /// tiny frames from holding a transfer slot forever. Default 4096.
    pub blob_min_upload_rate: u64,
    /// Seconds a client has to send complete request headers. Default 10.
    pub http_header_timeout_s: u64,
    /// Seconds one HTTP request may take, body included (then 408).
    /// Default 30.
    pub http_request_timeout_s: u64,
    /// Largest blob (sealed bytes, the `Upload-Length` of
    /// `POST /api/v1/blobs/{id}`). Default 4294967296 (4 GiB); larger: 413.
    pub blob_max_bytes: u64,
    /// Declared bytes of one user's unexpired blobs. Default 8589934592
    /// (8 GiB); a blob that would exceed it: 403 `quota_exceeded`.
    pub blob_quota_bytes: u64,
    /// Declared bytes of all users' unexpired blobs together, so that under
    /// `signup = "open"` strangers cannot fill the disk with many accounts.
    /// Default 68719476736 (64 GiB); a blob that would exceed it: 403
    /// `quota_exceeded`.
    pub blob_total_quota_bytes: u64,
    /// Seconds a blob lives after its creation; then 410 and the sweeper
    /// deletes its file. Default 86400 (one day).
    pub blob_ttl_secs: u64,
    /// Largest body of one blob `PATCH`, bytes (streamed, never buffered
    /// whole; it must also arrive within `http_request_timeout_s`).
    /// Default 67108864 (64 MiB); larger: 413 `payload_too_large`.
    pub blob_patch_max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: 1024 * 1024,
            max_devices_per_user: 32,
            max_connections: 200_000,
            outbound_queue: 64,
            outbound_queue_bytes: 4 * 1024 * 1024,
            write_timeout_s: 20,
            publish_per_s: 20.0,
            publish_burst: 60.0,
            rate_limit_strikes: 50,
            bad_frame_strikes: 3,
            idle_timeout_s: 45,
            ping_interval_s: 30,
            hello_timeout_s: 10,
            ws_read_buffer: 1024,
            ws_write_buffer: 8192,
            max_json: 64 * 1024,
            max_http_connections: 4096,
            max_http_connections_per_ip: 64,
            http_reserved_connections: 512,
            http_refusals_per_ip_per_s: 2.0,
            http_refusals_burst: 20.0,
            blob_transfers_per_user: 16,
            http_write_timeout_s: 30,
            blob_min_upload_rate: 4096,
            http_header_timeout_s: 10,
            http_request_timeout_s: 30,
            blob_max_bytes: 4 << 30,
            blob_quota_bytes: 8 << 30,
            blob_total_quota_bytes: 64 << 30,
            blob_ttl_secs: 24 * 3600,
            blob_patch_max_bytes: 64 << 20,
        }
    }
}

/// How the relay hashes `auth_key`s and throttles logins.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Argon2id memory cost for the stored PHC hash, KiB. Default 19456
    /// (19 MiB). The input is already a 256-bit key, so moderate is enough.
    pub hash_m_kib: u32,
    /// Argon2id time cost. Default 2.
    pub hash_t: u32,
    /// Argon2id lanes. Default 1.
    pub hash_p: u32,
    /// Hashes computed at once; more wait. Bounds memory under a login
    /// flood. Default 2.
    pub max_concurrent_hashes: usize,
    /// Hashes allowed to wait for one of those slots; more are refused at
    /// once with 503 and `Retry-After`. Default 32.
    pub max_queued_hashes: usize,
    /// Failed logins allowed per account or IP before back-off starts.
    /// Default 5.
    pub throttle_free_failures: u32,
    /// First back-off, seconds; doubles with each further failure. Default 1.
    pub throttle_base_s: u64,
    /// Longest back-off, seconds. Default 900.
    pub throttle_max_s: u64,
    /// Signups allowed per client network (IPv4 address or IPv6 /64) before
    /// further ones are refused with 429. Default 3.
    pub signup_free_per_ip: u32,
    /// First signup back-off after those, seconds; doubles per further
    /// signup, up to a day. Default 600.
    pub signup_backoff_s: u64,
    /// A session unused (no API call, no WebSocket join) for this many
    /// seconds ends. Default 2592000 (30 days).
    pub session_idle_s: u64,
    /// A session ends this many seconds after its token was issued, however
    /// much it is used; running daemons renew their token well before.
    /// Default 7776000 (90 days).
    pub session_max_s: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            hash_m_kib: 19 * 1024,
            hash_t: 2,
            hash_p: 1,
            max_concurrent_hashes: 2,
            max_queued_hashes: 32,
            throttle_free_failures: 5,
            throttle_base_s: 1,
            throttle_max_s: 900,
            signup_free_per_ip: 3,
            signup_backoff_s: 600,
            session_idle_s: 30 * 24 * 3600,
            session_max_s: 90 * 24 * 3600,
        }
    }
}

/// Room behaviour.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomConfig {
    /// Seconds without any frame after which a room is evicted from memory
    /// (its sockets stay open). Default 60.
    pub evict_idle_s: u64,
    /// Seconds the newest clip is kept for devices that reconnect. Default
    /// 86400 (one day). 0 keeps no clip.
    pub clip_ttl_s: u64,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            evict_idle_s: 60,
            clip_ttl_s: 24 * 3600,
        }
    }
}

/// The ClipCascade compatibility surface: its login pages, JSON endpoints,
/// STOMP on `/clipsocket` and signalling on `/p2psignaling`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClipCascadeConfig {
    /// Serve ClipCascade clients at all. Default true. Each account must
    /// still opt in (`clipmesh-relay user set NAME --clipcascade on`).
    pub enabled: bool,
    /// L, the largest raw item a ClipCascade client may send, bytes
    /// (`/max-size`). Default 1048576 (1 MiB). STOMP messages up to 2·L
    /// are accepted, to leave room for base64 and encryption; larger ones
    /// close the socket.
    pub max_size: u64,
    /// What `/stun-url` answers to clients in P2P mode. Default
    /// `stun:stun.l.google.com:19302`, ClipCascade's own default.
    pub stun_url: String,
    /// Most ClipCascade sessions (logins) kept per account; a new login
    /// beyond it ends the oldest. Default 16.
    pub max_sessions_per_user: u32,
    /// Seconds between heart-beats (a lone newline) the relay sends on
    /// `/clipsocket`. Default 20.
    pub heartbeat_s: u16,
}

impl Default for ClipCascadeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_size: 1024 * 1024,
            stun_url: "stun:stun.l.google.com:19302".into(),
            max_sessions_per_user: 16,
            heartbeat_s: 20,
        }
    }
}

impl Config {
    /// Parses a TOML document.
    pub fn from_toml(s: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(s)
    }

    /// The data directory: the configured one, or the platform default.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.data_dir.clone().or_else(default_data_dir)
    }

    /// Idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.limits.idle_timeout_s.max(1)))
    }
}

/// The platform data directory (`directories` crate).
pub fn default_data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "clipmesh-relay").map(|d| d.data_dir().to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_toml_is_default() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.listen.port(), 8787);
        assert_eq!(c.signup, SignupPolicy::First);
        assert_eq!(c.limits.max_frame, 1024 * 1024);
    }

    #[test]
    fn toml_fields_parse_and_unknown_fail() {
        let c = Config::from_toml(
            "listen = \"127.0.0.1:9000\"\nsignup = \"open\"\n[limits]\nmax_frame = 2048\n[room]\nclip_ttl_s = 5\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.signup, SignupPolicy::Open);
        assert_eq!(c.limits.max_frame, 2048);
        assert_eq!(c.limits.idle_timeout_s, 45);
        assert_eq!(c.room.clip_ttl_s, 5);
        assert!(Config::from_toml("nope = 1").is_err());
    }

    #[test]
    fn default_roundtrips_through_toml() {
        let s = toml::to_string(&Config::default()).unwrap();
        let c = Config::from_toml(&s).unwrap();
        assert_eq!(c.limits.outbound_queue, 64);
    }
}
