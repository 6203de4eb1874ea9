//! Connection limits: concurrent sessions in total and per client IP (`[server]
//! max_connections`, `max_connections_per_ip`). A connection over a limit is answered
//! `421 4.7.0` and closed, so one client cannot take every slot.
//!
//! Fair admission under a flood: once `max_connections` are open, a client address that has
//! no session open still gets in, on one of `new_client_reserve` slots kept for such
//! addresses; an address that already has sessions is refused. A flood from a few dozen
//! addresses at their per-IP limit thus fills the ordinary slots and nothing more, and every
//! other client is still served (the aim of Postfix's anvil and postscreen). The hard bound is
//! `max_connections + new_client_reserve`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Shared counters of open sessions.
#[derive(Debug, Default, Clone)]
pub struct ConnectionLimits {
    inner: Arc<Mutex<Counts>>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Held by a session; releases its slot when dropped.
#[derive(Debug)]
pub struct Slot {
    limits: ConnectionLimits,
    ip: IpAddr,
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` reached.
    Total,
    /// `max_connections_per_ip` reached for this IP.
    PerIp,
}

impl std::fmt::Display for Refused {
    /// The configuration key of the limit: `max_connections`, `max_connections_per_ip`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Total => "max_connections",
            Self::PerIp => "max_connections_per_ip",
        })
    }
}

impl ConnectionLimits {
    /// Takes a slot for `ip` if the limits allow it: `max_total` sessions, beyond which only
    /// an address with no open session gets one of `reserve` more, and `max_per_ip` per address.
    ///
    /// # Errors
    /// [`Refused`] naming the limit reached.
    pub fn acquire(&self, ip: IpAddr, max_total: usize, max_per_ip: usize, reserve: usize) -> Result<Slot, Refused> {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let open = c.per_ip.get(&ip).copied().unwrap_or(0);
        if c.total >= max_total && (open > 0 || c.total >= max_total + reserve) {
            return Err(Refused::Total);
        }
        let n = c.per_ip.entry(ip).or_default();
        if *n >= max_per_ip {
            return Err(Refused::PerIp);
        }
        *n += 1;
        c.total += 1;
        Ok(Slot { limits: self.clone(), ip })
    }

    /// Open sessions in total.
    pub fn total(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.limits.inner.lock().unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_total_and_per_ip() {
        let l = ConnectionLimits::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = l.acquire(a, 3, 2, 0).unwrap();
        let _s2 = l.acquire(a, 3, 2, 0).unwrap();
        assert_eq!(l.acquire(a, 3, 2, 0).unwrap_err(), Refused::PerIp);
        let _s3 = l.acquire(b, 3, 2, 0).unwrap();
        assert_eq!(l.acquire(b, 3, 2, 0).unwrap_err(), Refused::Total);
        drop(s1);
        let _s4 = l.acquire(a, 3, 2, 0).unwrap();
        assert_eq!(l.total(), 3);
    }

    #[test]
    fn a_new_address_gets_a_reserved_slot_when_full() {
        let l = ConnectionLimits::default();
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        let _flood: Vec<_> = (0..4).map(|i| l.acquire(ip(2 + i % 2), 4, 2, 1).unwrap()).collect();
        // Full: the flooding addresses are refused, a new one gets the reserved slot.
        assert_eq!(l.acquire(ip(2), 4, 2, 1).unwrap_err(), Refused::Total);
        let _new = l.acquire(ip(9), 4, 2, 1).unwrap();
        // The reserve is spent, and the newcomer now has a session of its own.
        assert_eq!(l.acquire(ip(10), 4, 2, 1).unwrap_err(), Refused::Total);
        assert_eq!(l.acquire(ip(9), 4, 2, 1).unwrap_err(), Refused::Total);
        assert_eq!(l.total(), 5);
    }
}
