//! The ClipCascade profile: a clipmesh device that speaks ClipCascade's
//! protocol, so it syncs with ClipCascade's desktop and Android clients,
//! through clipmesh-relay's compatibility surface or an original ClipCascade
//! server.
//!
//! - [`crypto`]: ClipCascade's end-to-end encryption (PBKDF2-SHA256 key,
//!   AES-256-GCM, its payload JSON) and login hash (SHA3-512 hex).
//! - [`payload`]: ClipCascade `text`/`image`/`files` items ↔ clip content,
//!   with sanitised file names and size limits.
//!
//! Written from the protocol description in `docs/protocol.md`; no
//! ClipCascade code.

pub mod crypto;
pub mod daemon;
pub mod payload;
pub mod web;

pub use crypto::{login_hash, CcKey, OpenError, SealError, DEFAULT_ITERATIONS};
pub use payload::{from_wire, to_wire, Limits, PayloadError};
