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
