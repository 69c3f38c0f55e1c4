#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The relay and client under crashes and hostile load (issue: relay and
//! client under hostile networks and crashes).
//!
//! Run `cargo build --workspace --bins` first (scripts/test does): the tests
//! start `target/<profile>/clipmesh-relay` and `target/<profile>/clipmesh`
//! on 127.0.0.1 only; a daemon gets its own Xvfb display.

#[path = "hostile/crash.rs"]
mod crash;

#[path = "hostile/sessions.rs"]
mod sessions;
