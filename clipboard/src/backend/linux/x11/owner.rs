//! X11 backend, part 3: our own selection owner, for images and file lists.
//!
//! arboard serves text and HTML, but it re-encodes images (so the bytes a
//! peer copied would not be the bytes served, and our own owner change
//! would not read back as an echo) and offers file lists only as
//! `text/uri-list`. This owner serves exactly the `(target, data)` pairs it
//! is given (data ready, or converted on the first request for it: see
//! [`Payload`]), plus `TARGETS`, from its own thread, X connection and
//! hidden window:
//!
//! - the writer thread calls [`Owner::offer`], which stores the data and
//!   claims the selection (taking it from arboard's window, whose data
//!   arboard then drops, and the other way round);
//! - the owner thread sleeps in the kernel until the X server sends a
//!   `SelectionRequest` and answers it: small answers in one property,
//!   answers over [`INCR_CHUNK`] by the ICCCM `INCR` protocol, one chunk each
//!   time the requestor deletes the property;
//! - a `SelectionClear` (someone else copied) drops the data, unless the
//!   writer has claimed the selection again since.
//!
//! At most [`MAX_INCR`] `INCR` transfers run at once; a requestor that goes
//! away mid-transfer leaves one behind until it is pushed out.

use super::super::payload::Payload;
use super::{connect_with_window, intern_all, x};
use crate::ClipboardError;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::xproto::{
    Atom, AtomEnum, ChangeWindowAttributesAux, ClientMessageEvent, ConnectionExt as _,
    CreateWindowAux, EventMask, PropMode, Property, SelectionNotifyEvent, SelectionRequestEvent,
    Window, SELECTION_NOTIFY_EVENT,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;
use x11rb::{CURRENT_TIME, NONE};

/// Largest answer sent in one property; bigger ones go by `INCR` in chunks
/// of this size.
pub(crate) const INCR_CHUNK: usize = 256 * 1024;
/// Most `INCR` transfers in flight; the oldest is dropped beyond that.
pub(crate) const MAX_INCR: usize = 8;
/// An `INCR` transfer whose requestor has not asked for the next chunk for
/// this long is dropped (checked whenever the owner thread wakes up).
pub(crate) const INCR_IDLE: Duration = Duration::from_secs(10);

/// The data served for one selection.
#[derive(Debug)]
struct Offer {
    selection: Atom,
    /// `(target, data)`; the property type is the target itself.
    targets: Vec<(Atom, Payload)>,
}

/// How to answer one request.
enum Answer {
    Refuse,
    Targets(Vec<Atom>),
    Data(Atom, Payload),
}

/// One `INCR` transfer in progress.
#[derive(Debug)]
struct Incr {
    requestor: Window,
    property: Atom,
    type_: Atom,
    data: Arc<[u8]>,
    offset: usize,
    /// When the requestor last asked for a chunk.
    last: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Atoms {
    clipboard: Atom,
    primary: Atom,
    targets: Atom,
    incr: Atom,
    stop: Atom,
}

/// The writer's handle to the owner thread.
pub(crate) struct Owner {
    conn: Arc<RustConnection>,
    window: Window,
    atoms: Atoms,
    offers: Arc<Mutex<Vec<Offer>>>,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Owner {{ window: {:#x} }}", self.window)
    }
}

/// The owner thread's state.
pub(crate) struct OwnerThread {
    conn: Arc<RustConnection>,
    window: Window,
    atoms: Atoms,
    offers: Arc<Mutex<Vec<Offer>>>,
    transfers: VecDeque<Incr>,
    chunk: usize,
}

/// Connects and creates the owner's window. Run [`OwnerThread::run`] on a
/// thread of its own.
pub(crate) fn connect() -> Result<(Owner, OwnerThread), ClipboardError> {
    let (conn, window) = connect_with_window(&CreateWindowAux::new())?;
    let a = intern_all(
        &conn,
        [
            "CLIPBOARD",
            "PRIMARY",
            "TARGETS",
            "INCR",
            "CLIPMESH_OWNER_STOP",
        ],
    )?;
    let atoms = Atoms {
        clipboard: a[0],
        primary: a[1],
        targets: a[2],
        incr: a[3],
        stop: a[4],
    };
    conn.flush().map_err(|e| x(&e))?;
    // Leave room for the request header in each chunk.
    let chunk = INCR_CHUNK.min(conn.maximum_request_bytes().saturating_sub(1024).max(4096));
    let conn = Arc::new(conn);
    let offers = Arc::new(Mutex::new(Vec::new()));
    Ok((
        Owner {
            conn: Arc::clone(&conn),
            window,
            atoms,
            offers: Arc::clone(&offers),
        },
        OwnerThread {
            conn,
            window,
            atoms,
            offers,
            transfers: VecDeque::new(),
            chunk,
        },
    ))
}

impl Owner {
    /// Serves `targets` on CLIPBOARD (and PRIMARY when `primary`) from now on.
    pub(crate) fn offer(
        &self,
        primary: bool,
        targets: Vec<(&str, Payload)>,
    ) -> Result<(), ClipboardError> {
        let cookies = targets
            .iter()
            .map(|(n, _)| self.conn.intern_atom(false, n.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| x(&e))?;
        let mut served = Vec::with_capacity(targets.len());
        for (c, (_, data)) in cookies.into_iter().zip(targets) {
            served.push((c.reply().map_err(|e| x(&e))?.atom, data));
        }
        let mut selections = vec![self.atoms.clipboard];
        if primary {
            selections.push(self.atoms.primary);
        }
        for sel in selections {
            {
                let mut offers = self.offers.lock().unwrap_or_else(|p| p.into_inner());
                offers.retain(|o| o.selection != sel);
                offers.push(Offer {
                    selection: sel,
                    targets: served.clone(),
                });
            }
            self.conn
                .set_selection_owner(self.window, sel, CURRENT_TIME)
                .map_err(|e| x(&e))?;
            let owner = self
                .conn
                .get_selection_owner(sel)
                .map_err(|e| x(&e))?
                .reply()
                .map_err(|e| x(&e))?
                .owner;
            if owner != self.window {
                return Err(ClipboardError::Backend(
                    "could not take ownership of the selection".into(),
                ));
            }
        }
        Ok(())
    }

    /// A handle that only stops the owner thread.
    pub(crate) fn stopper(&self) -> OwnerStopper {
        OwnerStopper {
            conn: Arc::clone(&self.conn),
            window: self.window,
            stop: self.atoms.stop,
        }
    }

    /// Asks the owner thread to stop; harmless if it already has.
    pub(crate) fn stop(&self) {
        self.stopper().stop();
    }
}

/// Stops the owner thread (for when the writer never starts).
pub(crate) struct OwnerStopper {
    conn: Arc<RustConnection>,
    window: Window,
    stop: Atom,
}

impl OwnerStopper {
    /// Asks the owner thread to stop; harmless if it already has.
    pub(crate) fn stop(&self) {
        let ev = ClientMessageEvent::new(32, self.window, self.stop, [0u32; 5]);
        let sent = self
            .conn
            .send_event(false, self.window, EventMask::NO_EVENT, ev)
            .map(|_| ())
            .and_then(|()| self.conn.flush());
        if let Err(e) = sent {
            tracing::debug!(error = %e, "could not wake the clipboard owner (already gone)");
        }
    }
}

impl OwnerThread {
    /// The thread body: serve requests until stopped or disconnected.
    pub(crate) fn run(mut self) {
        loop {
            let ev = match self.conn.wait_for_event() {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(error = %e, "clipboard owner lost the X connection");
                    break;
                }
            };
            let now = Instant::now();
            self.transfers
                .retain(|t| now.duration_since(t.last) < INCR_IDLE);
            let res = match ev {
                Event::ClientMessage(e)
                    if e.type_ == self.atoms.stop && e.window == self.window =>
                {
                    break
                }
                Event::SelectionRequest(e) => self.serve(&e),
                Event::SelectionClear(e) => self.cleared(e.selection),
                Event::PropertyNotify(e) if e.state == Property::DELETE => {
                    self.next_chunk(e.window, e.atom)
                }
                // X errors of requests to requestors that went away, etc.
                _ => Ok(()),
            };
            if let Err(e) = res.and_then(|()| self.conn.flush()) {
                tracing::warn!(error = %e, "clipboard owner lost the X connection");
                break;
            }
        }
        let _ = self.conn.destroy_window(self.window);
        let _ = self.conn.flush();
        tracing::debug!("clipboard owner stopped");
    }

    fn cleared(&mut self, sel: Atom) -> Result<(), x11rb::errors::ConnectionError> {
        // The writer may have claimed the selection again since this event
        // was queued: only drop the data if someone else owns it now.
        let owner = match self.conn.get_selection_owner(sel)?.reply() {
            Ok(r) => r.owner,
            Err(_) => NONE,
        };
        if owner != self.window {
            self.offers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|o| o.selection != sel);
        }
        Ok(())
    }

    fn serve(&mut self, e: &SelectionRequestEvent) -> Result<(), x11rb::errors::ConnectionError> {
        // Obsolete clients name no property: use the target (ICCCM 2.2).
        let property = if e.property == NONE {
            e.target
        } else {
            e.property
        };
        // A new request replaces any transfer left on the same property.
        self.transfers
            .retain(|t| !(t.requestor == e.requestor && t.property == property));
        let answer = {
            let offers = self.offers.lock().unwrap_or_else(|p| p.into_inner());
            match offers.iter().find(|o| o.selection == e.selection) {
                None => Answer::Refuse,
                Some(o) if e.target == self.atoms.targets => {
                    let mut list = vec![self.atoms.targets];
                    list.extend(o.targets.iter().map(|(t, _)| *t));
                    Answer::Targets(list)
                }
                Some(o) => match o.targets.iter().find(|(t, _)| *t == e.target) {
                    Some((t, data)) => Answer::Data(*t, data.clone()),
                    None => Answer::Refuse,
                },
            }
        };
        let ok = match answer {
            Answer::Refuse => false,
            Answer::Targets(list) => {
                self.conn.change_property32(
                    PropMode::REPLACE,
                    e.requestor,
                    property,
                    AtomEnum::ATOM,
                    &list,
                )?;
                true
            }
            // The offers lock is not held here: a lazy conversion may take a
            // while, and the writer can replace the offer meanwhile.
            Answer::Data(type_, payload) => match payload.resolve() {
                Some(data) => {
                    self.send_data(e.requestor, property, type_, data)?;
                    true
                }
                None => false,
            },
        };
        let notify = SelectionNotifyEvent {
            response_type: SELECTION_NOTIFY_EVENT,
            sequence: 0,
            time: e.time,
            requestor: e.requestor,
            selection: e.selection,
            target: e.target,
            property: if ok { property } else { NONE },
        };
        self.conn
            .send_event(false, e.requestor, EventMask::NO_EVENT, notify)?;
        Ok(())
    }

    /// Writes `data` into the requestor's property, or starts `INCR`.
    fn send_data(
        &mut self,
        requestor: Window,
        property: Atom,
        type_: Atom,
        data: Arc<[u8]>,
    ) -> Result<(), x11rb::errors::ConnectionError> {
        if data.len() <= self.chunk {
            self.conn
                .change_property8(PropMode::REPLACE, requestor, property, type_, &data)?;
            return Ok(());
        }
        // The requestor deletes the INCR property to ask for each chunk.
        self.conn.change_window_attributes(
            requestor,
            &ChangeWindowAttributesAux::new().event_mask(EventMask::PROPERTY_CHANGE),
        )?;
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.conn.change_property32(
            PropMode::REPLACE,
            requestor,
            property,
            self.atoms.incr,
            &[len],
        )?;
        if self.transfers.len() >= MAX_INCR {
            self.transfers.pop_front();
        }
        self.transfers.push_back(Incr {
            requestor,
            property,
            type_,
            data,
            offset: 0,
            last: Instant::now(),
        });
        Ok(())
    }

    fn next_chunk(
        &mut self,
        window: Window,
        atom: Atom,
    ) -> Result<(), x11rb::errors::ConnectionError> {
        let Some(i) = self
            .transfers
            .iter()
            .position(|t| t.requestor == window && t.property == atom)
        else {
            return Ok(());
        };
        let t = &mut self.transfers[i];
        let end = (t.offset + self.chunk).min(t.data.len());
        let chunk = &t.data[t.offset..end];
        self.conn
            .change_property8(PropMode::REPLACE, t.requestor, t.property, t.type_, chunk)?;
        if chunk.is_empty() {
            // The zero-length chunk ends the transfer.
            let done = self.transfers.remove(i);
            if let Some(done) = done {
                self.conn.change_window_attributes(
                    done.requestor,
                    &ChangeWindowAttributesAux::new().event_mask(EventMask::NO_EVENT),
                )?;
            }
        } else {
            t.offset = end;
            t.last = Instant::now();
        }
        Ok(())
    }
}
