//! An in-process Wayland clipboard watcher: a thread with its own
//! connection and wlr-data-control device that timestamps every new
//! selection the moment its event arrives (for latency measurements from
//! outside the daemons; `wl-paste --watch` forks a process per change).

use crate::sway::Sway;
use crate::wlcommon::{self, ignore_data_control_events, ClientThread, DataControl};
use anyhow::Result;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wayland_client::{event_created_child, Connection, Dispatch, QueueHandle};
use wayland_protocols_wlr::data_control::v1::client::{
    zwlr_data_control_device_v1 as device, zwlr_data_control_offer_v1 as offer,
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
    _thread: ClientThread,
}

impl WlWatcher {
    /// Connects to `sway` and starts watching.
    pub fn connect(sway: &Sway) -> Result<Self> {
        let DataControl {
            conn,
            mut queue,
            dev: _device,
            ..
        } = wlcommon::connect::<WatchState>(sway)?;
        let (tx, rx) = mpsc::channel();
        let mut state = WatchState { tx, started: false };
        queue.roundtrip(&mut state)?;
        state.started = true;
        let thread = ClientThread::spawn(move |stop| {
            while wlcommon::turn(&conn, &mut queue, &mut state, &stop, None) {}
        })?;
        Ok(Self {
            rx,
            _thread: thread,
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

ignore_data_control_events!(WatchState);

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
