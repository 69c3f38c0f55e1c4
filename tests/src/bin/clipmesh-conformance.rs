//! Runs the relay conformance suite against a relay's base URL (loopback
//! only), e.g. the Worker under `scripts/worker-dev`:
//!
//! ```text
//! clipmesh-conformance --url http://127.0.0.1:8787
//! clipmesh-conformance --url http://127.0.0.1:8787 --hibernation IDLE_S PING_S
//! ```
//!
//! `--hibernation` runs the Worker-only hibernation checks instead
//! (`clipmesh_tests::hibernation`): IDLE_S seconds of keepalives every
//! PING_S seconds, once as WebSocket protocol pings and once as frame pings.
//! `--quota LIMIT` checks metering and the connect-time quota against a
//! Worker started with `DAILY_MESSAGE_QUOTA=LIMIT` (and the admin's room
//! status on the way). `--lifetimes IDLE_S` checks that a session idle
//! past IDLE_S ends, against a relay configured with that idle lifetime;
//! `--blob-expiry TTL_S` that blobs expire (410) after TTL_S, against a
//! relay with that blob lifetime. `--throttle FREE` checks the login
//! throttle against a relay allowing FREE failures with a long first block
//! (it blocks this network: run it last); `--cron-sweep TTL_S` the Worker's
//! scheduled sweep of expired blobs against a fresh Worker with that blob
//! lifetime; `--rate-limit LIMIT` the optional rate-limiting binding
//! against a Worker served with `--rate-limit LIMIT`; `--turnstile`
//! Turnstile on signup against a Worker whose `TURNSTILE_SECRET` is
//! Cloudflare's always-pass test secret (answered locally by serve.mjs);
//! `--signup-budget FREE` the per-network signup budget against a Worker
//! allowing FREE signups per network.

use anyhow::{bail, Result};
use std::time::Duration;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, url] if flag == "--url" => {
            clipmesh_tests::conformance::run(url)?;
            println!("conformance: all checks passed against {url}");
        }
        [flag, url, h, idle, ping] if flag == "--url" && h == "--hibernation" => {
            let idle = Duration::from_secs(idle.parse()?);
            let ping = Duration::from_secs(ping.parse()?);
            let r = clipmesh_tests::hibernation::run(url, idle, ping)?;
            println!(
                "hibernation: {}s idle per phase, keepalive every {}s per device; \
                 protocol pings: {} sent, {} wake (the publish after eviction, delivered to both); \
                 the clip replayed from storage to a third device after the next eviction; \
                 frame pings: {} sent, {} handled by the room, {} wakes; \
                 metering counted all {} messages across the evictions",
                r.idle.as_secs(),
                ping.as_secs(),
                r.protocol_pings,
                r.wakes_protocol_pings,
                r.frame_pings,
                r.messages_frame_pings,
                r.wakes_frame_pings,
                r.metered
            );
        }
        [flag, url, q, limit] if flag == "--url" && q == "--quota" => {
            clipmesh_tests::hibernation::quota(url, limit.parse()?)?;
            println!("quota: metering counted {limit} messages and the next connect was refused (101, quota exceeded, 4003)");
        }
        [flag, url, l, idle] if flag == "--url" && l == "--lifetimes" => {
            clipmesh_tests::conformance::lifetimes(url, idle.parse()?)?;
            println!("lifetimes: a token idle past {idle} s was refused and its device removed");
        }
        [flag, url, b, ttl] if flag == "--url" && b == "--blob-expiry" => {
            clipmesh_tests::conformance::blob_expiry(url, ttl.parse()?)?;
            println!("blob expiry: a blob older than {ttl} s answered 410 blob_expired");
        }
        [flag, url, th, free] if flag == "--url" && th == "--throttle" => {
            clipmesh_tests::conformance::login_throttle(url, free.parse()?)?;
            println!("throttle: after {free} free failures and one more, the right key, a password change and a v2 login start were refused with 429");
        }
        [flag, url, c, ttl] if flag == "--url" && c == "--cron-sweep" => {
            clipmesh_tests::conformance::cron_sweep(url, ttl.parse()?)?;
            println!("cron sweep: the scheduled handler deleted an expired blob's R2 objects; the blob answers 410");
        }
        [flag, url, r, limit] if flag == "--url" && r == "--rate-limit" => {
            clipmesh_tests::conformance::rate_limit_binding(url, limit.parse()?)?;
            println!("rate-limiting binding: pre-logins over {limit} a minute were refused with 429");
        }
        [flag, url, ts] if flag == "--url" && ts == "--turnstile" => {
            clipmesh_tests::conformance::turnstile(url)?;
            println!("turnstile: signups without a solved challenge were refused (403), with one accepted");
        }
        [flag, url, b, free] if flag == "--url" && b == "--signup-budget" => {
            clipmesh_tests::conformance::signup_budget(url, free.parse()?)?;
            println!("signup budget: once {free} signups from this network were spent, the next were refused with 429");
        }
        _ => bail!(
            "usage: clipmesh-conformance --url http://127.0.0.1:PORT [--hibernation IDLE_S PING_S | --quota LIMIT | --lifetimes IDLE_S | --blob-expiry TTL_S | --throttle FREE | --cron-sweep TTL_S | --rate-limit LIMIT | --turnstile | --signup-budget FREE]"
        ),
    }
    Ok(())
}
