//! Prometheus metrics as plain atomics, rendered as text for `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Every metric the relay exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections: AtomicI64,
    /// Room actors in memory (not evicted).
    pub rooms_active: AtomicI64,
    /// `Deliver` frames queued to devices.
    pub frames_relayed: AtomicU64,
    /// Bytes in those frames.
    pub bytes_relayed: AtomicU64,
    /// Signalling frames forwarded.
    pub signals: AtomicU64,
    /// Failed logins, bad tokens and bad current passwords.
    pub auth_failures: AtomicU64,
    /// Rooms evicted from memory while idle.
    pub rooms_evicted: AtomicU64,
    /// Sockets closed because their queue filled (4005).
    pub slow_consumers: AtomicU64,
    /// Bytes waiting in devices' outbound queues (a shared frame counts once
    /// per queue).
    pub outbound_queued_bytes: AtomicI64,
    /// Bytes stored in blob files (gauge).
    pub blob_bytes_stored: AtomicI64,
    /// Blob bytes accepted by uploads.
    pub blob_bytes_uploaded: AtomicU64,
    /// Blob bytes sent by downloads.
    pub blob_bytes_downloaded: AtomicU64,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(1024);
        let g = |s: &mut String, name: &str, help: &str, v: i64| {
            let _ = write!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
        };
        let c = |s: &mut String, name: &str, help: &str, v: u64| {
            let _ = write!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        };
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        g(
            &mut s,
            "clipmesh_relay_connections",
            "Open WebSocket connections.",
            self.connections.load(Ordering::Relaxed),
        );
        g(
            &mut s,
            "clipmesh_relay_rooms_active",
            "Room actors in memory.",
            self.rooms_active.load(Ordering::Relaxed),
        );
        c(
            &mut s,
            "clipmesh_relay_frames_relayed_total",
            "Deliver frames queued to devices.",
            l(&self.frames_relayed),
        );
        c(
            &mut s,
            "clipmesh_relay_bytes_relayed_total",
            "Bytes of Deliver frames queued to devices.",
            l(&self.bytes_relayed),
        );
        c(
            &mut s,
            "clipmesh_relay_signals_total",
            "Signalling frames forwarded.",
            l(&self.signals),
        );
        c(
            &mut s,
            "clipmesh_relay_auth_failures_total",
            "Failed logins and rejected tokens.",
            l(&self.auth_failures),
        );
        g(
            &mut s,
            "clipmesh_relay_outbound_queued_bytes",
            "Bytes waiting in devices' outbound queues.",
            self.outbound_queued_bytes.load(Ordering::Relaxed),
        );
        c(
            &mut s,
            "clipmesh_relay_rooms_evicted_total",
            "Rooms evicted from memory while idle.",
            l(&self.rooms_evicted),
        );
        c(
            &mut s,
            "clipmesh_relay_slow_consumers_total",
            "Sockets closed with 4005 because their queue filled.",
            l(&self.slow_consumers),
        );
        g(
            &mut s,
            "clipmesh_relay_blob_bytes_stored",
            "Bytes stored in blob files.",
            self.blob_bytes_stored.load(Ordering::Relaxed),
        );
        c(
            &mut s,
            "clipmesh_relay_blob_bytes_uploaded_total",
            "Blob bytes accepted by uploads.",
            l(&self.blob_bytes_uploaded),
        );
        c(
            &mut s,
            "clipmesh_relay_blob_bytes_downloaded_total",
            "Blob bytes sent by downloads.",
            l(&self.blob_bytes_downloaded),
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_required_metric() {
        let m = Metrics::default();
        Metrics::add(&m.frames_relayed, 3);
        let s = m.render();
        for name in [
            "clipmesh_relay_connections 0",
            "clipmesh_relay_rooms_active 0",
            "clipmesh_relay_frames_relayed_total 3",
            "clipmesh_relay_bytes_relayed_total 0",
            "clipmesh_relay_signals_total 0",
            "clipmesh_relay_auth_failures_total 0",
            "clipmesh_relay_blob_bytes_stored 0",
            "clipmesh_relay_blob_bytes_uploaded_total 0",
            "clipmesh_relay_blob_bytes_downloaded_total 0",
        ] {
            assert!(s.contains(name), "{name} missing");
        }
    }
}
