//! The login throttle's rules, shared by both hosts: which network a client
//! address counts as ([`net_key`]) and how long a key is blocked after its
//! n-th failure ([`Backoff::block_for`]). The native relay keeps the
//! counters in memory (`relay/src/throttle.rs`), the Worker in D1; both
//! apply these rules, so a guesser meets the same back-off on either host.
//!
//! The scheme: a key (an account from one network, or a network) may fail
//! `free` times; each further failure blocks it for `base * 2^(n - 1)`
//! (capped at `max`); a key quiet for longer than `max` starts over; a
//! success clears the account's key (not the network's).

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

/// Back-off settings of a login throttle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Failures allowed per key before back-off starts.
    pub free: u32,
    /// First block; doubles with each further failure.
    pub base: Duration,
    /// Longest block.
    pub max: Duration,
}

impl Backoff {
    /// How long a key is blocked after its `failures`-th failure in a row
    /// (counting this one): `None` while within the free allowance.
    pub fn block_for(&self, failures: u32) -> Option<Duration> {
        if failures <= self.free {
            return None;
        }
        let exp = (failures - self.free - 1).min(30);
        let base = self.base.max(Duration::from_millis(1));
        Some(base.saturating_mul(1u32 << exp).min(self.max))
    }

    /// Whether a key whose last failure was `since_last` ago has been quiet
    /// long enough to start over.
    pub fn restarts(&self, since_last: Duration) -> bool {
        since_last > self.max
    }
}

/// The network a client address counts as for throttling: an IPv4 address
/// itself (also when written IPv4-mapped), or the /64 an IPv6 address is in,
/// because one IPv6 subscriber usually holds a whole /64.
pub fn net_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_then_doubling_then_capped() {
        let b = Backoff {
            free: 2,
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
        };
        let waits: Vec<_> = (1..=7).map(|n| b.block_for(n)).collect();
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(waits, vec![None, None, s(1), s(2), s(4), s(8), s(8)]);
        assert_eq!(b.block_for(u32::MAX), s(8), "no overflow");
        assert!(!b.restarts(Duration::from_secs(8)));
        assert!(b.restarts(Duration::from_secs(9)));
    }

    #[test]
    fn networks_are_v4_addresses_or_v6_slash_64s() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(net_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(net_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(net_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
    }
}
