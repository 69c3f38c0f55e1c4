//! The relay's memory stays bounded whatever the blob size: a 100 MiB blob
//! is uploaded (streamed, in 32 MiB PATCHes) and downloaded through an
//! in-process relay, and the process's peak RSS (VmHWM) may grow by at most
//! [`BOUND`]. Its own test binary, so no other test's allocations share the
//! process; the client streams too (it generates and checks bytes on the
//! fly), so the bound covers relay and client together.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "relay/common.rs"]
mod common;

#[allow(dead_code)]
#[path = "relay/blob_client.rs"]
mod blob_client;

use blob_client::*;
use clipmesh_proto::{BlobId, BlobLayout};
use common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Largest growth of peak RSS allowed for the whole transfer.
const BOUND: u64 = 64 << 20;
/// Plaintext size of the blob (its sealed size adds 40 bytes per MiB).
const PLAIN: u64 = 100 << 20;
/// Bytes per PATCH.
const PIECE: u64 = 32 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_blob_keeps_peak_rss_bounded() {
    let relay = TestRelay::start().await;
    let ann = signup(&relay, "ann").await;
    let (t, u) = (&ann.login.token, &relay.url);
    let len = BlobLayout::new(PLAIN).unwrap().sealed_len();
    let id = BlobId::generate().to_string();
    // Warm up every code path once with a small blob, so one-off
    // allocations (thread stacks, buffers) are in the baseline.
    let warm = BlobId::generate().to_string();
    let wlen = BlobLayout::new(4 << 20).unwrap().sealed_len();
    assert_eq!(create(u, t, &warm, wlen).await.status, 201);
    let r = patch_stream(u, t, &warm, 0, PatternReader { pos: 0, end: wlen }).await;
    assert_eq!(r.status, 204);
    assert_eq!(get_stream(u, t, &warm, |_| {}).await, (200, wlen));

    let before = vm_hwm();
    assert_eq!(create(u, t, &id, len).await.status, 201);
    let mut off = 0;
    while off < len {
        let end = (off + PIECE).min(len);
        let r = patch_stream(u, t, &id, off, PatternReader { pos: off, end }).await;
        assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.offset(), end);
        off = end;
    }
    let pos = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let (p, b) = (pos.clone(), bad.clone());
    let (status, n) = get_stream(u, t, &id, move |chunk| {
        let at = p.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        let wrong = chunk
            .iter()
            .enumerate()
            .filter(|(k, x)| **x != pattern(at + *k as u64))
            .count();
        b.fetch_add(wrong as u64, Ordering::Relaxed);
    })
    .await;
    assert_eq!((status, n), (200, len));
    assert_eq!(bad.load(Ordering::Relaxed), 0, "downloaded bytes differ");
    let grown = vm_hwm().saturating_sub(before);
    eprintln!(
        "100 MiB blob: peak RSS grew by {} KiB (bound {} KiB)",
        grown >> 10,
        BOUND >> 10
    );
    assert!(grown < BOUND, "peak RSS grew by {grown} bytes");
    assert_eq!(
        metric(&relay, "clipmesh_relay_blob_bytes_stored").await,
        (len + wlen) as f64
    );
}
