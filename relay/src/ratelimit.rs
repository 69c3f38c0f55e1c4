//! The per-device publish rate limit: a token bucket, plus a second bucket
//! of "strikes" that decides when a device that keeps flooding is closed.
//! Sans-IO: time is passed in.

use std::time::{Duration, Instant};

/// Window over which strikes refill.
pub const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// A classic token bucket.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_s: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens refilling at `per_s`.
    pub fn new(capacity: f64, per_s: f64, now: Instant) -> Self {
        let capacity = capacity.max(1.0);
        Self {
            capacity,
            per_s: per_s.max(0.0),
            tokens: capacity,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.per_s).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What to do with one rate-limited frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it.
    Allow,
    /// Refuse it with `Error{RateLimited}`.
    Reject,
    /// Refuse it and close the socket with 4003: the device keeps flooding.
    Close,
}

/// Publish limiter of one device.
#[derive(Clone, Debug)]
pub struct PublishLimiter {
    frames: TokenBucket,
    strikes: TokenBucket,
}

impl PublishLimiter {
    /// `per_s` frames per second with bursts of `burst`; `strikes` rejected
    /// frames per [`STRIKE_WINDOW`] are tolerated before [`Verdict::Close`].
    pub fn new(per_s: f64, burst: f64, strikes: u32, now: Instant) -> Self {
        let strikes = f64::from(strikes.max(1));
        Self {
            frames: TokenBucket::new(burst, per_s, now),
            strikes: TokenBucket::new(strikes, strikes / STRIKE_WINDOW.as_secs_f64(), now),
        }
    }

    /// Decides on one frame at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.frames.take(now) {
            Verdict::Allow
        } else if self.strikes.take(now) {
            Verdict::Reject
        } else {
            Verdict::Close
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 1.0, t0);
        assert!(b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        assert!(!b.take(t0 + Duration::from_millis(500)));
        assert!(b.take(t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn flood_is_rejected_then_closed() {
        let t0 = Instant::now();
        let mut l = PublishLimiter::new(1.0, 3.0, 2, t0);
        let v: Vec<_> = (0..6).map(|_| l.check(t0)).collect();
        assert_eq!(
            v,
            [
                Verdict::Allow,
                Verdict::Allow,
                Verdict::Allow,
                Verdict::Reject,
                Verdict::Reject,
                Verdict::Close
            ]
        );
    }

    #[test]
    fn polite_sender_is_never_closed() {
        let t0 = Instant::now();
        let mut l = PublishLimiter::new(2.0, 2.0, 1, t0);
        for i in 0..1000u64 {
            assert_eq!(l.check(t0 + Duration::from_millis(500 * i)), Verdict::Allow);
        }
    }
}
