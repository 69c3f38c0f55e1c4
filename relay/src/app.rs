//! [`AppState`]: what every HTTP and WebSocket handler shares, built once
//! by [`crate::server::Relay::bind`].

use crate::auth::Hasher;
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::net::TrustedProxies;
use crate::registry::Registry;
use crate::setup::SetupGate;
use crate::store::Store;
use crate::throttle::{LoginGuard, NetGuard};
use clipmesh_proto::KdfParams;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Each KDF parameter set in use and how many accounts use it.
pub type KdfCensus = Vec<(KdfParams, u64)>;

/// How long the KDF census behind unknown users' prelogin is reused.
pub const KDF_CENSUS_TTL: Duration = Duration::from_secs(60);
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything handlers share.
pub struct AppState {
    /// The configuration.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// Argon2id hashing of auth keys.
    pub hasher: Hasher,
    /// User rooms.
    pub registry: Arc<Registry>,
    /// Large sealed items.
    pub blobs: Arc<crate::blobs::BlobStore>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Login back-off per (account, client network) and per network.
    pub login_guard: LoginGuard,
    /// Signups per client network.
    pub signup_guard: NetGuard,
    /// The one-time token the first account must show.
    pub setup: SetupGate,
    /// KDF parameter sets in use (for unknown users' prelogin), refreshed
    /// at most every [`KDF_CENSUS_TTL`].
    pub kdf_census: Mutex<Option<(Instant, KdfCensus)>>,
    /// The OPAQUE setup and half-finished v2 logins.
    pub opaque: crate::opaque::OpaqueHost,
    /// Server secret for fake pre-login salts.
    pub secret: Vec<u8>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted: TrustedProxies,
    /// Server shutdown.
    pub shutdown: CancellationToken,
    /// Owns connection tasks.
    pub tracker: TaskTracker,
    /// Source of connection ids.
    pub next_conn: AtomicU64,
    /// ClipCascade P2P signalling sessions, per user.
    pub signals: crate::signals::SignalHub,
    /// The wall clock handlers read (passed in; tests may set it).
    pub clock: Clock,
}
