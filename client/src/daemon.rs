//! `clipmesh run`: the sync daemon.
//!
//! ```text
//! clipboard watcher ──LocalChange──▶ sync (dedupe) ──seal──▶ link ──Publish──▶ relay
//! relay ──Deliver──▶ link ──▶ open ──▶ decode ──▶ sync (dedupe, newest wins) ──▶ clipboard.apply
//! control socket ──status / send──▶ daemon
//! (auto, p2p) seal ──▶ p2p manager ──data channel──▶ peer; peer ──▶ p2p ──Deliver──▶ open …
//! copied files / large image ──transfer task (upload blobs)──▶ daemon ──seal──▶ link
//! received Files / ImageBlob ──transfer task (download, verify)──▶ daemon ──▶ clipboard.apply(_files)
//! ```
//!
//! Transfers ([`crate::transfer`]) run as blocking tasks in the tracker and
//! report back through one channel; the loop publishes or applies their
//! result. A received item that finishes after something newer reached the
//! clipboard is stored but not applied (newest wins).
//!
//! The daemon's state (sync engine, status, sequence counter) is owned by
//! one task, the loop in [`run_daemon`]; the link, the control socket and
//! short ack waiters are tasks in its [`TaskTracker`], all stopped through
//! one [`CancellationToken`] and awaited before it returns.

use crate::account::Device;
use crate::clipboard::LocalEvent;
use crate::clock::now_ms;
use crate::config::SyncOptions;
use crate::control::{
    ControlError, ControlServer, Incoming, OnlineDevice, Request, Response, Status, StatusPath,
};
use crate::link::{self, LinkConfig, LinkEvent, LinkExit, LinkHandle};
use crate::p2p::{self, Mode, P2pEvent, P2pHandle, PeerPath};
use crate::replay::ReplayFile;
use crate::state::State;
use crate::sync::{LocalDecision, RemoteDecision, SyncEngine};
use crate::transfer::{self, BlobClient, SendLimits, TransferError, Transfers, WalkLimits};
use clipmesh_proto::{open_clip, seal_clip, ClipContent, ClipItem, ClipKey, DeviceId, DeviceInfo};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long `clipmesh send` through the daemon waits for the relay's ack.
pub const SEND_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the daemon stopped with an error.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// The relay revoked this device.
    #[error("this device's session was revoked; run `clipmesh login` again")]
    Revoked,
    /// The control socket could not be set up.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The CA file is unusable.
    #[error("{0}")]
    Tls(String),
    /// The state file could not be read or written.
    #[error("state file: {0}")]
    State(#[from] std::io::Error),
}

/// Depth of the queue from finished transfer tasks to the daemon loop.
pub const FINISHED_QUEUE: usize = 8;

/// What the daemon needs from the OS clipboard: a way to put an item on it.
/// [`crate::clipboard::ClipboardHandle`] is the real one; tests use fakes.
pub trait ClipboardSink {
    /// Puts `content` on the clipboard.
    fn apply(&self, content: ClipContent) -> impl Future<Output = Result<(), String>>;

    /// Puts a list of local files on the clipboard (received files, in the
    /// download folder). The default refuses.
    fn apply_files(&self, paths: Vec<PathBuf>) -> impl Future<Output = Result<(), String>> {
        let n = paths.len();
        async move { Err(format!("cannot put {n} files on this clipboard")) }
    }
}

impl ClipboardSink for crate::clipboard::ClipboardHandle {
    fn apply(&self, content: ClipContent) -> impl Future<Output = Result<(), String>> {
        let fut = crate::clipboard::ClipboardHandle::apply(self, content);
        async move { fut.await.map_err(|e| e.to_string()) }
    }

    fn apply_files(&self, paths: Vec<PathBuf>) -> impl Future<Output = Result<(), String>> {
        let fut = crate::clipboard::ClipboardHandle::apply_files(self, paths);
        async move { fut.await.map_err(|e| e.to_string()) }
    }
}

/// A transfer task's result, back on the daemon loop.
enum Finished {
    /// A local item was uploaded; publish `content`, dedupe as `dedupe_as`.
    Sent {
        content: ClipContent,
        dedupe_as: ClipContent,
        at_ms: u64,
    },
    /// Received files are in the download folder.
    ReceivedFiles {
        paths: Vec<PathBuf>,
        generation: u64,
    },
    /// A received image is in memory.
    ReceivedImage {
        content: ClipContent,
        generation: u64,
    },
    /// A transfer failed (message already logged).
    Failed { message: String },
    /// An upload whose reference was already published finished.
    Uploaded,
    /// A download asked for by `clipmesh fetch` ended: `result` is one of
    /// the variants above, `answer` waits for it.
    Fetched {
        result: Box<Finished>,
        answer: tokio::sync::oneshot::Sender<Response>,
    },
}

/// Logs a failed transfer (one line, no names) and turns it into a status
/// message.
fn failed(what: &str, e: TransferError) -> Finished {
    if matches!(e, TransferError::Cancelled) {
        tracing::debug!("{what}: {e}");
    } else {
        tracing::error!("{what}: {e}");
    }
    Finished::Failed {
        message: format!("{what}: {e}"),
    }
}

fn online_list(online: &[DeviceInfo]) -> Vec<OnlineDevice> {
    online
        .iter()
        .map(|d| OnlineDevice {
            id: d.id.0,
            name: d.name.clone(),
        })
        .collect()
}

/// The daemon's single-owner state.
struct Daemon<C> {
    device: DeviceId,
    key: ClipKey,
    opts: SyncOptions,
    sync: SyncEngine,
    state: State,
    /// Where the sync engine's replay state persists (see [`crate::replay`]).
    replay: ReplayFile,
    status: Status,
    link: LinkHandle,
    clipboard: C,
    tracker: TaskTracker,
    /// Blob store client for large items.
    blobs: BlobClient,
    /// Running transfers, for status.
    transfers: Transfers,
    /// Where transfer tasks report back.
    finished: mpsc::Sender<Finished>,
    /// Bumped whenever the clipboard's item changes (sent or applied), so
    /// a download that finishes late does not replace something newer.
    generation: u64,
    /// Stops transfer tasks.
    cancel: CancellationToken,
    /// A received item over `auto_download_max`, kept for `clipmesh fetch`.
    pending: Option<transfer::Pending>,
    /// How clips travel (`--mode`).
    mode: Mode,
    /// The direct-link manager (auto and p2p modes).
    p2p: Option<P2pHandle>,
}

/// Runs the daemon for the logged-in device in `dir` until `cancel`, with
/// `clipboard` as the sink and `local` as the stream of local changes,
/// through the relay only ([`Mode::Relay`]).
pub async fn run_daemon<C: ClipboardSink>(
    dir: &Path,
    device: Device,
    clipboard: C,
    local: mpsc::Receiver<LocalEvent>,
    cancel: CancellationToken,
) -> Result<(), DaemonError> {
    let transport = Transport {
        mode: Mode::Relay,
        bind: String::new(),
        idle_close: None,
    };
    run_daemon_mode(dir, device, clipboard, local, cancel, transport).await
}

/// How the daemon moves clips (`clipmesh run --mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    /// Relay, auto or p2p.
    pub mode: Mode,
    /// Local UDP address for direct links (see [`p2p::bind_from_env`]).
    pub bind: String,
    /// Auto mode: close a direct link after this long without a clip.
    pub idle_close: Option<std::time::Duration>,
}

impl Transport {
    /// `mode`, with the bind address from the environment.
    pub fn from_env(mode: Mode) -> Self {
        Self {
            mode,
            bind: p2p::bind_from_env(),
            idle_close: (mode == Mode::Auto).then_some(p2p::IDLE_CLOSE),
        }
    }
}

/// [`run_daemon`] with a transport mode (`clipmesh run --mode`).
pub async fn run_daemon_mode<C: ClipboardSink>(
    dir: &Path,
    device: Device,
    clipboard: C,
    mut local: mpsc::Receiver<LocalEvent>,
    cancel: CancellationToken,
    transport: Transport,
) -> Result<(), DaemonError> {
    let mode = transport.mode;
    let control = ControlServer::bind(dir).await?;
    let state = State::load(dir)?;
    let replay = ReplayFile::new(dir);
    let mut sync = SyncEngine::new(DeviceId(device.account.device_id))
        .with_ttl_ms(device.config.sync.clip_ttl_s.saturating_mul(1000));
    match replay.load() {
        Ok(r) => sync.restore(&r),
        Err(e) => tracing::warn!(
            error = %e,
            "replay state unreadable; starting without it (an old clip replayed now could be applied once)"
        ),
    }
    let tracker = TaskTracker::new();
    let (link_handle, commands) = link::channel();
    let (events_tx, mut events) = mpsc::channel(link::EVENT_QUEUE);
    let (control_tx, mut control_rx) = mpsc::channel::<Incoming>(crate::control::REQUEST_QUEUE);
    let device_id = DeviceId(device.account.device_id);
    let link_cfg = LinkConfig {
        server: device.account.server.clone(),
        token: device.secrets.token.clone(),
        last_seen: state.last_seen(),
        seed: rand::random(),
        roots: device
            .roots()
            .map_err(|e| DaemonError::Tls(e.to_string()))?,
    };
    let roots = device
        .roots()
        .map_err(|e| DaemonError::Tls(e.to_string()))?;
    let blobs = BlobClient::new(&device.account.server, &device.secrets.token, &roots);
    let (finished_tx, mut finished_rx) = mpsc::channel(FINISHED_QUEUE);
    let mut link_task = tracker.spawn(link::run(link_cfg, commands, events_tx, cancel.clone()));
    tracker.spawn(control.serve(control_tx, cancel.clone()));
    let (p2p_tx, mut p2p_rx) = mpsc::channel(p2p::EVENT_QUEUE);
    let p2p = if mode.uses_direct_links() {
        let (handle, commands) = p2p::channel();
        let cfg = p2p::P2pConfig {
            me: device_id,
            mode,
            signal_key: device.secrets.data_key.signal_key(),
            bind: transport.bind,
            idle: transport.idle_close,
        };
        tracker.spawn(p2p::run(
            cfg,
            commands,
            p2p_tx,
            link_handle.clone(),
            cancel.clone(),
        ));
        Some(handle)
    } else {
        drop(p2p_tx);
        None
    };
    let mut d = Daemon {
        device: device_id,
        key: device.secrets.data_key.clip_key(),
        opts: device.config.sync.clone(),
        sync,
        state,
        replay,
        status: Status {
            path: if mode == Mode::P2p {
                StatusPath::P2p
            } else {
                StatusPath::Relay
            },
            mode: mode.as_str().into(),
            device_id: device_id.0,
            ..Status::default()
        },
        link: link_handle,
        clipboard,
        tracker: tracker.clone(),
        blobs,
        transfers: Transfers::default(),
        finished: finished_tx,
        generation: 0,
        cancel: cancel.clone(),
        pending: None,
        mode,
        p2p,
    };
    tracing::info!(device = %device_id, "daemon started");
    let mut local_open = true;
    let mut events_open = true;
    let mut control_open = true;
    let result = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            exit = &mut link_task => {
                break match exit {
                    Ok(LinkExit::Revoked) => Err(DaemonError::Revoked),
                    Ok(LinkExit::Cancelled) => Ok(()),
                    Err(e) => {
                        tracing::error!(error = %e, "link task failed");
                        Ok(())
                    }
                };
            }
            ch = local.recv(), if local_open => match ch {
                Some(LocalEvent::Clip(ch)) => {
                    d.on_local(ch.content, ch.at_ms, false).await;
                }
                Some(LocalEvent::Files(files)) => d.on_local_files(files.paths, files.at_ms),
                None => {
                    tracing::warn!("clipboard watcher stopped; receiving only");
                    d.status.last_error = Some("clipboard watcher stopped".into());
                    local_open = false;
                }
            },
            ev = events.recv(), if events_open => match ev {
                Some(ev) => d.on_link(ev).await,
                // The link ended; its task result arrives next.
                None => events_open = false,
            },
            req = control_rx.recv(), if control_open => match req {
                Some((req, answer)) => d.on_control(req, answer).await,
                None => control_open = false,
            },
            Some(f) = finished_rx.recv() => d.on_finished(f).await,
            Some(ev) = p2p_rx.recv() => d.on_p2p(ev).await,
        }
    };
    // Transfer tasks may still report; nobody listens any more.
    drop(finished_rx);
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    tracing::info!("daemon stopped");
    result
}

impl<C: ClipboardSink> Daemon<C> {
    /// A local clipboard change (or `clipmesh send` when `explicit`).
    /// Returns the ack receiver when something was published.
    async fn on_local(
        &mut self,
        content: ClipContent,
        at_ms: u64,
        explicit: bool,
    ) -> Option<tokio::sync::oneshot::Receiver<Result<u64, link::PublishError>>> {
        let kind = content.kind_name();
        let len = content.payload_len();
        if !explicit {
            match self.sync.on_local(&content, at_ms) {
                LocalDecision::Send => {}
                LocalDecision::Unchanged => {
                    tracing::trace!(kind, len, "local change is not new");
                    return None;
                }
                LocalDecision::Stale => {
                    // Read before a remote item was put on the clipboard,
                    // which holds that item now.
                    tracing::debug!(kind, len, "local change superseded by a remote item");
                    return None;
                }
            }
        }
        // Something new was copied here: a download still running must not
        // replace it when it finishes (newest wins).
        self.generation += 1;
        if !explicit && (self.opts.receive_only || !self.opts.allows(&content)) {
            tracing::debug!(
                kind,
                len,
                "local change not synced (receive-only or type off)"
            );
            self.sync.record_local_only(&content, at_ms);
            return None;
        }
        if !self.opts.fits(&content) {
            tracing::info!(
                kind,
                len,
                max = self.opts.max_item_bytes,
                "local item too large; not synced"
            );
            self.sync.record_local_only(&content, at_ms);
            return None;
        }
        if let ClipContent::Image { width, height, png } = &content {
            let large = png.len() as u64 >= self.opts.inline_threshold;
            if large && self.mode == Mode::P2p && png.len() > p2p::MAX_INLINE_IMAGE {
                let msg = format!(
                    "image of {} bytes not sent: --mode p2p sends images inline over direct \
                     links up to {} bytes; larger ones travel through the relay's blob store \
                     (run with --mode auto to sync them)",
                    png.len(),
                    p2p::MAX_INLINE_IMAGE
                );
                tracing::info!("{msg}");
                self.status.last_error = Some(msg);
                self.sync.record_local_only(&content, at_ms);
                return None;
            }
            // In p2p mode a large image goes inline over the links.
            if large && self.mode != Mode::P2p {
                self.sync.record_local_only(&content, at_ms);
                self.start_image_upload(*width, *height, png.clone(), content, at_ms);
                return None;
            }
        }
        self.publish(content, None, at_ms).await
    }

    /// Seals and publishes `content` (recording `dedupe_as`, default the
    /// content itself, as the clipboard's current item).
    async fn publish(
        &mut self,
        content: ClipContent,
        dedupe_as: Option<&ClipContent>,
        at_ms: u64,
    ) -> Option<tokio::sync::oneshot::Receiver<Result<u64, link::PublishError>>> {
        let kind = content.kind_name();
        let len = content.payload_len();
        let seq = match self.state.next_seq() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot reserve a sequence number");
                self.status.last_error = Some(format!("state file: {e}"));
                return None;
            }
        };
        let item = ClipItem {
            timestamp_ms: at_ms,
            content,
        };
        let env = seal_clip(&self.key, self.device, seq, &item);
        self.sync
            .record_sent(dedupe_as.unwrap_or(&item.content), seq, at_ms);
        self.generation += 1;
        tracing::debug!(kind, len, seq, "publishing local change");
        if let Some(p2p) = &self.p2p {
            let sent = p2p.send(env.clone()).await;
            if self.mode == Mode::P2p {
                return Some(self.p2p_outcome(sent));
            }
        }
        match self.link.publish(env).await {
            Ok(rx) => Some(rx),
            Err(e) => {
                self.status.last_error = Some(e.to_string());
                None
            }
        }
    }

    async fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Connected { online, .. } => {
                if let Some(p2p) = &self.p2p {
                    p2p.online(online.iter().map(|d| d.id).collect()).await;
                }
                self.status.connected = true;
                self.status.online = online_list(&online);
            }
            LinkEvent::Disconnected { reason, retry_in } => {
                tracing::info!(%reason, retry_in_ms = retry_in.as_millis() as u64, "relay link down");
                self.status.connected = false;
                self.status.online.clear();
                self.status.last_error = Some(reason);
            }
            LinkEvent::Presence { online } => {
                if let Some(p2p) = &self.p2p {
                    p2p.online(online.iter().map(|d| d.id).collect()).await;
                }
                self.status.online = online_list(&online);
            }
            LinkEvent::Signal {
                from,
                kind,
                payload,
            } => match &self.p2p {
                Some(p2p) => p2p.signal(from, kind, payload).await,
                None => tracing::debug!(%from, ?kind, "relay mode: signal ignored"),
            },
            LinkEvent::Published { seq } => {
                self.status.last_sync_ms = Some(now_ms());
                self.save_last_seen(seq);
            }
            LinkEvent::RelayError { message } => self.status.last_error = Some(message),
            LinkEvent::Deliver {
                seq,
                from,
                envelope,
            } => {
                if self.mode == Mode::P2p {
                    // Published through the relay by a device in another
                    // mode: p2p mode takes clips from direct links only.
                    tracing::debug!(%from, "p2p mode: clip from the relay ignored");
                } else {
                    self.on_deliver(from, &envelope).await;
                }
                self.save_last_seen(seq);
            }
        }
    }

    fn save_last_seen(&mut self, seq: u64) {
        if let Err(e) = self.state.set_last_seen(seq) {
            tracing::warn!(error = %e, "cannot write state file");
        }
    }

    async fn on_deliver(&mut self, from: DeviceId, envelope: &[u8]) {
        if self.opts.send_only {
            tracing::debug!(%from, "send-only: received clip ignored");
            return;
        }
        let (meta, item) = match open_clip(&self.key, from, envelope) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(%from, "{e}");
                self.status.last_error = Some(e.to_string());
                return;
            }
        };
        let kind = item.content.kind_name();
        let len = item.content.payload_len();
        if !self.opts.allows(&item.content) {
            tracing::debug!(kind, len, "received clip not applied (type off)");
            return;
        }
        if !self.opts.fits(&item.content) {
            let msg = format!(
                "received {kind} of {} bytes not applied: over the configured limits \
                 (max_item_bytes {}, max_files {}, max_image_bytes {})",
                crate::config::item_size(&item.content),
                self.opts.max_item_bytes,
                self.opts.max_files,
                self.opts.max_image_bytes
            );
            tracing::info!("{msg}");
            self.status.last_error = Some(msg);
            return;
        }
        let decision = self.sync.on_remote(meta, &item.content, now_ms());
        if !matches!(decision, RemoteDecision::Echo | RemoteDecision::Duplicate) {
            // Persisted before the clip is applied, so a crash right after
            // cannot let the same envelope be applied again.
            if let Err(e) = self.replay.save(&self.sync.replay_state()) {
                tracing::warn!(error = %e, "cannot write replay state");
            }
        }
        match decision {
            RemoteDecision::Apply
                if matches!(
                    item.content,
                    ClipContent::Files(_) | ClipContent::ImageBlob { .. }
                ) =>
            {
                self.generation += 1;
                self.start_download(item, from);
            }
            RemoteDecision::Apply => {
                self.generation += 1;
                tracing::debug!(%from, seq = meta.seq, kind, len, "applying received clip");
                match self.clipboard.apply(item.content).await {
                    Ok(()) => self.status.last_sync_ms = Some(now_ms()),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not set the clipboard");
                        self.status.last_error = Some(format!("clipboard: {e}"));
                    }
                }
            }
            RemoteDecision::Expired => {
                let msg = format!(
                    "received a clip from {} sealed {} s ago, older than clip_ttl_s ({}); not applied",
                    meta.origin,
                    now_ms().saturating_sub(meta.timestamp_ms) / 1000,
                    self.opts.clip_ttl_s
                );
                tracing::info!("{msg}");
                self.status.last_error = Some(msg);
            }
            other => {
                tracing::debug!(%from, seq = meta.seq, decision = ?other, "received clip not applied")
            }
        }
    }

    /// Limits of an outgoing file list.
    fn send_limits(&self) -> SendLimits {
        SendLimits {
            inline_threshold: self.opts.inline_threshold,
            walk: WalkLimits {
                max_files: self.opts.max_files.min(clipmesh_proto::content::MAX_FILES),
                max_bytes: self.opts.max_item_bytes,
            },
        }
    }

    /// Runs `job` as a blocking transfer task that reports to the loop, at
    /// the end and, through the sender it is given, on the way (an upload
    /// publishing its reference before the bytes are up).
    fn spawn_transfer(
        &self,
        job: impl FnOnce(&CancellationToken, &mpsc::Sender<Finished>) -> Finished + Send + 'static,
    ) {
        let tx = self.finished.clone();
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            let c = cancel.clone();
            let early = tx.clone();
            let out = match tokio::task::spawn_blocking(move || job(&c, &early)).await {
                Ok(f) => f,
                Err(e) => Finished::Failed {
                    message: format!("transfer task failed: {e}"),
                },
            };
            let _ = tx.send(out).await;
        });
    }

    /// A copied file list: upload in a transfer task, publish when done.
    fn on_local_files(&mut self, paths: Vec<PathBuf>, at_ms: u64) {
        self.generation += 1;
        if self.opts.receive_only || !self.opts.files {
            tracing::debug!(
                count = paths.len(),
                "file list not synced (receive-only or files off)"
            );
            return;
        }
        if self.refuse_blob_in_p2p("file list") {
            return;
        }
        let blobs = self.blobs.clone();
        let transfers = self.transfers.clone();
        let limits = self.send_limits();
        self.spawn_transfer(move |cancel, early| {
            let mut announce = |content: ClipContent| {
                early
                    .blocking_send(Finished::Sent {
                        dedupe_as: content.clone(),
                        content,
                        at_ms,
                    })
                    .is_ok()
            };
            match transfer::send_files(&blobs, &transfers, &paths, limits, cancel, &mut announce) {
                Ok(_) => Finished::Uploaded,
                Err(e) => failed("file list not sent", e),
            }
        });
    }

    /// A large local image: upload it as a blob, publish the reference.
    fn start_image_upload(
        &mut self,
        width: u32,
        height: u32,
        png: Vec<u8>,
        original: ClipContent,
        at_ms: u64,
    ) {
        let blobs = self.blobs.clone();
        let transfers = self.transfers.clone();
        self.spawn_transfer(move |cancel, early| {
            let mut announce = |content: ClipContent| {
                early
                    .blocking_send(Finished::Sent {
                        content,
                        dedupe_as: original.clone(),
                        at_ms,
                    })
                    .is_ok()
            };
            let r = transfer::send_image(
                &blobs,
                &transfers,
                width,
                height,
                &png,
                cancel,
                &mut announce,
            );
            drop(png);
            match r {
                Ok(_) => Finished::Uploaded,
                Err(e) => failed("image not sent", e),
            }
        });
    }

    /// A received file list or image reference: download it unless it is
    /// over `auto_download_max` (then keep it for `clipmesh fetch`).
    fn start_download(&mut self, item: ClipItem, from: DeviceId) {
        let size = crate::config::item_size(&item.content);
        let kind = item.content.kind_name();
        if self.mode == Mode::P2p {
            let msg = format!(
                "received {kind} of {size} bytes not downloaded: it is stored on the relay's blob \
                 store, which --mode p2p does not use (run with --mode auto to receive it)"
            );
            tracing::info!("{msg}");
            self.status.last_error = Some(msg);
            return;
        }
        if size > self.opts.auto_download_max {
            let msg = format!(
                "received {kind} of {size} bytes is over auto_download_max ({}); not downloaded \
                 (run `clipmesh fetch` to download it, or raise auto_download_max in [sync])",
                self.opts.auto_download_max
            );
            tracing::info!("{msg}");
            self.status.last_error = Some(msg);
            self.pending = Some(transfer::Pending::new(item, from, now_ms()));
            return;
        }
        self.download(item, None);
    }

    /// Downloads a received file list or image in a transfer task. With
    /// `answer` (`clipmesh fetch`), the result goes there as well.
    fn download(&mut self, item: ClipItem, answer: Option<tokio::sync::oneshot::Sender<Response>>) {
        let blobs = self.blobs.clone();
        let transfers = self.transfers.clone();
        let generation = self.generation;
        // A fetch reports back through `Fetched`, carrying its answer.
        let wrap = move |f: Finished| match answer {
            Some(answer) => Finished::Fetched {
                result: Box::new(f),
                answer,
            },
            None => f,
        };
        match item.content {
            ClipContent::Files(entries) => {
                let Some(dir) = self.opts.download_dir() else {
                    let msg = "no download folder: set download_dir in [sync]".to_owned();
                    self.status.last_error = Some(msg.clone());
                    if let Finished::Fetched { answer, .. } = wrap(Finished::Uploaded) {
                        let _ = answer.send(Response::error(msg));
                    }
                    return;
                };
                let at_ms = item.timestamp_ms;
                self.spawn_transfer(move |cancel, _| {
                    wrap(
                        match transfer::receive_file_list(
                            &blobs, &transfers, &entries, &dir, at_ms, cancel,
                        ) {
                            Ok(paths) => Finished::ReceivedFiles { paths, generation },
                            Err(e) => failed("received files discarded", e),
                        },
                    )
                });
            }
            content => {
                let max = self.opts.max_image_bytes;
                self.spawn_transfer(move |cancel, _| {
                    wrap(
                        match transfer::receive_image(&blobs, &transfers, &content, max, cancel) {
                            Ok(content) => Finished::ReceivedImage {
                                content,
                                generation,
                            },
                            Err(e) => failed("received image discarded", e),
                        },
                    )
                });
            }
        }
    }

    /// In p2p mode, large items (which travel through the relay's blob
    /// store) are refused with one line; returns true when refused.
    fn refuse_blob_in_p2p(&mut self, what: &str) -> bool {
        if self.mode != Mode::P2p {
            return false;
        }
        let msg = format!(
            "{what} not sent: large images and files travel through the relay's blob store, \
             which --mode p2p does not use (run with --mode auto to sync them)"
        );
        tracing::info!("{msg}");
        self.status.last_error = Some(msg);
        true
    }

    /// p2p mode: turns the direct-link send result into the publish answer,
    /// logging which online devices did not get the clip.
    fn p2p_outcome(
        &self,
        sent: tokio::sync::oneshot::Receiver<Vec<DeviceId>>,
    ) -> tokio::sync::oneshot::Receiver<Result<u64, link::PublishError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let online: Vec<u64> = self
            .status
            .online
            .iter()
            .map(|d| d.id)
            .filter(|id| *id != self.device.0)
            .collect();
        self.tracker.spawn(async move {
            let r = match sent.await {
                Ok(to) => {
                    let missed = online
                        .iter()
                        .filter(|id| !to.contains(&DeviceId(**id)))
                        .count();
                    if missed > 0 {
                        tracing::info!(
                            sent = to.len(),
                            missed,
                            "p2p mode: devices online without an open direct link did not get the clip"
                        );
                    }
                    if to.is_empty() {
                        Err(link::PublishError::NoDirectLink)
                    } else {
                        tracing::debug!(peers = to.len(), "clip sent over direct links");
                        Ok(0)
                    }
                }
                Err(_) => Err(link::PublishError::Stopped),
            };
            let _ = tx.send(r);
        });
        rx
    }

    async fn on_p2p(&mut self, ev: P2pEvent) {
        match ev {
            P2pEvent::Deliver { from, envelope } => self.on_deliver(from, &envelope).await,
            P2pEvent::Peers(peers) => {
                let any_open = peers.iter().any(|p| p.path == PeerPath::P2p);
                self.status.path = match self.mode {
                    Mode::P2p => StatusPath::P2p,
                    _ if any_open => StatusPath::RelayP2p,
                    _ => StatusPath::Relay,
                };
                self.status.peers = peers;
            }
        }
    }

    async fn on_finished(&mut self, f: Finished) {
        match f {
            Finished::Sent {
                content,
                dedupe_as,
                at_ms,
            } => {
                let _ = self.publish(content, Some(&dedupe_as), at_ms).await;
            }
            Finished::ReceivedFiles { paths, generation } => {
                if generation != self.generation {
                    tracing::info!("received files kept in the download folder; the clipboard has something newer");
                    return;
                }
                let n = paths.len();
                match self.clipboard.apply_files(paths).await {
                    Ok(()) => {
                        tracing::info!(entries = n, "received files are on the clipboard");
                        self.status.last_sync_ms = Some(now_ms());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not set the clipboard");
                        self.status.last_error = Some(format!("clipboard: {e}"));
                    }
                }
            }
            Finished::ReceivedImage {
                content,
                generation,
            } => {
                if generation != self.generation {
                    tracing::info!("received image dropped; the clipboard has something newer");
                    return;
                }
                match self.clipboard.apply(content).await {
                    Ok(()) => self.status.last_sync_ms = Some(now_ms()),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not set the clipboard");
                        self.status.last_error = Some(format!("clipboard: {e}"));
                    }
                }
            }
            Finished::Failed { message } => self.status.last_error = Some(message),
            Finished::Uploaded => tracing::debug!("upload finished"),
            Finished::Fetched { result, answer } => {
                let resp = match *result {
                    Finished::ReceivedFiles { paths, .. } => {
                        self.clipboard.apply_files(paths).await
                    }
                    Finished::ReceivedImage { content, .. } => self.clipboard.apply(content).await,
                    Finished::Failed { message } => Err(message),
                    _ => Err("fetch failed".into()),
                };
                let resp = match resp {
                    Ok(()) => {
                        tracing::info!("fetched item is on the clipboard");
                        self.status.last_sync_ms = Some(now_ms());
                        Response {
                            ok: true,
                            ..Response::default()
                        }
                    }
                    Err(e) => {
                        self.status.last_error = Some(e.clone());
                        Response::error(e)
                    }
                };
                let _ = answer.send(resp);
            }
        }
    }

    async fn on_control(&mut self, req: Request, answer: tokio::sync::oneshot::Sender<Response>) {
        match req {
            Request::Fetch => match self.pending.take() {
                None => {
                    let _ = answer.send(Response::error(
                        "nothing to fetch: no received item is waiting (only images and files \
                         over auto_download_max wait for `clipmesh fetch`)",
                    ));
                }
                Some(p) => {
                    tracing::info!(kind = %p.summary.kind, files = p.summary.files, bytes = p.summary.bytes, "fetching the waiting item");
                    // Asked for now: it is the newest item for the clipboard.
                    self.generation += 1;
                    self.download(p.item, Some(answer));
                }
            },
            Request::Status => {
                let mut status = self.status.clone();
                status.transfers = self.transfers.snapshot();
                status.pending = self.pending.as_ref().map(|p| p.summary.clone());
                let _ = answer.send(Response {
                    ok: true,
                    status: Some(status),
                    ..Response::default()
                });
            }
            Request::Send { text } => {
                let content = ClipContent::Text(text);
                if !self.opts.fits(&content) {
                    let _ = answer.send(Response::error(format!(
                        "text is larger than max_item_bytes ({})",
                        self.opts.max_item_bytes
                    )));
                    return;
                }
                match self.on_local(content, now_ms(), true).await {
                    None => {
                        let msg = self
                            .status
                            .last_error
                            .clone()
                            .unwrap_or_else(|| "not sent".into());
                        let _ = answer.send(Response::error(msg));
                    }
                    Some(rx) => {
                        // Answer when the relay acks, without blocking the loop.
                        self.tracker.spawn(async move {
                            let resp = match tokio::time::timeout(SEND_ACK_TIMEOUT, rx).await {
                                Ok(Ok(Ok(seq))) => Response {
                                    ok: true,
                                    seq: Some(seq),
                                    ..Response::default()
                                },
                                Ok(Ok(Err(e))) => Response::error(e.to_string()),
                                Ok(Err(_)) => Response::error("daemon is shutting down"),
                                Err(_) => Response::error(
                                    "the relay did not acknowledge the clip in time; it will be retried",
                                ),
                            };
                            let _ = answer.send(resp);
                        });
                    }
                }
            }
        }
    }
}
