//! Wayland backend, part 2: the event loop that watches and sets the
//! clipboard through data-control (`clipboard/wayland_proto.rs`).
//!
//! One thread owns its own Wayland connection and sleeps in `poll(2)` on
//! three descriptors: the connection, a wake pipe (a command from the
//! daemon is waiting) and a stop pipe (closed on shutdown). No timers, no
//! wake-ups while the clipboard is idle.
//!
//! - **Watch.** Each `selection` event (and `primary_selection` when PRIMARY
//!   is synced) is only a hint. The loop reads the offered MIME types, skips
//!   sensitive items (`clipboard/sensitive.rs`), picks formats like the X11
//!   watcher (`clipboard/formats.rs`) and reads them with `receive` into a
//!   pipe: at most [`crate::ClipboardConfig::max_read_bytes`], with at most
//!   [`READ_TIMEOUT`] between two pieces of data. While it reads it keeps
//!   dispatching events and running the daemon's commands, so a newer
//!   selection aborts the read (newest wins), a remote item is applied
//!   without waiting for a slow source, and pastes of our own data are
//!   still served. What was read goes through
//!   the shared [`OwnWrites`], so items we applied ourselves are not echoed.
//! - **Apply.** A command creates one data source per selection offering
//!   the item's types and sets it. Each `send` (a paste) is served by a
//!   short-lived thread that writes the bytes with non-blocking writes, at
//!   most [`SEND_TIMEOUT`] between two pieces of progress, so a big image or
//!   a stuck paster never stalls the loop. At most [`MAX_SENDS`] pastes run
//!   at once. A source lives until the compositor cancels it (someone else
//!   set the selection) or the loop stops.
//!
//! The daemon's commands arrive on the bounded tokio channel of
//! [`crate::ClipboardHandle`]; a small bridge thread waits on it (and on
//! cancellation), forwards them and writes a byte into the wake pipe.

mod proto;

use super::payload::{file_list_to_apply, Payload};
use super::uri_list::{
    encode_gnome_copied_files, encode_plain_paths, parse_files, FILE_TARGETS, GNOME_FILES_TARGET,
    URI_LIST_TARGET,
};
use super::ENV_WAYLAND_DISPLAY;
use crate::dedupe::{content_hash, OwnWrites, ReadItem as Item, Verdict};
use crate::event::now_ms;
use crate::formats::{decode_html, decode_text, ReadPlan, HTML_TARGET};
use crate::picture::{check_png, png_to_bmp, to_png_content, BMP_TARGET, PNG_TARGET};
use crate::sensitive::{classify, hint_is_secret, Sensitivity, KDE_PASSWORD_HINT};
use crate::{
    Capabilities, ClipboardConfig, ClipboardError, ClipboardHandle, Command, LocalEvent,
    APPLY_QUEUE, LOCAL_CHANGE_QUEUE,
};
use clipmesh_proto::ClipContent;
use proto::{Control, Offer, Protocol, Sel, SendRequest, SourceData, State};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wayland_client::{Connection, EventQueue, QueueHandle};

/// Longest wait for the next piece of an item being read before it is
/// skipped. Generous (a source may be starved of CPU on a loaded machine);
/// a newer copy aborts the wait at once.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a paster to take the next piece of our data.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Most pastes of our own data served at once; more are refused.
pub(crate) const MAX_SENDS: usize = 8;
/// Most bytes of the KDE password-manager hint read (its value is a word).
const HINT_MAX_BYTES: usize = 1024;
/// While the daemon's queue is full, how often the loop tries again to hand
/// over the newest item (only then; idle, the loop has no timeout).
const OUTBOX_RETRY: Duration = Duration::from_millis(50);
/// Bytes read from a pipe at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Text types offered when applying text, UTF-8 in all of them (what
/// Wayland text sources offer; the X11 names serve XWayland readers).
const TEXT_OFFER: &[&str] = &[
    "text/plain;charset=utf-8",
    "text/plain",
    "UTF8_STRING",
    "TEXT",
    "STRING",
];

/// Why one read produced nothing.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    /// The source sent nothing for [`READ_TIMEOUT`].
    #[error("the source sent nothing for {0:?}")]
    Timeout(Duration),
    /// Larger than the read bound.
    #[error("the item is larger than the read bound")]
    TooLarge,
    /// A newer item is on the selection; it is read next.
    #[error("superseded by a newer item")]
    Superseded,
    /// The loop was told to stop.
    #[error("stopping")]
    Stopping,
    /// A pipe could not be made or read (the item is skipped).
    #[error("pipe error: {0}")]
    Pipe(Errno),
    /// The Wayland connection failed: the loop stops.
    #[error("{0}")]
    Connection(String),
}

/// The event loop's state.
struct Backend {
    conn: Connection,
    queue: EventQueue<State>,
    qh: QueueHandle<State>,
    state: State,
    control: Control,
    /// The selections to set when applying.
    apply_to: Vec<Sel>,
    own_writes: Arc<Mutex<OwnWrites>>,
    tx: mpsc::Sender<LocalEvent>,
    /// The newest item the daemon's full queue could not take yet.
    outbox: Option<LocalEvent>,
    commands: std::sync::mpsc::Receiver<Command>,
    /// Readable when a command waits (drained by the loop).
    wake: OwnedFd,
    /// Hangs up when the bridge thread ends: stop.
    stop: Arc<OwnedFd>,
    stopping: bool,
    max_read: usize,
    /// Pastes being served.
    sends: Arc<AtomicUsize>,
    threads: TaskTracker,
}

/// Whether `WAYLAND_DISPLAY` is set (and not empty).
pub(crate) fn wayland_display_set() -> bool {
    std::env::var_os(ENV_WAYLAND_DISPLAY).is_some_and(|v| !v.is_empty())
}

/// Connects to `$WAYLAND_DISPLAY`, binds data-control and starts the loop
/// and bridge threads (registered in `threads`).
pub(crate) fn spawn(
    cfg: ClipboardConfig,
    cancel: CancellationToken,
) -> Result<(ClipboardHandle, mpsc::Receiver<LocalEvent>), ClipboardError> {
    let conn = Connection::connect_to_env().map_err(|e| ClipboardError::WaylandConnect {
        reason: e.to_string(),
    })?;
    let (globals, mut queue) = wayland_client::globals::registry_queue_init::<State>(&conn)
        .map_err(|e| ClipboardError::Wayland(e.to_string()))?;
    let qh = queue.handle();
    let (control, protocol) = Control::bind(&globals, &qh)?;
    let mut apply_to = vec![Sel::Clipboard];
    if cfg.primary {
        if control.supports_primary() {
            apply_to.push(Sel::Primary);
        } else {
            tracing::warn!(
                "this compositor's wlr-data-control is version 1, without the primary \
                 selection: only the clipboard is synced"
            );
        }
    }
    let mut state = State::new(apply_to.contains(&Sel::Primary));
    // The first round trip delivers what is on the clipboard now: like the
    // X11 watcher, only later changes are synced.
    queue
        .roundtrip(&mut state)
        .map_err(|e| ClipboardError::Wayland(e.to_string()))?;
    state.pending.clear();
    match protocol {
        Protocol::Ext { .. } => tracing::info!("clipboard: Wayland ext-data-control"),
        Protocol::Wlr { version } => {
            tracing::info!(version, "clipboard: Wayland wlr-data-control")
        }
    }

    let pipe = |what: &str| {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| ClipboardError::Backend(format!("cannot create the {what} pipe: {e}")))
    };
    let (wake_r, wake_w) = pipe("wake")?;
    let (stop_r, stop_w) = pipe("stop")?;
    for fd in [&wake_r, &wake_w] {
        rustix::io::ioctl_fionbio(fd, true)
            .map_err(|e| ClipboardError::Backend(format!("cannot set up the wake pipe: {e}")))?;
    }

    let (change_tx, change_rx) = mpsc::channel(LOCAL_CHANGE_QUEUE);
    let (cmd_tx, cmd_rx) = mpsc::channel(APPLY_QUEUE);
    let (fwd_tx, fwd_rx) = std::sync::mpsc::channel();
    let threads = TaskTracker::new();
    let loop_token = threads.token();
    let bridge_token = threads.token();
    // The loop ending (display gone) ends the bridge too.
    let bridge_cancel = cancel.child_token();
    let loop_done = bridge_cancel.clone();
    let bridge_stopper = bridge_cancel.clone();

    let backend = Backend {
        conn,
        queue,
        qh,
        state,
        control,
        apply_to,
        own_writes: Arc::new(Mutex::new(OwnWrites::default())),
        tx: change_tx,
        outbox: None,
        commands: fwd_rx,
        wake: wake_r,
        stop: Arc::new(stop_r),
        stopping: false,
        max_read: cfg.max_read_bytes(),
        sends: Arc::new(AtomicUsize::new(0)),
        threads: threads.clone(),
    };
    std::thread::Builder::new()
        .name("clipmesh-clip-writer".into())
        .spawn(move || {
            bridge(cmd_rx, bridge_cancel, fwd_tx, wake_w, stop_w);
            drop(bridge_token);
        })
        .map_err(|e| ClipboardError::Backend(format!("cannot start writer thread: {e}")))?;
    std::thread::Builder::new()
        .name("clipmesh-clip-watch".into())
        .spawn(move || {
            backend.run();
            loop_done.cancel();
            drop(loop_token);
        })
        .map_err(|e| {
            bridge_stopper.cancel();
            ClipboardError::Backend(format!("cannot start watcher thread: {e}"))
        })?;
    threads.close();
    Ok((
        ClipboardHandle::new(
            cmd_tx,
            threads,
            Capabilities::desktop("wayland", cfg.primary),
        ),
        change_rx,
    ))
}

/// The bridge thread: forwards the daemon's commands to the loop until
/// cancelled, then closes the stop pipe (dropping `_stop`).
fn bridge(
    mut rx: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    fwd: std::sync::mpsc::Sender<Command>,
    wake: OwnedFd,
    _stop: OwnedFd,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "clipboard writer could not start");
            return;
        }
    };
    rt.block_on(async {
        loop {
            let cmd = tokio::select! {
                biased;
                () = cancel.cancelled() => None,
                cmd = rx.recv() => cmd,
            };
            let Some(cmd) = cmd else { break };
            if fwd.send(cmd).is_err() {
                break;
            }
            // A full pipe already holds a wake-up.
            match rustix::io::write(&wake, &[1]) {
                Ok(_) | Err(Errno::AGAIN) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot wake the clipboard loop");
                    break;
                }
            }
        }
    });
    tracing::debug!("clipboard writer stopped");
}

impl Backend {
    /// The thread body: until stopped or disconnected.
    fn run(mut self) {
        tracing::debug!("wayland clipboard loop started");
        loop {
            if self.stopping {
                break;
            }
            if self.state.finished {
                tracing::warn!("the Wayland data device went away; clipboard sync stops");
                break;
            }
            self.apply_commands();
            if let Some(ev) = self.outbox.take() {
                self.emit(ev);
            }
            if let Some(sel) = self.state.pending.pop_front() {
                if let Err(e) = self.handle_change(sel) {
                    tracing::warn!(error = %e, "clipboard watcher lost the Wayland connection");
                    break;
                }
                continue;
            }
            let deadline = self.outbox.as_ref().map(|_| Instant::now() + OUTBOX_RETRY);
            match self.wait(None, deadline) {
                Ok(_) | Err(ReadError::Timeout(_)) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "clipboard watcher lost the Wayland connection");
                    break;
                }
            }
        }
        self.state.destroy_all();
        self.control.destroy();
        let _ = self.conn.flush();
        tracing::debug!("wayland clipboard loop stopped");
    }

    /// Sends what is queued and sleeps until the connection, the stop pipe,
    /// the wake pipe or `extra` is readable, or `deadline` passes; then
    /// dispatches the events that arrived and starts serving new pastes.
    /// Returns whether `extra` is readable.
    fn wait(
        &mut self,
        extra: Option<BorrowedFd<'_>>,
        deadline: Option<Instant>,
    ) -> Result<bool, ReadError> {
        self.flush()?;
        let mut extra_ready = false;
        if let Some(guard) = self.queue.prepare_read() {
            let timeout = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ReadError::Timeout(READ_TIMEOUT));
                    }
                    Some(Timespec::try_from(left).map_err(|_| ReadError::Timeout(READ_TIMEOUT))?)
                }
                None => None,
            };
            let (wl_ready, stop_ready, wake_ready) = {
                let mut fds = vec![
                    PollFd::from_borrowed_fd(guard.connection_fd(), PollFlags::IN),
                    PollFd::new(&*self.stop, PollFlags::IN),
                    PollFd::new(&self.wake, PollFlags::IN),
                ];
                if let Some(fd) = extra {
                    fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
                }
                match poll(&mut fds, timeout.as_ref()) {
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(e) => return Err(ReadError::Connection(e.to_string())),
                }
                let ready = |i: usize| fds.get(i).is_some_and(|f| !f.revents().is_empty());
                extra_ready = ready(3);
                (ready(0), ready(1), ready(2))
            };
            if wl_ready {
                match guard.read() {
                    Ok(_) => {}
                    Err(wayland_client::backend::WaylandError::Io(e))
                        if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(ReadError::Connection(e.to_string())),
                }
            } else {
                drop(guard);
            }
            if stop_ready {
                self.stopping = true;
            }
            if wake_ready {
                self.drain_wake();
            }
        }
        self.queue
            .dispatch_pending(&mut self.state)
            .map_err(|e| ReadError::Connection(e.to_string()))?;
        self.serve_sends();
        if deadline.is_some_and(|d| Instant::now() >= d) && !extra_ready {
            return Err(ReadError::Timeout(READ_TIMEOUT));
        }
        Ok(extra_ready)
    }

    fn flush(&self) -> Result<(), ReadError> {
        match self.conn.flush() {
            Ok(()) => Ok(()),
            // The socket is full: the rest goes with the next flush.
            Err(wayland_client::backend::WaylandError::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock =>
            {
                Ok(())
            }
            Err(e) => Err(ReadError::Connection(e.to_string())),
        }
    }

    fn drain_wake(&self) {
        let mut buf = [0u8; 64];
        while let Ok(n) = rustix::io::read(&self.wake, &mut buf) {
            if n < buf.len() {
                break;
            }
        }
    }

    /// Starts a thread for each paste of our own data that arrived.
    fn serve_sends(&mut self) {
        while let Some(req) = self.state.sends.pop_front() {
            serve_send(req, &self.stop, &self.sends, &self.threads);
        }
    }

    /// Hands an item to the daemon; keeps the newest one while its queue is
    /// full.
    fn emit(&mut self, ev: LocalEvent) {
        match self.tx.try_send(ev) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(ev)) => {
                tracing::debug!("daemon busy: holding the newest clipboard item");
                self.outbox = Some(ev);
            }
            // Nobody listens any more.
            Err(mpsc::error::TrySendError::Closed(_)) => self.stopping = true,
        }
    }

    /// Re-reads `sel` after a `selection` event and emits it if it is news.
    /// Errors only for a dead connection.
    fn handle_change(&mut self, sel: Sel) -> Result<(), String> {
        let Some(offer) = self.state.current(sel) else {
            return Ok(());
        };
        let at_ms = now_ms();
        let item = match self.read_item(&offer, sel) {
            Ok(Some(item)) => item,
            Ok(None) => return Ok(()),
            Err(ReadError::Connection(e)) => return Err(e),
            Err(ReadError::Stopping | ReadError::Superseded) => return Ok(()),
            Err(e) => {
                tracing::info!(error = %e, "skipped a clipboard item that could not be read");
                return Ok(());
            }
        };
        let (hash, event) = item.into_event(at_ms);
        let verdict = self
            .own_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(hash);
        tracing::trace!(?verdict, "clipboard verdict");
        if verdict == Verdict::Emit {
            self.emit(event);
        }
        Ok(())
    }

    /// Reads what `offer` holds: `None` for nothing syncable (empty,
    /// sensitive, or only types this build does not sync).
    fn read_item(&mut self, offer: &Offer, sel: Sel) -> Result<Option<Item>, ReadError> {
        let types = offer.mime_types();
        let secret = match classify(&types) {
            Sensitivity::Public => false,
            Sensitivity::Secret => true,
            Sensitivity::CheckKdeHint => {
                let value = match self.read(offer, sel, KDE_PASSWORD_HINT, HINT_MAX_BYTES) {
                    Ok(v) => Some(v),
                    Err(e @ (ReadError::Connection(_) | ReadError::Stopping)) => return Err(e),
                    Err(ReadError::Superseded) => return Err(ReadError::Superseded),
                    Err(_) => None,
                };
                hint_is_secret(value.as_deref())
            }
        };
        if secret {
            tracing::debug!("skipped a clipboard item marked sensitive");
            return Ok(None);
        }
        let max = self.max_read;
        let mut plan = ReadPlan::from_targets(&types);
        if let Some(target) = plan.files {
            let bytes = self.read(offer, sel, target, max)?;
            let paths = parse_files(target, &bytes);
            if !paths.is_empty() {
                return Ok(Some(Item::Files(paths)));
            }
            // No local files in the list (only web links, say): read the
            // item as if no file list were offered.
            let others: Vec<&str> = types
                .iter()
                .map(String::as_str)
                .filter(|t| !FILE_TARGETS.contains(t))
                .collect();
            plan = ReadPlan::from_targets(&others);
        }
        if let Some(target) = plan.image {
            let bytes = self.read(offer, sel, target, max)?;
            return match to_png_content(target, bytes) {
                Ok(c) => Ok(Some(Item::Content(c))),
                Err(e) => {
                    tracing::debug!(error = %e, "skipped a clipboard image");
                    Ok(None)
                }
            };
        }
        if plan.is_empty() {
            tracing::trace!("clipboard item has no type this build syncs");
            return Ok(None);
        }
        let text = match plan.text {
            Some(t) => Some(decode_text(t, self.read(offer, sel, t, max)?)),
            None => None,
        };
        let html = match plan.html {
            true => Some(decode_html(self.read(offer, sel, HTML_TARGET, max)?)),
            false => None,
        };
        Ok(ReadPlan::assemble(text, html).map(Item::Content))
    }

    /// Reads type `mime` of `offer` (on `sel`) through a pipe: at most
    /// `limit` bytes, at most [`READ_TIMEOUT`] between two pieces. Events
    /// keep being dispatched meanwhile.
    fn read(
        &mut self,
        offer: &Offer,
        sel: Sel,
        mime: &str,
        limit: usize,
    ) -> Result<Vec<u8>, ReadError> {
        // Only our end is non-blocking: the write end goes to the source,
        // which may expect a blocking pipe.
        let (r, w) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(ReadError::Pipe)?;
        rustix::io::ioctl_fionbio(&r, true).map_err(ReadError::Pipe)?;
        offer.receive(mime, w.as_fd());
        self.flush()?;
        // The compositor has its own copy once the request is sent; ours
        // must go, or the read never sees the end of the data.
        drop(w);
        let mut data = Vec::new();
        let mut chunk = vec![0u8; READ_CHUNK];
        let mut deadline = Instant::now() + READ_TIMEOUT;
        loop {
            match rustix::io::read(&r, &mut chunk) {
                Ok(0) => return Ok(data),
                Ok(n) => {
                    if data.len().saturating_add(n) > limit {
                        return Err(ReadError::TooLarge);
                    }
                    data.extend_from_slice(&chunk[..n]);
                    deadline = Instant::now() + READ_TIMEOUT;
                    continue;
                }
                Err(Errno::AGAIN | Errno::INTR) => {}
                Err(e) => return Err(ReadError::Pipe(e)),
            }
            self.wait(Some(r.as_fd()), Some(deadline))?;
            if self.stopping {
                return Err(ReadError::Stopping);
            }
            // A remote item to apply does not wait for a slow source: it
            // replaces the item being read (which then reads as superseded).
            self.apply_commands();
            if self.state.pending.contains(&sel) {
                return Err(ReadError::Superseded);
            }
        }
    }

    /// Runs the daemon's commands that are waiting.
    fn apply_commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Apply { content, done } => {
                    let res = self.apply(&content);
                    if let Err(e) = &res {
                        tracing::warn!(error = %e, "could not set the clipboard");
                    }
                    let _ = done.send(res);
                }
                Command::ApplyFiles { paths, done } => {
                    let res = self.apply_files(&paths);
                    if let Err(e) = &res {
                        tracing::warn!(error = %e, "could not set the clipboard");
                    }
                    let _ = done.send(res);
                }
            }
        }
    }

    /// Sets every selection to a new source serving `payloads`.
    fn offer(&mut self, payloads: Vec<(String, Payload)>) -> Result<(), ClipboardError> {
        let data = Arc::new(SourceData { payloads });
        for &sel in &self.apply_to {
            let source = self.control.set(&self.qh, sel, &data);
            self.state.sources.push(source);
        }
        self.flush()
            .map_err(|_| ClipboardError::Wayland("the Wayland connection failed".into()))
    }

    fn apply(&mut self, content: &ClipContent) -> Result<(), ClipboardError> {
        let payloads = match content {
            ClipContent::Text(t) => text_payloads(t.as_bytes()),
            ClipContent::Html { html, alt_text } => {
                let mut p = vec![(
                    HTML_TARGET.to_owned(),
                    Payload::bytes(html.clone().into_bytes()),
                )];
                p.extend(text_payloads(alt_text.as_bytes()));
                p
            }
            ClipContent::Image { width, height, png } => {
                check_png(*width, *height, png)
                    .map_err(|e| ClipboardError::Backend(e.to_string()))?;
                let png: Arc<[u8]> = png.as_slice().into();
                let src = Arc::clone(&png);
                vec![
                    (PNG_TARGET.to_owned(), Payload::Bytes(png)),
                    (
                        BMP_TARGET.to_owned(),
                        Payload::lazy(move || png_to_bmp(&src)),
                    ),
                ]
            }
            other => return Err(ClipboardError::UnsupportedContent(other.kind_name())),
        };
        // Before setting, so the selection event we cause reads as an echo.
        self.own_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .applied(content_hash(content));
        self.offer(payloads)?;
        tracing::trace!(
            kind = content.kind_name(),
            len = content.payload_len(),
            "clipboard set"
        );
        Ok(())
    }

    /// Serves `paths` as a file list: `text/uri-list`, GNOME's
    /// `x-special/gnome-copied-files`, and the paths as text.
    fn apply_files(&mut self, paths: &[PathBuf]) -> Result<(), ClipboardError> {
        let (paths, uri_list) = file_list_to_apply(paths, &self.own_writes)?;
        let mut payloads = vec![
            (URI_LIST_TARGET.to_owned(), Payload::bytes(uri_list)),
            (
                GNOME_FILES_TARGET.to_owned(),
                Payload::bytes(encode_gnome_copied_files(&paths)),
            ),
        ];
        payloads.extend(text_payloads(&encode_plain_paths(&paths)));
        self.offer(payloads)?;
        tracing::trace!(count = paths.len(), "clipboard set to a file list");
        Ok(())
    }
}

/// The same text under every text type.
fn text_payloads(text: &[u8]) -> Vec<(String, Payload)> {
    let bytes: Arc<[u8]> = text.into();
    TEXT_OFFER
        .iter()
        .map(|t| ((*t).to_owned(), Payload::Bytes(Arc::clone(&bytes))))
        .collect()
}

/// Serves one paste of our data on a thread of its own (or refuses it by
/// closing the pipe: unknown type, or [`MAX_SENDS`] already running).
fn serve_send(
    req: SendRequest,
    stop: &Arc<OwnedFd>,
    active: &Arc<AtomicUsize>,
    threads: &TaskTracker,
) {
    let SendRequest { data, mime, fd } = req;
    let Some(payload) = data
        .payloads
        .iter()
        .find(|(m, _)| *m == mime)
        .map(|(_, p)| p.clone())
    else {
        tracing::debug!("paste of a type we do not offer refused");
        return;
    };
    if active.fetch_add(1, Ordering::SeqCst) >= MAX_SENDS {
        active.fetch_sub(1, Ordering::SeqCst);
        tracing::debug!("too many pastes at once; one refused");
        return;
    }
    let stop = Arc::clone(stop);
    let active_done = Arc::clone(active);
    let token = threads.token();
    let spawned = std::thread::Builder::new()
        .name("clipmesh-clip-send".into())
        .spawn(move || {
            // A conversion (PNG to BMP) runs here, off the loop.
            match payload.resolve() {
                Some(bytes) => {
                    if let Err(e) = write_all(&fd, &bytes, stop.as_fd()) {
                        tracing::debug!(error = %e, len = bytes.len(), "paste not completed");
                    }
                }
                None => tracing::debug!("conversion for a paste failed; refused"),
            }
            drop(fd);
            active_done.fetch_sub(1, Ordering::SeqCst);
            drop(token);
        });
    if let Err(e) = spawned {
        active.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!(error = %e, "cannot start a thread to serve a paste");
    }
}

/// Why a paste was not written to the end.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("the paster took nothing for {0:?}")]
    Timeout(Duration),
    #[error("shutting down")]
    Stopping,
    #[error("pipe error: {0}")]
    Io(Errno),
}

/// Writes `data` into `fd` without ever blocking for more than
/// [`SEND_TIMEOUT`] between two pieces, and stops when `stop` hangs up.
fn write_all(fd: &OwnedFd, data: &[u8], stop: BorrowedFd<'_>) -> Result<(), SendError> {
    rustix::io::ioctl_fionbio(fd, true).map_err(SendError::Io)?;
    let mut off = 0;
    let mut deadline = Instant::now() + SEND_TIMEOUT;
    while off < data.len() {
        match rustix::io::write(fd, &data[off..]) {
            Ok(n) => {
                off += n;
                deadline = Instant::now() + SEND_TIMEOUT;
                continue;
            }
            Err(Errno::AGAIN | Errno::INTR) => {}
            Err(e) => return Err(SendError::Io(e)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SendError::Timeout(SEND_TIMEOUT));
        }
        let timeout = Timespec::try_from(left).map_err(|_| SendError::Timeout(SEND_TIMEOUT))?;
        let mut fds = [
            PollFd::new(fd, PollFlags::OUT),
            PollFd::from_borrowed_fd(stop, PollFlags::IN),
        ];
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(SendError::Io(e)),
        }
        if !fds[1].revents().is_empty() {
            return Err(SendError::Stopping);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_all_writes_big_data_through_a_slow_reader() {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
        let (_stop_r, stop_w) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
        let data: Vec<u8> = (0..(3 * 1024 * 1024)).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 4096];
            loop {
                match rustix::io::read(&r, &mut buf) {
                    Ok(0) => break got,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(Errno::INTR) => {}
                    Err(e) => panic!("read: {e}"),
                }
            }
        });
        write_all(&w, &data, stop_w.as_fd()).expect("written");
        drop(w);
        assert_eq!(reader.join().expect("reader"), expected);
    }

    #[test]
    fn write_all_stops_when_the_stop_pipe_hangs_up() {
        // Nobody reads: the pipe fills, then the stop pipe closes.
        let (_r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
        let (stop_r, stop_w) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
        drop(stop_w);
        let data = vec![7u8; 4 * 1024 * 1024];
        assert!(matches!(
            write_all(&w, &data, stop_r.as_fd()),
            Err(SendError::Stopping)
        ));
    }

    #[test]
    fn write_all_reports_a_paster_that_went_away() {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
        let (stop_r, _stop_w) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
        drop(r);
        assert!(matches!(
            write_all(&w, b"data", stop_r.as_fd()),
            Err(SendError::Io(Errno::PIPE))
        ));
    }

    #[test]
    fn text_is_offered_under_every_text_type() {
        let p = text_payloads(b"hi");
        let names: Vec<&str> = p.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(names, TEXT_OFFER);
        // What the watcher reads back is what was offered.
        let plan = ReadPlan::from_targets(&names);
        assert!(plan.text.is_some());
        assert!(!plan.html);
    }
}
