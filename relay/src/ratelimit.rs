//! The per-device publish rate limit, on the native clock.
//!
//! The limiter itself is sans-IO and shared with the Worker host
//! ([`clipmesh_room::ratelimit`]); this module only feeds it `Instant`s.

use std::time::Instant;

pub use clipmesh_room::ratelimit::{Verdict, STRIKE_WINDOW};

/// Publish limiter of one device, on `Instant` time.
#[derive(Clone, Debug)]
pub struct PublishLimiter {
    inner: clipmesh_room::ratelimit::PublishLimiter,
    origin: Instant,
}

impl PublishLimiter {
    /// `per_s` frames per second with bursts of `burst`; `strikes` rejected
    /// frames per [`STRIKE_WINDOW`] are tolerated before [`Verdict::Close`].
    pub fn new(per_s: f64, burst: f64, strikes: u32, now: Instant) -> Self {
        Self {
            inner: clipmesh_room::ratelimit::PublishLimiter::new(
                per_s,
                burst,
                strikes,
                std::time::Duration::ZERO,
            ),
            origin: now,
        }
    }

    /// Decides on one frame at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        self.inner.check(now.saturating_duration_since(self.origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn flood_is_rejected_then_closed_on_instants() {
        let t0 = Instant::now();
        let mut l = PublishLimiter::new(1.0, 1.0, 1, t0);
        assert_eq!(l.check(t0), Verdict::Allow);
        assert_eq!(l.check(t0), Verdict::Reject);
        assert_eq!(l.check(t0), Verdict::Close);
        assert_eq!(l.check(t0 + Duration::from_secs(10)), Verdict::Allow);
    }
}
