//! A Wayland clipboard owner that offers chosen `(MIME type, bytes)` pairs
//! at once (`wl-copy` offers one type only), through wlr-data-control on
//! its own connection and thread. Used to copy an item next to a
//! password-manager marker, the way KeePassXC does.

use crate::sway::Sway;
use crate::wait::poll_until;
use crate::wlcommon::{self, ignore_data_control_events, ClientThread, DataControl};
use anyhow::{anyhow, Context, Result};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use wayland_client::{event_created_child, Connection, Dispatch, QueueHandle};
use wayland_protocols_wlr::data_control::v1::client::{
    zwlr_data_control_device_v1 as device, zwlr_data_control_offer_v1 as offer,
    zwlr_data_control_source_v1 as source,
};

/// What one source serves.
type Items = Arc<Vec<(String, Vec<u8>)>>;

/// The owner thread's state.
struct OwnerState {
    served: Arc<AtomicUsize>,
    /// Hung mode: the pipes of pastes, kept open and never written (until
    /// the [`WlOwner`] is dropped, even after the source is replaced).
    hung: Option<Arc<Mutex<Vec<OwnedFd>>>>,
}

/// How long [`WlOwner::offer`] waits for the owner thread.
const OFFER_TIMEOUT: Duration = Duration::from_secs(20);

/// A clipboard owner with its own connection and thread; each
/// [`WlOwner::offer`] puts a new item on the clipboard. Stops when dropped.
#[derive(Debug)]
pub struct WlOwner {
    /// First, so that it is stopped and joined before the rest is dropped.
    _thread: ClientThread,
    served: Arc<AtomicUsize>,
    /// The pipes a hung owner holds (closed on drop).
    _hung: Arc<Mutex<Vec<OwnedFd>>>,
    offers: mpsc::Sender<Items>,
    done: mpsc::Receiver<()>,
    /// Written to after each offer, to wake the thread.
    wake: OwnedFd,
}

impl WlOwner {
    /// Puts `items` on `sway`'s clipboard (returns once it is set).
    pub fn set(sway: &Sway, items: &[(&str, &[u8])]) -> Result<Self> {
        let o = Self::connect(sway, false)?;
        o.offer(items)?;
        Ok(o)
    }

    /// Like [`WlOwner::set`], but a hung application: it takes every paste
    /// and never writes (nor closes the pipe) until dropped.
    pub fn hang(sway: &Sway, items: &[(&str, &[u8])]) -> Result<Self> {
        let o = Self::connect(sway, true)?;
        o.offer(items)?;
        Ok(o)
    }

    /// Connects to `sway` and starts the owner thread, owning nothing yet.
    pub fn connect(sway: &Sway, hang: bool) -> Result<Self> {
        let DataControl {
            conn,
            mut queue,
            mgr,
            dev,
        } = wlcommon::connect::<OwnerState>(sway)?;
        let qh = queue.handle();
        let served = Arc::new(AtomicUsize::new(0));
        let hung = Arc::new(Mutex::new(Vec::new()));
        let mut state = OwnerState {
            served: Arc::clone(&served),
            hung: hang.then(|| Arc::clone(&hung)),
        };
        queue.roundtrip(&mut state)?;
        let (wake_r, wake_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let (offer_tx, offer_rx) = mpsc::channel::<Items>();
        let (done_tx, done_rx) = mpsc::channel();
        let thread = ClientThread::spawn(move |stop| loop {
            while let Ok(items) = offer_rx.try_recv() {
                let src = mgr.create_data_source(&qh, Arc::clone(&items));
                for (mime, _) in items.iter() {
                    src.offer(mime.clone());
                }
                dev.set_selection(Some(&src));
                if conn.flush().is_err() || done_tx.send(()).is_err() {
                    return;
                }
            }
            if !wlcommon::turn(&conn, &mut queue, &mut state, &stop, Some(&wake_r)) {
                return;
            }
        })?;
        Ok(Self {
            _thread: thread,
            served,
            _hung: hung,
            offers: offer_tx,
            done: done_rx,
            wake: wake_w,
        })
    }

    /// Puts `items` on the clipboard from this owner's connection (a new
    /// source); returns once the request is sent.
    pub fn offer(&self, items: &[(&str, &[u8])]) -> Result<()> {
        let items: Items = Arc::new(
            items
                .iter()
                .map(|(m, b)| ((*m).to_owned(), b.to_vec()))
                .collect(),
        );
        self.offers
            .send(items)
            .map_err(|_| anyhow!("the owner thread stopped"))?;
        rustix::io::write(&self.wake, &[1])?;
        self.done
            .recv_timeout(OFFER_TIMEOUT)
            .context("the owner thread did not set the selection")
    }
}

impl WlOwner {
    /// How many pastes (of any type) were served.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` pastes were served.
    pub fn wait_served(&self, n: usize, timeout: Duration) -> Result<()> {
        poll_until(
            &format!("{n} pastes served"),
            timeout,
            Duration::from_millis(20),
            || Ok((self.served() >= n).then_some(())),
        )
        .context("the clipboard owner was not read")
    }
}

ignore_data_control_events!(OwnerState);

impl Dispatch<device::ZwlrDataControlDeviceV1, ()> for OwnerState {
    fn event(
        _: &mut Self,
        _: &device::ZwlrDataControlDeviceV1,
        event: device::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        // Offers of the selection: not read here, only released.
        if let device::Event::Selection { id: Some(o) }
        | device::Event::PrimarySelection { id: Some(o) } = event
        {
            o.destroy();
        }
    }

    event_created_child!(OwnerState, device::ZwlrDataControlDeviceV1, [
        device::EVT_DATA_OFFER_OPCODE => (offer::ZwlrDataControlOfferV1, ()),
    ]);
}

impl Dispatch<source::ZwlrDataControlSourceV1, Items> for OwnerState {
    fn event(
        state: &mut Self,
        src: &source::ZwlrDataControlSourceV1,
        event: source::Event,
        items: &Items,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            source::Event::Send { mime_type, fd } => {
                if let Some(hung) = &state.hung {
                    hung.lock().unwrap_or_else(|p| p.into_inner()).push(fd);
                } else if let Some((_, bytes)) = items.iter().find(|(m, _)| *m == mime_type) {
                    // Small test items: a blocking write is fine.
                    let _ = std::fs::File::from(fd).write_all(bytes);
                }
                state.served.fetch_add(1, Ordering::SeqCst);
            }
            source::Event::Cancelled => src.destroy(),
            _ => {}
        }
    }
}
