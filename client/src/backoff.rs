//! Reconnect policy: jittered exponential back-off and what each way of
//! losing the connection means.
//!
//! Sans-IO: the caller passes in how the connection ended and gets back what
//! to do next. Randomness comes from a small seeded generator so tests are
//! deterministic.
//!
//! | how it ended                          | what happens                          |
//! |---------------------------------------|---------------------------------------|
//! | close 1012 (relay restarting)         | reconnect at once, back-off reset     |
//! | close 4001 or HTTP 401 at the upgrade | stop: the session was revoked         |
//! | anything else (IO error, half-open, other close codes) | wait `next_delay()` |
//!
//! Delays grow 0.5 s, 1 s, 2 s, … up to a 30 s cap, each drawn uniformly
//! from `[d/2, d]` ("equal jitter") so many devices reconnecting after a
//! relay outage spread out. A successful `Welcome` resets the sequence.

use clipmesh_proto::CloseCode;
use std::time::Duration;

/// First back-off step.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest back-off step.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// How a connection (or connection attempt) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disconnect {
    /// The relay closed the WebSocket with this code.
    Closed(CloseCode),
    /// The relay refused the upgrade with HTTP 401.
    Unauthorized,
    /// Nothing was heard from the relay in time (half-open socket, or a
    /// probe after a clock jump went unanswered).
    HalfOpen,
    /// A network or TLS error, or the socket ended without a close frame.
    Io,
    /// The relay broke the protocol (undecodable frame, no `Welcome`).
    Protocol,
}

/// Why the client stops reconnecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The device's session was revoked or the account disabled.
    Revoked,
}

/// What to do after a [`Disconnect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Reconnect after this delay (zero means at once).
    Reconnect(Duration),
    /// Do not reconnect.
    Stop(StopReason),
}

/// Jittered exponential back-off state.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// Failed attempts since the last successful `Welcome`; picks the step.
    attempt: u32,
    /// xorshift64 state for the jitter (never zero).
    rng: u64,
}

impl Backoff {
    /// A fresh policy; `seed` feeds the jitter (any value, 0 is remapped).
    pub fn new(seed: u64) -> Self {
        Self {
            attempt: 0,
            rng: seed.max(1),
        }
    }

    /// Call on every successful `Welcome`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Decides what to do after the connection ended.
    pub fn on_disconnect(&mut self, how: Disconnect) -> Next {
        match how {
            Disconnect::Unauthorized | Disconnect::Closed(CloseCode::Unauthorized) => {
                Next::Stop(StopReason::Revoked)
            }
            Disconnect::Closed(CloseCode::ServiceRestart) => {
                self.attempt = 0;
                Next::Reconnect(Duration::ZERO)
            }
            _ => Next::Reconnect(self.next_delay()),
        }
    }

    /// The next jittered delay, advancing the step.
    pub fn next_delay(&mut self) -> Duration {
        let step = BACKOFF_BASE
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(BACKOFF_CAP);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        // Uniform in [half, step].
        let frac = (xorshift64(&mut self.rng) >> 11) as f64 / (1u64 << 53) as f64;
        half + half.mul_f64(frac)
    }
}

/// One step of xorshift64 over `state` (never 0): the jitter of the
/// sans-IO schedulers ([`Backoff`] and the key-listing fetch), seeded by their
/// drivers, so tests replay the same sequence.
pub(crate) fn xorshift64(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_in_range() {
        let mut b = Backoff::new(42);
        let mut prev_step = Duration::ZERO;
        for i in 0..20u32 {
            let d = b.next_delay();
            let step = BACKOFF_BASE.saturating_mul(1 << i.min(16)).min(BACKOFF_CAP);
            assert!(d >= step / 2 && d <= step, "attempt {i}: {d:?} vs {step:?}");
            assert!(step >= prev_step);
            prev_step = step;
        }
        assert_eq!(prev_step, BACKOFF_CAP);
    }

    #[test]
    fn first_delay_is_between_quarter_and_half_second() {
        for seed in 0..50 {
            let d = Backoff::new(seed).next_delay();
            assert!(d >= Duration::from_millis(250) && d <= Duration::from_millis(500));
        }
    }

    #[test]
    fn jitter_differs_between_seeds() {
        let a: Vec<_> = (0..5).map(|_| Backoff::new(1).next_delay()).collect();
        let mut b1 = Backoff::new(1);
        let mut b2 = Backoff::new(987_654_321);
        let s1: Vec<_> = (0..5).map(|_| b1.next_delay()).collect();
        let s2: Vec<_> = (0..5).map(|_| b2.next_delay()).collect();
        assert_ne!(s1, s2);
        assert!(a.iter().all(|d| *d == a[0]), "same seed, same first delay");
    }

    #[test]
    fn service_restart_reconnects_at_once_and_resets() {
        let mut b = Backoff::new(7);
        for _ in 0..5 {
            b.on_disconnect(Disconnect::Io);
        }
        assert_eq!(b.attempts(), 5);
        assert_eq!(
            b.on_disconnect(Disconnect::Closed(CloseCode::ServiceRestart)),
            Next::Reconnect(Duration::ZERO)
        );
        assert_eq!(b.attempts(), 0);
    }

    #[test]
    fn revocation_stops() {
        let mut b = Backoff::new(7);
        assert_eq!(
            b.on_disconnect(Disconnect::Closed(CloseCode::Unauthorized)),
            Next::Stop(StopReason::Revoked)
        );
        assert_eq!(
            b.on_disconnect(Disconnect::Unauthorized),
            Next::Stop(StopReason::Revoked)
        );
    }

    #[test]
    fn reset_after_welcome_starts_over() {
        let mut b = Backoff::new(3);
        for _ in 0..10 {
            b.on_disconnect(Disconnect::HalfOpen);
        }
        b.reset();
        match b.on_disconnect(Disconnect::Closed(CloseCode::TryAgainLater)) {
            Next::Reconnect(d) => assert!(d <= BACKOFF_BASE),
            other => panic!("unexpected {other:?}"),
        }
    }
}
