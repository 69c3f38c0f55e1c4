//! Login throttling per account and per client IP, with exponential
//! back-off. Sans-IO: time is passed in, so it is tested without sleeping.
//!
//! After `free` failures for a key, each further failure blocks that key for
//! `base * 2^(n - 1)` (capped at `max`). A success clears the key. The map is
//! bounded: when it grows past [`MAX_TRACKED`], entries whose block has run
//! out and that are older than `max` are pruned, and if it is still full the
//! oldest entries go.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Most keys tracked at once per throttle.
pub const MAX_TRACKED: usize = 100_000;

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    blocked_until: Instant,
    last_failure: Instant,
}

/// Back-off state for one kind of key (account names or IPs).
#[derive(Debug)]
pub struct Throttle<K> {
    entries: HashMap<K, Entry>,
    free: u32,
    base: Duration,
    max: Duration,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    /// A throttle allowing `free` failures before backing off from `base` up
    /// to `max`.
    pub fn new(free: u32, base: Duration, max: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            free,
            base: base.max(Duration::from_millis(1)),
            max,
        }
    }

    /// `Err(wait)` if `key` is blocked at `now`.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        match self.entries.get(key) {
            Some(e) if e.blocked_until > now => Err(e.blocked_until - now),
            _ => Ok(()),
        }
    }

    /// Records a failure; returns the block it starts, if any.
    pub fn failure(&mut self, key: K, now: Instant) -> Option<Duration> {
        if self.entries.len() >= MAX_TRACKED && !self.entries.contains_key(&key) {
            self.prune(now);
        }
        let e = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            blocked_until: now,
            last_failure: now,
        });
        // Forget old history: a key quiet for longer than `max` starts over.
        if now.saturating_duration_since(e.last_failure) > self.max {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        if e.failures <= self.free {
            return None;
        }
        let exp = (e.failures - self.free - 1).min(30);
        let wait = self.base.saturating_mul(1u32 << exp).min(self.max);
        e.blocked_until = now + wait;
        Some(wait)
    }

    /// Records a success: the key starts over.
    pub fn success(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn prune(&mut self, now: Instant) {
        let max = self.max;
        self.entries.retain(|_, e| {
            e.blocked_until > now || now.saturating_duration_since(e.last_failure) <= max
        });
        if self.entries.len() >= MAX_TRACKED {
            // Still full of active keys: drop the oldest half rather than grow.
            let mut ages: Vec<Instant> = self.entries.values().map(|e| e.last_failure).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            self.entries.retain(|_, e| e.last_failure > cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Throttle<&'static str> {
        Throttle::new(2, Duration::from_secs(1), Duration::from_secs(8))
    }

    #[test]
    fn backs_off_exponentially_and_caps() {
        let mut th = t();
        let t0 = Instant::now();
        assert_eq!(th.failure("a", t0), None);
        assert_eq!(th.failure("a", t0), None);
        assert!(th.check(&"a", t0).is_ok());
        assert_eq!(th.failure("a", t0), Some(Duration::from_secs(1)));
        assert_eq!(th.check(&"a", t0), Err(Duration::from_secs(1)));
        assert!(th.check(&"a", t0 + Duration::from_secs(1)).is_ok());
        assert_eq!(th.failure("a", t0), Some(Duration::from_secs(2)));
        assert_eq!(th.failure("a", t0), Some(Duration::from_secs(4)));
        assert_eq!(th.failure("a", t0), Some(Duration::from_secs(8)));
        assert_eq!(th.failure("a", t0), Some(Duration::from_secs(8)));
        // Other keys are unaffected.
        assert!(th.check(&"b", t0).is_ok());
    }

    #[test]
    fn success_clears_and_old_history_is_forgotten() {
        let mut th = t();
        let t0 = Instant::now();
        for _ in 0..4 {
            th.failure("a", t0);
        }
        th.success(&"a");
        assert!(th.check(&"a", t0).is_ok());
        assert!(th.is_empty());
        for _ in 0..4 {
            th.failure("b", t0);
        }
        let later = t0 + Duration::from_secs(60);
        assert_eq!(th.failure("b", later), None);
    }

    #[test]
    fn map_stays_bounded() {
        let mut th: Throttle<u32> =
            Throttle::new(0, Duration::from_secs(1), Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            th.failure(i, t0);
        }
        assert!(th.len() <= MAX_TRACKED);
    }
}
