#![allow(clippy::unwrap_used, clippy::expect_used)]
//! End-to-end tests: the real relay and real daemons on Xvfb displays.
//!
//! Run `cargo build --workspace --bins` first (scripts/test does): the tests
//! start `target/<profile>/clipmesh-relay` and `target/<profile>/clipmesh`.
//! They need `Xvfb` and `xclip`; when those are missing a test fails with a
//! message saying to run scripts/test, it is never skipped.

#[path = "e2e/world.rs"]
mod world;

#[path = "e2e/sync.rs"]
mod sync;

#[path = "e2e/restart.rs"]
mod restart;

#[path = "e2e/echo.rs"]
mod echo;

#[path = "e2e/leak.rs"]
mod leak;

#[path = "e2e/sensitive.rs"]
mod sensitive;

#[path = "e2e/display.rs"]
mod display;

#[path = "e2e/image.rs"]
mod image_sync;

#[path = "e2e/file_list.rs"]
mod file_list;

#[path = "e2e/large.rs"]
mod large;

#[path = "e2e/fetch.rs"]
mod fetch;

#[path = "e2e/p2p.rs"]
mod p2p;

#[path = "e2e/wayland.rs"]
mod wayland;

#[path = "e2e/windows.rs"]
mod windows;

#[path = "e2e/windows_tray.rs"]
mod windows_tray;

#[path = "e2e/clipcascade.rs"]
mod clipcascade;
