//! The cron sweep (`[triggers] crons` in `wrangler.toml`, every 15 minutes
//! by default): the Worker's counterpart of the native relay's blob
//! sweeper, plus the housekeeping a Worker cannot do in memory.
//!
//! - Expired blobs: their R2 objects are deleted and their rows kept as
//!   410 answers for 7 days, then deleted ([`blobs::sweep_expired`], at
//!   most [`blobs::SWEEP_BATCH`] blobs a run).
//! - Login throttle rows quiet for longer than `THROTTLE_MAX_S` and not
//!   blocking anything ([`crate::throttle`]).
//! - Half-finished v2 logins past their expiry (`pending_logins`).
//!
//! Locally, `scripts/worker-dev` lets the handler be triggered with
//! `GET /cdn-cgi/handler/scheduled` (miniflare's trigger, loopback only);
//! the Worker tests in `scripts/test.d/50-workers.sh` do that.

use crate::api::{self, ApiError};
use crate::blobs;
use crate::config::Settings;
use crate::session::{changes, DB};
use wasm_bindgen::JsValue;
use worker::{event, Env, ScheduleContext, ScheduledEvent};

/// What one sweep did (logged).
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// The blob part.
    pub blobs: blobs::SweepReport,
    /// Login throttle rows deleted.
    pub throttle_rows: u64,
    /// Expired half-finished logins deleted.
    pub pending_logins: u64,
}

/// Runs one sweep at the Worker's clock.
pub async fn sweep(env: &Env) -> Result<Report, ApiError> {
    let s = Settings::from_env(env);
    let now = api::unix_now();
    let now_ms = worker::Date::now().as_millis() as f64;
    let blobs = blobs::sweep_expired(env, now).await?;
    let db = env.d1(DB)?;
    // Rows of both kinds (logins, the signup budget) quiet for longer than
    // the longer of their longest blocks.
    let quiet_since = now_ms - s.throttle.max.max(s.signup_budget.max).as_millis() as f64;
    let throttle_rows = changes(
        &db.prepare("DELETE FROM login_throttle WHERE last_failure < ?1 AND blocked_until < ?2")
            .bind(&[JsValue::from_f64(quiet_since), JsValue::from_f64(now_ms)])?
            .run()
            .await?,
    );
    let pending_logins = changes(
        &db.prepare("DELETE FROM pending_logins WHERE expires_at <= ?1")
            .bind(&[JsValue::from_f64(now_ms)])?
            .run()
            .await?,
    );
    Ok(Report {
        blobs,
        throttle_rows,
        pending_logins,
    })
}

/// The scheduled handler: one sweep, its report or error in the log.
#[event(scheduled)]
pub async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    match sweep(&env).await {
        Ok(r) => worker::console_log!(
            "sweep: {} expired blobs emptied ({} objects), {} forgotten, {} throttle rows, {} pending logins",
            r.blobs.emptied,
            r.blobs.objects,
            r.blobs.forgotten,
            r.throttle_rows,
            r.pending_logins
        ),
        Err(e) => worker::console_error!("sweep failed: {e:?}"),
    }
}
