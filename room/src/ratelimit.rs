//! The per-device publish rate limit: a token bucket, plus a second bucket
//! of "strikes" that decides when a device that keeps flooding is closed.
//!
//! Sans-IO: time is passed in as a [`Duration`] since any fixed origin the
//! host picks (a monotonic `Instant` natively, `Date.now()` in a Worker,
//! where `std::time::Instant` does not exist). Time going backwards counts
//! as no time passing.

use std::time::Duration;

/// Window over which strikes refill.
pub const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// A classic token bucket.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_s: f64,
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens refilling at `per_s`.
    pub fn new(capacity: f64, per_s: f64, now: Duration) -> Self {
        let capacity = capacity.max(1.0);
        Self {
            capacity,
            per_s: per_s.max(0.0),
            tokens: capacity,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Duration) -> bool {
        let dt = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
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
    pub fn new(per_s: f64, burst: f64, strikes: u32, now: Duration) -> Self {
        let strikes = f64::from(strikes.max(1));
        Self {
            frames: TokenBucket::new(burst, per_s, now),
            strikes: TokenBucket::new(strikes, strikes / STRIKE_WINDOW.as_secs_f64(), now),
        }
    }

    /// Decides on one frame at `now`.
    pub fn check(&mut self, now: Duration) -> Verdict {
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

    const T0: Duration = Duration::from_secs(100);

    #[test]
    fn bucket_refills_at_rate() {
        let mut b = TokenBucket::new(2.0, 1.0, T0);
        assert!(b.take(T0) && b.take(T0));
        assert!(!b.take(T0));
        assert!(!b.take(T0 + Duration::from_millis(500)));
        assert!(b.take(T0 + Duration::from_millis(1000)));
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let mut b = TokenBucket::new(1.0, 1.0, T0);
        assert!(b.take(T0));
        assert!(!b.take(Duration::ZERO));
        // The clock stepped back; the refill still counts from the latest
        // time seen, so 1 s after it there is a token again.
        assert!(b.take(T0 + Duration::from_secs(1)));
    }

    #[test]
    fn flood_is_rejected_then_closed() {
        let mut l = PublishLimiter::new(1.0, 3.0, 2, T0);
        let v: Vec<_> = (0..6).map(|_| l.check(T0)).collect();
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
        let mut l = PublishLimiter::new(2.0, 2.0, 1, T0);
        for i in 0..1000u64 {
            assert_eq!(l.check(T0 + Duration::from_millis(500 * i)), Verdict::Allow);
        }
    }
}
