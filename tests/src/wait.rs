//! Bounded waiting: every wait in the tests has a deadline.

use anyhow::{bail, Result};
use std::time::{Duration, Instant};

/// Default deadline for one step of a test (a sync, a reconnect).
pub const STEP: Duration = Duration::from_secs(20);

/// Calls `check` until it returns `Some`, at most every `interval`, for at
/// most `timeout`. For state that has no event to wait on (a command's
/// output); prefer event waits where there is one.
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let max_tries = (timeout.as_millis() / interval.as_millis().max(1)) as u64 + 2;
    let mut last_err = None;
    for _ in 0..max_tries {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(interval.min(deadline - now));
    }
    match last_err {
        Some(e) => bail!("timed out after {timeout:?} waiting for {what} (last error: {e:#})"),
        None => bail!("timed out after {timeout:?} waiting for {what}"),
    }
}
