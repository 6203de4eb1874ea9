//! Connection limits: concurrent sessions in total and per client IP (`[server]
//! max_connections`, `max_connections_per_ip`). A connection over a limit is answered
//! `421 4.7.0` and closed, so one client cannot take every slot.

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
    /// Takes a slot for `ip` if both limits allow it.
    ///
    /// # Errors
    /// [`Refused`] naming the limit reached.
    pub fn acquire(&self, ip: IpAddr, max_total: usize, max_per_ip: usize) -> Result<Slot, Refused> {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= max_total {
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
        let s1 = l.acquire(a, 3, 2).unwrap();
        let _s2 = l.acquire(a, 3, 2).unwrap();
        assert_eq!(l.acquire(a, 3, 2).unwrap_err(), Refused::PerIp);
        let _s3 = l.acquire(b, 3, 2).unwrap();
        assert_eq!(l.acquire(b, 3, 2).unwrap_err(), Refused::Total);
        drop(s1);
        let _s4 = l.acquire(a, 3, 2).unwrap();
        assert_eq!(l.total(), 3);
    }
}
