//! The seam's user-facing half: the [`Clipboard`] trait every backend's
//! handle implements, the [`ClipboardHandle`] of the real backends (a
//! bounded channel of [`Command`]s to the backend's writer thread), and
//! [`Capabilities`].

use crate::error::ClipboardError;
use clipmesh_proto::ClipContent;
use std::future::Future;
use std::path::PathBuf;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

/// Depth of the local-change queue from a watcher to its user. The watcher
/// blocks (and coalesces further owner changes) while it is full.
pub const LOCAL_CHANGE_QUEUE: usize = 16;
/// Depth of the apply queue to a backend's writer thread.
pub const APPLY_QUEUE: usize = 8;

/// What a backend can do, for status output and for callers that adapt
/// (e.g. not offering files to a clipboard that cannot hold them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Short backend name: `x11`, `wayland`, `fake`.
    pub backend: &'static str,
    /// Reads and writes HTML (with its plain-text alternative).
    pub html: bool,
    /// Reads and writes images (PNG; other bitmap sources converted).
    pub images: bool,
    /// Reads and writes file lists.
    pub files: bool,
    /// Watches and writes the PRIMARY selection too (configured and
    /// supported).
    pub primary: bool,
    /// The source markers that make an item sensitive (never reported);
    /// see `sensitive.rs`.
    pub sensitive_markers: &'static [&'static str],
}

impl Capabilities {
    /// What the X11 and Wayland backends offer (`primary` as configured).
    pub(crate) fn desktop(backend: &'static str, primary: bool) -> Self {
        Self {
            backend,
            html: true,
            images: true,
            files: true,
            primary,
            sensitive_markers: crate::sensitive::ALL_MARKERS,
        }
    }
}

/// A request to a backend's writer thread.
#[derive(Debug)]
pub enum Command {
    /// Put an item on the clipboard.
    Apply {
        /// The item.
        content: ClipContent,
        /// Where to report the outcome.
        done: oneshot::Sender<Result<(), ClipboardError>>,
    },
    /// Put a list of local files on the clipboard.
    ApplyFiles {
        /// The files.
        paths: Vec<PathBuf>,
        /// Where to report the outcome.
        done: oneshot::Sender<Result<(), ClipboardError>>,
    },
}

/// What every backend's handle does: the seam between the OS clipboard and
/// the device engine's driver. (Local changes arrive separately, as the
/// [`crate::LocalEvent`] receiver the backend was started with.)
pub trait Clipboard: Send + Sync {
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Puts `content` on the clipboard (CLIPBOARD, and PRIMARY when
    /// configured). The watcher does not report it back as a local change.
    fn apply(
        &self,
        content: ClipContent,
    ) -> impl Future<Output = Result<(), ClipboardError>> + Send;

    /// Puts a list of local files on the clipboard, so a paste in a file
    /// manager copies them. The watcher does not report it back.
    fn apply_files(
        &self,
        paths: Vec<PathBuf>,
    ) -> impl Future<Output = Result<(), ClipboardError>> + Send;
}

/// A cheap, cloneable handle to a real backend's writer thread.
#[derive(Clone, Debug)]
pub struct ClipboardHandle {
    tx: mpsc::Sender<Command>,
    /// Holds one token per OS thread of the backend (X11: watcher, writer,
    /// selection owner; Wayland: loop, bridge, paste writers); closed, so
    /// [`ClipboardHandle::stopped`] resolves once all have ended.
    threads: TaskTracker,
    caps: Capabilities,
}

impl ClipboardHandle {
    /// A handle over a backend's command channel and threads.
    pub(crate) fn new(tx: mpsc::Sender<Command>, threads: TaskTracker, caps: Capabilities) -> Self {
        Self { tx, threads, caps }
    }

    /// Sends one command and waits for its outcome.
    async fn request(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), ClipboardError>>) -> Command,
    ) -> Result<(), ClipboardError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(make(done))
            .await
            .map_err(|_| ClipboardError::Stopped)?;
        rx.await.map_err(|_| ClipboardError::Stopped)?
    }

    /// Puts `content` on the OS clipboard (see [`Clipboard::apply`]).
    pub async fn apply(&self, content: ClipContent) -> Result<(), ClipboardError> {
        self.request(|done| Command::Apply { content, done }).await
    }

    /// Puts a list of local files on the OS clipboard (`text/uri-list`,
    /// `x-special/gnome-copied-files` and the paths as text on Linux; see
    /// [`Clipboard::apply_files`]).
    pub async fn apply_files(&self, paths: Vec<PathBuf>) -> Result<(), ClipboardError> {
        self.request(|done| Command::ApplyFiles { paths, done })
            .await
    }

    /// Resolves once the backend's threads have all ended (after `cancel`
    /// fired, or the display went away). Await it after cancelling to drain
    /// the clipboard threads on shutdown.
    pub async fn stopped(&self) {
        self.threads.wait().await;
    }
}

impl Clipboard for ClipboardHandle {
    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn apply(
        &self,
        content: ClipContent,
    ) -> impl Future<Output = Result<(), ClipboardError>> + Send {
        ClipboardHandle::apply(self, content)
    }

    fn apply_files(
        &self,
        paths: Vec<PathBuf>,
    ) -> impl Future<Output = Result<(), ClipboardError>> + Send {
        ClipboardHandle::apply_files(self, paths)
    }
}
