//! The platform half of `clipmesh-tray`: the tray icon, its menu and the
//! event loop around them, with no sync engine (so no TLS and no C build
//! dependencies: this crate type-checks for macOS, which the client does
//! not, see `docs/macos.md`).
//!
//! - [`menu`]: what the tray shows, as data ([`menu::IconState`],
//!   [`menu::Entry`], [`menu::Notice`]), the [`menu::Shell`] that shows it,
//!   and the [`menu::TrayApp`] the loop drives;
//! - [`icons`]: the icon pictures, compiled in;
//! - [`platform`]: [`platform::TrayShell`] (tray-icon and muda) and
//!   [`platform::run`], the loop: GTK's on Linux, winit's (a Win32 message
//!   loop, `NSApplication`) on Windows and macOS;
//! - `winmenu` (Windows only): opens the menu on a click on the icon, the
//!   crate's only `unsafe` code.

pub mod icons;
pub mod menu;
pub mod platform;
#[cfg(windows)]
#[allow(unsafe_code)]
mod winmenu;
