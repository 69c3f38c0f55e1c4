//! `clipmesh-tray`: the clipmesh desktop app. A tray icon whose picture
//! follows the sync state, a menu (status, pause, mode, recent items, a
//! waiting large item, devices, folders, start at login, log in/out, quit),
//! a first-run login window, debounced notifications, start at login, and
//! one instance per config directory.
//!
//! It is one more driver of the client core, not a second daemon: the
//! engine thread ([`driver`]) runs the same daemon loop as `clipmesh run` on
//! tokio worker threads, and the tray talks to it through channels. It is
//! its own binary so the headless `clipmesh` never links GTK.
//!
//! Layers:
//!
//! - no display, unit-tested: [`model`] (state, menu entries, actions),
//!   [`recent`] (redacted previews), [`notify`] (debouncing on a virtual
//!   clock), [`login`]'s form logic and error texts, [`single`] (one
//!   instance);
//! - the engine thread: [`driver`];
//! - glue: [`app`] (events in, icon/menu/notifications out through a
//!   [`app::Shell`]);
//! - the platform: [`platform`] (the tray on the `clipmesh-tray-shell`
//!   crate's loop: GTK on Linux, winit on Windows and macOS, tray-icon for
//!   the icon), [`login::run`] (the egui window), [`autostart`].
//!
//! **Architecture Invariant:** menu labels, tooltips, notifications and
//! logs show kinds, counts and sizes only, never clipboard contents or file
//! names.

pub mod app;
pub mod autostart;
pub mod driver;
pub mod login;
pub mod model;
pub mod notify;
pub mod platform;
pub mod recent;
pub mod single;
