//! [`ClipboardError`]: why a backend cannot watch or write the clipboard.

use crate::backend::ENV_BACKEND;
use thiserror::Error;

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
