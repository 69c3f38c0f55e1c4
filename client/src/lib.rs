//! `clipmesh`: the clipmesh client library behind the `clipmesh` command.
//!
//! Layering, from the wire up:
//!
//! - sans-IO protocol logic, tested on a virtual clock: [`engine`] (the
//!   device engine: every decision `clipmesh run` makes), [`sync`] (its
//!   new/echo/stale and newest-wins decisions), [`session`] (one relay
//!   connection), [`backoff`] (reconnect policy);
//! - thin tokio drivers: [`link`] (the WebSocket to the relay, reconnecting),
//!   [`p2p`] (direct WebRTC links to the user's other devices, signalled
//!   through the relay),
//!   [`control`] (the daemon's local control socket), [`clipboard`] (the OS
//!   clipboard: the `clipmesh-clipboard` crate), [`transfer`] (images and files through the relay's blob
//!   store);
//! - the programs: [`daemon`] (`clipmesh run`: the engine's driver), [`oneshot`] (`send` without
//!   a daemon), [`watch`], [`account`] (signup, login, logout; OPAQUE v2
//!   with the v1 fallback and upgrade), [`api`] (the
//!   relay's HTTP API);
//! - [`clipcascade`]: the ClipCascade profile (its crypto and item format);
//! - local files and trust: [`config`], [`secrets`], [`state`], [`replay`]
//!   (per-origin replay state that survives restarts), [`pins`] (KDF
//!   parameters pinned per account, and which accounts are pinned to v2
//!   login), [`roster`] (the account's device keys as this device verified
//!   them), [`clipkeys`] (sealing and opening clips: signed v2 envelopes
//!   checked against the roster, key epochs), [`tls`].
//!
//! **Architecture Invariant:** the client depends on `clipmesh-proto` only,
//! never on the relay. It is the only component that opens envelopes, and
//! clip contents and keys never reach its logs.

pub mod account;
pub mod api;
pub mod backoff;
pub mod clipcascade;
pub mod clipkeys;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod engine;
pub mod keyfetch;
pub mod link;
pub mod oneshot;
pub mod p2p;
pub mod pins;
pub mod renew;
pub mod replay;
pub mod roster;
pub mod secrets;
pub mod session;
pub mod state;
pub mod sync;
pub mod tls;
pub mod token;
pub mod transfer;
pub mod watch;

/// The OS clipboard backends (the `clipmesh-clipboard` crate).
pub use clipmesh_clipboard as clipboard;

pub use account::{AccountError, Credentials, Device};
pub use api::{Api, ApiError};
pub use backoff::{Backoff, Disconnect, Next, StopReason};
pub use config::{Account, Config, SyncOptions};
pub use engine::{Engine, Input, Output};
pub use link::{LinkConfig, LinkEvent, LinkExit, LinkHandle, PublishError};
pub use session::{Session, SessionEvent};
pub use sync::{LocalDecision, RemoteDecision, SyncEngine};
