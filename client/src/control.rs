//! The daemon's local control socket: `clipmesh status` and `clipmesh send`
//! talk to a running `clipmesh run` through it.
//!
//! One JSON request line, one JSON response line, then the connection
//! closes. On Unix it is `control.sock` in the config directory, mode 0600
//! inside the 0700 directory, so only the user can connect.
//!
//! On Windows it is a named pipe, `\\.\pipe\clipmesh-<random>`, local
//! clients only. Its name and a random token are written to `control.json`
//! in the config directory (under `%APPDATA%`, which only the user, SYSTEM
//! and administrators can read); the first line a client sends must be
//! that token. So only the same user can talk to the daemon:
//!
//! - the pipe keeps Windows' default security for pipes: full access for
//!   its creator, SYSTEM and administrators, read-only for everyone else —
//!   and a request has to be written;
//! - the name is new and random per daemon and the daemon creates the first
//!   instance (`first_pipe_instance`), so nobody can create the pipe before
//!   it and catch a client's request; adding instances to an existing pipe
//!   needs rights only its creator has;
//! - the token proves the client could read the user's config directory.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Socket file name (Unix).
pub const SOCKET_FILE: &str = "control.sock";
/// Pipe-name-and-token file name (Windows).
pub const PORT_FILE: &str = "control.json";
/// Longest request line accepted.
pub const MAX_REQUEST: u64 = 16 << 20;
/// Depth of the queue from the socket to the daemon.
pub const REQUEST_QUEUE: usize = 16;

/// A request to the daemon.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// Report the daemon's state.
    Status,
    /// Publish this text as a clip.
    Send {
        /// The text (never logged).
        text: String,
    },
    /// Download the received item waiting over `auto_download_max` and put
    /// it on the clipboard; answered when it is there (or failed).
    Fetch,
}

/// A device in the status output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OnlineDevice {
    /// Device id.
    pub id: u64,
    /// Device name.
    pub name: String,
}

/// The daemon's state, as `clipmesh status --json` prints it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// Whether the relay link is up.
    pub connected: bool,
    /// The transport in use.
    pub path: StatusPath,
    /// The `--mode` the daemon runs in: `auto`, `relay` or `p2p`.
    #[serde(default)]
    pub mode: String,
    /// Each other online device and how clips reach it (`path`: `p2p`,
    /// `relay` or `none`) with the state of the direct link.
    #[serde(default)]
    pub peers: Vec<crate::p2p::PeerStatus>,
    /// This device's id.
    pub device_id: u64,
    /// The user's devices online now (this one included).
    pub online: Vec<OnlineDevice>,
    /// When a clip was last sent or applied, ms since the epoch.
    pub last_sync_ms: Option<u64>,
    /// The last problem, one line.
    pub last_error: Option<String>,
    /// Image and file transfers running now (sizes and counts only).
    #[serde(default)]
    pub transfers: Vec<crate::transfer::TransferStatus>,
    /// A received item waiting for `clipmesh fetch` (sizes and counts only).
    #[serde(default)]
    pub pending: Option<crate::transfer::PendingItem>,
    /// Protocol v2: the key epoch this device moved to while running
    /// (`None`: the one it started with).
    #[serde(default)]
    pub key_epoch: Option<u32>,
    /// Protocol v2: devices that appeared in the account since the daemon
    /// started, with their safety numbers (newest last).
    #[serde(default)]
    pub new_devices: Vec<AnnouncedDevice>,
}

/// A device announced in `clipmesh status` ([`Status::new_devices`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AnnouncedDevice {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its safety number.
    pub fingerprint: String,
}

/// How clips leave this device (`Status::path`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum StatusPath {
    /// Through the relay only.
    #[default]
    #[serde(rename = "relay")]
    Relay,
    /// Over direct links only (`--mode p2p`).
    #[serde(rename = "p2p")]
    P2p,
    /// Auto mode with at least one open direct link: direct where open, the relay for the rest.
    #[serde(rename = "relay+p2p")]
    RelayP2p,
}

impl StatusPath {
    /// The name `clipmesh status` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Relay => "relay",
            Self::P2p => "p2p",
            Self::RelayP2p => "relay+p2p",
        }
    }
}

impl std::fmt::Display for StatusPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for StatusPath {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The daemon's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// For `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// For `send`: the room sequence of the published clip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// For failures: one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A failure answer.
    pub fn error(msg: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(msg.into()),
            ..Self::default()
        }
    }
}

/// Errors of the control socket.
#[derive(Debug, Error)]
pub enum ControlError {
    /// No daemon answers on this config directory.
    #[error("the clipmesh daemon is not running (start it with `clipmesh run`)")]
    NotRunning,
    /// A daemon already runs on this config directory.
    #[error("a clipmesh daemon is already running for this config directory")]
    AlreadyRunning,
    /// Socket IO failed.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    /// The other side sent something unreadable.
    #[error("control socket: malformed message")]
    Malformed,
}

/// A request with the channel for its answer.
pub type Incoming = (Request, oneshot::Sender<Response>);

/// The listening side, owned by the daemon.
#[derive(Debug)]
pub struct ControlServer {
    #[cfg(unix)]
    listener: tokio::net::UnixListener,
    /// The pipe instance waiting for the next client.
    #[cfg(windows)]
    listener: tokio::net::windows::named_pipe::NamedPipeServer,
    /// The pipe's name, for the next instances.
    #[cfg(windows)]
    pipe: String,
    #[cfg(windows)]
    token: String,
    /// File to remove on shutdown.
    path: PathBuf,
}

impl ControlServer {
    /// Binds the control socket in `dir`, refusing if a live daemon owns it.
    pub async fn bind(dir: &Path) -> Result<Self, ControlError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.join(SOCKET_FILE);
            if path.exists() {
                if tokio::net::UnixStream::connect(&path).await.is_ok() {
                    return Err(ControlError::AlreadyRunning);
                }
                // Stale socket from a daemon that died.
                let _ = std::fs::remove_file(&path);
            }
            let listener = tokio::net::UnixListener::bind(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            Ok(Self { listener, path })
        }
        #[cfg(windows)]
        {
            use rand::RngCore;
            let path = dir.join(PORT_FILE);
            if let Ok(ep) = read_endpoint(&path) {
                if open_pipe(&ep.pipe).await.is_ok() {
                    return Err(ControlError::AlreadyRunning);
                }
            }
            let mut raw = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut raw);
            let token = hex::encode(raw);
            let mut name = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut name);
            let pipe = format!(r"\\.\pipe\clipmesh-{}", hex::encode(name));
            let listener = tokio::net::windows::named_pipe::ServerOptions::new()
                .first_pipe_instance(true)
                .reject_remote_clients(true)
                .create(&pipe)?;
            let ep = Endpoint {
                pipe: pipe.clone(),
                token: token.clone(),
            };
            let json = serde_json::to_vec(&ep).map_err(|_| ControlError::Malformed)?;
            crate::state::write_atomic(&path, &json, true)?;
            Ok(Self {
                listener,
                pipe,
                token,
                path,
            })
        }
    }

    /// Serves requests until `cancel`, forwarding each to `to_daemon`.
    /// Connection tasks are tracked and awaited before returning.
    pub async fn serve(mut self, to_daemon: mpsc::Sender<Incoming>, cancel: CancellationToken) {
        let tracker = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => break,
                a = self.accept() => a,
            };
            let stream = match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "control accept failed");
                    #[cfg(windows)]
                    if self.listener_broken() {
                        break;
                    }
                    continue;
                }
            };
            let tx = to_daemon.clone();
            let c = cancel.clone();
            #[cfg(windows)]
            let token = Some(self.token.clone());
            #[cfg(unix)]
            let token: Option<String> = None;
            tracker.spawn(async move {
                tokio::select! {
                    _ = c.cancelled() => {}
                    r = handle_conn(stream, token, tx) => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "control connection failed");
                        }
                    }
                }
            });
        }
        tracker.close();
        tracker.wait().await;
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlServer {
    /// The next connected client.
    #[cfg(unix)]
    async fn accept(&mut self) -> std::io::Result<tokio::net::UnixStream> {
        self.listener.accept().await.map(|(s, _)| s)
    }

    /// The next connected client: the waiting instance, replaced by a new
    /// one for the client after it.
    #[cfg(windows)]
    async fn accept(
        &mut self,
    ) -> std::io::Result<tokio::net::windows::named_pipe::NamedPipeServer> {
        self.listener.connect().await?;
        let next = tokio::net::windows::named_pipe::ServerOptions::new()
            .reject_remote_clients(true)
            .create(&self.pipe)?;
        Ok(std::mem::replace(&mut self.listener, next))
    }

    /// Whether no new instance can be made (accepting again would fail
    /// the same way at once).
    #[cfg(windows)]
    fn listener_broken(&self) -> bool {
        tokio::net::windows::named_pipe::ServerOptions::new()
            .reject_remote_clients(true)
            .create(&self.pipe)
            .is_err()
    }
}

async fn handle_conn<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    token: Option<String>,
    to_daemon: mpsc::Sender<Incoming>,
) -> Result<(), ControlError> {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r.take(MAX_REQUEST));
    let mut line = String::new();
    if let Some(expected) = token {
        r.read_line(&mut line).await?;
        let ok: bool = {
            use subtle_eq::ct_eq;
            ct_eq(line.trim_end().as_bytes(), expected.as_bytes())
        };
        if !ok {
            return Err(ControlError::Malformed);
        }
        line.clear();
    }
    r.read_line(&mut line).await?;
    let resp = match serde_json::from_str::<Request>(line.trim_end()) {
        Ok(req) => {
            let (tx, rx) = oneshot::channel();
            if to_daemon.send((req, tx)).await.is_err() {
                Response::error("daemon is shutting down")
            } else {
                rx.await
                    .unwrap_or_else(|_| Response::error("daemon is shutting down"))
            }
        }
        Err(_) => Response::error("malformed request"),
    };
    let mut out = serde_json::to_vec(&resp).map_err(|_| ControlError::Malformed)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await?;
    Ok(())
}

/// Constant-time comparison without pulling in another dependency.
mod subtle_eq {
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(windows)]
#[derive(Serialize, Deserialize)]
struct Endpoint {
    pipe: String,
    token: String,
}

/// Opens the client end of `pipe`, waiting a little while every instance
/// is busy (another client is being served).
#[cfg(windows)]
async fn open_pipe(
    pipe: &str,
) -> std::io::Result<tokio::net::windows::named_pipe::NamedPipeClient> {
    /// `ERROR_PIPE_BUSY`.
    const PIPE_BUSY: i32 = 231;
    let mut tries = 0;
    loop {
        match tokio::net::windows::named_pipe::ClientOptions::new().open(pipe) {
            Err(e) if e.raw_os_error() == Some(PIPE_BUSY) && tries < 50 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            r => return r,
        }
    }
}

#[cfg(windows)]
fn read_endpoint(path: &Path) -> Result<Endpoint, ControlError> {
    let b = std::fs::read(path)?;
    serde_json::from_slice(&b).map_err(|_| ControlError::Malformed)
}

/// Sends one request to the daemon of `dir` and returns its answer.
pub async fn request(dir: &Path, req: &Request) -> Result<Response, ControlError> {
    let mut line = serde_json::to_vec(req).map_err(|_| ControlError::Malformed)?;
    line.push(b'\n');
    #[cfg(unix)]
    let stream = {
        let path = dir.join(SOCKET_FILE);
        match tokio::net::UnixStream::connect(&path).await {
            Ok(s) => s,
            Err(_) => return Err(ControlError::NotRunning),
        }
    };
    #[cfg(windows)]
    let stream = {
        let ep = read_endpoint(&dir.join(PORT_FILE)).map_err(|_| ControlError::NotRunning)?;
        let mut s = match open_pipe(&ep.pipe).await {
            Ok(s) => s,
            Err(_) => return Err(ControlError::NotRunning),
        };
        s.write_all(format!("{}\n", ep.token).as_bytes()).await?;
        s
    };
    let (r, mut w) = tokio::io::split(stream);
    w.write_all(&line).await?;
    let mut r = BufReader::new(r.take(MAX_REQUEST));
    let mut answer = String::new();
    r.read_line(&mut answer).await?;
    serde_json::from_str(answer.trim_end()).map_err(|_| ControlError::Malformed)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn status_roundtrip_and_single_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let server = ControlServer::bind(dir.path()).await.unwrap();
        assert!(matches!(
            ControlServer::bind(dir.path()).await,
            Err(ControlError::AlreadyRunning)
        ));
        let (tx, mut rx) = mpsc::channel::<Incoming>(4);
        let cancel = CancellationToken::new();
        let serving = tokio::spawn(server.serve(tx, cancel.clone()));
        let daemon = tokio::spawn(async move {
            let (req, answer) = rx.recv().await.unwrap();
            assert_eq!(req, Request::Status);
            answer
                .send(Response {
                    ok: true,
                    status: Some(Status {
                        connected: true,
                        path: StatusPath::Relay,
                        ..Status::default()
                    }),
                    ..Response::default()
                })
                .unwrap();
        });
        let resp = request(dir.path(), &Request::Status).await.unwrap();
        assert!(resp.ok);
        assert!(resp.status.unwrap().connected);
        daemon.await.unwrap();
        cancel.cancel();
        serving.await.unwrap();
        assert!(!dir.path().join(SOCKET_FILE).exists());
        assert!(matches!(
            request(dir.path(), &Request::Status).await,
            Err(ControlError::NotRunning)
        ));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn socket_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let _server = ControlServer::bind(dir.path()).await.unwrap();
        let mode = std::fs::metadata(dir.path().join(SOCKET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn ct_eq_works() {
        assert!(subtle_eq::ct_eq(b"abc", b"abc"));
        assert!(!subtle_eq::ct_eq(b"abc", b"abd"));
        assert!(!subtle_eq::ct_eq(b"abc", b"ab"));
    }
}
