//! Login throttling per account and per client IP, with exponential
//! back-off. Sans-IO: time is passed in, so it is tested without sleeping.
//!
//! [`LoginGuard`] is the piece every password-style login goes through (the
//! relay's login and password change, and any other host or login flavour
//! that checks a secret): `check` before verifying, then `failure` or
//! `success`. It keys the account throttle by (account, client network), so
//! failures from one network never lock the account for the others, and the
//! client throttle by network ([`net_key`]: the IPv4 address, or the IPv6
//! /64), so rotating addresses inside one /64 does not escape it.
//!
//! After `free` failures for a key, each further failure blocks that key for
//! `base * 2^(n - 1)` (capped at `max`): the rules of
//! `clipmesh_room::throttle`, shared with the Worker. A success clears the key. The map is
//! bounded: when it grows past [`MAX_TRACKED`], entries whose block has run
//! out and that are older than `max` are pruned, and if it is still full the
//! oldest entries go.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
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
        let backoff = self.backoff();
        let e = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            blocked_until: now,
            last_failure: now,
        });
        // Forget old history: a key quiet for longer than `max` starts over.
        if backoff.restarts(now.saturating_duration_since(e.last_failure)) {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        let wait = backoff.block_for(e.failures)?;
        e.blocked_until = now + wait;
        Some(wait)
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            free: self.free,
            base: self.base,
            max: self.max,
        }
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

/// The network a client address counts as, and the back-off settings:
/// the shared rules (`clipmesh_room::throttle`), which the Worker applies
/// too.
pub use clipmesh_room::throttle::{net_key, Backoff};

/// Login throttling for one kind of login: per (account, client network)
/// and per client network. Cheap to share (`&self` methods, short locks).
#[derive(Debug)]
pub struct LoginGuard {
    accounts: Mutex<Throttle<(String, IpAddr)>>,
    nets: Mutex<Throttle<IpAddr>>,
    /// (account, network) pairs with a successful login, and when: their
    /// logins take the hasher's known lane (`auth.rs`).
    known: Mutex<HashMap<(String, IpAddr), Instant>>,
}

/// How long a network stays known to an account after its last successful
/// login.
pub const KNOWN_FOR: Duration = Duration::from_secs(90 * 24 * 3600);

impl LoginGuard {
    /// A guard with the same back-off for both throttles.
    pub fn new(b: Backoff) -> Self {
        Self {
            accounts: Mutex::new(Throttle::new(b.free, b.base, b.max)),
            nets: Mutex::new(Throttle::new(b.free, b.base, b.max)),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Records that `account` logged in (or signed up) from `ip` at `now`:
    /// its later logins from that network count as known.
    pub fn remember(&self, account: &str, ip: IpAddr, now: Instant) {
        let mut known = lock(&self.known);
        let key = (account.to_owned(), net_key(ip));
        if known.len() >= MAX_TRACKED && !known.contains_key(&key) {
            known.retain(|_, at| now.saturating_duration_since(*at) < KNOWN_FOR);
            if known.len() >= MAX_TRACKED {
                // Still full: forget the older half.
                let mut ages: Vec<Instant> = known.values().copied().collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                known.retain(|_, at| *at > cut);
            }
        }
        known.insert(key, now);
    }

    /// Whether `account` logged in from `ip`'s network within [`KNOWN_FOR`].
    pub fn is_known(&self, account: &str, ip: IpAddr, now: Instant) -> bool {
        lock(&self.known)
            .get(&(account.to_owned(), net_key(ip)))
            .is_some_and(|at| now.saturating_duration_since(*at) < KNOWN_FOR)
    }

    /// `Err(wait)` if a login for `account` from `ip` must be refused now
    /// (before any secret is checked, also a correct one).
    pub fn check(&self, account: &str, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let net = net_key(ip);
        let by_net = lock(&self.nets).check(&net, now);
        let by_account = lock(&self.accounts).check(&(account.to_owned(), net), now);
        match (by_net, by_account) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(a), Err(b)) => Err(a.max(b)),
            (Err(w), _) | (_, Err(w)) => Err(w),
        }
    }

    /// Records a failed login for `account` from `ip`.
    pub fn failure(&self, account: &str, ip: IpAddr, now: Instant) {
        let net = net_key(ip);
        lock(&self.nets).failure(net, now);
        lock(&self.accounts).failure((account.to_owned(), net), now);
    }

    /// Counts a started OPAQUE (v2) login for `account` from `ip` as a
    /// failure until it succeeds ([`LoginGuard::success`] clears it). An
    /// OPAQUE guess needs only the relay's answer to KE1 — a guesser never
    /// has to send KE3 — so the start is what must be counted.
    pub fn attempt(&self, account: &str, ip: IpAddr, now: Instant) {
        lock(&self.accounts).failure((account.to_owned(), net_key(ip)), now);
    }

    /// Counts a failed v2 login (a KE3 that did not verify) against the
    /// network only: its start was already counted against the account.
    pub fn net_failure(&self, ip: IpAddr, now: Instant) {
        lock(&self.nets).failure(net_key(ip), now);
    }

    /// Records a successful login: that account's history from that network
    /// starts over (the network's own count is left, so one good account
    /// does not reset guessing at others).
    pub fn success(&self, account: &str, ip: IpAddr) {
        lock(&self.accounts).success(&(account.to_owned(), net_key(ip)));
    }
}

/// A count of actions per client network (e.g. signups): after `free`
/// actions a network backs off like a [`Throttle`].
#[derive(Debug)]
pub struct NetGuard(Mutex<Throttle<IpAddr>>);

impl NetGuard {
    /// A guard allowing `b.free` actions per network before backing off.
    pub fn new(b: Backoff) -> Self {
        Self(Mutex::new(Throttle::new(b.free, b.base, b.max)))
    }

    /// Counts one action from `ip`'s network and admits it, or `Err(wait)`
    /// if the network is blocked or this action goes over its allowance
    /// (refused actions during a block are not counted).
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = net_key(ip);
        let mut t = lock(&self.0);
        t.check(&key, now)?;
        match t.failure(key, now) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }
}

/// Locks a throttle. A panic while holding it cannot leave a throttle
/// half-updated in a harmful way (every update is a single map write), so a
/// poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn t() -> Throttle<&'static str> {
        Throttle::new(2, Duration::from_secs(1), Duration::from_secs(8))
    }

    #[test]
    fn networks_become_known_by_success_and_are_forgotten() {
        let g = LoginGuard::new(Backoff {
            free: 1,
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
        });
        let t0 = Instant::now();
        let home: IpAddr = "2001:db8:1:1::5".parse().unwrap();
        assert!(!g.is_known("ann", home, t0));
        g.remember("ann", home, t0);
        assert!(
            g.is_known("ann", "2001:db8:1:1::99".parse().unwrap(), t0),
            "same /64"
        );
        assert!(!g.is_known("bob", home, t0), "per account");
        assert!(!g.is_known("ann", "2001:db8:1:2::5".parse().unwrap(), t0));
        assert!(!g.is_known("ann", home, t0 + KNOWN_FOR));
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

    fn guard() -> LoginGuard {
        LoginGuard::new(Backoff {
            free: 2,
            base: Duration::from_secs(1),
            max: Duration::from_secs(900),
        })
    }

    #[test]
    fn net_guard_admits_free_actions_then_blocks() {
        let g = NetGuard::new(Backoff {
            free: 2,
            base: Duration::from_secs(60),
            max: Duration::from_secs(3600),
        });
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(g.admit(ip, t0).is_ok());
        assert!(g.admit(ip, t0).is_ok());
        assert_eq!(g.admit(ip, t0), Err(Duration::from_secs(60)));
        assert!(g.admit(ip, t0).is_err());
        assert!(g.admit("192.0.2.2".parse().unwrap(), t0).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(net_key(a), net_key(b));
        assert_ne!(net_key(a), net_key(c));
        let m: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(net_key(m), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn rotating_within_a_64_is_still_throttled() {
        let g = guard();
        let t0 = Instant::now();
        for i in 0..3u16 {
            let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, i, 1, 2, 3));
            g.failure(&format!("user{i}"), ip, t0);
        }
        let fresh = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 99, 9, 9, 9));
        assert!(g.check("someone", fresh, t0).is_err());
        let other_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        assert!(g.check("someone", other_64, t0).is_ok());
    }

    #[test]
    fn failures_from_one_network_do_not_lock_the_account_elsewhere() {
        let g = guard();
        let t0 = Instant::now();
        let attacker: IpAddr = "203.0.113.5".parse().unwrap();
        let victim: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..10 {
            g.failure("ann", attacker, t0);
        }
        assert!(g.check("ann", attacker, t0).is_err());
        assert!(g.check("ann", victim, t0).is_ok());
        g.success("ann", victim);
        assert!(g.check("ann", attacker, t0).is_err());
    }
}
