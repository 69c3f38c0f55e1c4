//! The macOS backend: AppKit's general pasteboard, polled.
//!
//! One thread, `clipmesh-pasteboard`, owns every pasteboard call. It runs a
//! current-thread tokio runtime (timer only) whose one task waits for the
//! first of: the watcher's next poll ([`Watcher::poll_timeout`], every
//! 250 ms by default), a [`Command`] from the [`ClipboardHandle`], or
//! `cancel`. A poll reads `changeCount` and nothing else unless it moved;
//! what follows (types, the sensitive check, the format choice, reading,
//! echo suppression) is decided by the sans-IO [`Watcher`] in
//! `pasteboard.rs`, which the tests drive on Linux against a fake
//! pasteboard. This file is only the AppKit side of [`Pasteboard`].
//!
//! Every AppKit call here is safe in objc2-app-kit 0.3 (the crate keeps
//! `unsafe_code = "forbid"`); each turn runs inside an autorelease pool,
//! since the thread has no run loop to drain one.
//!
//! Written against AppKit's documentation and type-checked for
//! `aarch64-apple-darwin` and `x86_64-apple-darwin` in CI; **not yet run on
//! a Mac** (see `docs/macos.md`).

use crate::handle::{Capabilities, Command, APPLY_QUEUE, LOCAL_CHANGE_QUEUE};
use crate::pasteboard::{
    apply_content, apply_files, poll, Access, Pasteboard, Watcher, Write, UTI_FILE_URL, UTI_HTML,
    UTI_PNG, UTI_TEXT,
};
use crate::{ClipboardConfig, ClipboardError, ClipboardHandle, LocalEvent};
use objc2::rc::{autoreleasepool, Retained};
use objc2::runtime::{NSObjectProtocol, ProtocolObject};
use objc2::sel;
use objc2_app_kit::{NSPasteboard, NSPasteboardWriting};
use objc2_foundation::{NSArray, NSData, NSString, NSURL};
use std::path::PathBuf;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The general pasteboard.
struct AppKitPasteboard {
    pb: Retained<NSPasteboard>,
}

impl AppKitPasteboard {
    fn general() -> Self {
        Self {
            pb: NSPasteboard::generalPasteboard(),
        }
    }

    /// `accessBehavior`'s raw value, or `None` before macOS 15.4 (asked
    /// with `respondsToSelector:` first: an unknown selector would raise).
    fn access_raw(&self) -> Option<isize> {
        self.pb
            .respondsToSelector(sel!(accessBehavior))
            .then(|| self.pb.accessBehavior().0)
    }
}

impl Pasteboard for AppKitPasteboard {
    fn change_count(&mut self) -> isize {
        self.pb.changeCount()
    }

    fn types(&mut self) -> Vec<String> {
        // The pasteboard's types and every item's: a marker may sit on any
        // item of a multi-item copy.
        let mut out: Vec<String> = Vec::new();
        let mut add = |s: String| {
            if !out.contains(&s) {
                out.push(s);
            }
        };
        if let Some(types) = self.pb.types() {
            for t in types.iter() {
                add(t.to_string());
            }
        }
        if let Some(items) = self.pb.pasteboardItems() {
            for item in items.iter() {
                for t in item.types().iter() {
                    add(t.to_string());
                }
            }
        }
        out
    }

    fn data(&mut self, uti: &str, max: usize) -> Result<Option<Vec<u8>>, usize> {
        let Some(data) = self.pb.dataForType(&NSString::from_str(uti)) else {
            return Ok(None);
        };
        let len = data.len();
        if len > max {
            return Err(len);
        }
        Ok(Some(data.to_vec()))
    }

    fn file_paths(&mut self) -> Vec<PathBuf> {
        // One `public.file-url` per item. Finder writes file *reference*
        // URLs (file:///.file/id=...): `filePathURL` resolves them.
        let ty = NSString::from_str(UTI_FILE_URL);
        let Some(items) = self.pb.pasteboardItems() else {
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|item| item.stringForType(&ty))
            .filter_map(|s| NSURL::URLWithString(&s))
            .filter_map(|u| u.filePathURL())
            .filter_map(|u| u.path())
            .map(|p| PathBuf::from(p.to_string()))
            .collect()
    }

    fn write(&mut self, item: &Write<'_>) -> Result<isize, String> {
        // clearContents makes us the owner (and bumps the count); the
        // setters then fill its first item.
        self.pb.clearContents();
        let set = |s: &str, uti: &str| {
            self.pb
                .setString_forType(&NSString::from_str(s), &NSString::from_str(uti))
        };
        let ok = match *item {
            Write::Text(t) => set(t, UTI_TEXT),
            Write::Html { html, alt_text } => set(html, UTI_HTML) && set(alt_text, UTI_TEXT),
            Write::Png(png) => self
                .pb
                .setData_forType(Some(&NSData::with_bytes(png)), &NSString::from_str(UTI_PNG)),
            Write::Files(paths) => {
                // APFS and HFS+ names are Unicode: a path that is not UTF-8
                // cannot name a file there.
                let urls: Vec<Retained<ProtocolObject<dyn NSPasteboardWriting>>> = paths
                    .iter()
                    .filter_map(|p| p.to_str())
                    .map(|p| {
                        ProtocolObject::from_retained(NSURL::fileURLWithPath(&NSString::from_str(
                            p,
                        )))
                    })
                    .collect();
                !urls.is_empty() && self.pb.writeObjects(&NSArray::from_retained_slice(&urls))
            }
        };
        if ok {
            Ok(self.pb.changeCount())
        } else {
            Err("NSPasteboard refused the write".into())
        }
    }
}

/// What this backend does.
fn capabilities() -> Capabilities {
    Capabilities {
        backend: "macos",
        html: true,
        images: true,
        files: true,
        primary: false,
        sensitive_markers: crate::sensitive::ALL_MARKERS,
    }
}

/// Starts the pasteboard thread.
pub(super) fn spawn(
    cfg: ClipboardConfig,
    cancel: CancellationToken,
) -> Result<(ClipboardHandle, mpsc::Receiver<LocalEvent>), ClipboardError> {
    let (cmd_tx, cmd_rx) = mpsc::channel(APPLY_QUEUE);
    let (event_tx, event_rx) = mpsc::channel(LOCAL_CHANGE_QUEUE);
    let threads = TaskTracker::new();
    let token = threads.token();
    threads.close();
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("clipmesh-pasteboard".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(ClipboardError::Backend(format!(
                        "cannot start the pasteboard thread's runtime: {e}"
                    ))));
                    return;
                }
            };
            let pb = autoreleasepool(|_| {
                let pb = AppKitPasteboard::general();
                let access = Access::from_raw(pb.access_raw());
                match access.notice() {
                    Some(notice) => tracing::warn!(?access, "{notice}"),
                    None => tracing::debug!(?access, "pasteboard access"),
                }
                pb
            });
            let _ = ready_tx.send(Ok(()));
            rt.block_on(run(pb, cfg, cmd_rx, event_tx, cancel));
            drop(token);
        })
        .map_err(|e| ClipboardError::Backend(format!("cannot start the pasteboard thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(ClipboardError::Stopped),
    }
    Ok((
        ClipboardHandle::new(cmd_tx, threads, capabilities()),
        event_rx,
    ))
}

/// The thread's loop: poll on the watcher's clock, serve commands, stop on
/// `cancel` or when every handle is gone.
async fn run(
    mut pb: AppKitPasteboard,
    cfg: ClipboardConfig,
    mut cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<LocalEvent>,
    cancel: CancellationToken,
) {
    let mut w = Watcher::new(cfg.poll_interval(), Instant::now());
    let max_read = cfg.max_read_bytes();
    tracing::debug!(
        interval_ms = w.interval().as_millis(),
        "pasteboard watcher started"
    );
    loop {
        let due = tokio::time::Instant::from_std(w.poll_timeout());
        tokio::select! {
            () = cancel.cancelled() => break,
            cmd = cmds.recv() => match cmd {
                None => break,
                Some(Command::Apply { content, done }) => {
                    let r = autoreleasepool(|_| apply_content(&mut pb, &mut w, &content));
                    let _ = done.send(r);
                }
                Some(Command::ApplyFiles { paths, done }) => {
                    let r = autoreleasepool(|_| apply_files(&mut pb, &mut w, &paths));
                    let _ = done.send(r);
                }
            },
            () = tokio::time::sleep_until(due) => {
                let found = autoreleasepool(|_| {
                    poll(&mut pb, &mut w, Instant::now(), crate::event::now_ms(), max_read)
                });
                for event in found {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        sent = events.send(event) => if sent.is_err() { return },
                    }
                }
            }
        }
    }
    tracing::debug!("pasteboard watcher stopped");
}
