//! `clipmesh-clipboard`: the OS clipboard behind one seam. Watch it for
//! local changes and put remote items on it.
//!
//! **The seam.** Every backend (X11, native Wayland, the [`fake`] for
//! tests; Windows and macOS next) is started by [`spawn_watcher`] (or
//! [`fake::FakeClipboard::new`]) and gives its user the same two things:
//!
//! - a [`tokio::sync::mpsc::Receiver`] of [`LocalEvent`]s: one per new item
//!   copied on this device that is neither marked sensitive by its source
//!   nor an echo of an item this module applied itself — content
//!   ([`LocalChange`]) or a file list ([`LocalFiles`]);
//! - a handle implementing [`Clipboard`]: [`Clipboard::apply`] puts a remote
//!   item on the clipboard, [`Clipboard::apply_files`] a list of local files,
//!   and [`Clipboard::capabilities`] says what it can read and write
//!   ([`Capabilities`]: formats, PRIMARY, which sensitive markers it honours).
//!
//! A real backend is one or more OS threads that take [`Command`]s from the
//! [`ClipboardHandle`]'s bounded channel and send [`LocalEvent`]s. Which
//! backend a build has is decided in exactly one place, `backend.rs`; no
//! backend imports another's internals (X11 and Wayland share the
//! freedesktop pieces in `backend/linux/`, every backend the neutral
//! `dedupe`, `picture` and `sensitive` modules). Adding a platform is
//! one file next to `backend/linux.rs` and one line in `backend.rs`.
//!
//! This crate builds no C on any target, so it type-checks for macOS and
//! Windows from Linux. It depends on `clipmesh-proto` (content types, the
//! content hash) and on what its backends need, never on the client.
//!
//! Platforms:
//!
//! - **Wayland** (native, no XWayland needed): event-driven through the
//!   data-control protocol, `ext-data-control-v1` when the compositor offers
//!   it, else `wlr-data-control-unstable-v1` (wlroots compositors such as
//!   sway, and KDE's KWin). One thread with its own Wayland connection
//!   gets `selection` events, reads the offered types through pipes, and
//!   serves our own items from data sources (`backend/linux/wayland.rs`,
//!   `backend/linux/wayland/proto.rs`). A compositor with neither protocol
//!   gives [`ClipboardError::NoDataControl`] unless
//!   `DISPLAY` names an X server (XWayland) to fall back to.
//! - **X11** (and XWayland, through `DISPLAY`): event-driven. A watcher
//!   thread with its own X connection gets XFixes owner-change events and
//!   re-reads the selection (`backend/linux/x11.rs`); a writer thread owns one
//!   long-lived arboard `Clipboard` that serves pastes
//!   (`backend/linux/x11/worker.rs`).
//!
//!   Which one runs: [`ENV_BACKEND`] (`CLIPMESH_CLIPBOARD`) = `auto` (the
//!   default) picks native Wayland when `WAYLAND_DISPLAY` is set and the
//!   compositor offers data-control, else X11 through `DISPLAY`; `wayland`
//!   or `x11` forces one. Neither backend polls: an idle clipboard costs no
//!   wake-ups.
//! - **macOS, Windows**: not implemented yet (a changeCount poll and a
//!   clipboard format listener respectively); [`spawn_watcher`] fails with
//!   [`ClipboardError::Unsupported`].
//!
//! Sensitive items are never emitted: those offered with
//! `x-kde-passwordManagerHint` = `secret` (or a hint that cannot be read),
//! `org.nspasteboard.ConcealedType`, `org.nspasteboard.TransientType` or
//! `ExcludeClipboardContentFromMonitorProcessing`; the table with their
//! sources is in `sensitive.rs`. Echo and duplicate suppression is a sans-IO
//! state machine (`dedupe.rs`) over the one content hash
//! ([`clipmesh_proto::ContentHash`]). Content types are
//! text, HTML, images (read as PNG, or BMP/TIFF converted to PNG:
//! `picture.rs`) and file lists (`text/uri-list`, GNOME's
//! `x-special/gnome-copied-files`: `backend/linux/uri_list.rs`); which one an
//! item becomes is decided in `backend/linux/formats.rs`. On X11, arboard serves
//! text and HTML and our own selection owner (`backend/linux/x11/owner.rs`) serves
//! images (`image/png` byte for byte, `image/bmp` converted on demand) and
//! file lists in every target file managers read; on Wayland our data
//! sources serve the same types.
//!
//! **Invariant:** clipboard contents never reach a log line; only kinds and
//! lengths do.

mod backend;
mod config;
mod dedupe;
mod error;
mod event;
pub mod fake;
mod formats;
mod handle;
mod picture;
mod sensitive;

pub use backend::{spawn_watcher, ENV_BACKEND};
pub use config::{ClipboardConfig, DEFAULT_MAX_READ_BYTES, MAX_READ_BYTES};
pub use error::ClipboardError;
pub use event::{LocalChange, LocalEvent, LocalFiles};
pub use handle::{
    Capabilities, Clipboard, ClipboardHandle, Command, APPLY_QUEUE, LOCAL_CHANGE_QUEUE,
};
