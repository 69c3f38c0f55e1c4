//! `clipmesh run` on the ClipCascade profile: the OS clipboard ↔ STOMP on
//! `/clipsocket`, with ClipCascade's encryption.
//!
//! The profile (server, user name, the password's SHA3 hex for logging in
//! again, the derived key and the session cookie) is kept in
//! `clipcascade.json`, 0600, in the config directory. The loop logs in
//! again when the session is gone (401, or the original server's redirect),
//! reconnects with back-off, answers heart-beats, drops its own echo by a
//! hash of the payload, and never logs contents or keys.

use super::crypto::CcKey;
use super::payload::{from_wire, to_wire, Limits};
use super::web::{Web, WebError};
use crate::clipboard::{ClipboardHandle, LocalEvent};
use crate::config::SyncOptions;
use crate::state::write_atomic;
use crate::sync::{local_files_hash, LocalDecision, SyncEngine};
use crate::tls::TrustRoots;
use clipmesh_proto::content::FileBody;
use clipmesh_proto::stomp::{self, Command, StompFrame};
use clipmesh_proto::{ClipContent, ContentHash, DeviceId, FileEntry};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

/// What the loop has seen, to drop repeats and echoes.
struct Seen {
    /// Hashes of the payloads this device sent: the server echoes them back.
    sent: VecDeque<[u8; 32]>,
    /// The local clipboard's last item, through the device engine's own
    /// "is this new?" decision (only repeats matter here: this profile
    /// applies what arrives, newest last).
    local: SyncEngine,
}

impl Default for Seen {
    fn default() -> Self {
        Self {
            sent: VecDeque::new(),
            local: SyncEngine::new(DeviceId(0)),
        }
    }
}

/// File name of the profile in the config directory.
pub const PROFILE_FILE: &str = "clipcascade.json";
/// Payload hashes remembered to drop our own echo.
const ECHO_MEMORY: usize = 32;
/// The receipt asked for on `SUBSCRIBE`.
const SUBSCRIBED_RECEIPT: &str = "sub-0";
/// Longest wait between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The stored profile.
#[derive(Serialize, Deserialize)]
pub struct Profile {
    /// Server base URL.
    pub server: String,
    /// User name.
    pub username: String,
    /// SHA3-512 hex of the password (what the login sends).
    pub login_hash: String,
    /// The ClipCascade key, hex.
    pub key: String,
    /// The session cookie.
    pub cookie: String,
    /// Trusted certificates for the server, if not the built-in roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("server", &self.server)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.login_hash.zeroize();
        self.key.zeroize();
        self.cookie.zeroize();
    }
}

impl Profile {
    /// Loads the profile of a config directory, if it has one.
    pub fn load(dir: &Path) -> std::io::Result<Option<Self>> {
        match std::fs::read(dir.join(PROFILE_FILE)) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Saves it (0600).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let b = Zeroizing::new(serde_json::to_vec(self).map_err(std::io::Error::other)?);
        write_atomic(&dir.join(PROFILE_FILE), &b, true)
    }

    /// The ClipCascade key.
    pub fn cc_key(&self) -> Option<CcKey> {
        let b = Zeroizing::new(hex::decode(self.key.as_str()).ok()?);
        Some(CcKey::from_bytes(b.as_slice().try_into().ok()?))
    }

    fn web(&self) -> Result<Web, String> {
        let roots = TrustRoots::load(self.ca_file.as_deref()).map_err(|e| e.to_string())?;
        Ok(Web::new(&self.server, &roots))
    }
}

/// Why one connection ended.
enum End {
    /// Log in again, then reconnect.
    Relogin,
    /// Reconnect after back-off.
    Retry(String),
    /// Stop.
    Cancelled,
}

/// Runs the profile until `cancel`.
pub async fn run(
    dir: PathBuf,
    mut profile: Profile,
    opts: SyncOptions,
    clipboard: ClipboardHandle,
    mut local: mpsc::Receiver<LocalEvent>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let key = profile
        .cc_key()
        .ok_or_else(|| anyhow::anyhow!("corrupt {PROFILE_FILE}: log in again"))?;
    let mut sent = Seen::default();
    let mut backoff = Duration::from_secs(1);
    loop {
        let end = connection(
            &dir,
            &mut profile,
            &key,
            &opts,
            &clipboard,
            &mut local,
            &mut sent,
            &cancel,
        )
        .await;
        match end {
            End::Cancelled => return Ok(()),
            End::Relogin => {
                let p = (
                    profile.web(),
                    profile.username.clone(),
                    profile.login_hash.clone(),
                );
                let res = tokio::task::spawn_blocking(move || {
                    p.0.map_err(WebError::Bad).and_then(|w| w.login(&p.1, &p.2))
                })
                .await?;
                match res {
                    Ok(c) => {
                        profile.cookie = c;
                        if let Err(e) = profile.save(&dir) {
                            tracing::warn!(error = %e, "saving the ClipCascade session failed");
                        }
                        tracing::info!("logged in to the ClipCascade server again");
                        continue;
                    }
                    Err(WebError::BadCredentials) => {
                        anyhow::bail!("the ClipCascade server refused the stored login; run `clipmesh login --profile clipcascade` again")
                    }
                    Err(e) => tracing::warn!(error = %e, "ClipCascade login failed"),
                }
            }
            End::Retry(why) => tracing::info!(%why, "ClipCascade connection ended"),
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn ws_url(server: &str) -> String {
    let base = server.trim_end_matches('/');
    let base = base
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| base.strip_prefix("http://").map(|r| format!("ws://{r}")))
        .unwrap_or_else(|| base.to_owned());
    format!("{base}/clipsocket")
}

fn frame_text(f: &StompFrame) -> Message {
    // Our frames are UTF-8 (JSON bodies, ASCII headers).
    Message::Text(String::from_utf8_lossy(&f.encode()).into_owned().into())
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    dir: &Path,
    profile: &mut Profile,
    key: &CcKey,
    opts: &SyncOptions,
    clipboard: &ClipboardHandle,
    local: &mut mpsc::Receiver<LocalEvent>,
    sent: &mut Seen,
    cancel: &CancellationToken,
) -> End {
    // L from the server (also checks the session).
    let (web, cookie) = match profile.web() {
        Ok(w) => (w, profile.cookie.to_string()),
        Err(e) => return End::Retry(e),
    };
    let c2 = cookie.clone();
    let max_size = match tokio::task::spawn_blocking(move || web.max_size(&c2)).await {
        Ok(Ok(l)) => l,
        Ok(Err(WebError::Unauthorized)) => return End::Relogin,
        Ok(Err(e)) => return End::Retry(e.to_string()),
        Err(e) => return End::Retry(e.to_string()),
    };
    let limits = Limits {
        max_size: max_size.min(opts.max_item_bytes),
        max_image_bytes: opts.max_image_bytes,
        max_files: opts.max_files,
    };
    let Ok(mut req) = ws_url(&profile.server).into_client_request() else {
        return End::Retry("bad server URL".into());
    };
    let Ok(v) = HeaderValue::from_str(&format!("JSESSIONID={cookie}")) else {
        return End::Relogin;
    };
    req.headers_mut().insert("Cookie", v);
    let connector = TrustRoots::load(profile.ca_file.as_deref())
        .ok()
        .and_then(|r| r.ws_connector());
    let mut ws =
        match tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector).await {
            Ok((ws, _)) => ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(r))
                if matches!(r.status().as_u16(), 401 | 302 | 303 | 403) =>
            {
                return End::Relogin
            }
            Err(e) => return End::Retry(e.to_string()),
        };
    let connect = StompFrame::new(Command::Connect)
        .header("accept-version", "1.0,1.1")
        .header("heart-beat", "0,20000");
    let subscribe = StompFrame::new(Command::Subscribe)
        .header("id", "sub-0")
        .header("destination", "/user/queue/cliptext")
        .header("receipt", SUBSCRIBED_RECEIPT);
    if ws.send(frame_text(&connect)).await.is_err()
        || ws.send(frame_text(&subscribe)).await.is_err()
    {
        return End::Retry("handshake write failed".into());
    }
    tracing::info!(server = %profile.server, "connected to the ClipCascade server");
    let _ = dir;
    let stomp_limits = stomp::Limits {
        max_message: usize::try_from(max_size.saturating_mul(2))
            .unwrap_or(usize::MAX)
            .saturating_add(64 * 1024),
        ..stomp::Limits::default()
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => {
                let _ = ws.send(frame_text(&StompFrame::new(Command::Disconnect))).await;
                return End::Cancelled;
            }
            ev = local.recv() => {
                let Some(ev) = ev else { return End::Cancelled };
                if opts.receive_only {
                    continue;
                }
                let repeat = match &ev {
                    LocalEvent::Clip(c) => sent.local.on_local(&c.content, c.at_ms),
                    LocalEvent::Files(f) => sent.local.on_local_files(&f.paths),
                };
                if repeat == LocalDecision::Unchanged {
                    continue;
                }
                let content = match ev {
                    LocalEvent::Clip(c) => c.content,
                    LocalEvent::Files(f) => match read_files(&f.paths, &limits) {
                        Some(c) => c,
                        None => continue,
                    },
                };
                if !opts.allows(&content) {
                    continue;
                }
                let (kind, plain) = match to_wire(&content, &limits) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::info!(reason = %e, "not sending this item on the ClipCascade profile");
                        continue;
                    }
                };
                let plain = Zeroizing::new(plain);
                let Ok(payload) = key.seal(&plain) else { continue };
                sent.sent.push_back(Sha256::digest(payload.as_bytes()).into());
                if sent.sent.len() > ECHO_MEMORY {
                    sent.sent.pop_front();
                }
                let body = serde_json::json!({"payload": payload, "type": kind}).to_string();
                let f = StompFrame::new(Command::Send)
                    .header("destination", "/app/cliptext")
                    .header("content-type", "application/json")
                    .body(body);
                if ws.send(frame_text(&f)).await.is_err() {
                    return End::Retry("send failed".into());
                }
                tracing::debug!(kind, "sent a ClipCascade item");
            }
            msg = ws.next() => {
                let bytes = match msg {
                    Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(c))) => {
                        if c.as_ref().is_some_and(|c| u16::from(c.code) == 4001) {
                            return End::Relogin;
                        }
                        return End::Retry("closed by the server".into());
                    }
                    Some(Err(e)) => return End::Retry(e.to_string()),
                    None => return End::Retry("connection lost".into()),
                };
                // A heart-beat: answer it, as the desktop client does.
                if bytes.iter().all(|b| *b == b'\n' || *b == b'\r') {
                    if ws.send(Message::Text("\n".into())).await.is_err() {
                        return End::Retry("send failed".into());
                    }
                    continue;
                }
                let frames = match stomp::decode(&bytes, &stomp_limits) {
                    Ok(f) => f,
                    Err(e) => return End::Retry(format!("bad STOMP from the server: {e}")),
                };
                for f in frames {
                    match f.command {
                        Command::Message => {
                            if opts.send_only {
                                continue;
                            }
                            on_message(dir, key, opts, &limits, clipboard, sent, &f.body).await;
                        }
                        // Servers that honour receipts confirm the
                        // subscription; others ignore the header.
                        Command::Receipt if f.get("receipt-id") == Some(SUBSCRIBED_RECEIPT) => {
                            tracing::info!("subscribed to ClipCascade messages");
                        }
                        Command::Error => {
                            return End::Retry(format!("server error: {}", f.get("message").unwrap_or("")));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct Incoming {
    payload: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

async fn on_message(
    _dir: &Path,
    key: &CcKey,
    opts: &SyncOptions,
    limits: &Limits,
    clipboard: &ClipboardHandle,
    sent: &mut Seen,
    body: &[u8],
) {
    let Ok(m) = serde_json::from_slice::<Incoming>(body) else {
        tracing::debug!("undecodable ClipCascade message");
        return;
    };
    let h: [u8; 32] = Sha256::digest(m.payload.as_bytes()).into();
    if let Some(i) = sent.sent.iter().position(|x| *x == h) {
        sent.sent.remove(i);
        return;
    }
    let Ok(plain) = key.open(&m.payload) else {
        tracing::info!("a ClipCascade item did not decrypt (another password, or encryption off)");
        return;
    };
    let kind = m.kind.as_deref().unwrap_or("text");
    let content = match from_wire(kind, plain, limits) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(reason = %e, "refused a received ClipCascade item");
            return;
        }
    };
    if !opts.allows(&content) {
        return;
    }
    let res = match content {
        ClipContent::Files(entries) => match write_files(opts, entries) {
            Ok(paths) => {
                sent.local.record_applied(local_files_hash(&paths));
                clipboard.apply_files(paths).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "writing received files failed");
                return;
            }
        },
        other => {
            sent.local.record_applied(ContentHash::of(&other));
            clipboard.apply(other).await
        }
    };
    match res {
        Ok(()) => tracing::debug!(kind, "applied a ClipCascade item"),
        Err(e) => tracing::warn!(error = %e, "putting a ClipCascade item on the clipboard failed"),
    }
}

/// Reads a copied file list (regular files only) within the limits.
fn read_files(paths: &[PathBuf], limits: &Limits) -> Option<ClipContent> {
    let mut entries = Vec::new();
    let mut total = 0u64;
    for p in paths.iter().take(limits.max_files) {
        let meta = std::fs::metadata(p).ok()?;
        if !meta.is_file() {
            continue;
        }
        total = total.saturating_add(meta.len());
        if total > limits.max_size {
            tracing::info!("copied files exceed the ClipCascade size limit; not sent");
            return None;
        }
        let bytes = std::fs::read(p).ok()?;
        let name = p.file_name()?.to_string_lossy().into_owned();
        entries.push(FileEntry {
            name,
            size: bytes.len() as u64,
            body: FileBody::Inline(bytes),
        });
    }
    (!entries.is_empty()).then_some(ClipContent::Files(entries))
}

/// Writes received files (already sanitised names) into a fresh folder in
/// the download directory; gives their paths.
fn write_files(opts: &SyncOptions, entries: Vec<FileEntry>) -> std::io::Result<Vec<PathBuf>> {
    let base = opts
        .download_dir()
        .ok_or_else(|| std::io::Error::other("no download folder: set download_dir in [sync]"))?;
    let dir = base.join(format!("clipcascade-{}", crate::clock::now_ms()));
    std::fs::create_dir_all(&dir)?;
    let mut out = Vec::new();
    for e in entries {
        let FileBody::Inline(bytes) = e.body else {
            continue;
        };
        let safe = clipmesh_proto::SafePath::new(&e.name);
        let path = safe.join_to(&dir);
        std::fs::write(&path, bytes)?;
        out.push(path);
    }
    Ok(out)
}
