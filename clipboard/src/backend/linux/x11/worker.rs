//! X11 backend, part 2: the writer thread that owns the arboard clipboard.
//!
//! On X11 the clipboard holds no data: the *owner* serves every paste. arboard
//! does that from a background thread that lives as long as its `Clipboard`
//! object, so this thread keeps one `Clipboard` for the daemon's lifetime and
//! takes commands from a bounded channel. (arboard's `Clipboard` is not `Send`
//! on every platform, which is another reason it stays on one thread.)
//!
//! The thread waits with a tiny current-thread tokio runtime (no IO, no timer
//! driver, no extra threads) so it can wait for a command *or* cancellation
//! without polling. When it ends it stops the watcher through its waker.

use super::super::payload::{file_list_to_apply, Payload};
use super::super::uri_list::{
    encode_gnome_copied_files, encode_plain_paths, GNOME_FILES_TARGET, URI_LIST_TARGET,
};
use super::owner::Owner;
use super::X11Waker;
use crate::dedupe::{content_hash, OwnWrites};
use crate::picture::{check_png, png_to_bmp, BMP_TARGET, PNG_TARGET};
use crate::{ClipboardError, Command};
use arboard::{LinuxClipboardKind, SetExtLinux};
use clipmesh_proto::ClipContent;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Everything the writer thread owns.
pub(crate) struct Worker {
    pub(crate) clipboard: arboard::Clipboard,
    pub(crate) primary: bool,
    pub(crate) own_writes: Arc<Mutex<OwnWrites>>,
    pub(crate) rx: mpsc::Receiver<Command>,
    pub(crate) cancel: CancellationToken,
    pub(crate) waker: X11Waker,
    /// Serves images and file lists (arboard serves text and HTML).
    pub(crate) owner: Owner,
}

impl Worker {
    /// The thread body: serve commands until cancelled or every handle is gone.
    pub(crate) fn run(mut self) {
        let rt = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "clipboard writer could not start");
                self.waker.wake();
                return;
            }
        };
        rt.block_on(async {
            loop {
                let cmd = tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => None,
                    cmd = self.rx.recv() => cmd,
                };
                match cmd {
                    Some(Command::Apply { content, done }) => {
                        let res = self.apply(&content);
                        if let Err(e) = &res {
                            tracing::warn!(error = %e, "could not set the clipboard");
                        }
                        let _ = done.send(res);
                    }
                    Some(Command::ApplyFiles { paths, done }) => {
                        let res = self.apply_files(&paths);
                        if let Err(e) = &res {
                            tracing::warn!(error = %e, "could not set the clipboard");
                        }
                        let _ = done.send(res);
                    }
                    None => break,
                }
            }
        });
        self.waker.wake();
        self.owner.stop();
        tracing::debug!("clipboard writer stopped");
        // Dropping `self.clipboard` here releases the selection (arboard
        // offers it to a clipboard manager first, if one runs).
    }

    /// Serves `paths` as a file list: `text/uri-list`, GNOME's
    /// `x-special/gnome-copied-files`, and the paths as text.
    fn apply_files(&mut self, paths: &[PathBuf]) -> Result<(), ClipboardError> {
        let (paths, uri_list) = file_list_to_apply(paths, &self.own_writes)?;
        let text = encode_plain_paths(&paths);
        self.owner.offer(
            self.primary,
            vec![
                (URI_LIST_TARGET, Payload::bytes(uri_list)),
                (
                    GNOME_FILES_TARGET,
                    Payload::bytes(encode_gnome_copied_files(&paths)),
                ),
                ("UTF8_STRING", Payload::bytes(text.clone())),
                ("text/plain;charset=utf-8", Payload::bytes(text)),
            ],
        )?;
        tracing::trace!(count = paths.len(), "clipboard set to a file list");
        Ok(())
    }

    /// Serves a PNG as `image/png`, byte for byte what the peer copied, and
    /// as `image/bmp` on demand.
    fn apply_image(
        &mut self,
        content: &ClipContent,
        width: u32,
        height: u32,
        png: &[u8],
    ) -> Result<(), ClipboardError> {
        check_png(width, height, png).map_err(|e| ClipboardError::Backend(e.to_string()))?;
        self.own_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .applied(content_hash(content));
        // BMP for the few readers that take nothing else (Wine's CF_DIB),
        // converted only if one asks.
        let len = png.len();
        let png: std::sync::Arc<[u8]> = png.into();
        let src = std::sync::Arc::clone(&png);
        self.owner.offer(
            self.primary,
            vec![
                (PNG_TARGET, Payload::Bytes(png)),
                (BMP_TARGET, Payload::lazy(move || png_to_bmp(&src))),
            ],
        )?;
        tracing::trace!(width, height, len, "clipboard set to an image");
        Ok(())
    }

    fn apply(&mut self, content: &ClipContent) -> Result<(), ClipboardError> {
        match content {
            ClipContent::Text(_) | ClipContent::Html { .. } => {}
            ClipContent::Image { width, height, png } => {
                return self.apply_image(content, *width, *height, png)
            }
            other => return Err(ClipboardError::UnsupportedContent(other.kind_name())),
        }
        // Before claiming, so the owner change we cause reads as an echo.
        self.own_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .applied(content_hash(content));
        let mut kinds = vec![LinuxClipboardKind::Clipboard];
        if self.primary {
            kinds.push(LinuxClipboardKind::Primary);
        }
        for kind in kinds {
            let set = self.clipboard.set().clipboard(kind);
            let res = match content {
                ClipContent::Html { html, alt_text } => {
                    set.html(html.as_str(), Some(alt_text.as_str()))
                }
                ClipContent::Text(t) => set.text(t.as_str()),
                _ => Ok(()),
            };
            res.map_err(|e| ClipboardError::Backend(e.to_string()))?;
        }
        tracing::trace!(
            kind = content.kind_name(),
            len = content.payload_len(),
            "clipboard set"
        );
        Ok(())
    }
}
