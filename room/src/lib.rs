//! `clipmesh-room`: the sans-IO room core shared by both relay hosts, the
//! native relay (tokio + SQLite, `clipmesh-relay`) and the Cloudflare Worker
//! (`UserRoom` Durable Object, wasm32).
//!
//! - [`state`]: [`RoomState`], one user's room: membership, fan-out,
//!   `Ack`/`Deliver`, the newest clip, signalling, the device limit and
//!   presence. Outputs go to each member's [`Port`].
//! - [`conn`]: one device's socket after `Hello`: what each inbound
//!   message asks for (forward, reply, close); `Ping` never reaches the room.
//! - [`ratelimit`]: the per-device publish limiter, time passed in.
//! - [`validate`] and [`auth`]: the API input rules and the token and
//!   fake-salt rules, so both hosts answer the same input the same way.
//! - [`opaque`]: the relay side of protocol v2's OPAQUE login that does no
//!   IO: body validation, `login/start` answers (fake records for unknown
//!   and v1-only accounts), half-finished logins, when v1 login still works.
//! - [`epoch`]: the checks of a v2 key epoch change (`password/finish`
//!   with a new epoch: revokes, wraps, certificates) against the account's
//!   devices.
//! - [`throttle`]: the login throttle's rules (back-off per failure, the
//!   network a client address counts as); each host keeps the counters.
//!
//! **Architecture Invariant:** this crate does no IO and has no runtime:
//! it depends on `clipmesh-proto`, `bytes` and pure-Rust hashing crates
//! only (no tokio, axum, hyper or rusqlite), so it builds for
//! `wasm32-unknown-unknown` and Cargo keeps both hosts honest. A host owns sockets, storage and clocks; the room
//! logic is written once, here.

pub mod auth;
pub mod conn;
pub mod epoch;
pub mod opaque;
pub mod ratelimit;
pub mod state;
pub mod throttle;
pub mod validate;

pub use ratelimit::{PublishLimiter, TokenBucket, Verdict};
pub use state::{
    Clip, ConnId, HeldAck, Member, MemberKind, Port, PortFull, Published, RoomLimits, RoomState,
};
