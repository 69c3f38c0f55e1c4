//! `clipmesh-relay`: accounts, device sessions and one room actor per user,
//! self-hostable as one binary with an embedded SQLite database.
//!
//! Bird's-eye view (listener → connection → frame → room):
//!
//! - [`server`]: [`Relay::bind`] opens the store, binds the listener (plain
//!   or TLS) and owns every task through one `TaskTracker` and one
//!   `CancellationToken`.
//! - [`http`]: the JSON API under `/api/v1` (`http/account.rs`,
//!   `http/admin.rs`), `/healthz`, `/readyz`, `/metrics`.
//! - [`ws`]: one task per WebSocket: auth at upgrade, `Hello`, pings,
//!   limits; forwards frames to the user's room.
//! - [`registry`]: user id → room actor; starts rooms on first use and parks
//!   the members of rooms evicted while idle.
//! - [`room`]: the actor; its sans-IO core is [`RoomState`] from the
//!   `clipmesh-room` crate, shared with the Cloudflare Worker host.
//! - [`store`]: SQLite (WAL) with migrations.
//! - [`opaque`]: the OPAQUE setup (`<data-dir>/opaque-setup`, 0600) and
//!   the half-finished logins of protocol v2.
//! - [`blobs`]: the blob store for large sealed items (files under
//!   `<data-dir>/blobs`, streaming resumable uploads, TTL sweeper).
//! - [`outbox`]: a connection's bounded outbound queue.
//! - [`clipcascade`]: the drop-in surface for existing ClipCascade clients
//!   (cookie login, STOMP on `/clipsocket`, signalling on `/p2psignaling`).
//! - [`auth`], [`setup`] (the first account's one-time token), [`throttle`], [`ratelimit`], [`validate`], [`net`],
//!   [`metrics`], [`config`], [`cli`]: the pieces around them.
//!
//! **Architecture Invariant:** the relay never sees plaintext or keys. It
//! stores a PHC hash of each `auth_key`, the wrapped data key and sealed
//! envelopes, and routes envelopes by user id without opening them.
//!
//! **Architecture Invariant:** every task has an owner. Connection and room
//! tasks run on the relay's `TaskTracker` and stop on its cancellation
//! token; blocking database work runs on `spawn_blocking` and is awaited.

pub mod app;
pub mod auth;
pub mod blobs;
pub mod cli;
pub mod clipcascade;
pub mod clock;
pub mod config;
pub mod error;
pub mod extract;
pub mod http;
pub mod metrics;
pub mod net;
pub mod opaque;
pub mod outbox;
pub mod ratelimit;
pub mod registry;
pub mod room;
pub mod server;
pub mod setup;
pub mod signals;
pub mod store;
pub mod throttle;
pub mod validate;
pub mod ws;

pub use blobs::BlobStore;
pub use config::{Config, SignupPolicy};
pub use metrics::Metrics;
pub use registry::Registry;
pub use room::{RoomHandle, RoomMsg, RoomState};
pub use server::{Relay, RelayError, RelayHandle};
pub use store::{Db, Store, StoreError};
