//! Starting and stopping a relay: [`Relay::bind`] opens the database, binds
//! the listener and starts serving; [`RelayHandle`] shuts it down.
//!
//! Shutdown (mini-redis style): cancel one token; the listener stops
//! accepting, every connection task closes its socket with 1012 "service
//! restart", every room finishes its store write; then the task tracker
//! drains and the WAL is checkpointed.

use crate::app::AppState;
use crate::auth::{HashError, Hasher};
use crate::blobs::{BlobLimits, BlobStore};
use crate::clock::Clock;
use crate::config::{Config, DB_FILE};
use crate::http;
use crate::metrics::Metrics;
use crate::net::{self, NetError, TrustedProxies};
use crate::registry::Registry;
use crate::room::{RoomCtx, RoomLimits};
use crate::setup::SetupGate;
use crate::store::{Db, Store, StoreError};
use crate::throttle::{Backoff, LoginGuard, NetGuard};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often expired clips are dropped from the database.
pub const JANITOR_INTERVAL: Duration = Duration::from_secs(600);
/// Longest signup back-off per client network.
pub const SIGNUP_BACKOFF_MAX: Duration = Duration::from_secs(24 * 3600);
/// Longest wait for tasks to drain at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a relay could not start.
#[derive(Debug, Error)]
pub enum RelayError {
    /// No data directory configured and no platform default.
    #[error("no data directory: pass --data-dir")]
    NoDataDir,
    /// Filesystem or socket error.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// Bad proxy or TLS configuration.
    #[error(transparent)]
    Net(#[from] NetError),
    /// Bad hash parameters.
    #[error("auth hash: {0}")]
    Hash(#[from] HashError),
    /// The blob directory could not be prepared.
    #[error("blob store: {0}")]
    Blobs(#[from] crate::blobs::BlobError),
}

/// Opens the store in the configured data directory.
pub fn open_store(config: &Config) -> Result<Store, RelayError> {
    let dir = config.data_dir().ok_or(RelayError::NoDataDir)?;
    create_private_dir(&dir).map_err(|source| RelayError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    Ok(Store::new(Db::open(&dir.join(DB_FILE))?))
}

/// Creates `dir` (and missing parents) readable by the relay's user only
/// (0700 on Unix, whatever the umask), since it holds the database, the
/// server secret, the setup token and the blobs. An existing directory is
/// left as the operator made it.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// The relay.
pub struct Relay;

/// A running relay.
pub struct RelayHandle {
    addr: SocketAddr,
    tls: bool,
    setup_token: Option<String>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    store: Store,
    registry: Arc<Registry>,
    blobs: Arc<BlobStore>,
}

impl Relay {
    /// Opens the database, binds `config.listen` and starts serving.
    pub async fn bind(config: Config) -> Result<RelayHandle, RelayError> {
        Self::bind_with_clock(config, Clock::system()).await
    }

    /// [`Relay::bind`] with the wall clock handlers, the janitor and the
    /// blob store read (tests pass a [`Clock::manual`]).
    pub async fn bind_with_clock(config: Config, clock: Clock) -> Result<RelayHandle, RelayError> {
        let trusted = TrustedProxies::parse(&config.trusted_proxies)?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(c), Some(k)) => Some(net::tls_acceptor(c, k)?),
            (None, None) => None,
            _ => return Err(NetError::Tls("both tls_cert and tls_key are needed".into()).into()),
        };
        let cfg = config.clone();
        let (store, secret, hasher, setup, opaque) = tokio::task::spawn_blocking(move || {
            let store = open_store(&cfg)?;
            let secret = store.blocking(|db| db.secret())?;
            let users = store.blocking(|db| db.user_count())?;
            let dir = cfg.data_dir().ok_or(RelayError::NoDataDir)?;
            let setup = SetupGate::open(&dir, users > 0).map_err(|source| RelayError::Io {
                what: format!("setup token in {}", dir.display()),
                source,
            })?;
            let opaque =
                crate::opaque::OpaqueHost::open(&dir).map_err(|source| RelayError::Io {
                    what: format!("OPAQUE setup in {}", dir.display()),
                    source,
                })?;
            let a = &cfg.auth;
            let hasher = Hasher::new(
                a.hash_m_kib,
                a.hash_t,
                a.hash_p,
                a.max_concurrent_hashes,
                a.max_queued_hashes,
            )?;
            Ok::<_, RelayError>((store, secret, hasher, setup, opaque))
        })
        .await
        .map_err(|_| RelayError::Store(StoreError::Join))??;
        let tcp = TcpListener::bind(config.listen)
            .await
            .map_err(|source| RelayError::Io {
                what: format!("binding {}", config.listen),
                source,
            })?;
        let addr = tcp.local_addr().map_err(|source| RelayError::Io {
            what: "local address".into(),
            source,
        })?;
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let metrics = Arc::new(Metrics::default());
        let l = &config.limits;
        let blobs = Arc::new(
            BlobStore::open(
                &config.data_dir().ok_or(RelayError::NoDataDir)?,
                store.clone(),
                metrics.clone(),
                BlobLimits::from(l),
            )
            .await?
            .with_clock(clock.clone()),
        );
        let registry = Registry::new(
            RoomCtx {
                store: store.clone(),
                metrics: metrics.clone(),
                limits: RoomLimits {
                    max_devices: l.max_devices_per_user.max(1),
                    max_frame: l.max_frame,
                    ping_interval_s: l.ping_interval_s,
                    idle_timeout_s: l.idle_timeout_s,
                    clip_ttl_s: config.room.clip_ttl_s,
                },
                evict_after: Duration::from_secs(config.room.evict_idle_s.max(1)),
                shutdown: shutdown.clone(),
            },
            tracker.clone(),
        );
        let a = &config.auth;
        let setup_token = setup.pending();
        let state = Arc::new(AppState {
            login_guard: LoginGuard::new(Backoff {
                free: a.throttle_free_failures,
                base: Duration::from_secs(a.throttle_base_s.max(1)),
                max: Duration::from_secs(a.throttle_max_s.max(1)),
            }),
            signup_guard: NetGuard::new(Backoff {
                free: a.signup_free_per_ip,
                base: Duration::from_secs(a.signup_backoff_s.max(1)),
                max: SIGNUP_BACKOFF_MAX,
            }),
            setup,
            kdf_census: Mutex::new(None),
            config: config.clone(),
            store: store.clone(),
            hasher,
            registry: registry.clone(),
            blobs: blobs.clone(),
            metrics,
            secret,
            opaque,
            trusted,
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            next_conn: AtomicU64::new(1),
            signals: crate::signals::SignalHub::default(),
            clock: clock.clone(),
        });
        let trusted_for_accept = state.trusted.clone();
        let app = http::router(state);
        let http_limits = net::HttpLimits {
            max_connections: l.max_http_connections,
            max_per_net: l.max_http_connections_per_ip,
            write_timeout: Duration::from_secs(l.http_write_timeout_s.max(1)),
            refusals_per_s: l.http_refusals_per_ip_per_s,
            refusals_burst: l.http_refusals_burst,
            header_timeout: Duration::from_secs(l.http_header_timeout_s.max(1)),
            request_timeout: Duration::from_secs(l.http_request_timeout_s.max(1)),
        };
        tracker.spawn(net::accept_loop(
            tcp,
            tls,
            app,
            http_limits,
            trusted_for_accept,
            shutdown.clone(),
            tracker.clone(),
        ));
        tracker.spawn(janitor(
            store.clone(),
            clock.clone(),
            config.room.clip_ttl_s,
            shutdown.clone(),
        ));
        tracker.spawn(crate::blobs::sweeper(blobs.clone(), shutdown.clone()));
        let tls = config.tls_cert.is_some();
        tracing::info!(%addr, tls, "relay started");
        if !tls && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "serving plain HTTP on a non-loopback address: put TLS in front \
                 (tls_cert/tls_key or a reverse proxy, see docs/relay.md)"
            );
        }
        Ok(RelayHandle {
            addr,
            tls,
            setup_token,
            shutdown,
            tracker,
            store,
            registry,
            blobs,
        })
    }
}

async fn janitor(store: Store, clock: Clock, ttl_s: u64, shutdown: CancellationToken) {
    let ttl = i64::try_from(ttl_s).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(JANITOR_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let before = clock.unix_now().saturating_sub(ttl);
                match store.call(move |db| db.expire_clips(before)).await {
                    Ok(n) if n > 0 => tracing::debug!(n, "expired stored clips"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "expiring clips failed"),
                }
            }
        }
    }
}

impl RelayHandle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// The one-time setup token the first account must show, while the
    /// relay had no account at start (for the operator's start-up line).
    pub fn setup_token(&self) -> Option<&str> {
        self.setup_token.as_deref()
    }

    /// The token that stops the relay when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The room registry (for tests and tools).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The blob store (for tests and tools, e.g. [`BlobStore::sweep`] at a
    /// chosen time).
    pub fn blobs(&self) -> &Arc<BlobStore> {
        &self.blobs
    }

    /// Starts a graceful shutdown.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the relay has stopped (after [`RelayHandle::shutdown`] or
    /// the token is cancelled), then checkpoints the database.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.tracker.len(),
                "tasks still running after drain timeout"
            );
        }
        // Clip writes the rooms queued last are committed before the end.
        if tokio::time::timeout(DRAIN_TIMEOUT, self.store.flush_batches())
            .await
            .is_err()
        {
            tracing::warn!("clip writes still queued after drain timeout");
        }
        if let Err(e) = self.store.call(|db| db.checkpoint()).await {
            tracing::warn!(error = %e, "checkpoint failed");
        }
        tracing::info!("relay stopped");
    }

    /// Shuts down and waits.
    pub async fn stop(self) {
        self.shutdown();
        self.wait().await;
    }
}
