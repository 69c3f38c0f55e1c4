//! The login throttle on D1, as the native relay's (`relay/src/throttle.rs`)
//! with the same rules (`clipmesh_room::throttle`): keyed by (account,
//! client network) and by client network, `THROTTLE_FREE_FAILURES` free
//! failures, then blocks from `THROTTLE_BASE_S` doubling up to
//! `THROTTLE_MAX_S`; a success clears the account's key. Every
//! password-style check goes through it: v1 login, v1 password change, the
//! v1 → v2 upgrade, and v2 login and password starts (counted at the start,
//! cleared by a finish that verifies, because an OPAQUE guesser learns its
//! answer from KE2 and never has to send KE3).
//!
//! A Worker isolate keeps no memory between requests, so the counters live
//! in D1 (`login_throttle`, migration 0006): one read per check, two
//! writes per failure. The client's network is its `CF-Connecting-IP`
//! (set by Cloudflare's edge, which replaces any value a client sends;
//! the local runtime sets it to the peer address). The cron sweep
//! ([`crate::sweep`]) deletes rows quiet for longer than `THROTTLE_MAX_S`.

use crate::api::ApiError;
use crate::config::Settings;
use crate::session::DB;
use clipmesh_room::throttle::{net_key, Backoff};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use wasm_bindgen::JsValue;
use worker::{Env, Request};

/// The network a request comes from (`CF-Connecting-IP`, as
/// [`net_key`] counts it). Without the header (never on Cloudflare) every
/// such request counts as one network, 0.0.0.0.
pub fn client_net(req: &Request) -> IpAddr {
    net_key(client_ip(req))
}

/// The client's address (`CF-Connecting-IP`; 0.0.0.0 without it).
pub fn client_ip(req: &Request) -> IpAddr {
    req.headers()
        .get("CF-Connecting-IP")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn net_row(net: IpAddr) -> String {
    format!("n:{net}")
}

fn account_row(name: &str, net: IpAddr) -> String {
    // Networks print without '/', so the key is unambiguous.
    format!("a:{net}/{name}")
}

fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

/// 429 `rate_limited` with `Retry-After` (whole seconds, at least 1), as
/// natively.
pub fn rate_limited(wait: Duration) -> ApiError {
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    ApiError::new(
        429,
        "rate_limited",
        format!("too many attempts; retry in {secs} s"),
    )
    .retry_after(secs)
}

/// Refuses (429) a login for `name` from `net` while either key is
/// blocked, before any secret is checked (also a correct one).
pub async fn check(env: &Env, name: &str, net: IpAddr) -> Result<(), ApiError> {
    #[derive(Deserialize)]
    struct Until {
        until: Option<f64>,
    }
    let until = env
        .d1(DB)?
        .prepare("SELECT MAX(blocked_until) AS until FROM login_throttle WHERE key IN (?1, ?2)")
        .bind(&[
            JsValue::from_str(&net_row(net)),
            JsValue::from_str(&account_row(name, net)),
        ])?
        .first::<Until>(None)
        .await?
        .and_then(|u| u.until)
        .map_or(0, |u| u as u64);
    let now = now_ms();
    if until > now {
        return Err(rate_limited(Duration::from_millis(until - now)));
    }
    Ok(())
}

/// Counts one failure against `key` (starting over after a quiet spell
/// longer than the longest block) and blocks it as the shared rules say;
/// returns the block it started, if any.
async fn bump(env: &Env, b: &Backoff, key: String) -> Result<Option<Duration>, ApiError> {
    #[derive(Deserialize)]
    struct Failures {
        failures: u32,
    }
    let db = env.d1(DB)?;
    let now = now_ms();
    let (k, t) = (JsValue::from_str(&key), JsValue::from_f64(now as f64));
    let max_ms = JsValue::from_f64(b.max.as_millis() as f64);
    let n = db
        .prepare(
            "INSERT INTO login_throttle (key, failures, blocked_until, last_failure) VALUES (?1, 1, 0, ?2) \
             ON CONFLICT(key) DO UPDATE SET \
             failures = CASE WHEN ?2 - last_failure > ?3 THEN 1 ELSE failures + 1 END, last_failure = ?2 \
             RETURNING failures",
        )
        .bind(&[k.clone(), t, max_ms])?
        .first::<Failures>(None)
        .await?
        .map_or(1, |f| f.failures);
    let wait = b.block_for(n);
    if let Some(wait) = wait {
        let until = now.saturating_add(wait.as_millis() as u64);
        db.prepare("UPDATE login_throttle SET blocked_until = ?2 WHERE key = ?1")
            .bind(&[k, JsValue::from_f64(until as f64)])?
            .run()
            .await?;
    }
    Ok(wait)
}

/// The per-network signup budget, as the native relay's `NetGuard`: each
/// signup that got this far counts against its client network (key
/// `s:<network>`, in the same table); past `SIGNUP_FREE_PER_IP` it is
/// refused with 429 `rate_limited`, and so is every signup from there
/// while the block lasts (those are not counted).
pub async fn admit_signup(env: &Env, s: &Settings, net: IpAddr) -> Result<(), ApiError> {
    let key = format!("s:{net}");
    #[derive(Deserialize)]
    struct Until {
        blocked_until: f64,
    }
    let until = env
        .d1(DB)?
        .prepare("SELECT blocked_until FROM login_throttle WHERE key = ?1")
        .bind(&[JsValue::from_str(&key)])?
        .first::<Until>(None)
        .await?
        .map_or(0, |u| u.blocked_until as u64);
    let now = now_ms();
    if until > now {
        return Err(rate_limited(Duration::from_millis(until - now)));
    }
    match bump(env, &s.signup_budget, key).await? {
        Some(wait) => Err(rate_limited(wait)),
        None => Ok(()),
    }
}

/// A failed login for `name` from `net`: counts against both keys.
pub async fn failure(env: &Env, s: &Settings, name: &str, net: IpAddr) -> Result<(), ApiError> {
    bump(env, &s.throttle, net_row(net)).await?;
    bump(env, &s.throttle, account_row(name, net)).await?;
    Ok(())
}

/// A started v2 login for `name` from `net`: counts against the account
/// until a finish that verifies clears it ([`success`]).
pub async fn attempt(env: &Env, s: &Settings, name: &str, net: IpAddr) -> Result<(), ApiError> {
    bump(env, &s.throttle, account_row(name, net)).await?;
    Ok(())
}

/// A v2 finish that did not verify: counts against the network only (its
/// start already counted against the account).
pub async fn net_failure(env: &Env, s: &Settings, net: IpAddr) -> Result<(), ApiError> {
    bump(env, &s.throttle, net_row(net)).await?;
    Ok(())
}

/// A login succeeded: the account's history from that network starts over
/// (the network's own count stays, so one good account does not reset
/// guessing at others).
pub async fn success(env: &Env, name: &str, net: IpAddr) -> Result<(), ApiError> {
    env.d1(DB)?
        .prepare("DELETE FROM login_throttle WHERE key = ?1")
        .bind(&[JsValue::from_str(&account_row(name, net))])?
        .run()
        .await?;
    Ok(())
}

/// The optional rate-limiting binding (`[[ratelimits]]` named
/// `RATE_LIMITER` in `wrangler.toml`; off unless configured there).
pub const RATE_LIMITER: &str = "RATE_LIMITER";

/// The `Retry-After` of a request the binding refused, seconds: the
/// longest period the binding supports.
const RATE_LIMIT_RETRY_S: u64 = 60;

/// With the rate-limiting binding configured: counts this request against
/// its client network and refuses it (429 `rate_limited`) over the
/// binding's limit. Guards the endpoints a client calls without a token
/// (pre-login, signup, login; v1 and v2), before any hashing, on top of
/// the login throttle. Without the binding: `Ok` and nothing counted.
pub async fn rate_limit(env: &Env, net: IpAddr) -> Result<(), ApiError> {
    let Ok(limiter) = env.rate_limiter(RATE_LIMITER) else {
        return Ok(());
    };
    let outcome = limiter
        .limit(net.to_string())
        .await
        .map_err(ApiError::internal)?;
    if outcome.success {
        Ok(())
    } else {
        Err(ApiError::new(
            429,
            "rate_limited",
            format!("too many requests from this network; retry in {RATE_LIMIT_RETRY_S} s"),
        )
        .retry_after(RATE_LIMIT_RETRY_S))
    }
}
