//! Device sessions on the relay for the load tool: sign up users and log in
//! extra devices through the HTTP API, and cache the tokens in a file so
//! repeated runs against the same relay data directory reuse them.
//!
//! The relay must run with `--signup open`. Each session costs the relay one
//! Argon2id hash of the auth key, so for 100,000 sessions run it with small
//! hashing parameters (see docs/benchmarks.md).

use crate::http::{post_json, send};
use crate::target::{ServerKind, Target};
use anyhow::{bail, Context};
use clipmesh_proto::api::{LoginRequest, LoginResponse, SignupRequest};
use clipmesh_proto::keys::{KEY_LEN, SALT_LEN, WRAPPED_LEN};
use clipmesh_proto::KdfParams;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
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

/// The cache of ClipCascade sessions next to `path` (the tokens cache):
/// `NAME-clipcascade.json`. Kept apart: its entries are cookies.
pub fn clipcascade_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sessions".into());
    path.with_file_name(format!("{stem}-clipcascade.json"))
}

/// Tokens of every device of every load-tool user, as cached on disk
/// (for `--server clipcascade`: each device's `JSESSIONID`).
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
            let tokens = match target.kind {
                ServerKind::Clipcascade => create_cc_user(&target, &username, devices).await?,
                _ => create_user(&target, &username, devices).await?,
            };
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

/// A user with ClipCascade compatibility on and `devices` ClipCascade
/// sessions: signs up (one native device, which holds no socket), turns
/// compatibility on with `PUT /api/v1/clipcascade`, then logs in `devices`
/// times the way ClipCascade clients do. Gives the session cookies.
async fn create_cc_user(
    target: &Target,
    username: &str,
    devices: usize,
) -> anyhow::Result<Vec<String>> {
    use sha3::Digest;
    let native = create_user(target, username, 1).await?;
    let token = native.first().context("signup gave no token")?;
    // The ClipCascade password is random too: only its SHA3 hex is sent.
    let password = hex::encode(rand::random::<[u8; 16]>());
    let login_hash = hex::encode(sha3::Sha3_512::digest(password.as_bytes()));
    let body = serde_json::json!({ "login_hash": login_hash }).to_string();
    let headers = [
        format!("Authorization: Bearer {token}"),
        "Content-Type: application/json".to_owned(),
    ];
    let mut attempt = 0;
    loop {
        let r = send(
            target,
            "PUT",
            "/api/v1/clipcascade",
            &headers,
            body.as_bytes(),
        )
        .await?;
        match r.status {
            204 => break,
            // The relay bounds concurrent hashing: busy is worth a retry.
            429 | 503 if attempt + 1 < MAX_ATTEMPTS => {
                attempt += 1;
                let wait = Duration::from_secs(r.retry_after.unwrap_or(1)).min(MAX_RETRY_AFTER);
                tokio::time::sleep(wait).await;
            }
            s => bail!(
                "PUT /api/v1/clipcascade: status {s}: {}",
                String::from_utf8_lossy(&r.body)
            ),
        }
    }
    let mut cookies = Vec::with_capacity(devices);
    for _ in 0..devices {
        cookies.push(cc_login(target, username, &login_hash).await?);
    }
    Ok(cookies)
}

/// ClipCascade's login: `GET /login` (cookie, `_csrf`), form `POST /login`;
/// success is the redirect to `/` with the session's new cookie.
async fn cc_login(target: &Target, username: &str, login_hash: &str) -> anyhow::Result<String> {
    let mut last = String::new();
    for attempt in 0..MAX_ATTEMPTS {
        let page = send(target, "GET", "/login", &[], &[]).await?;
        let cookie = page.cookie.context("GET /login set no JSESSIONID")?;
        let html = String::from_utf8_lossy(&page.body);
        let marker = "name=\"_csrf\" value=\"";
        let at = html.find(marker).context("login page has no _csrf")? + marker.len();
        let csrf = html[at..].split('"').next().unwrap_or_default();
        // User names of the load tool and the hex hash are form-safe; the
        // CSRF token is base64url.
        let form = format!("username={username}&password={login_hash}&_csrf={csrf}");
        let headers = [
            format!("Cookie: JSESSIONID={cookie}"),
            "Content-Type: application/x-www-form-urlencoded".to_owned(),
            "User-Agent: clipmesh-load".to_owned(),
        ];
        let r = send(target, "POST", "/login", &headers, form.as_bytes()).await?;
        match r.status {
            302 if r.location.as_deref() == Some("/") => {
                return r.cookie.context("login set no new JSESSIONID");
            }
            429 | 503 => {
                let wait = Duration::from_secs(r.retry_after.unwrap_or(1)).min(MAX_RETRY_AFTER);
                last = format!("status {}", r.status);
                tracing::debug!(attempt, ?wait, "ClipCascade login throttled; retrying");
                tokio::time::sleep(wait).await;
            }
            s => bail!(
                "ClipCascade login refused: status {s}, location {:?}",
                r.location
            ),
        }
    }
    bail!("ClipCascade login: gave up after {MAX_ATTEMPTS} attempts: {last}")
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
