//! An in-process Wayland clipboard watcher: a thread with its own
//! connection and wlr-data-control device that timestamps every new
//! selection the moment its event arrives (for latency measurements from
//! outside the daemons; `wl-paste --watch` forks a process per change).

use crate::sway::Sway;
use anyhow::{anyhow, Result};
use rustix::event::{poll, PollFd, PollFlags};
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wayland_client::globals::{registry_queue_init, GlobalListContents};
use wayland_client::protocol::{wl_registry, wl_seat};
use wayland_client::{event_created_child, Connection, Dispatch, QueueHandle};
use wayland_protocols_wlr::data_control::v1::client::{
    zwlr_data_control_device_v1 as device, zwlr_data_control_manager_v1 as manager,
    zwlr_data_control_offer_v1 as offer,
};

struct WatchState {
    tx: mpsc::Sender<Instant>,
    /// The selection events of the first round trip (what is on the
    /// clipboard already) are not changes.
    started: bool,
}

/// Reports the time of each clipboard (not primary) change of one
/// compositor; stops when dropped.
#[derive(Debug)]
pub struct WlWatcher {
    rx: mpsc::Receiver<Instant>,
    /// Dropping it hangs up the thread's stop pipe.
    stop: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WlWatcher {
    /// Connects to `sway` and starts watching.
    pub fn connect(sway: &Sway) -> Result<Self> {
        let stream =
            std::os::unix::net::UnixStream::connect(sway.runtime_dir().join(&sway.socket))?;
        let conn = Connection::from_socket(stream)?;
        let (globals, mut queue) = registry_queue_init::<WatchState>(&conn)?;
        let qh = queue.handle();
        let seat: wl_seat::WlSeat = globals.bind(&qh, 1..=1, ())?;
        let mgr: manager::ZwlrDataControlManagerV1 = globals
            .bind(&qh, 1..=2, ())
            .map_err(|e| anyhow!("no wlr-data-control: {e}"))?;
        let _device = mgr.get_data_device(&seat, &qh, ());
        let (tx, rx) = mpsc::channel();
        let mut state = WatchState { tx, started: false };
        queue.roundtrip(&mut state)?;
        state.started = true;
        let (stop_r, stop_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let thread = std::thread::spawn(move || loop {
            if conn.flush().is_err() {
                return;
            }
            let Some(guard) = queue.prepare_read() else {
                if queue.dispatch_pending(&mut state).is_err() {
                    return;
                }
                continue;
            };
            let (wl, stop) = {
                let mut fds = [
                    PollFd::from_borrowed_fd(guard.connection_fd(), PollFlags::IN),
                    PollFd::new(&stop_r, PollFlags::IN),
                ];
                if poll(&mut fds, None).is_err() {
                    return;
                }
                (!fds[0].revents().is_empty(), !fds[1].revents().is_empty())
            };
            if stop || (wl && guard.read().is_err()) {
                return;
            }
            if queue.dispatch_pending(&mut state).is_err() {
                return;
            }
        });
        Ok(Self {
            rx,
            stop: Some(stop_w),
            thread: Some(thread),
        })
    }

    /// The time of the next change, waiting at most `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Instant> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Forgets the changes already reported.
    pub fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }
}

impl Drop for WlWatcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Dispatch<wl_registry::WlRegistry, GlobalListContents> for WatchState {
    fn event(
        _: &mut Self,
        _: &wl_registry::WlRegistry,
        _: wl_registry::Event,
        _: &GlobalListContents,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

impl Dispatch<wl_seat::WlSeat, ()> for WatchState {
    fn event(
        _: &mut Self,
        _: &wl_seat::WlSeat,
        _: wl_seat::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

impl Dispatch<manager::ZwlrDataControlManagerV1, ()> for WatchState {
    fn event(
        _: &mut Self,
        _: &manager::ZwlrDataControlManagerV1,
        _: manager::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

impl Dispatch<device::ZwlrDataControlDeviceV1, ()> for WatchState {
    fn event(
        state: &mut Self,
        _: &device::ZwlrDataControlDeviceV1,
        event: device::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let at = Instant::now();
        match event {
            device::Event::Selection { id: Some(o) } => {
                o.destroy();
                if state.started {
                    let _ = state.tx.send(at);
                }
            }
            device::Event::PrimarySelection { id: Some(o) } => o.destroy(),
            _ => {}
        }
    }

    event_created_child!(WatchState, device::ZwlrDataControlDeviceV1, [
        device::EVT_DATA_OFFER_OPCODE => (offer::ZwlrDataControlOfferV1, ()),
    ]);
}

impl Dispatch<offer::ZwlrDataControlOfferV1, ()> for WatchState {
    fn event(
        _: &mut Self,
        _: &offer::ZwlrDataControlOfferV1,
        _: offer::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}
