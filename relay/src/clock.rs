//! The relay's wall clock, passed in: handlers, the janitor and the blob
//! store read [`Clock::unix_now`] from the [`Clock`] they were given, so a
//! test can run them at any time it sets ([`Clock::manual`]). The store
//! never reads a clock; its methods take `now` as an argument.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Unix time in seconds: the system clock, or a manual one for tests.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// `None`: the system clock. `Some`: a time the owner sets.
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that reads `start` until [`Clock::set`] or
    /// [`Clock::advance`] moves it (clones share the time).
    pub fn manual(start: i64) -> Self {
        Self {
            manual: Some(Arc::new(AtomicI64::new(start))),
        }
    }

    /// Sets a manual clock (no effect on the system clock).
    pub fn set(&self, t: i64) {
        if let Some(m) = &self.manual {
            m.store(t, Ordering::Relaxed);
        }
    }

    /// Moves a manual clock forward by `secs` (no effect on the system clock).
    pub fn advance(&self, secs: i64) {
        if let Some(m) = &self.manual {
            m.fetch_add(secs, Ordering::Relaxed);
        }
    }

    /// Seconds since the Unix epoch.
    pub fn unix_now(&self) -> i64 {
        match &self.manual {
            Some(m) => m.load(Ordering::Relaxed),
            None => system_unix_now(),
        }
    }
}

/// The system clock in seconds since the Unix epoch (0 before it). Only
/// the edges call it directly: [`Clock::system`], the admin CLI, and the room
/// actor (until its host passes a clock in).
pub fn system_unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_is_shared_by_clones_and_system_clock_moves_on() {
        let c = Clock::manual(100);
        let d = c.clone();
        c.advance(5);
        assert_eq!(d.unix_now(), 105);
        d.set(7);
        assert_eq!(c.unix_now(), 7);
        let s = Clock::system();
        s.set(1);
        assert!(s.unix_now() > 1_700_000_000);
    }
}
