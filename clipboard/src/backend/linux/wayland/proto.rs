//! Wayland backend, part 1: the data-control protocols behind one face.
//!
//! A program without a window can only watch and set the Wayland clipboard
//! through a *data-control* protocol. There are two, identical in shape:
//! `ext-data-control-v1` (the standard, in wayland-protocols staging) and
//! its predecessor `wlr-data-control-unstable-v1` (wlroots compositors such
//! as sway, and KDE). [`choose_protocol`] prefers the first.
//!
//! [`Control`], [`Offer`] and [`Source`] wrap the objects of either
//! protocol, and the `Dispatch` implementations (generated for both by one
//! macro) turn their events into changes of one [`State`]: which offer is
//! on each selection now, which selections changed and were not read yet,
//! which of our sources the compositor cancelled, and which pastes of our
//! own data wait to be served. [`State`] does no IO; the event loop in
//! `clipboard/wayland.rs` acts on it.

use super::super::payload::Payload;
use crate::ClipboardError;
use std::collections::VecDeque;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use wayland_client::globals::{GlobalList, GlobalListContents};
use wayland_client::protocol::{wl_registry, wl_seat};
use wayland_client::{event_created_child, Connection, Dispatch, Proxy, QueueHandle};
use wayland_protocols::ext::data_control::v1::client as ext;
use wayland_protocols_wlr::data_control::v1::client as wlr;

/// The global of `ext-data-control-v1`.
pub(crate) const EXT_MANAGER: &str = "ext_data_control_manager_v1";
/// The global of `wlr-data-control-unstable-v1`.
pub(crate) const WLR_MANAGER: &str = "zwlr_data_control_manager_v1";
/// The wlr version that added the primary selection.
const WLR_PRIMARY_VERSION: u32 = 2;
/// Most MIME types kept for one offer; a source offering more is read as
/// if it offered the first ones only (a hostile source cannot grow memory).
pub(crate) const MAX_OFFER_TYPES: usize = 256;

/// Which data-control protocol to use, with the version to bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// `ext_data_control_manager_v1`.
    Ext {
        /// The version to bind.
        version: u32,
    },
    /// `zwlr_data_control_manager_v1`.
    Wlr {
        /// The version to bind (2 has the primary selection).
        version: u32,
    },
}

/// Picks the protocol from the compositor's globals `(interface, version)`:
/// ext-data-control when offered, else wlr-data-control, else `None`.
pub(crate) fn choose_protocol<S: AsRef<str>>(globals: &[(S, u32)]) -> Option<Protocol> {
    let find = |name: &str| {
        globals
            .iter()
            .find(|(i, _)| i.as_ref() == name)
            .map(|(_, v)| *v)
    };
    if let Some(v) = find(EXT_MANAGER) {
        return Some(Protocol::Ext { version: v.min(1) });
    }
    find(WLR_MANAGER).map(|v| Protocol::Wlr {
        version: v.min(WLR_PRIMARY_VERSION),
    })
}

/// The two selections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sel {
    /// The clipboard (Ctrl-C / Ctrl-V).
    Clipboard,
    /// The primary selection (select / middle click).
    Primary,
}

impl Sel {
    fn idx(self) -> usize {
        match self {
            Self::Clipboard => 0,
            Self::Primary => 1,
        }
    }
}

/// The MIME types of one offer, as the compositor announces them.
#[derive(Debug, Default)]
pub(crate) struct OfferTypes(Mutex<Vec<String>>);

impl OfferTypes {
    fn push(&self, mime: String) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < MAX_OFFER_TYPES && !v.contains(&mime) {
            v.push(mime);
        }
    }

    fn list(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What one of our sources serves: `(MIME type, data)`.
pub(crate) struct SourceData {
    /// The offered types, best first.
    pub(crate) payloads: Vec<(String, Payload)>,
}

impl std::fmt::Debug for SourceData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Types and sizes only: the data is clipboard content.
        write!(f, "SourceData {{ types: {} }}", self.payloads.len())
    }
}

/// A paste of our own data: write the bytes of `mime` into `fd`.
#[derive(Debug)]
pub(crate) struct SendRequest {
    /// The source's data.
    pub(crate) data: Arc<SourceData>,
    /// The type asked for.
    pub(crate) mime: String,
    /// The write end of the paster's pipe.
    pub(crate) fd: OwnedFd,
}

/// Another client's (or our own) offer on a selection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// ext-data-control.
    Ext(ext::ext_data_control_offer_v1::ExtDataControlOfferV1),
    /// wlr-data-control.
    Wlr(wlr::zwlr_data_control_offer_v1::ZwlrDataControlOfferV1),
}

impl Offer {
    /// The offered MIME types, in the order announced.
    pub(crate) fn mime_types(&self) -> Vec<String> {
        let types = match self {
            Self::Ext(o) => o.data::<OfferTypes>(),
            Self::Wlr(o) => o.data::<OfferTypes>(),
        };
        types.map(OfferTypes::list).unwrap_or_default()
    }

    /// Asks the source to write `mime` into `fd`.
    pub(crate) fn receive(&self, mime: &str, fd: BorrowedFd<'_>) {
        match self {
            Self::Ext(o) => o.receive(mime.to_owned(), fd),
            Self::Wlr(o) => o.receive(mime.to_owned(), fd),
        }
    }

    fn destroy(&self) {
        match self {
            Self::Ext(o) => o.destroy(),
            Self::Wlr(o) => o.destroy(),
        }
    }
}

/// One of our data sources (one per selection we set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// ext-data-control.
    Ext(ext::ext_data_control_source_v1::ExtDataControlSourceV1),
    /// wlr-data-control.
    Wlr(wlr::zwlr_data_control_source_v1::ZwlrDataControlSourceV1),
}

impl Source {
    fn destroy(&self) {
        match self {
            Self::Ext(s) => s.destroy(),
            Self::Wlr(s) => s.destroy(),
        }
    }
}

/// The bound manager and this seat's data device, of one protocol.
#[derive(Debug)]
pub(crate) enum Control {
    /// ext-data-control.
    Ext {
        /// Creates sources.
        manager: ext::ext_data_control_manager_v1::ExtDataControlManagerV1,
        /// The seat's selections.
        device: ext::ext_data_control_device_v1::ExtDataControlDeviceV1,
    },
    /// wlr-data-control.
    Wlr {
        /// Creates sources.
        manager: wlr::zwlr_data_control_manager_v1::ZwlrDataControlManagerV1,
        /// The seat's selections.
        device: wlr::zwlr_data_control_device_v1::ZwlrDataControlDeviceV1,
    },
}

impl Control {
    /// Binds the first seat and the best data-control manager, and asks for
    /// the seat's data device. Fails with [`ClipboardError::NoDataControl`]
    /// when the compositor offers neither protocol.
    pub(crate) fn bind(
        globals: &GlobalList,
        qh: &QueueHandle<State>,
    ) -> Result<(Self, Protocol), ClipboardError> {
        let list: Vec<(String, u32)> = globals
            .contents()
            .clone_list()
            .into_iter()
            .map(|g| (g.interface, g.version))
            .collect();
        let protocol = choose_protocol(&list).ok_or(ClipboardError::NoDataControl)?;
        let seat: wl_seat::WlSeat = globals
            .bind(qh, 1..=1, ())
            .map_err(|_| ClipboardError::Wayland("the compositor has no seat".into()))?;
        let bind_err = |e: wayland_client::globals::BindError| {
            ClipboardError::Wayland(format!("cannot bind data-control: {e}"))
        };
        let control = match protocol {
            Protocol::Ext { version } => {
                let manager: ext::ext_data_control_manager_v1::ExtDataControlManagerV1 =
                    globals.bind(qh, 1..=version, ()).map_err(bind_err)?;
                let device = manager.get_data_device(&seat, qh, ());
                Self::Ext { manager, device }
            }
            Protocol::Wlr { version } => {
                let manager: wlr::zwlr_data_control_manager_v1::ZwlrDataControlManagerV1 =
                    globals.bind(qh, 1..=version, ()).map_err(bind_err)?;
                let device = manager.get_data_device(&seat, qh, ());
                Self::Wlr { manager, device }
            }
        };
        Ok((control, protocol))
    }

    /// Whether the bound version has the primary selection.
    pub(crate) fn supports_primary(&self) -> bool {
        match self {
            Self::Ext { .. } => true,
            Self::Wlr { manager, .. } => manager.version() >= WLR_PRIMARY_VERSION,
        }
    }

    /// Creates a source serving `data` and sets it as `sel`.
    pub(crate) fn set(&self, qh: &QueueHandle<State>, sel: Sel, data: &Arc<SourceData>) -> Source {
        match self {
            Self::Ext { manager, device } => {
                let s = manager.create_data_source(qh, Arc::clone(data));
                for (mime, _) in &data.payloads {
                    s.offer(mime.clone());
                }
                match sel {
                    Sel::Clipboard => device.set_selection(Some(&s)),
                    Sel::Primary => device.set_primary_selection(Some(&s)),
                }
                Source::Ext(s)
            }
            Self::Wlr { manager, device } => {
                let s = manager.create_data_source(qh, Arc::clone(data));
                for (mime, _) in &data.payloads {
                    s.offer(mime.clone());
                }
                match sel {
                    Sel::Clipboard => device.set_selection(Some(&s)),
                    Sel::Primary => device.set_primary_selection(Some(&s)),
                }
                Source::Wlr(s)
            }
        }
    }

    /// Destroys the device and the manager (on shutdown).
    pub(crate) fn destroy(&self) {
        match self {
            Self::Ext { manager, device } => {
                device.destroy();
                manager.destroy();
            }
            Self::Wlr { manager, device } => {
                device.destroy();
                manager.destroy();
            }
        }
    }
}

/// Everything the protocol events change (sans-IO).
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Whether the primary selection is watched (else its offers are
    /// dropped as they come).
    pub(crate) watch_primary: bool,
    /// The offer on each selection now (clipboard, primary).
    current: [Option<Offer>; 2],
    /// Selections that changed and were not read yet, oldest first.
    pub(crate) pending: VecDeque<Sel>,
    /// Our sources the compositor has not cancelled yet.
    pub(crate) sources: Vec<Source>,
    /// Pastes of our own data to serve.
    pub(crate) sends: VecDeque<SendRequest>,
    /// The data device is gone (the seat went away).
    pub(crate) finished: bool,
}

impl State {
    /// A state with nothing on the selections yet.
    pub(crate) fn new(watch_primary: bool) -> Self {
        Self {
            watch_primary,
            ..Self::default()
        }
    }

    /// The offer on `sel` now.
    pub(crate) fn current(&self, sel: Sel) -> Option<Offer> {
        self.current[sel.idx()].clone()
    }

    /// A `selection` event: `offer` is on `sel` now (`None`: cleared).
    fn selection(&mut self, sel: Sel, offer: Option<Offer>) {
        if sel == Sel::Primary && !self.watch_primary {
            if let Some(o) = offer {
                o.destroy();
            }
            return;
        }
        if let Some(old) = self.current[sel.idx()].take() {
            if offer.as_ref() != Some(&old) {
                old.destroy();
            }
        }
        match offer {
            Some(o) => {
                self.current[sel.idx()] = Some(o);
                if !self.pending.contains(&sel) {
                    self.pending.push_back(sel);
                }
            }
            // Clearing the clipboard is not synced.
            None => self.pending.retain(|s| *s != sel),
        }
    }

    /// Our source was replaced (someone else set the selection).
    fn cancelled(&mut self, source: Source) {
        source.destroy();
        self.sources.retain(|s| *s != source);
    }

    /// Destroys every object this state holds (on shutdown).
    pub(crate) fn destroy_all(&mut self) {
        for o in self.current.iter_mut().filter_map(Option::take) {
            o.destroy();
        }
        for s in self.sources.drain(..) {
            s.destroy();
        }
        self.sends.clear();
    }
}

impl Dispatch<wl_registry::WlRegistry, GlobalListContents> for State {
    fn event(
        _: &mut Self,
        _: &wl_registry::WlRegistry,
        _: wl_registry::Event,
        _: &GlobalListContents,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        // Globals that come and go later do not matter: the manager and
        // seat are bound once.
    }
}

impl Dispatch<wl_seat::WlSeat, ()> for State {
    fn event(
        _: &mut Self,
        _: &wl_seat::WlSeat,
        _: wl_seat::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        // Capabilities and name: not needed.
    }
}

/// The `Dispatch` implementations of one data-control protocol (both have
/// the same requests and events under different names).
macro_rules! data_control_dispatch {
    ($variant:ident, $m:ident, $manager_mod:ident :: $manager:ident,
     $device_mod:ident :: $device:ident, $source_mod:ident :: $source:ident,
     $offer_mod:ident :: $offer:ident) => {
        impl Dispatch<$m::$manager_mod::$manager, ()> for State {
            fn event(
                _: &mut Self,
                _: &$m::$manager_mod::$manager,
                _: $m::$manager_mod::Event,
                _: &(),
                _: &Connection,
                _: &QueueHandle<Self>,
            ) {
                // The manager has no events.
            }
        }

        impl Dispatch<$m::$device_mod::$device, ()> for State {
            fn event(
                state: &mut Self,
                _: &$m::$device_mod::$device,
                event: $m::$device_mod::Event,
                _: &(),
                _: &Connection,
                _: &QueueHandle<Self>,
            ) {
                match event {
                    $m::$device_mod::Event::Selection { id } => {
                        state.selection(Sel::Clipboard, id.map(Offer::$variant))
                    }
                    $m::$device_mod::Event::PrimarySelection { id } => {
                        state.selection(Sel::Primary, id.map(Offer::$variant))
                    }
                    $m::$device_mod::Event::Finished => state.finished = true,
                    // `data_offer`: the new offer's types arrive on it.
                    _ => {}
                }
            }

            event_created_child!(State, $m::$device_mod::$device, [
                $m::$device_mod::EVT_DATA_OFFER_OPCODE => ($m::$offer_mod::$offer, OfferTypes::default()),
            ]);
        }

        impl Dispatch<$m::$offer_mod::$offer, OfferTypes> for State {
            fn event(
                _: &mut Self,
                _: &$m::$offer_mod::$offer,
                event: $m::$offer_mod::Event,
                types: &OfferTypes,
                _: &Connection,
                _: &QueueHandle<Self>,
            ) {
                if let $m::$offer_mod::Event::Offer { mime_type } = event {
                    types.push(mime_type);
                }
            }
        }

        impl Dispatch<$m::$source_mod::$source, Arc<SourceData>> for State {
            fn event(
                state: &mut Self,
                source: &$m::$source_mod::$source,
                event: $m::$source_mod::Event,
                data: &Arc<SourceData>,
                _: &Connection,
                _: &QueueHandle<Self>,
            ) {
                match event {
                    $m::$source_mod::Event::Send { mime_type, fd } => {
                        state.sends.push_back(SendRequest {
                            data: Arc::clone(data),
                            mime: mime_type,
                            fd,
                        })
                    }
                    $m::$source_mod::Event::Cancelled => {
                        state.cancelled(Source::$variant(source.clone()))
                    }
                    _ => {}
                }
            }
        }
    };
}

data_control_dispatch!(
    Ext,
    ext,
    ext_data_control_manager_v1::ExtDataControlManagerV1,
    ext_data_control_device_v1::ExtDataControlDeviceV1,
    ext_data_control_source_v1::ExtDataControlSourceV1,
    ext_data_control_offer_v1::ExtDataControlOfferV1
);
data_control_dispatch!(
    Wlr,
    wlr,
    zwlr_data_control_manager_v1::ZwlrDataControlManagerV1,
    zwlr_data_control_device_v1::ZwlrDataControlDeviceV1,
    zwlr_data_control_source_v1::ZwlrDataControlSourceV1,
    zwlr_data_control_offer_v1::ZwlrDataControlOfferV1
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_match_the_protocols() {
        assert_eq!(
            ext::ext_data_control_manager_v1::ExtDataControlManagerV1::interface().name,
            EXT_MANAGER
        );
        assert_eq!(
            wlr::zwlr_data_control_manager_v1::ZwlrDataControlManagerV1::interface().name,
            WLR_MANAGER
        );
    }

    #[test]
    fn ext_is_preferred_and_wlr_is_the_fallback() {
        let both = [("wl_seat", 7), (WLR_MANAGER, 2), (EXT_MANAGER, 1)];
        assert_eq!(choose_protocol(&both), Some(Protocol::Ext { version: 1 }));
        let wlr_only = [("wl_compositor", 5), (WLR_MANAGER, 2)];
        assert_eq!(
            choose_protocol(&wlr_only),
            Some(Protocol::Wlr { version: 2 })
        );
        // Never a newer version than this build knows.
        let newer = [(WLR_MANAGER, 9), ("x", 1)];
        assert_eq!(choose_protocol(&newer), Some(Protocol::Wlr { version: 2 }));
        let old = [(WLR_MANAGER, 1)];
        assert_eq!(choose_protocol(&old), Some(Protocol::Wlr { version: 1 }));
    }

    #[test]
    fn without_data_control_there_is_no_protocol_and_a_clear_error() {
        let none = [("wl_seat", 7), ("wl_data_device_manager", 3)];
        assert_eq!(choose_protocol(&none), None);
        let line = ClipboardError::NoDataControl.to_string();
        assert!(line.contains("ext-data-control-v1"), "{line}");
        assert!(line.contains("wlr-data-control-unstable-v1"), "{line}");
        assert!(!line.contains('\n'), "one line: {line}");
    }

    #[test]
    fn offer_types_are_bounded_and_unique() {
        let t = OfferTypes::default();
        t.push("text/plain".into());
        t.push("text/plain".into());
        for i in 0..(MAX_OFFER_TYPES * 2) {
            t.push(format!("x/{i}"));
        }
        let l = t.list();
        assert_eq!(l.len(), MAX_OFFER_TYPES);
        assert_eq!(l[0], "text/plain");
    }
}
