//! Open HTTP connections per client network (an IPv4 address or an IPv6
//! /64, as the login throttle counts them: [`crate::throttle::net_key`]),
//! so one client cannot take every slot of the accept loop's pool.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts of open connections per network, capped at `max` each.
#[derive(Debug)]
pub struct PerNet {
    /// Open connections per network; a network at 0 is removed.
    open: Mutex<HashMap<IpAddr, usize>>,
    /// Most open connections per network.
    max: usize,
}

/// One open connection of a network; dropping it frees the slot.
#[derive(Debug)]
pub struct NetSlot {
    /// The counts it is part of.
    owner: Arc<PerNet>,
    /// Its network.
    net: IpAddr,
}

impl PerNet {
    /// Counts allowing `max` connections per network (at least 1).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::new(HashMap::new()),
            max: max.max(1),
        })
    }

    /// A slot for a connection from `ip`, or `None` if its network is full.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<NetSlot> {
        let net = crate::throttle::net_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(net).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(NetSlot {
            owner: self.clone(),
            net,
        })
    }

    /// Networks with an open connection now.
    pub fn networks(&self) -> usize {
        self.open.lock().map_or(0, |o| o.len())
    }
}

impl Drop for NetSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.net) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.net);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_per_network_and_freed_on_drop() {
        let caps = PerNet::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = caps.try_take(a).unwrap();
        let _s2 = caps.try_take(a).unwrap();
        assert!(caps.try_take(a).is_none(), "third from one address");
        assert!(caps.try_take(b).is_some(), "another address is separate");
        drop(s1);
        assert!(caps.try_take(a).is_some(), "a freed slot is reusable");
        // One IPv6 /64 is one network.
        let v6 = PerNet::new(1);
        let _x = v6.try_take("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(v6
            .try_take("2001:db8:1:2:ffff::9".parse().unwrap())
            .is_none());
        assert!(v6.try_take("2001:db8:1:3::1".parse().unwrap()).is_some());
    }

    #[test]
    fn empty_networks_are_forgotten() {
        let caps = PerNet::new(4);
        let s = caps.try_take("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(caps.networks(), 1);
        drop(s);
        assert_eq!(caps.networks(), 0);
    }
}

/// Refused requests (401, 429 and 503 answers) per client network, as a
/// token bucket: `burst` at once, refilled at `per_s`. A network whose bucket is
/// empty has its new connections closed on accept, before any TLS or HTTP
/// work, so a flood of bad credentials or throttled requests costs the
/// relay an accept and a close each. Trusted proxies are not tracked.
#[derive(Debug)]
pub struct Refusals {
    /// Tokens left per network and when they were last refilled.
    buckets: Mutex<HashMap<IpAddr, (f64, std::time::Instant)>>,
    /// Refill per second.
    per_s: f64,
    /// Bucket size.
    burst: f64,
}

/// Most networks tracked; when full, networks whose buckets have refilled
/// are forgotten (and if none has, the new network is not tracked).
pub const MAX_REFUSAL_NETS: usize = 100_000;

impl Refusals {
    /// Buckets of `burst` refilled at `per_s` (0 turns the check off).
    pub fn new(per_s: f64, burst: f64) -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
            per_s: per_s.max(0.0),
            burst: burst.max(1.0),
        }
    }

    fn level(&self, tokens: f64, since: std::time::Instant, now: std::time::Instant) -> f64 {
        let dt = now.saturating_duration_since(since).as_secs_f64();
        (tokens + dt * self.per_s).min(self.burst)
    }

    /// Whether a new connection from `ip` may be served at `now`.
    pub fn allows(&self, ip: IpAddr, now: std::time::Instant) -> bool {
        if self.per_s == 0.0 {
            return true;
        }
        let b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match b.get(&crate::throttle::net_key(ip)) {
            Some(&(tokens, since)) => self.level(tokens, since, now) >= 1.0,
            None => true,
        }
    }

    /// Counts one refused request from `ip` at `now`.
    pub fn charge(&self, ip: IpAddr, now: std::time::Instant) {
        if self.per_s == 0.0 {
            return;
        }
        let net = crate::throttle::net_key(ip);
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() >= MAX_REFUSAL_NETS && !b.contains_key(&net) {
            let burst = self.burst;
            b.retain(|_, (t, since)| self.level(*t, *since, now) < burst);
            if b.len() >= MAX_REFUSAL_NETS {
                return;
            }
        }
        let (tokens, since) = b.get(&net).copied().unwrap_or((self.burst, now));
        b.insert(net, ((self.level(tokens, since, now) - 1.0).max(0.0), now));
    }
}

#[cfg(test)]
mod refusal_tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_network_is_shut_out_after_its_burst_and_let_back_in_by_the_refill() {
        let r = Refusals::new(2.0, 3.0);
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(r.allows(ip, t0));
            r.charge(ip, t0);
        }
        assert!(!r.allows(ip, t0), "burst spent");
        assert!(
            r.allows("192.0.2.2".parse().unwrap(), t0),
            "others unaffected"
        );
        assert!(
            r.allows(ip, t0 + Duration::from_millis(500)),
            "refilled one"
        );
        assert!(Refusals::new(0.0, 1.0).allows(ip, t0), "off");
    }
}
