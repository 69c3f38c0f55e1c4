//! The wall clock, read in one place.
//!
//! Sans-IO cores (`session`, `sync`, the device engine, `p2p::plan`) never
//! call this: their drivers read it and pass the time in.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
