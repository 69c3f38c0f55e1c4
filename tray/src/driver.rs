//! The tray's engine thread: the client's sync daemon on tokio worker
//! threads, driven from the tray through two channels.
//!
//! The tray is one more driver of the client core, not a second daemon: it
//! runs [`clipmesh::daemon::run_daemon_mode`], the same loop `clipmesh run`
//! runs, with the same clipboard watcher. It sits between the two:
//!
//! - local copies pass through `forward_local` on their way to the
//!   daemon, and received items through `RecordingSink` on their way to
//!   the clipboard, so the tray lists recent items (previews only, see
//!   [`crate::recent`]) without a second clipboard reader;
//! - the tray sends [`ToEngine`] commands (pause, mode, put an item on the
//!   clipboard again, fetch, log out, quit) and receives [`FromEngine`]
//!   reports (status, recent items, events worth a notification, errors);
//! - status comes from the daemon's own status request
//!   ([`clipmesh::control`]), once a [`STATUS_EVERY`].
//!
//! Pausing stops the daemon (its sockets close); resuming and switching the
//! mode start it again. Every task is owned by the thread's tracker and the
//! thread is joined when the tray quits.

use crate::notify::Event;
use crate::recent::{self, Direction, Payload};
use clipmesh::account::Device;
use clipmesh::clipboard::{self, ClipboardHandle, LocalEvent};
use clipmesh::control::{self, Request, Status};
use clipmesh::daemon::{self, ClipboardSink, DaemonError, Transport};
use clipmesh::p2p::Mode;
use clipmesh_proto::ClipContent;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle as TaskHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the tray asks the daemon for its status.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);
/// Depth of the command queue into the engine thread.
pub const COMMAND_QUEUE: usize = 32;
/// Depth of the report queue out of the engine thread.
pub const REPORT_QUEUE: usize = 64;
/// Depth of the local-copy queue between the watcher and the daemon.
pub const LOCAL_QUEUE: usize = 16;

/// A command for the engine thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToEngine {
    /// Start syncing (after login, or resume after pause).
    Start,
    /// Stop syncing until [`ToEngine::Start`].
    Pause,
    /// Restart in this mode (or just remember it while stopped).
    SetMode(Mode),
    /// Put this item on the clipboard.
    Reapply(Payload),
    /// Download the waiting large item.
    Fetch,
    /// Stop, revoke this device and delete its secrets.
    Logout,
    /// Stop everything; the thread ends.
    Quit,
}

/// A report from the engine thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromEngine {
    /// The daemon started (status follows).
    Started,
    /// The daemon's latest status.
    Status(Box<Status>),
    /// The daemon stopped: `None` when asked to, else the reason (one line).
    Stopped(Option<String>),
    /// An item was sent or received.
    Recent {
        /// Which way.
        direction: Direction,
        /// Its redacted preview.
        preview: String,
        /// What it takes to put it on the clipboard again, if kept.
        payload: Option<Payload>,
    },
    /// Something worth a notification.
    Notify(Event),
    /// A fetch ended: `Err` holds the reason.
    Fetched(Result<(), String>),
    /// Logout ended: `Err` holds the reason (the local secrets are gone
    /// either way when it says so).
    LoggedOut(Result<(), String>),
}

/// The tray's handle on the engine thread.
pub struct EngineHandle {
    /// Commands in.
    pub commands: mpsc::Sender<ToEngine>,
    /// The thread, joined by [`EngineHandle::join`].
    thread: Option<JoinHandle<()>>,
}

impl EngineHandle {
    /// Starts the engine thread for the config dir `dir`. It starts the
    /// daemon at once when `start` is set (a logged-in device). Reports go
    /// to `reports`.
    pub fn spawn(
        dir: PathBuf,
        mode: Mode,
        start: bool,
        reports: mpsc::Sender<FromEngine>,
    ) -> std::io::Result<Self> {
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("clipmesh-engine")
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("clipmesh-engine-main".into())
            .spawn(move || {
                rt.block_on(engine(dir, mode, start, rx, reports));
            })?;
        Ok(Self {
            commands,
            thread: Some(thread),
        })
    }

    /// Sends a command (dropped with a log line if the engine is gone).
    pub fn send(&self, cmd: ToEngine) {
        if let Err(e) = self.commands.try_send(cmd) {
            tracing::warn!(error = %e, "engine command not delivered");
        }
    }

    /// Asks the engine to quit and waits for its thread.
    pub fn join(mut self) {
        self.send(ToEngine::Quit);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("engine thread panicked");
            }
        }
    }
}

/// The running daemon.
struct Running {
    /// Stops the daemon, its watcher and the forwarder.
    cancel: CancellationToken,
    /// The daemon's task.
    task: TaskHandle<Result<(), DaemonError>>,
    /// The clipboard, for putting recent items on it again.
    clipboard: ClipboardHandle,
}

async fn engine(
    dir: PathBuf,
    mut mode: Mode,
    start: bool,
    mut commands: mpsc::Receiver<ToEngine>,
    reports: mpsc::Sender<FromEngine>,
) {
    let tracker = TaskTracker::new();
    let mut running: Option<Running> = None;
    if start {
        running = begin(&dir, mode, &tracker, &reports).await;
    }
    let mut tick = tokio::time::interval(STATUS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { break };
                match cmd {
                    ToEngine::Start => {
                        if running.is_none() {
                            running = begin(&dir, mode, &tracker, &reports).await;
                        }
                    }
                    ToEngine::Pause => {
                        if stop(running.take()).await {
                            let _ = reports.send(FromEngine::Stopped(None)).await;
                        }
                    }
                    ToEngine::SetMode(m) => {
                        mode = m;
                        if stop(running.take()).await {
                            running = begin(&dir, mode, &tracker, &reports).await;
                        }
                    }
                    ToEngine::Reapply(p) => {
                        if let Some(r) = &running {
                            let result = match p {
                                Payload::Content(c) => r.clipboard.apply(c).await.map_err(|e| e.to_string()),
                                Payload::Files(f) => r.clipboard.apply_files(f).await.map_err(|e| e.to_string()),
                            };
                            if let Err(e) = result {
                                tracing::warn!(error = %e, "could not put the item on the clipboard");
                            }
                        }
                    }
                    ToEngine::Fetch => {
                        let (dir, reports) = (dir.clone(), reports.clone());
                        tracker.spawn(async move {
                            let r = match control::request(&dir, &Request::Fetch).await {
                                Ok(resp) if resp.ok => Ok(()),
                                Ok(resp) => Err(resp.error.unwrap_or_else(|| "fetch failed".into())),
                                Err(e) => Err(e.to_string()),
                            };
                            let _ = reports.send(FromEngine::Fetched(r)).await;
                        });
                    }
                    ToEngine::Logout => {
                        stop(running.take()).await;
                        let d = dir.clone();
                        let r = tokio::task::spawn_blocking(move || clipmesh::account::logout(&d))
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| r.map_err(|e| e.to_string()));
                        let _ = reports.send(FromEngine::LoggedOut(r)).await;
                    }
                    ToEngine::Quit => break,
                }
            }
            _ = tick.tick(), if running.is_some() => {
                if let Ok(resp) = control::request(&dir, &Request::Status).await {
                    if let Some(s) = resp.status {
                        let _ = reports.send(FromEngine::Status(Box::new(s))).await;
                    }
                }
            }
            ended = daemon_ended(&mut running) => {
                let r = running.take();
                if let Some(r) = r {
                    r.cancel.cancel();
                }
                let why = match ended {
                    Ok(Ok(())) => "the sync engine stopped".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => format!("the sync engine failed: {e}"),
                };
                let _ = reports.send(FromEngine::Notify(Event::NeedsUser(why.clone()))).await;
                let _ = reports.send(FromEngine::Stopped(Some(why))).await;
            }
        }
    }
    stop(running.take()).await;
    tracker.close();
    tracker.wait().await;
}

/// Waits for the daemon's task to end (forever when none runs).
async fn daemon_ended(
    running: &mut Option<Running>,
) -> Result<Result<(), DaemonError>, tokio::task::JoinError> {
    match running {
        Some(r) => (&mut r.task).await,
        None => std::future::pending().await,
    }
}

/// Stops the daemon if it runs; says whether it did.
async fn stop(running: Option<Running>) -> bool {
    let Some(r) = running else { return false };
    r.cancel.cancel();
    match r.task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::info!(error = %e, "daemon ended with an error while stopping"),
        Err(e) => tracing::error!(error = %e, "daemon task failed"),
    }
    true
}

/// Starts the daemon for the device in `dir`; reports why not on failure.
async fn begin(
    dir: &Path,
    mode: Mode,
    tracker: &TaskTracker,
    reports: &mpsc::Sender<FromEngine>,
) -> Option<Running> {
    match start_daemon(dir, mode, tracker, reports).await {
        Ok(r) => {
            let _ = reports.send(FromEngine::Started).await;
            Some(r)
        }
        Err(why) => {
            let _ = reports
                .send(FromEngine::Notify(Event::NeedsUser(why.clone())))
                .await;
            let _ = reports.send(FromEngine::Stopped(Some(why))).await;
            None
        }
    }
}

async fn start_daemon(
    dir: &Path,
    mode: Mode,
    tracker: &TaskTracker,
    reports: &mpsc::Sender<FromEngine>,
) -> Result<Running, String> {
    let d = dir.to_path_buf();
    let device = tokio::task::spawn_blocking(move || Device::load(&d))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let cancel = CancellationToken::new();
    let (clip, local) =
        clipboard::spawn_watcher(device.config.sync.clipboard_config(), cancel.child_token())
            .map_err(|e| format!("clipboard: {e}"))?;
    let (local_tx, local_rx) = mpsc::channel(LOCAL_QUEUE);
    tracker.spawn(forward_local(local, local_tx, reports.clone()));
    let sink = RecordingSink {
        inner: clip.clone(),
        reports: reports.clone(),
    };
    let transport = Transport::from_env(mode);
    let (d, stop) = (dir.to_path_buf(), cancel.clone());
    let task = tracker.spawn(async move {
        daemon::run_daemon_mode(&d, device, sink, local_rx, stop, transport).await
    });
    Ok(Running {
        cancel,
        task,
        clipboard: clip,
    })
}

/// Passes local copies from the watcher to the daemon, reporting each as a
/// recent item. Ends when either side closes.
async fn forward_local(
    mut from: mpsc::Receiver<LocalEvent>,
    to: mpsc::Sender<LocalEvent>,
    reports: mpsc::Sender<FromEngine>,
) {
    while let Some(ev) = from.recv().await {
        let report = match &ev {
            LocalEvent::Clip(c) => {
                let (preview, payload) = recent::entry(&c.content);
                FromEngine::Recent {
                    direction: Direction::Sent,
                    preview,
                    payload,
                }
            }
            LocalEvent::Files(f) => FromEngine::Recent {
                direction: Direction::Sent,
                preview: recent::files(f.paths.len()),
                payload: Some(Payload::Files(f.paths.clone())),
            },
        };
        if to.send(ev).await.is_err() {
            break;
        }
        let _ = reports.try_send(report);
    }
}

/// The daemon's clipboard sink with a tap: what is applied is reported as
/// a received item.
struct RecordingSink {
    /// The real clipboard.
    inner: ClipboardHandle,
    /// Where the reports go.
    reports: mpsc::Sender<FromEngine>,
}

impl ClipboardSink for RecordingSink {
    fn apply(&self, content: ClipContent) -> impl Future<Output = Result<(), String>> {
        let (preview, payload) = recent::entry(&content);
        let fut = self.inner.apply(content);
        let reports = self.reports.clone();
        async move {
            fut.await.map_err(|e| e.to_string())?;
            let _ = reports.try_send(FromEngine::Recent {
                direction: Direction::Received,
                preview,
                payload,
            });
            Ok(())
        }
    }

    fn apply_files(&self, paths: Vec<PathBuf>) -> impl Future<Output = Result<(), String>> {
        let n = paths.len();
        let report = FromEngine::Recent {
            direction: Direction::Received,
            preview: recent::files(n),
            payload: Some(Payload::Files(paths.clone())),
        };
        let fut = self.inner.apply_files(paths);
        let reports = self.reports.clone();
        async move {
            fut.await.map_err(|e| e.to_string())?;
            let _ = reports.try_send(report);
            let _ = reports.try_send(FromEngine::Notify(Event::FilesReceived(n)));
            Ok(())
        }
    }
}
