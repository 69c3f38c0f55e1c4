//! The one place a build's clipboard backend is chosen.
//!
//! Each platform is one module under `backend/` that exposes
//! `spawn(ClipboardConfig, CancellationToken) -> Result<(ClipboardHandle,
//! Receiver<LocalEvent>), ClipboardError>`: start the OS threads, take
//! [`crate::Command`]s from the handle, send [`LocalEvent`]s. The `cfg`
//! lines below are the only platform switch in the crate (besides the
//! matching target table in `Cargo.toml`):
//!
//! - `linux`: Linux and the BSDs, X11 (`backend/linux/x11.rs`) or native
//!   Wayland (`backend/linux/wayland.rs`), picked at run time by
//!   [`ENV_BACKEND`];
//! - `windows`: the clipboard format listener (`backend/windows.rs`; its
//!   pure parts, CF_HTML, DIB and the marker table, are unit-tested on
//!   every host);
//! - `macos`: AppKit's general pasteboard, polled (`backend/macos.rs`; its
//!   logic is the sans-IO `pasteboard.rs`, unit-tested on every host);
//! - anything else: [`ClipboardError::Unsupported`].

#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
mod linux;
#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
use linux as platform;

#[cfg(any(windows, test))]
mod windows;
#[cfg(windows)]
use windows as platform;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as platform;

/// Environment variable that picks the clipboard backend where a platform
/// has more than one: on Linux `auto` (the default: native Wayland when
/// `WAYLAND_DISPLAY` is set and the compositor offers data-control, else X11
/// through `DISPLAY`), `wayland` or `x11`.
pub const ENV_BACKEND: &str = "CLIPMESH_CLIPBOARD";

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
    platform::spawn(cfg, cancel)
}

/// Platforms without a backend in this build.
#[cfg(not(any(
    windows,
    target_os = "macos",
    all(
        unix,
        not(any(target_os = "macos", target_os = "ios", target_os = "android"))
    )
)))]
mod platform {
    use super::*;

    pub(super) fn spawn(
        cfg: ClipboardConfig,
        cancel: CancellationToken,
    ) -> Result<(ClipboardHandle, mpsc::Receiver<LocalEvent>), ClipboardError> {
        let _ = (cfg, cancel);
        Err(ClipboardError::Unsupported)
    }
}

use crate::{ClipboardConfig, ClipboardError, ClipboardHandle, LocalEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
