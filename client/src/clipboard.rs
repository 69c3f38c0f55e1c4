//! The OS clipboard: watch it for local changes and put remote items on it.
//!
//! The daemon sees two things, both from [`spawn_watcher`]:
//!
//! - a [`tokio::sync::mpsc::Receiver`] of [`LocalEvent`]s: one per new item
//!   copied on this device that is neither marked sensitive by its source
//!   nor an echo of an item this module applied itself — content
//!   ([`LocalChange`]) or a file list ([`LocalFiles`]);
//! - a [`ClipboardHandle`] whose [`ClipboardHandle::apply`] puts a remote
//!   item on the clipboard, and [`ClipboardHandle::apply_files`] a list of
//!   local files.
//!
//! Platforms:
//!
//! - **Wayland** (native, no XWayland needed): event-driven through the
//!   data-control protocol, `ext-data-control-v1` when the compositor offers
//!   it, else `wlr-data-control-unstable-v1` (wlroots compositors such as
//!   sway, and KDE's KWin). One thread with its own Wayland connection
//!   gets `selection` events, reads the offered types through pipes, and
//!   serves our own items from data sources (`clipboard/wayland.rs`,
//!   `clipboard/wayland_proto.rs`). A compositor with neither protocol
//!   gives [`ClipboardError::NoDataControl`] unless
//!   `DISPLAY` names an X server (XWayland) to fall back to.
//! - **X11** (and XWayland, through `DISPLAY`): event-driven. A watcher
//!   thread with its own X connection gets XFixes owner-change events and
//!   re-reads the selection (`clipboard/x11.rs`); a writer thread owns one
//!   long-lived arboard `Clipboard` that serves pastes
//!   (`clipboard/worker.rs`).
//!
//!   Which one runs: [`ENV_BACKEND`] (`CLIPMESH_CLIPBOARD`) = `auto` (the
//!   default) picks native Wayland when `WAYLAND_DISPLAY` is set and the
//!   compositor offers data-control, else X11 through `DISPLAY`; `wayland`
//!   or `x11` forces one. Neither backend polls: an idle clipboard costs no
//!   wake-ups.
//! - **Windows**: event-driven through the clipboard format listener
//!   (`AddClipboardFormatListener`, through clipboard-win's `Monitor`); a
//!   watcher and a writer thread (`clipboard/windows.rs`, with the CF_HTML
//!   header, DIB conversion and sensitive-format table in its submodules).
//! - **macOS**: not implemented yet; [`spawn_watcher`] fails with
//!   [`ClipboardError::Unsupported`].
//!
//! Sensitive items are never emitted: those offered with
//! `x-kde-passwordManagerHint` = `secret` (or a hint that cannot be read),
//! `org.nspasteboard.ConcealedType`, `org.nspasteboard.TransientType` or
//! `ExcludeClipboardContentFromMonitorProcessing`; the table with their
//! sources is in `clipboard/sensitive.rs`. Echo and duplicate suppression
//! is a sans-IO state machine (`clipboard/dedupe.rs`). Content types are
//! text, HTML, images (read as PNG, or BMP/TIFF converted to PNG:
//! `clipboard/picture.rs`) and file lists (`text/uri-list`, GNOME's
//! `x-special/gnome-copied-files`: `clipboard/uri_list.rs`); which one an
//! item becomes is decided in `clipboard/formats.rs`. On X11, arboard serves
//! text and HTML and our own selection owner (`clipboard/owner.rs`) serves
//! images (`image/png` byte for byte, `image/bmp` converted on demand) and
//! file lists in every target file managers read; on Wayland our data
//! sources serve the same types.
//!
//! **Invariant:** clipboard contents never reach a log line; only kinds and
//! lengths do.

mod dedupe;
mod formats;
#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
mod owner;
mod picture;
// The X11/Wayland markers; Windows has its own table (windows/markers.rs).
#[cfg(not(windows))]
mod sensitive;
#[cfg(unix)]
mod uri_list;
#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
mod wayland;
#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
mod wayland_proto;
#[cfg(any(windows, test))]
mod windows;
#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
mod worker;
#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
mod x11;

use clipmesh_proto::ClipContent;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Depth of the local-change queue to the daemon. The watcher blocks (and
/// coalesces further owner changes) while it is full.
pub const LOCAL_CHANGE_QUEUE: usize = 16;
/// Depth of the apply queue to the writer thread.
pub const APPLY_QUEUE: usize = 8;

/// What to watch and write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClipboardConfig {
    /// Also watch (and write) the X11 PRIMARY selection, not only CLIPBOARD.
    pub primary: bool,
    /// The largest item the daemon syncs (config `max_item_bytes`). The
    /// watcher reads items up to this size, and always up to
    /// [`DEFAULT_MAX_READ_BYTES`], never more than [`MAX_READ_BYTES`].
    pub max_item_bytes: u64,
    /// Windows: let Windows' own cloud clipboard upload the items clipmesh
    /// writes (config `windows_cloud_clipboard`). Off by default: written
    /// items carry `CanUploadToCloudClipboard` = 0.
    pub windows_cloud_clipboard: bool,
}

/// Items up to this size are always read (whatever `max_item_bytes` says),
/// so the daemon can refuse an oversized item with a message.
pub const DEFAULT_MAX_READ_BYTES: usize = 64 * 1024 * 1024;
/// The watcher never reads more than this for one item (it holds the item in
/// memory; a bitmap source also needs room for its decoded pixels).
pub const MAX_READ_BYTES: usize = 1024 * 1024 * 1024;

impl ClipboardConfig {
    /// The read bound that follows from [`ClipboardConfig::max_item_bytes`].
    pub fn max_read_bytes(&self) -> usize {
        usize::try_from(self.max_item_bytes)
            .unwrap_or(usize::MAX)
            .clamp(DEFAULT_MAX_READ_BYTES, MAX_READ_BYTES)
    }
}

/// A new item copied on this device.
#[derive(Clone, Debug)]
pub struct LocalChange {
    /// What was copied.
    pub content: ClipContent,
    /// When the change was seen, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// A file list copied on this device (in a file manager): local paths whose
/// contents the daemon reads, and sends, itself.
#[derive(Clone)]
pub struct LocalFiles {
    /// Absolute local paths, files or directories, in the order offered.
    pub paths: Vec<PathBuf>,
    /// When the change was seen, in ms since the Unix epoch.
    pub at_ms: u64,
}

impl std::fmt::Debug for LocalFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // File names are clipboard contents: count only.
        write!(
            f,
            "LocalFiles {{ paths: {}, at_ms: {} }}",
            self.paths.len(),
            self.at_ms
        )
    }
}

/// What the watcher reports: one item per new local copy.
#[derive(Clone, Debug)]
pub enum LocalEvent {
    /// Content that travels as it is (text, HTML, an image as PNG).
    Clip(LocalChange),
    /// A copied file list.
    Files(LocalFiles),
}

impl From<LocalChange> for LocalEvent {
    fn from(c: LocalChange) -> Self {
        Self::Clip(c)
    }
}

/// Why the clipboard cannot be watched or written.
#[derive(Debug, Error)]
pub enum ClipboardError {
    /// Neither `DISPLAY` nor `WAYLAND_DISPLAY` is set.
    #[error("no display: set WAYLAND_DISPLAY or DISPLAY, or run under Xvfb")]
    NoDisplay,
    /// The Wayland compositor offers no data-control protocol (and there
    /// is no X display to fall back to).
    #[error(
        "the Wayland compositor offers no clipboard access for background programs \
         (neither ext-data-control-v1 nor wlr-data-control-unstable-v1); \
         use a compositor that offers one, or XWayland with DISPLAY set"
    )]
    NoDataControl,
    /// The Wayland compositor could not be reached.
    #[error("cannot connect to the Wayland display (WAYLAND_DISPLAY): {reason}")]
    WaylandConnect {
        /// What the Wayland client library said.
        reason: String,
    },
    /// A Wayland protocol error while setting up.
    #[error("Wayland error: {0}")]
    Wayland(String),
    /// [`ENV_BACKEND`] names no backend.
    #[error("unknown {ENV_BACKEND} value {0:?}: use auto, wayland or x11")]
    UnknownBackend(String),
    /// The X server could not be reached.
    #[error("cannot connect to the X display (DISPLAY): {reason}")]
    Connect {
        /// What the X client library said.
        reason: String,
    },
    /// The X server lacks XFixes, needed for change events.
    #[error("the X server lacks the XFIXES extension needed to watch the clipboard")]
    MissingXFixes,
    /// An X protocol error while setting up.
    #[error("X11 error: {0}")]
    X11(String),
    /// The clipboard library failed.
    #[error("clipboard error: {0}")]
    Backend(String),
    /// A content type this build cannot put on the clipboard yet.
    #[error("{0} items are not supported on the clipboard yet")]
    UnsupportedContent(&'static str),
    /// The platform has no backend in this build.
    #[error(
        "clipboard sync is not supported on this platform yet (this build supports X11, Wayland and Windows)"
    )]
    Unsupported,
    /// The watcher or writer thread has stopped (cancelled or display gone).
    #[error("clipboard watcher stopped")]
    Stopped,
}

/// A cheap, cloneable handle to the clipboard writer.
#[derive(Clone, Debug)]
pub struct ClipboardHandle {
    #[cfg_attr(
        not(any(
            windows,
            all(
                unix,
                not(any(target_os = "macos", target_os = "ios", target_os = "android"))
            )
        )),
        allow(dead_code)
    )]
    tx: mpsc::Sender<Command>,
    /// Holds one token per OS thread of the backend (X11: watcher, writer,
    /// selection owner; Wayland: loop, bridge, paste writers);
    /// closed, so [`ClipboardHandle::stopped`] resolves once all have ended.
    threads: tokio_util::task::TaskTracker,
}

#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
use worker::Command;

#[cfg(windows)]
use windows::Command;

/// Placeholder command type where there is no writer.
#[cfg(not(any(
    windows,
    all(
        unix,
        not(any(target_os = "macos", target_os = "ios", target_os = "android"))
    )
)))]
#[derive(Debug)]
enum Command {}

impl ClipboardHandle {
    /// Puts `content` on the OS clipboard (CLIPBOARD, and PRIMARY when
    /// configured). The watcher does not report it back as a [`LocalChange`].
    pub async fn apply(&self, content: ClipContent) -> Result<(), ClipboardError> {
        #[cfg(any(
            windows,
            all(
                unix,
                not(any(target_os = "macos", target_os = "ios", target_os = "android"))
            )
        ))]
        {
            let (done, rx) = tokio::sync::oneshot::channel();
            self.tx
                .send(Command::Apply { content, done })
                .await
                .map_err(|_| ClipboardError::Stopped)?;
            rx.await.map_err(|_| ClipboardError::Stopped)?
        }
        #[cfg(not(any(
            windows,
            all(
                unix,
                not(any(target_os = "macos", target_os = "ios", target_os = "android"))
            )
        )))]
        {
            let _ = content;
            Err(ClipboardError::Unsupported)
        }
    }

    /// Puts a list of local files on the OS clipboard (`text/uri-list`,
    /// `x-special/gnome-copied-files` and the paths as text), so a paste in a
    /// file manager copies them. The watcher does not report it back.
    pub async fn apply_files(&self, paths: Vec<PathBuf>) -> Result<(), ClipboardError> {
        #[cfg(any(
            windows,
            all(
                unix,
                not(any(target_os = "macos", target_os = "ios", target_os = "android"))
            )
        ))]
        {
            let (done, rx) = tokio::sync::oneshot::channel();
            self.tx
                .send(Command::ApplyFiles { paths, done })
                .await
                .map_err(|_| ClipboardError::Stopped)?;
            rx.await.map_err(|_| ClipboardError::Stopped)?
        }
        #[cfg(not(any(
            windows,
            all(
                unix,
                not(any(target_os = "macos", target_os = "ios", target_os = "android"))
            )
        )))]
        {
            let _ = paths;
            Err(ClipboardError::Unsupported)
        }
    }
}

impl ClipboardHandle {
    /// Resolves once the watcher and writer threads have both ended (after
    /// `cancel` fired, or the display went away). Await it after cancelling
    /// to drain the clipboard threads on shutdown.
    pub async fn stopped(&self) {
        self.threads.wait().await;
    }
}

/// Starts watching the OS clipboard until `cancel` fires.
///
/// Picks the backend (see [`ENV_BACKEND`]). Spawns its OS threads (on X11:
/// watcher, writer, selection owner; on Wayland: the event loop, a command
/// bridge and one short-lived thread per paste being served); all end soon
/// after `cancel` fires or every [`ClipboardHandle`] is dropped. The
/// receiver closes when the watcher ends (also when the display goes away).
/// Does not need to be called from a tokio runtime.
pub fn spawn_watcher(
    cfg: ClipboardConfig,
    cancel: CancellationToken,
) -> Result<(ClipboardHandle, mpsc::Receiver<LocalEvent>), ClipboardError> {
    #[cfg(all(
        unix,
        not(any(target_os = "macos", target_os = "ios", target_os = "android"))
    ))]
    {
        spawn_linux(cfg, cancel)
    }
    #[cfg(windows)]
    {
        windows::spawn(cfg, cancel)
    }
    #[cfg(not(any(
        windows,
        all(
            unix,
            not(any(target_os = "macos", target_os = "ios", target_os = "android"))
        )
    )))]
    {
        let _ = (cfg, cancel);
        Err(ClipboardError::Unsupported)
    }
}

/// Environment variable that picks the clipboard backend: `auto` (the
/// default: native Wayland when `WAYLAND_DISPLAY` is set and the compositor
/// offers data-control, else X11 through `DISPLAY`), `wayland` or `x11`.
pub const ENV_BACKEND: &str = "CLIPMESH_CLIPBOARD";

/// Picks the backend (see [`ENV_BACKEND`]) and starts it.
#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
fn spawn_linux(
    cfg: ClipboardConfig,
    cancel: CancellationToken,
) -> Result<(ClipboardHandle, mpsc::Receiver<LocalEvent>), ClipboardError> {
    let choice = std::env::var(ENV_BACKEND).unwrap_or_default();
    match choice.trim() {
        "" | "auto" => {
            if wayland::wayland_display_set() {
                match wayland::spawn(cfg, cancel.clone()) {
                    Ok(started) => return Ok(started),
                    Err(e) if x11::display_set() => {
                        tracing::info!(
                            error = %e,
                            "native Wayland clipboard unavailable; using X11 through DISPLAY"
                        );
                    }
                    Err(e) => return Err(e),
                }
            }
            spawn_x11(cfg, cancel)
        }
        "wayland" => wayland::spawn(cfg, cancel),
        "x11" => spawn_x11(cfg, cancel),
        other => Err(ClipboardError::UnknownBackend(other.to_owned())),
    }
}

#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
fn spawn_x11(
    cfg: ClipboardConfig,
    cancel: CancellationToken,
) -> Result<(ClipboardHandle, mpsc::Receiver<LocalEvent>), ClipboardError> {
    use std::sync::{Arc, Mutex};

    let deduper = Arc::new(Mutex::new(dedupe::Deduper::default()));
    let (change_tx, change_rx) = mpsc::channel(LOCAL_CHANGE_QUEUE);
    let (watcher, waker) = x11::connect(cfg, Arc::clone(&deduper), change_tx)?;
    let (owner, owner_thread) = owner::connect()?;
    let owner_stopper = owner.stopper();

    // The writer creates its arboard clipboard on its own thread and reports
    // whether that worked before we return.
    let (cmd_tx, cmd_rx) = mpsc::channel(APPLY_QUEUE);
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let worker_waker = waker.clone();
    let worker_cancel = cancel.clone();
    let threads = tokio_util::task::TaskTracker::new();
    let writer_token = threads.token();
    let watcher_token = threads.token();
    let owner_token = threads.token();
    threads.close();
    // The owner thread ends when the writer stops it (or the display goes).
    std::thread::Builder::new()
        .name("clipmesh-clip-owner".into())
        .spawn(move || {
            owner_thread.run();
            drop(owner_token);
        })
        .map_err(|e| ClipboardError::Backend(format!("cannot start owner thread: {e}")))?;
    std::thread::Builder::new()
        .name("clipmesh-clip-writer".into())
        .spawn(move || match arboard::Clipboard::new() {
            Ok(clipboard) => {
                let _ = ready_tx.send(Ok(()));
                worker::Worker {
                    clipboard,
                    primary: cfg.primary,
                    deduper,
                    rx: cmd_rx,
                    cancel: worker_cancel,
                    waker: worker_waker,
                    owner,
                }
                .run();
                drop(writer_token);
            }
            Err(e) => {
                owner.stop();
                let _ = ready_tx.send(Err(ClipboardError::Backend(e.to_string())));
            }
        })
        .map_err(|e| {
            owner_stopper.stop();
            ClipboardError::Backend(format!("cannot start writer thread: {e}"))
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(ClipboardError::Stopped),
    }

    std::thread::Builder::new()
        .name("clipmesh-clip-watch".into())
        .spawn(move || {
            watcher.run();
            drop(watcher_token);
        })
        .map_err(|e| {
            waker.wake();
            ClipboardError::Backend(format!("cannot start watcher thread: {e}"))
        })?;

    Ok((
        ClipboardHandle {
            tx: cmd_tx,
            threads,
        },
        change_rx,
    ))
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
