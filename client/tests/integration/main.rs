#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Client integration tests: a real relay in-process on 127.0.0.1:0 and the
//! real `clipmesh` binary (or the daemon library with a fake clipboard), no
//! X display needed.

mod cli;
mod daemon;
mod epochs;
mod hostile;
mod p2p;
mod support;
mod tls;
mod transfer;
mod v2;
