//! The Linux (and BSD) desktop backends: X11 (`linux/x11.rs` and its
//! writer and selection owner) and native Wayland (`linux/wayland.rs`),
//! picked at run time by [`ENV_BACKEND`]. What both speak, the freedesktop
//! MIME targets, lives in neutral modules: `formats.rs` at the crate root
//! (which target an item is read from; Windows uses its assembly step too),
//! and here [`uri_list`] (file lists) and [`payload`] (what one offered
//! target serves, and the file list about to be applied). Neither backend
//! imports the other.

mod payload;
mod uri_list;
mod wayland;
mod x11;

use super::ENV_BACKEND;
use crate::{ClipboardConfig, ClipboardError, ClipboardHandle, LocalEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Names a Wayland compositor socket.
pub(crate) const ENV_WAYLAND_DISPLAY: &str = "WAYLAND_DISPLAY";
/// Names an X display.
pub(crate) const ENV_DISPLAY: &str = "DISPLAY";

/// Picks X11 or Wayland (see [`ENV_BACKEND`]) and starts it.
pub(super) fn spawn(
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
            x11::spawn(cfg, cancel)
        }
        "wayland" => wayland::spawn(cfg, cancel),
        "x11" => x11::spawn(cfg, cancel),
        other => Err(ClipboardError::UnknownBackend(other.to_owned())),
    }
}
