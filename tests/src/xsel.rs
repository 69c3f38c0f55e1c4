//! X11 helpers for the tests and the latency benchmark, built on x11rb.
//!
//! - [`SelectionWatcher`] sees CLIPBOARD owner changes through XFixes on
//!   its own connection, i.e. from *outside* the daemons. Tests wait on it
//!   instead of polling `xclip -o`; the benchmark timestamps its events.
//! - [`SelectionOwner`] takes CLIPBOARD and serves chosen targets (text,
//!   HTML, a password-manager hint) from a thread, like an application
//!   that copied something.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::xfixes::{self, ConnectionExt as _, SelectionEventMask};
use x11rb::protocol::xproto::{
    Atom, AtomEnum, ChangeWindowAttributesAux, ClientMessageEvent, ConnectionExt as _,
    CreateWindowAux, EventMask, PropMode, Property, SelectionNotifyEvent, Window, WindowClass,
    SELECTION_NOTIFY_EVENT,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;
use x11rb::{COPY_DEPTH_FROM_PARENT, COPY_FROM_PARENT, CURRENT_TIME, NONE};

/// How long reading the selection may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a connection and a hidden window on `display`.
fn open(display: &str, mask: EventMask) -> Result<(RustConnection, Window)> {
    let (conn, screen) = RustConnection::connect(Some(display))
        .with_context(|| format!("cannot connect to X display {display}"))?;
    let root = conn
        .setup()
        .roots
        .get(screen)
        .ok_or_else(|| anyhow!("no screen on {display}"))?
        .root;
    let win = conn.generate_id()?;
    conn.create_window(
        COPY_DEPTH_FROM_PARENT,
        win,
        root,
        0,
        0,
        1,
        1,
        0,
        WindowClass::INPUT_OUTPUT,
        COPY_FROM_PARENT,
        &CreateWindowAux::new().event_mask(mask),
    )?;
    Ok((conn, win))
}

fn atom(conn: &RustConnection, name: &str) -> Result<Atom> {
    Ok(conn.intern_atom(false, name.as_bytes())?.reply()?.atom)
}

/// Waits for the next event on `conn` until `deadline`.
fn next_event(conn: &RustConnection, deadline: Instant) -> Result<Option<Event>> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    loop {
        if let Some(ev) = conn.poll_for_event()? {
            return Ok(Some(ev));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let ts = Timespec::try_from(left).map_err(|e| anyhow!("timeout: {e}"))?;
        let mut fds = [PollFd::new(conn.stream(), PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => bail!("poll: {e}"),
        }
    }
}

/// One CLIPBOARD owner change, as seen by a [`SelectionWatcher`].
#[derive(Clone, Copy, Debug)]
pub struct OwnerChange {
    /// When this process received the event.
    pub at: Instant,
    /// The new owner window (`0` when the selection was cleared).
    pub owner: u32,
}

/// Watches CLIPBOARD on one display through XFixes.
pub struct SelectionWatcher {
    conn: RustConnection,
    win: Window,
    clipboard: Atom,
    utf8: Atom,
    html: Atom,
    prop: Atom,
    queued: VecDeque<OwnerChange>,
}

impl std::fmt::Debug for SelectionWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SelectionWatcher({:#x})", self.win)
    }
}

impl SelectionWatcher {
    /// Connects and subscribes to CLIPBOARD owner changes.
    pub fn connect(display: &str) -> Result<Self> {
        let (conn, win) = open(display, EventMask::NO_EVENT)?;
        if conn
            .extension_information(xfixes::X11_EXTENSION_NAME)?
            .is_none()
        {
            bail!("{display} has no XFIXES extension");
        }
        conn.xfixes_query_version(5, 0)?.reply()?;
        let clipboard = atom(&conn, "CLIPBOARD")?;
        conn.xfixes_select_selection_input(
            win,
            clipboard,
            SelectionEventMask::SET_SELECTION_OWNER,
        )?;
        let utf8 = atom(&conn, "UTF8_STRING")?;
        let html = atom(&conn, "text/html")?;
        let prop = atom(&conn, "CLIPMESH_TEST_READ")?;
        conn.sync()?;
        Ok(Self {
            conn,
            win,
            clipboard,
            utf8,
            html,
            prop,
            queued: VecDeque::new(),
        })
    }

    fn note(&mut self, ev: Event) {
        if let Event::XfixesSelectionNotify(e) = ev {
            if e.selection == self.clipboard {
                self.queued.push_back(OwnerChange {
                    at: Instant::now(),
                    owner: e.owner,
                });
            }
        }
    }

    /// The next owner change, waiting at most `timeout`.
    pub fn next_change(&mut self, timeout: Duration) -> Result<Option<OwnerChange>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.queued.pop_front() {
                return Ok(Some(c));
            }
            match next_event(&self.conn, deadline)? {
                Some(ev) => self.note(ev),
                None => return Ok(None),
            }
        }
    }

    /// Owner changes that already arrived, without waiting.
    pub fn drain(&mut self) -> Result<Vec<OwnerChange>> {
        while let Some(ev) = self.conn.poll_for_event()? {
            self.note(ev);
        }
        Ok(self.queued.drain(..).collect())
    }

    /// Reads CLIPBOARD as UTF-8 text; `None` if empty or refused.
    pub fn read_text(&mut self) -> Result<Option<String>> {
        let target = self.utf8;
        Ok(self
            .read(target)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Reads CLIPBOARD as `text/html`; `None` if not offered.
    pub fn read_html(&mut self) -> Result<Option<String>> {
        let target = self.html;
        Ok(self
            .read(target)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    fn read(&mut self, target: Atom) -> Result<Option<Vec<u8>>> {
        self.conn
            .convert_selection(self.win, self.clipboard, target, self.prop, CURRENT_TIME)?;
        self.conn.flush()?;
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            match next_event(&self.conn, deadline)? {
                Some(Event::SelectionNotify(e)) if e.requestor == self.win => {
                    if e.property == NONE {
                        return Ok(None);
                    }
                    let reply = self
                        .conn
                        .get_property(true, self.win, self.prop, AtomEnum::ANY, 0, u32::MAX / 4)?
                        .reply()?;
                    return Ok(Some(reply.value));
                }
                Some(ev) => self.note(ev),
                None => bail!("the clipboard owner did not answer within {READ_TIMEOUT:?}"),
            }
        }
    }

    /// Waits until CLIPBOARD holds `text` (checked once at the start and
    /// after each owner change), at most `timeout`. Returns how many owner
    /// changes it consumed.
    pub fn wait_for_text(&mut self, text: &str, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut changes = 0;
        loop {
            if self.read_text()?.as_deref() == Some(text) {
                return Ok(changes);
            }
            changes += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            if self.next_change(left)?.is_none() {
                let now = self.read_text()?;
                bail!(
                    "clipboard did not become {text:?} within {timeout:?} (it holds {:?})",
                    now.map(|s| s.chars().take(80).collect::<String>())
                );
            }
        }
    }
}

/// What a [`SelectionOwner`] serves: `(target name, bytes)` pairs.
pub type Targets = Vec<(String, Vec<u8>)>;

struct OwnerState {
    /// Served targets, by atom.
    data: Vec<(Atom, Vec<u8>)>,
    /// Selection requests answered so far (any target).
    served: u64,
    /// Serve data longer than this with the ICCCM INCR protocol, in chunks
    /// of this size.
    incr_chunk: Option<usize>,
    /// The INCR transfer in progress (one at a time is enough for tests).
    incr: Option<Incr>,
    /// INCR transfers completed.
    incr_done: u64,
}

/// One INCR transfer: the next chunk goes out when the requestor deletes
/// the property.
struct Incr {
    requestor: Window,
    property: Atom,
    target: Atom,
    data: Vec<u8>,
    offset: usize,
    chunk: usize,
}

/// Owns CLIPBOARD on one display and serves chosen targets until dropped.
pub struct SelectionOwner {
    conn: Arc<RustConnection>,
    win: Window,
    clipboard: Atom,
    stop: Atom,
    state: Arc<(Mutex<OwnerState>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SelectionOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SelectionOwner({:#x})", self.win)
    }
}

impl SelectionOwner {
    /// Connects to `display`, ready to [`SelectionOwner::set`].
    pub fn connect(display: &str) -> Result<Self> {
        let (conn, win) = open(display, EventMask::NO_EVENT)?;
        let clipboard = atom(&conn, "CLIPBOARD")?;
        let targets = atom(&conn, "TARGETS")?;
        let atom_t = u32::from(AtomEnum::ATOM);
        let stop = atom(&conn, "CLIPMESH_TEST_STOP")?;
        let incr_atom = atom(&conn, "INCR")?;
        let conn = Arc::new(conn);
        let state = Arc::new((
            Mutex::new(OwnerState {
                data: Vec::new(),
                served: 0,
                incr_chunk: None,
                incr: None,
                incr_done: 0,
            }),
            Condvar::new(),
        ));
        let thread = {
            let conn = Arc::clone(&conn);
            let state = Arc::clone(&state);
            std::thread::spawn(move || loop {
                let Ok(ev) = conn.wait_for_event() else {
                    return;
                };
                match ev {
                    Event::ClientMessage(e) if e.type_ == stop => return,
                    Event::SelectionRequest(req) => {
                        let mut st = state.0.lock().unwrap_or_else(|p| p.into_inner());
                        let property = if req.target == targets {
                            let mut list: Vec<u32> = st.data.iter().map(|(a, _)| *a).collect();
                            list.push(targets);
                            let _ = conn.change_property32(
                                PropMode::REPLACE,
                                req.requestor,
                                req.property,
                                atom_t,
                                &list,
                            );
                            req.property
                        } else if let Some((a, bytes, chunk)) = st
                            .data
                            .iter()
                            .find(|(a, _)| *a == req.target)
                            .and_then(|(a, b)| {
                                let c = st.incr_chunk.filter(|c| b.len() > *c)?;
                                Some((*a, b.clone(), c))
                            })
                        {
                            // INCR: announce the size, then send chunks as
                            // the requestor deletes the property.
                            let _ = conn.change_window_attributes(
                                req.requestor,
                                &ChangeWindowAttributesAux::new()
                                    .event_mask(EventMask::PROPERTY_CHANGE),
                            );
                            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                            let _ = conn.change_property32(
                                PropMode::REPLACE,
                                req.requestor,
                                req.property,
                                incr_atom,
                                &[len],
                            );
                            st.incr = Some(Incr {
                                requestor: req.requestor,
                                property: req.property,
                                target: a,
                                data: bytes,
                                offset: 0,
                                chunk,
                            });
                            req.property
                        } else if let Some((a, bytes)) =
                            st.data.iter().find(|(a, _)| *a == req.target)
                        {
                            let _ = conn.change_property8(
                                PropMode::REPLACE,
                                req.requestor,
                                req.property,
                                *a,
                                bytes,
                            );
                            req.property
                        } else {
                            NONE
                        };
                        st.served += 1;
                        drop(st);
                        state.1.notify_all();
                        let _ = conn.send_event(
                            false,
                            req.requestor,
                            EventMask::NO_EVENT,
                            SelectionNotifyEvent {
                                response_type: SELECTION_NOTIFY_EVENT,
                                sequence: 0,
                                time: req.time,
                                requestor: req.requestor,
                                selection: req.selection,
                                target: req.target,
                                property,
                            },
                        );
                        let _ = conn.flush();
                    }
                    Event::PropertyNotify(e) if e.state == Property::DELETE => {
                        let mut st = state.0.lock().unwrap_or_else(|p| p.into_inner());
                        let Some(t) = st.incr.as_mut() else { continue };
                        if e.window != t.requestor || e.atom != t.property {
                            continue;
                        }
                        let end = (t.offset + t.chunk).min(t.data.len());
                        let piece = &t.data[t.offset..end];
                        let _ = conn.change_property8(
                            PropMode::REPLACE,
                            t.requestor,
                            t.property,
                            t.target,
                            piece,
                        );
                        let finished = piece.is_empty();
                        t.offset = end;
                        if finished {
                            st.incr = None;
                            st.incr_done += 1;
                            drop(st);
                            state.1.notify_all();
                        }
                        let _ = conn.flush();
                    }
                    _ => {}
                }
            })
        };
        Ok(Self {
            conn,
            win,
            clipboard,
            stop,
            state,
            thread: Some(thread),
        })
    }

    /// Replaces the served data and (re)takes CLIPBOARD ownership.
    pub fn set(&self, targets: &[(&str, &[u8])]) -> Result<()> {
        let mut data = Vec::with_capacity(targets.len());
        for (name, bytes) in targets {
            data.push((atom(&self.conn, name)?, bytes.to_vec()));
        }
        self.state.0.lock().unwrap_or_else(|p| p.into_inner()).data = data;
        self.conn
            .set_selection_owner(self.win, self.clipboard, CURRENT_TIME)?;
        self.conn.flush()?;
        Ok(())
    }

    /// Selection requests answered so far.
    pub fn served(&self) -> u64 {
        self.state
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .served
    }

    /// Waits until at least `n` requests were answered in total.
    pub fn wait_served(&self, n: u64, timeout: Duration) -> Result<()> {
        let guard = self.state.0.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, res) = self
            .state
            .1
            .wait_timeout_while(guard, timeout, |st| st.served < n)
            .unwrap_or_else(|p| p.into_inner());
        if res.timed_out() {
            bail!(
                "only {} selection requests answered, wanted {n}",
                guard.served
            );
        }
        Ok(())
    }

    /// Serves data longer than `chunk` bytes with the INCR protocol.
    pub fn set_incr_chunk(&self, chunk: Option<usize>) {
        self.state
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .incr_chunk = chunk;
    }

    /// INCR transfers completed so far.
    pub fn incr_done(&self) -> u64 {
        self.state
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .incr_done
    }

    /// Serves `text` as UTF8_STRING.
    pub fn set_text(&self, text: &str) -> Result<()> {
        self.set(&[("UTF8_STRING", text.as_bytes())])
    }
}

impl Drop for SelectionOwner {
    fn drop(&mut self) {
        let ev = ClientMessageEvent::new(32, self.win, self.stop, [0u32; 5]);
        let _ = self
            .conn
            .send_event(false, self.win, EventMask::NO_EVENT, ev);
        let _ = self.conn.flush();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
