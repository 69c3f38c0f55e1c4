//! What the in-process Wayland test clients ([`crate::wloffer`],
//! [`crate::wlwatch`]) share: the wlr-data-control connection, the loop
//! turn of their thread (connection plus a stop pipe), the thread that stops
//! when dropped, and the events neither of them reads.

use crate::sway::Sway;
use anyhow::{anyhow, Result};
use rustix::event::{poll, PollFd, PollFlags};
use std::os::fd::OwnedFd;
use std::thread::JoinHandle;
use wayland_client::globals::{registry_queue_init, GlobalListContents};
use wayland_client::protocol::{wl_registry, wl_seat};
use wayland_client::{Connection, Dispatch, EventQueue};
use wayland_protocols_wlr::data_control::v1::client::{
    zwlr_data_control_device_v1 as device, zwlr_data_control_manager_v1 as manager,
};

/// A connection to a compositor with a data-control device on its seat.
pub(crate) struct DataControl<S> {
    pub conn: Connection,
    pub queue: EventQueue<S>,
    pub mgr: manager::ZwlrDataControlManagerV1,
    pub dev: device::ZwlrDataControlDeviceV1,
}

/// Connects to `sway` and gets a data-control device for its seat.
pub(crate) fn connect<S>(sway: &Sway) -> Result<DataControl<S>>
where
    S: Dispatch<wl_registry::WlRegistry, GlobalListContents>
        + Dispatch<wl_seat::WlSeat, ()>
        + Dispatch<manager::ZwlrDataControlManagerV1, ()>
        + Dispatch<device::ZwlrDataControlDeviceV1, ()>
        + 'static,
{
    let stream = std::os::unix::net::UnixStream::connect(sway.runtime_dir().join(&sway.socket))?;
    let conn = Connection::from_socket(stream)?;
    let (globals, queue) = registry_queue_init::<S>(&conn)?;
    let qh = queue.handle();
    let seat: wl_seat::WlSeat = globals.bind(&qh, 1..=1, ())?;
    let mgr: manager::ZwlrDataControlManagerV1 = globals
        .bind(&qh, 1..=2, ())
        .map_err(|e| anyhow!("no wlr-data-control: {e}"))?;
    let dev = mgr.get_data_device(&seat, &qh, ());
    Ok(DataControl {
        conn,
        queue,
        mgr,
        dev,
    })
}

/// One turn of a client thread's loop: flushes, waits for the connection,
/// the `stop` pipe or the `wake` pipe (a byte is consumed), reads and
/// dispatches. `false`: stop the thread (stop pipe hung up, or the
/// connection failed).
pub(crate) fn turn<S: 'static>(
    conn: &Connection,
    queue: &mut EventQueue<S>,
    state: &mut S,
    stop: &OwnedFd,
    wake: Option<&OwnedFd>,
) -> bool {
    if conn.flush().is_err() {
        return false;
    }
    let Some(guard) = queue.prepare_read() else {
        return queue.dispatch_pending(state).is_ok();
    };
    let (wl, stopped, woken) = {
        let mut fds = vec![
            PollFd::from_borrowed_fd(guard.connection_fd(), PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        if let Some(w) = wake {
            fds.push(PollFd::new(w, PollFlags::IN));
        }
        if poll(&mut fds, None).is_err() {
            return false;
        }
        let ready = |i: usize| fds.get(i).is_some_and(|f| !f.revents().is_empty());
        (ready(0), ready(1), ready(2))
    };
    if stopped {
        return false;
    }
    if let (true, Some(w)) = (woken, wake) {
        let mut b = [0u8; 1];
        let _ = rustix::io::read(w, &mut b);
    }
    if wl && guard.read().is_err() {
        return false;
    }
    queue.dispatch_pending(state).is_ok()
}

/// A client thread that stops (its stop pipe hung up) and is joined when
/// dropped.
#[derive(Debug)]
pub(crate) struct ClientThread {
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl ClientThread {
    /// Starts `body`, which gets the read end of the stop pipe.
    pub fn spawn(body: impl FnOnce(OwnedFd) + Send + 'static) -> Result<Self> {
        let (stop_r, stop_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok(Self {
            stop: Some(stop_w),
            thread: Some(std::thread::spawn(move || body(stop_r))),
        })
    }
}

impl Drop for ClientThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Ignores the events of the registry, seat, manager and offers for a
/// client state `$state` (neither client reads offers).
macro_rules! ignore_data_control_events {
    ($state:ty) => {
        impl wayland_client::Dispatch<
                wayland_client::protocol::wl_registry::WlRegistry,
                wayland_client::globals::GlobalListContents,
            > for $state
        {
            fn event(
                _: &mut Self,
                _: &wayland_client::protocol::wl_registry::WlRegistry,
                _: wayland_client::protocol::wl_registry::Event,
                _: &wayland_client::globals::GlobalListContents,
                _: &wayland_client::Connection,
                _: &wayland_client::QueueHandle<Self>,
            ) {
            }
        }
        wayland_client::delegate_noop!($state: ignore wayland_client::protocol::wl_seat::WlSeat);
        wayland_client::delegate_noop!($state: ignore wayland_protocols_wlr::data_control::v1::client::zwlr_data_control_manager_v1::ZwlrDataControlManagerV1);
        wayland_client::delegate_noop!($state: ignore wayland_protocols_wlr::data_control::v1::client::zwlr_data_control_offer_v1::ZwlrDataControlOfferV1);
    };
}
pub(crate) use ignore_data_control_events;
