//! X11 backend, part 1: the change watcher and selection reader.
//!
//! One dedicated thread owns its own X connection and a hidden 1×1 window.
//! It asks the XFixes extension for `SetSelectionOwner` notifications on
//! CLIPBOARD (and PRIMARY when configured), then sleeps in the kernel until
//! the X server sends something: no polling, no timers, no wake-ups while
//! the clipboard is idle.
//!
//! Each owner change is only a hint. The watcher re-reads the selection on
//! the same connection — `TARGETS` first (sensitivity markers, which formats
//! exist), then HTML and/or text — and hands the content to the shared
//! [`OwnWrites`]. Reads are bounded by [`READ_TIMEOUT`] and [`crate::MAX_READ_BYTES`]
//! (large items arrive by the ICCCM `INCR` protocol), so a hung or hostile
//! owner can delay the watcher but never block or exhaust it. Owner changes
//! that arrive during a read are remembered and handled afterwards, newest
//! content wins.
//!
//! Writing (owning the selection and serving paste requests) is arboard's
//! job, in `x11/worker.rs`. The worker stops this thread by sending a
//! `ClientMessage` to the watcher's window through [`X11Waker`].

mod owner;
mod worker;

use super::uri_list::{parse_files, FILE_TARGETS};
use super::{ENV_DISPLAY, ENV_WAYLAND_DISPLAY};
use crate::dedupe::{OwnWrites, ReadItem as Item, Verdict};
use crate::event::now_ms;
use crate::formats::{decode_html, decode_text, ReadPlan, HTML_TARGET, TEXT_TARGETS};
use crate::picture::{to_png_content, IMAGE_TARGETS};
use crate::sensitive::{
    classify, hint_is_secret, Sensitivity, CONCEALED_MARKERS, KDE_PASSWORD_HINT,
};
use crate::{
    Capabilities, ClipboardConfig, ClipboardError, ClipboardHandle, LocalEvent, APPLY_QUEUE,
    LOCAL_CHANGE_QUEUE,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use x11rb::connection::{Connection, RequestConnection};
use x11rb::errors::{ConnectionError, ReplyError};
use x11rb::protocol::xfixes::{self, ConnectionExt as _, SelectionEventMask};
use x11rb::protocol::xproto::{
    Atom, AtomEnum, ClientMessageEvent, ConnectionExt as _, CreateWindowAux, EventMask, Property,
    Window, WindowClass,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::{COPY_DEPTH_FROM_PARENT, COPY_FROM_PARENT, CURRENT_TIME, NONE};

/// How long one selection read may take before the item is skipped; for
/// `INCR` transfers, the longest gap between two chunks. Generous because
/// an image copy is several round trips through an owner that may be
/// starved of CPU (observed: xclip on a loaded 2-core machine missed 2 s);
/// a hung owner delays the watcher by this much, and newer changes wait.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Reads of one owner change before it is skipped (only timeouts retry).
const READ_ATTEMPTS: u32 = 2;

/// Fixed atoms the watcher needs.
#[derive(Clone, Copy, Debug)]
struct Atoms {
    clipboard: Atom,
    primary: Atom,
    targets: Atom,
    incr: Atom,
    /// Property on our window that owners write converted data into.
    dest: Atom,
    /// Second property, for the text requested together with `TARGETS`.
    text: Atom,
    /// `ClientMessage` type that tells the watcher to stop.
    stop: Atom,
}

/// Wakes the watcher thread out of its blocking wait so it stops.
#[derive(Clone)]
pub(crate) struct X11Waker {
    conn: Arc<RustConnection>,
    window: Window,
    stop: Atom,
}

impl std::fmt::Debug for X11Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "X11Waker {{ window: {:#x} }}", self.window)
    }
}

impl X11Waker {
    /// Asks the watcher to stop; harmless if it already has.
    pub(crate) fn wake(&self) {
        let ev = ClientMessageEvent::new(32, self.window, self.stop, [0u32; 5]);
        let sent = self
            .conn
            .send_event(false, self.window, EventMask::NO_EVENT, ev)
            .map(|_| ())
            .and_then(|()| self.conn.flush());
        if let Err(e) = sent {
            tracing::debug!(error = %e, "could not wake the clipboard watcher (already gone)");
        }
    }
}

/// Why one read of the selection produced nothing.
#[derive(Debug)]
enum ReadError {
    /// The owner did not answer in time.
    Timeout,
    /// The item is larger than the read bound
    /// ([`ClipboardConfig::max_read_bytes`]).
    TooLarge,
    /// The watcher was told to stop in the middle of a read.
    Stopping,
    /// The X connection failed: the watcher stops.
    Connection(String),
}

impl From<ConnectionError> for ReadError {
    fn from(e: ConnectionError) -> Self {
        Self::Connection(e.to_string())
    }
}

impl From<ReplyError> for ReadError {
    fn from(e: ReplyError) -> Self {
        Self::Connection(e.to_string())
    }
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        Self::Connection(e.to_string())
    }
}

/// The watcher: owns the connection's event stream.
pub(crate) struct X11Watcher {
    conn: Arc<RustConnection>,
    window: Window,
    atoms: Atoms,
    /// Atoms of every target name the watcher understands (text, HTML,
    /// sensitivity markers), so `TARGETS` replies are named without one
    /// round trip per atom. Unknown atoms cannot matter and are ignored.
    known: Vec<(Atom, &'static str)>,
    /// The selections being watched.
    selections: Vec<Atom>,
    /// Selections whose owner changed and that were not re-read yet.
    pending: VecDeque<Atom>,
    own_writes: Arc<Mutex<OwnWrites>>,
    tx: mpsc::Sender<LocalEvent>,
    stopping: bool,
    /// Largest item read ([`ClipboardConfig::max_read_bytes`]).
    max_read: usize,
}

impl std::fmt::Debug for X11Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "X11Watcher {{ window: {:#x} }}", self.window)
    }
}

/// Whether `DISPLAY` is set (and not empty).
pub(crate) fn display_set() -> bool {
    std::env::var_os(ENV_DISPLAY).is_some_and(|v| !v.is_empty())
}

/// Checks the environment for a display before trying to connect, so the
/// error says what to do.
pub(crate) fn check_environment() -> Result<(), ClipboardError> {
    if display_set() {
        if std::env::var_os(ENV_WAYLAND_DISPLAY).is_some_and(|v| !v.is_empty()) {
            tracing::info!("Wayland session: using the X11 clipboard through XWayland");
        }
        Ok(())
    } else {
        Err(ClipboardError::NoDisplay)
    }
}

/// Wraps an X11 protocol or connection error.
pub(super) fn x(e: &dyn std::fmt::Display) -> ClipboardError {
    ClipboardError::X11(e.to_string())
}

/// Connects to `$DISPLAY` and creates the 1×1 unmapped window that the
/// watcher and the selection owner each use on their own connection.
pub(super) fn connect_with_window(
    aux: &CreateWindowAux,
) -> Result<(RustConnection, Window), ClipboardError> {
    let (conn, screen_num) =
        RustConnection::connect(None).map_err(|e| ClipboardError::Connect {
            reason: e.to_string(),
        })?;
    let root = conn
        .setup()
        .roots
        .get(screen_num)
        .ok_or_else(|| ClipboardError::X11("the display has no such screen".into()))?
        .root;
    let window = conn.generate_id().map_err(|e| x(&e))?;
    conn.create_window(
        COPY_DEPTH_FROM_PARENT,
        window,
        root,
        0,
        0,
        1,
        1,
        0,
        WindowClass::INPUT_OUTPUT,
        COPY_FROM_PARENT,
        aux,
    )
    .map_err(|e| x(&e))?;
    Ok((conn, window))
}

/// Interns `names` in one round trip, returning their atoms in order.
pub(super) fn intern_all<'a>(
    conn: &RustConnection,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Atom>, ClipboardError> {
    let cookies = names
        .into_iter()
        .map(|n| conn.intern_atom(false, n.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| x(&e))?;
    cookies
        .into_iter()
        .map(|c| Ok(c.reply().map_err(|e| x(&e))?.atom))
        .collect()
}

/// Connects, checks XFixes, creates the window and subscribes to owner
/// changes. Returns the watcher (to run on its own thread) and its waker.
pub(crate) fn connect(
    cfg: ClipboardConfig,
    own_writes: Arc<Mutex<OwnWrites>>,
    tx: mpsc::Sender<LocalEvent>,
) -> Result<(X11Watcher, X11Waker), ClipboardError> {
    check_environment()?;
    // PropertyNotify carries INCR chunks.
    let (conn, window) =
        connect_with_window(&CreateWindowAux::new().event_mask(EventMask::PROPERTY_CHANGE))?;

    if conn
        .extension_information(xfixes::X11_EXTENSION_NAME)
        .map_err(|e| x(&e))?
        .is_none()
    {
        return Err(ClipboardError::MissingXFixes);
    }
    // The client must announce its XFixes version before using it.
    conn.xfixes_query_version(5, 0)
        .map_err(|e| x(&e))?
        .reply()
        .map_err(|e| x(&e))?;

    // Intern every atom in one round trip.
    let fixed = [
        "CLIPBOARD",
        "PRIMARY",
        "TARGETS",
        "INCR",
        "CLIPMESH_SELECTION",
        "CLIPMESH_STOP",
        "CLIPMESH_TEXT",
    ];
    let named: Vec<&'static str> = TEXT_TARGETS
        .iter()
        .chain([HTML_TARGET, KDE_PASSWORD_HINT].iter())
        .chain(CONCEALED_MARKERS.iter())
        .chain(IMAGE_TARGETS.iter().map(|(t, _)| t))
        .chain(FILE_TARGETS.iter())
        .copied()
        .collect();
    let interned = intern_all(&conn, fixed.iter().chain(named.iter()).copied())?;
    let atoms = Atoms {
        clipboard: interned[0],
        primary: interned[1],
        targets: interned[2],
        incr: interned[3],
        dest: interned[4],
        stop: interned[5],
        text: interned[6],
    };
    let known: Vec<(Atom, &'static str)> =
        interned[fixed.len()..].iter().copied().zip(named).collect();

    let mut selections = vec![atoms.clipboard];
    if cfg.primary {
        selections.push(atoms.primary);
    }
    for &sel in &selections {
        conn.xfixes_select_selection_input(window, sel, SelectionEventMask::SET_SELECTION_OWNER)
            .map_err(|e| x(&e))?;
    }
    conn.flush().map_err(|e| x(&e))?;

    let conn = Arc::new(conn);
    let waker = X11Waker {
        conn: Arc::clone(&conn),
        window,
        stop: atoms.stop,
    };
    let watcher = X11Watcher {
        conn,
        window,
        atoms,
        known,
        selections,
        pending: VecDeque::new(),
        own_writes,
        tx,
        stopping: false,
        max_read: cfg.max_read_bytes(),
    };
    Ok((watcher, waker))
}

impl X11Watcher {
    /// The thread body: wait for events until stopped or disconnected.
    pub(crate) fn run(mut self) {
        tracing::debug!(window = self.window, "clipboard watcher started");
        while !self.stopping {
            if let Some(sel) = self.pending.pop_front() {
                if let Err(e) = self.handle_change(sel) {
                    tracing::warn!(error = %e, "clipboard watcher lost the X connection");
                    break;
                }
                continue;
            }
            match self.conn.wait_for_event() {
                Ok(ev) => self.dispatch(ev),
                Err(e) => {
                    tracing::warn!(error = %e, "clipboard watcher lost the X connection");
                    break;
                }
            }
        }
        let _ = self.conn.destroy_window(self.window);
        let _ = self.conn.flush();
        tracing::debug!("clipboard watcher stopped");
    }

    /// Handles an event that is not the answer to a read in progress.
    fn dispatch(&mut self, ev: Event) {
        match ev {
            Event::XfixesSelectionNotify(e)
                if e.owner != NONE
                    && self.selections.contains(&e.selection)
                    && !self.pending.contains(&e.selection) =>
            {
                self.pending.push_back(e.selection);
            }
            Event::ClientMessage(e) if e.type_ == self.atoms.stop && e.window == self.window => {
                self.stopping = true;
            }
            // Late answers to reads that timed out, INCR leftovers, etc.
            ev => tracing::trace!(kind = ev_kind(&ev), "clipboard event ignored"),
        }
    }

    /// Re-reads `sel` after an owner change and emits it if it is news.
    /// Errors only for a dead connection.
    fn handle_change(&mut self, sel: Atom) -> Result<(), String> {
        let at_ms = now_ms();
        let mut attempt = 1;
        let content = loop {
            match self.read_content(sel) {
                Ok(Some(c)) => break c,
                Ok(None) => return Ok(()),
                Err(ReadError::Connection(e)) => return Err(e),
                Err(ReadError::Stopping) => return Ok(()),
                // An owner starved of CPU can miss the deadline once; read
                // again unless a newer change is already waiting.
                Err(ReadError::Timeout)
                    if attempt < READ_ATTEMPTS && !self.pending.contains(&sel) =>
                {
                    tracing::debug!(attempt, "clipboard read timed out; reading again");
                    attempt += 1;
                }
                Err(e) => {
                    tracing::info!(error = ?e, "skipped a clipboard item that could not be read");
                    return Ok(());
                }
            }
        };
        let (hash, event) = content.into_event(at_ms);
        let verdict = self
            .own_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(hash);
        tracing::trace!(?verdict, "clipboard verdict");
        if verdict == Verdict::Emit && self.tx.blocking_send(event).is_err() {
            // Nobody listens any more.
            self.stopping = true;
        }
        Ok(())
    }

    /// Reads what is on `sel` now: `None` for nothing syncable (empty,
    /// sensitive, or only formats this build does not sync). Which kind of
    /// item is read is [`ReadPlan::from_targets`]'s choice.
    ///
    /// `TARGETS` and `UTF8_STRING` are requested together (one round trip
    /// through the owner for the common plain-text copy). The text lands in
    /// a property on our window and is only fetched once `TARGETS` says the
    /// item is not sensitive and is text; otherwise it is dropped (an `INCR`
    /// answer is drained first, see [`X11Watcher::discard`]).
    fn read_content(&mut self, sel: Atom) -> Result<Option<Item>, ReadError> {
        let utf8 = self.atom_of("UTF8_STRING").unwrap_or(NONE);
        let answers = self.convert_many(
            sel,
            &[
                (self.atoms.targets, self.atoms.dest),
                (utf8, self.atoms.text),
            ],
        )?;
        let targets = match answers[0] {
            true => Some(self.fetch_targets()?),
            false => None,
        };
        let utf8_pending = answers[1];
        let fallback = targets.is_none();
        let (mut plan, names) = match targets {
            Some(bytes) => {
                let names: Vec<&'static str> = bytes
                    .chunks_exact(4)
                    .filter_map(|c| {
                        let atom = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
                        self.known.iter().find(|(a, _)| *a == atom).map(|(_, n)| *n)
                    })
                    .collect();
                let secret = match classify(&names) {
                    Sensitivity::Public => false,
                    Sensitivity::Secret => true,
                    Sensitivity::CheckKdeHint => {
                        let value = match self.atom_of(KDE_PASSWORD_HINT) {
                            Some(a) => self.read(sel, a).unwrap_or(None),
                            None => None,
                        };
                        hint_is_secret(value.as_deref())
                    }
                };
                if secret {
                    if utf8_pending {
                        self.discard(self.atoms.text)?;
                    }
                    tracing::debug!("skipped a clipboard item marked sensitive");
                    return Ok(None);
                }
                (ReadPlan::from_targets(&names), names)
            }
            // Owners that cannot list their targets: plain text only.
            None => (ReadPlan::fallback(), Vec::new()),
        };
        if let Some(target) = plan.files {
            let bytes = match self.atom_of(target) {
                Some(a) => self.read(sel, a)?,
                None => None,
            };
            let paths = bytes.map(|b| parse_files(target, &b)).unwrap_or_default();
            if !paths.is_empty() {
                if utf8_pending {
                    self.discard(self.atoms.text)?;
                }
                return Ok(Some(Item::Files(paths)));
            }
            // No local files in the list (only web links, say): read the
            // item as if no file list were offered.
            let others: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| !FILE_TARGETS.contains(n))
                .collect();
            plan = ReadPlan::from_targets(&others);
        }
        if let Some(target) = plan.image {
            if utf8_pending {
                self.discard(self.atoms.text)?;
            }
            let Some(bytes) = (match self.atom_of(target) {
                Some(a) => self.read(sel, a)?,
                None => None,
            }) else {
                return Ok(None);
            };
            return match to_png_content(target, bytes) {
                Ok(c) => Ok(Some(Item::Content(c))),
                Err(e) => {
                    tracing::debug!(error = %e, "skipped a clipboard image");
                    Ok(None)
                }
            };
        }
        let mut text = None;
        if utf8_pending {
            let bytes = self.fetch_property(self.atoms.text)?;
            if plan.text == Some("UTF8_STRING") {
                text = Some(decode_text("UTF8_STRING", bytes));
            }
        }
        // Another text target was the better offer, or (owners without
        // TARGETS) UTF8_STRING was refused: one more request.
        let other = match plan.text {
            Some("UTF8_STRING") if fallback => Some("STRING"),
            Some("UTF8_STRING") | None => None,
            Some(t) => Some(t),
        };
        if let (None, Some(target)) = (&text, other) {
            if let Some(a) = self.atom_of(target) {
                text = self.read(sel, a)?.map(|b| decode_text(target, b));
            }
        }
        let html = match (plan.html, self.atom_of(HTML_TARGET)) {
            (true, Some(a)) => self.read(sel, a)?.map(decode_html),
            _ => None,
        };
        if plan.is_empty() {
            tracing::trace!("clipboard item has no text or html");
            return Ok(None);
        }
        Ok(ReadPlan::assemble(text, html).map(Item::Content))
    }

    fn atom_of(&self, name: &str) -> Option<Atom> {
        self.known.iter().find(|(_, n)| *n == name).map(|(a, _)| *a)
    }

    /// Converts `sel` to `target` and returns the bytes, or `None` when the
    /// owner refuses (or there is no owner).
    fn read(&mut self, sel: Atom, target: Atom) -> Result<Option<Vec<u8>>, ReadError> {
        if self.convert_many(sel, &[(target, self.atoms.dest)])?[0] {
            self.fetch_property(self.atoms.dest).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Asks the owner of `sel` for each `(target, property)` at once and
    /// waits for every answer. `true` where the data is now in the property
    /// (still to be fetched), `false` where the owner refused.
    fn convert_many(
        &mut self,
        sel: Atom,
        requests: &[(Atom, Atom)],
    ) -> Result<Vec<bool>, ReadError> {
        let conn = Arc::clone(&self.conn);
        for &(target, prop) in requests {
            conn.delete_property(self.window, prop)?;
            conn.convert_selection(self.window, sel, target, prop, CURRENT_TIME)?;
        }
        conn.flush()?;
        let mut answers: Vec<Option<bool>> = vec![None; requests.len()];
        let deadline = Instant::now() + READ_TIMEOUT;
        while answers.iter().any(Option::is_none) {
            match self.next_event_until(deadline)? {
                Event::SelectionNotify(e) if e.requestor == self.window && e.selection == sel => {
                    let slot = requests
                        .iter()
                        .zip(answers.iter())
                        .position(|(&(t, _), a)| t == e.target && a.is_none());
                    if let Some(i) = slot {
                        tracing::trace!(
                            request = i,
                            refused = e.property == NONE,
                            "clipboard owner answered"
                        );
                        answers[i] = Some(e.property != NONE);
                    }
                }
                ev => {
                    self.dispatch(ev);
                    if self.stopping {
                        return Err(ReadError::Stopping);
                    }
                }
            }
        }
        Ok(answers.into_iter().map(|a| a == Some(true)).collect())
    }

    /// Deletes a converted property without keeping it. An owner that
    /// answered by `INCR` serves nothing else until the transfer ends (xclip
    /// answers every target with its data, so the `UTF8_STRING` requested
    /// along with `TARGETS` can be an `INCR` of a large image): such a
    /// transfer is drained, chunk by chunk, and dropped.
    fn discard(&mut self, prop: Atom) -> Result<(), ReadError> {
        let reply = self
            .conn
            .get_property(false, self.window, prop, AtomEnum::ANY, 0, 0)?
            .reply()?;
        self.conn.delete_property(self.window, prop)?;
        if reply.type_ == self.atoms.incr {
            // The deletion asked for the first chunk.
            self.follow_incr(prop, |_| {})?;
        }
        self.conn.flush()?;
        Ok(())
    }

    /// Reads the `TARGETS` answer without deleting it. The `UTF8_STRING`
    /// requested with it may be an `INCR` transfer waiting for us to delete
    /// its property, and some owners (xclip) take *any* deletion on our
    /// window as that signal: deleting `TARGETS` first made xclip put its
    /// first chunk in place unasked, the drain below then read that chunk as
    /// a whole value, and xclip waited forever for the rest (every later
    /// read of that owner timed out). The property is deleted before its
    /// next use ([`X11Watcher::convert_many`]).
    fn fetch_targets(&mut self) -> Result<Vec<u8>, ReadError> {
        self.fetch(self.atoms.dest, false)
    }

    /// Reads (and deletes) property `prop` of our window, following `INCR`.
    fn fetch_property(&mut self, prop: Atom) -> Result<Vec<u8>, ReadError> {
        self.fetch(prop, true)
    }

    /// Reads property `prop` of our window, deleting it when `delete` (an
    /// `INCR` transfer is always deleted: that asks for its first chunk)
    /// and following `INCR`.
    fn fetch(&mut self, prop: Atom, delete: bool) -> Result<Vec<u8>, ReadError> {
        let reply = self
            .conn
            .get_property(delete, self.window, prop, AtomEnum::ANY, 0, u32::MAX / 4)?
            .reply()?;
        if reply.type_ != self.atoms.incr {
            if reply.value.len() > self.max_read {
                return Err(ReadError::TooLarge);
            }
            return Ok(reply.value);
        }
        if !delete {
            self.conn.delete_property(self.window, prop)?;
        }
        let mut data = Vec::new();
        self.follow_incr(prop, |chunk| data.extend_from_slice(chunk))?;
        Ok(data)
    }

    /// Takes the chunks of an `INCR` transfer into `prop` once its first
    /// chunk was asked for: each chunk arrives as a new value of the
    /// property, deleting it asks for the next, and an empty chunk ends the
    /// transfer. At most the read bound in total, at most [`READ_TIMEOUT`]
    /// between chunks.
    fn follow_incr(&mut self, prop: Atom, mut take: impl FnMut(&[u8])) -> Result<(), ReadError> {
        let conn = Arc::clone(&self.conn);
        conn.flush()?;
        let mut total = 0usize;
        let mut deadline = Instant::now() + READ_TIMEOUT;
        loop {
            match self.next_event_until(deadline)? {
                Event::PropertyNotify(e)
                    if e.window == self.window
                        && e.atom == prop
                        && e.state == Property::NEW_VALUE =>
                {
                    let chunk = conn
                        .get_property(true, self.window, prop, AtomEnum::ANY, 0, u32::MAX / 4)?
                        .reply()?;
                    conn.flush()?;
                    if chunk.value.is_empty() {
                        tracing::trace!(total, "INCR transfer complete");
                        return Ok(());
                    }
                    total = total.saturating_add(chunk.value.len());
                    if total > self.max_read {
                        return Err(ReadError::TooLarge);
                    }
                    take(&chunk.value);
                    deadline = Instant::now() + READ_TIMEOUT;
                }
                ev => {
                    self.dispatch(ev);
                    if self.stopping {
                        return Err(ReadError::Stopping);
                    }
                }
            }
        }
    }

    /// The next event, waiting at most until `deadline`.
    fn next_event_until(&mut self, deadline: Instant) -> Result<Event, ReadError> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        loop {
            if let Some(ev) = self.conn.poll_for_event()? {
                return Ok(ev);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadError::Timeout);
            }
            let timeout = Timespec::try_from(left).map_err(|_| ReadError::Timeout)?;
            let mut fds = [PollFd::new(self.conn.stream(), PollFlags::IN)];
            match poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(ReadError::Connection(e.to_string())),
            }
        }
    }
}

/// A short name of an X event, for trace logs.
fn ev_kind(ev: &Event) -> &'static str {
    match ev {
        Event::SelectionNotify(_) => "SelectionNotify",
        Event::PropertyNotify(_) => "PropertyNotify",
        Event::SelectionRequest(_) => "SelectionRequest",
        Event::SelectionClear(_) => "SelectionClear",
        _ => "other",
    }
}

pub(super) fn spawn(
    cfg: ClipboardConfig,
    cancel: CancellationToken,
) -> Result<(ClipboardHandle, mpsc::Receiver<LocalEvent>), ClipboardError> {
    let own_writes = Arc::new(Mutex::new(OwnWrites::default()));
    let (change_tx, change_rx) = mpsc::channel(LOCAL_CHANGE_QUEUE);
    let (watcher, waker) = connect(cfg, Arc::clone(&own_writes), change_tx)?;
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
                    own_writes,
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
        ClipboardHandle::new(cmd_tx, threads, Capabilities::desktop("x11", cfg.primary)),
        change_rx,
    ))
}
