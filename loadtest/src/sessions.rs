//! Device sessions on the relay for the load tool: sign up users and log in
//! extra devices through the HTTP API, and cache the tokens in a file so
//! repeated runs against the same relay data directory reuse them.
//!
//! The relay must run with `--signup open`. Each session costs the relay one
//! Argon2id hash of the auth key, so for 100,000 sessions run it with small
//! hashing parameters (see docs/benchmarks.md).

use crate::http::post_json;
use crate::target::Target;
use anyhow::{bail, Context};
use clipmesh_proto::api::{LoginRequest, LoginResponse, SignupRequest};
use clipmesh_proto::keys::{KEY_LEN, SALT_LEN, WRAPPED_LEN};
use clipmesh_proto::KdfParams;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How often one request is retried after a 429 or a transport error.
const MAX_ATTEMPTS: u32 = 6;
/// Longest wait honoured from a `Retry-After` header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Where the token cache lives unless `--sessions` says otherwise: the
/// temp directory, never the working tree.
pub fn default_path() -> std::path::PathBuf {
    std::env::temp_dir().join("clipmesh-load-sessions.json")
}

/// Tokens of every device of every load-tool user, as cached on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Sessions {
    /// `users[u][d]` is the bearer token of device `d` of user `u`.
    pub users: Vec<Vec<String>>,
}

impl Sessions {
    /// Loads `path` if it holds at least `users` users with `devices` devices
    /// each; otherwise creates the missing ones on the relay and rewrites it.
    pub async fn ensure(
        target: &Arc<Target>,
        path: &Path,
        users: usize,
        devices: usize,
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        let mut have = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<Sessions>(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Sessions::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        have.users.retain(|d| d.len() >= devices);
        if have.users.len() >= users {
            have.users.truncate(users);
            for d in &mut have.users {
                d.truncate(devices);
            }
            tracing::info!(users, devices, "reusing cached sessions");
            return Ok(have);
        }
        let missing = users - have.users.len();
        tracing::info!(missing, devices, "creating sessions on the relay");
        // A per-run prefix keeps usernames unique across runs on one relay.
        let prefix: u32 = rand::random();
        let created = create(target, prefix, missing, devices, concurrency).await?;
        have.users.extend(created);
        let json = serde_json::to_vec(&have).context("encoding sessions")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        Ok(have)
    }
}

async fn create(
    target: &Arc<Target>,
    prefix: u32,
    users: usize,
    devices: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Vec<String>>> {
    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for u in 0..users {
        let target = Arc::clone(target);
        let permits = Arc::clone(&permits);
        let done = Arc::clone(&done);
        set.spawn(async move {
            let _permit = permits.acquire_owned().await.context("semaphore closed")?;
            let username = format!("load{prefix:08x}u{u}");
            let tokens = create_user(&target, &username, devices).await?;
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n % 1000 == 0 {
                tracing::info!(
                    users = n,
                    elapsed_s = started.elapsed().as_secs(),
                    "sessions"
                );
            }
            Ok::<_, anyhow::Error>((u, tokens))
        });
    }
    let mut out = vec![Vec::new(); users];
    while let Some(joined) = set.join_next().await {
        let (u, tokens) = joined.context("session task panicked")??;
        if let Some(slot) = out.get_mut(u) {
            *slot = tokens;
        }
    }
    tracing::info!(
        users,
        devices,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "sessions created"
    );
    Ok(out)
}

/// Environment variable with the relay's setup token (from its data
/// directory), sent with every signup.
pub const ENV_SETUP_TOKEN: &str = "CLIPMESH_SETUP_TOKEN";

async fn create_user(
    target: &Target,
    username: &str,
    devices: usize,
) -> anyhow::Result<Vec<String>> {
    // Random stand-ins: the relay only stores these, it never derives them.
    let auth_key = hex::encode(rand::random::<[u8; KEY_LEN]>());
    let salt = hex::encode(rand::random::<[u8; SALT_LEN]>());
    let wrapped: Vec<u8> = (0..WRAPPED_LEN).map(|_| rand::random::<u8>()).collect();
    let signup = SignupRequest {
        username: username.to_owned(),
        salt,
        kdf: KdfParams::default(),
        auth_key: auth_key.clone(),
        wrapped_data_key: hex::encode(wrapped),
        device_name: "load-0".to_owned(),
        // A fresh relay's first account needs its setup token; later ones
        // ignore it.
        setup_token: std::env::var(ENV_SETUP_TOKEN)
            .ok()
            .filter(|t| !t.is_empty()),
    };
    let mut tokens = Vec::with_capacity(devices);
    let first: LoginResponse = call(target, "/api/v1/signup", &signup).await?;
    tokens.push(first.token);
    for d in 1..devices {
        let login = LoginRequest {
            username: username.to_owned(),
            auth_key: auth_key.clone(),
            device_name: format!("load-{d}"),
        };
        let resp: LoginResponse = call(target, "/api/v1/login", &login).await?;
        tokens.push(resp.token);
    }
    Ok(tokens)
}

async fn call<T: Serialize, R: for<'de> Deserialize<'de>>(
    target: &Target,
    path: &str,
    body: &T,
) -> anyhow::Result<R> {
    let body = serde_json::to_vec(body).context("encoding request")?;
    let mut last = String::new();
    for attempt in 0..MAX_ATTEMPTS {
        match post_json(target, path, &body).await {
            Ok(resp) if resp.status == 200 => {
                return serde_json::from_slice(&resp.body)
                    .with_context(|| format!("decoding {path} response"));
            }
            Ok(resp) if resp.status == 429 || resp.status == 503 => {
                let wait = Duration::from_secs(resp.retry_after.unwrap_or(1)).min(MAX_RETRY_AFTER);
                last = format!("status {}", resp.status);
                tracing::debug!(path, attempt, ?wait, "throttled; retrying");
                tokio::time::sleep(wait).await;
            }
            Ok(resp) => bail!(
                "{path}: status {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            ),
            Err(e) => {
                last = format!("{e:#}");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    bail!("{path}: gave up after {MAX_ATTEMPTS} attempts: {last}")
}
