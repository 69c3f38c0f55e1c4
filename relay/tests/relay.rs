//! Integration tests of the relay: real HTTP and WebSocket clients against a
//! relay on 127.0.0.1:0 (in-process, or the binary for the CLI tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "relay/common.rs"]
mod common;

#[path = "relay/accounts.rs"]
mod accounts;
// Shared with tests/blob_memory.rs, which uses the streaming helpers.
#[allow(dead_code)]
#[path = "relay/blob_client.rs"]
mod blob_client;
#[path = "relay/blobs.rs"]
mod blobs;
#[path = "relay/cli.rs"]
mod cli;
#[path = "relay/clipcascade.rs"]
mod clipcascade;
#[path = "relay/hostile.rs"]
mod hostile;
#[path = "relay/lifecycle.rs"]
mod lifecycle;
#[path = "relay/limits.rs"]
mod limits;
#[path = "relay/opaque.rs"]
mod opaque;
#[path = "relay/pool.rs"]
mod pool;
#[path = "relay/rooms.rs"]
mod rooms;
#[path = "relay/sessions.rs"]
mod sessions;
#[path = "relay/tls.rs"]
mod tls;
