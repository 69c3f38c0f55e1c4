//! The Worker's settings, from `[vars]` in `wrangler.toml` (or the local
//! runtime's bindings), with the native relay's defaults.

use clipmesh_room::conn::ConnLimits;
use clipmesh_room::throttle::Backoff;
use clipmesh_room::RoomLimits;
use std::time::Duration;
use worker::Env;

/// Who may sign up (`SIGNUP`): `open`, `closed`, or `first` (only the
/// first account, which becomes the admin). Default `first`, as natively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignupPolicy {
    /// Anyone.
    Open,
    /// No one.
    Closed,
    /// Only the first account.
    First,
}

/// Everything the Worker and the room read from the environment.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Signup policy.
    pub signup: SignupPolicy,
    /// Largest JSON body, bytes.
    pub max_json: usize,
    /// Argon2id memory cost of the stored `auth_key` hash, KiB.
    pub hash_m_kib: u32,
    /// Argon2id time cost.
    pub hash_t: u32,
    /// KV session cache TTL, seconds (KV's minimum is 60).
    pub session_cache_ttl_s: u64,
    /// A session unused for this many seconds ends (`SESSION_IDLE_S`,
    /// the native default of 30 days).
    pub session_idle_s: u64,
    /// A session ends this many seconds after its token was issued
    /// (`SESSION_MAX_S`, the native default of 90 days).
    pub session_max_s: u64,
    /// Room limits (the native relay's defaults).
    pub room: RoomLimits,
    /// Per-connection limits.
    pub conn: ConnLimits,
    /// Largest blob, sealed bytes (`BLOB_MAX_BYTES`, native default 4 GiB).
    pub blob_max_bytes: u64,
    /// Declared bytes of a user's unexpired blobs (`BLOB_QUOTA_BYTES`, 8 GiB).
    pub blob_quota_bytes: u64,
    /// Seconds a blob lives after its `POST` (`BLOB_TTL_S`, 1 day).
    pub blob_ttl_s: u64,
    /// Largest `PATCH` body (`BLOB_PATCH_MAX_BYTES`, 64 MiB).
    pub blob_patch_max_bytes: u64,
    /// Seconds a new socket has to send `Hello` (the native default, 10).
    pub hello_timeout_s: u64,
    /// Messages per user per day before new connections are refused with
    /// a "quota exceeded" close (0: no quota).
    pub daily_message_quota: u64,
    /// The login throttle (`THROTTLE_FREE_FAILURES`, `THROTTLE_BASE_S`,
    /// `THROTTLE_MAX_S`; the native defaults 5, 1 s, 900 s).
    pub throttle: Backoff,
    /// Signups per client network (`SIGNUP_FREE_PER_IP`, 3), then blocks
    /// from `SIGNUP_BACKOFF_S` (600 s) doubling up to a day, as natively.
    pub signup_budget: Backoff,
}

fn var<T: std::str::FromStr>(env: &Env, name: &str, default: T) -> T {
    env.var(name)
        .ok()
        .and_then(|v| v.to_string().trim().parse().ok())
        .unwrap_or(default)
}

impl Settings {
    /// Reads the settings; unset or unparsable values take the defaults.
    pub fn from_env(env: &Env) -> Self {
        let signup = match env.var("SIGNUP").map(|v| v.to_string()).as_deref() {
            Ok("open") => SignupPolicy::Open,
            Ok("closed") => SignupPolicy::Closed,
            _ => SignupPolicy::First,
        };
        let max_frame = var(env, "MAX_FRAME", 1024 * 1024u32).min(1024 * 1024);
        Self {
            signup,
            max_json: var(env, "MAX_JSON", 64 * 1024usize),
            hash_m_kib: var(env, "HASH_M_KIB", 19 * 1024u32),
            hash_t: var(env, "HASH_T", 2u32),
            session_cache_ttl_s: var(env, "SESSION_CACHE_TTL_S", 300u64).max(60),
            session_idle_s: var(env, "SESSION_IDLE_S", 30 * 24 * 3600u64).max(1),
            session_max_s: var(env, "SESSION_MAX_S", 90 * 24 * 3600u64).max(1),
            room: RoomLimits {
                max_devices: var(env, "MAX_DEVICES_PER_USER", 32usize).max(1),
                max_frame,
                ping_interval_s: var(env, "PING_INTERVAL_S", 30u16),
                idle_timeout_s: var(env, "IDLE_TIMEOUT_S", 45u16),
                clip_ttl_s: var(env, "CLIP_TTL_S", 24 * 3600u64),
            },
            conn: ConnLimits {
                max_frame,
                publish_per_s: var(env, "PUBLISH_PER_S", 20.0f64),
                publish_burst: var(env, "PUBLISH_BURST", 60.0f64),
                rate_limit_strikes: var(env, "RATE_LIMIT_STRIKES", 50u32),
                bad_frame_strikes: var(env, "BAD_FRAME_STRIKES", 3u32),
            },
            daily_message_quota: var(env, "DAILY_MESSAGE_QUOTA", 0u64),
            throttle: Backoff {
                free: var(env, "THROTTLE_FREE_FAILURES", 5u32),
                base: Duration::from_secs(var(env, "THROTTLE_BASE_S", 1u64).max(1)),
                max: Duration::from_secs(var(env, "THROTTLE_MAX_S", 900u64).max(1)),
            },
            signup_budget: Backoff {
                free: var(env, "SIGNUP_FREE_PER_IP", 3u32),
                base: Duration::from_secs(var(env, "SIGNUP_BACKOFF_S", 600u64).max(1)),
                max: Duration::from_secs(24 * 3600),
            },
            hello_timeout_s: var(env, "HELLO_TIMEOUT_S", 10u64).max(1),
            blob_max_bytes: var(env, "BLOB_MAX_BYTES", 4u64 << 30),
            blob_quota_bytes: var(env, "BLOB_QUOTA_BYTES", 8u64 << 30),
            blob_ttl_s: var(env, "BLOB_TTL_S", 24 * 3600u64),
            blob_patch_max_bytes: var(env, "BLOB_PATCH_MAX_BYTES", 64u64 << 20).max(1),
        }
    }
}
