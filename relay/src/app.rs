//! [`AppState`]: what every HTTP and WebSocket handler shares, built once
//! by [`crate::server::Relay::bind`].

use crate::auth::Hasher;
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::net::TrustedProxies;
use crate::registry::Registry;
use crate::store::Store;
use crate::throttle::Throttle;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
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
    /// Login back-off per account name.
    pub throttle_users: Mutex<Throttle<String>>,
    /// Login back-off per client IP.
    pub throttle_ips: Mutex<Throttle<IpAddr>>,
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
    pub signals: crate::clipcascade::SignalHub,
    /// The wall clock handlers read (passed in; tests may set it).
    pub clock: Clock,
}
