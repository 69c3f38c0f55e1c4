#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The relay conformance suite against the native relay. The same suite
//! runs against the Cloudflare Worker in `scripts/test.d/50-workers.sh`.
//!
//! Run `cargo build --workspace --bins` first (scripts/test does).

use clipmesh_tests::procs::Relay;

#[test]
fn native_relay_conforms() {
    let dir = tempfile::tempdir().unwrap();
    // The suite fails logins on purpose from one address; the login
    // throttle (checked by `native_relay_throttles_logins`) would answer
    // 429 to its later checks.
    let mut relay = Relay::start_with(
        &dir.path().join("data"),
        &dir.path().join("relay.log"),
        0,
        "info",
        "throttle_free_failures = 1000",
    )
    .unwrap();
    let res = clipmesh_tests::conformance::run(&relay.url());
    relay.stop().unwrap();
    res.unwrap();
}

/// Blob expiry on the native relay (the Worker's runs in 50-workers.sh):
/// a relay with a 2 s blob lifetime.
#[test]
fn native_relay_expires_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = Relay::start_with(
        &dir.path().join("data"),
        &dir.path().join("relay.log"),
        0,
        "info",
        // `Relay::start_with` writes these lines into `[auth]`; a table
        // header after them sets the blob lifetime.
        "[limits]\nblob_ttl_secs = 2",
    )
    .unwrap();
    let res = clipmesh_tests::conformance::blob_expiry(&relay.url(), 2);
    relay.stop().unwrap();
    res.unwrap();
}

/// The login throttle on the native relay (the Worker's runs in
/// 50-workers.sh): two free failures, then blocks of at least 5 minutes.
#[test]
fn native_relay_throttles_logins() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = Relay::start_with(
        &dir.path().join("data"),
        &dir.path().join("relay.log"),
        0,
        "info",
        "throttle_free_failures = 2\nthrottle_base_s = 300",
    )
    .unwrap();
    let res = clipmesh_tests::conformance::login_throttle(&relay.url(), 2);
    relay.stop().unwrap();
    res.unwrap();
}
