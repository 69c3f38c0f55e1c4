//! The OS clipboard: watch it for local changes and put remote items on it.
//!
//! This module owns everything that touches the operating system's
//! clipboard. The daemon sees two things:
//!
//! - a [`tokio::sync::mpsc::Receiver`] of [`LocalChange`]s: one per new item
//!   copied on this device that is neither sensitive nor an echo of an item
//!   this module applied itself;
//! - a [`ClipboardHandle`] whose [`ClipboardHandle::apply`] puts a remote
//!   item on the clipboard.
//!
//! (Minimal placeholder: the X11 backend lands in the next commit.)

use clipmesh_proto::ClipContent;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What to watch and write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClipboardConfig {
    /// Also watch (and write) the X11 PRIMARY selection, not only CLIPBOARD.
    pub primary: bool,
}

/// A new item copied on this device.
#[derive(Clone, Debug)]
pub struct LocalChange {
    /// What was copied.
    pub content: ClipContent,
    /// When the change was seen, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// Why the clipboard cannot be watched or written.
#[derive(Debug, Error)]
pub enum ClipboardError {
    /// Neither X11 nor a supported Wayland protocol is reachable.
    #[error("no X display: set DISPLAY or run under Xvfb")]
    NoDisplay,
    /// The platform has no backend in this build.
    #[error("clipboard sync is not supported on this platform yet")]
    Unsupported,
    /// The watcher or writer thread has stopped.
    #[error("clipboard watcher stopped")]
    Stopped,
}

/// A cheap handle to the clipboard writer.
#[derive(Clone, Debug)]
pub struct ClipboardHandle {
    _private: (),
}

impl ClipboardHandle {
    /// Puts `content` on the OS clipboard. The watcher does not report it
    /// back as a [`LocalChange`].
    pub async fn apply(&self, content: ClipContent) -> Result<(), ClipboardError> {
        let _ = content;
        Err(ClipboardError::Stopped)
    }
}

/// Starts watching the OS clipboard until `cancel` fires.
pub fn spawn_watcher(
    cfg: ClipboardConfig,
    cancel: CancellationToken,
) -> Result<(ClipboardHandle, mpsc::Receiver<LocalChange>), ClipboardError> {
    let _ = (cfg, cancel);
    Err(ClipboardError::Unsupported)
}
