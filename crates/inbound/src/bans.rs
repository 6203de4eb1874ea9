//! Failed-AUTH bans (`[server] auth_failures_before_ban`, `ban_time`): an IP that fails AUTH
//! that many times within `ban_time` gets `421 4.7.0` for every connection until `ban_time` has
//! passed since the last failure, so a password-guessing bot gets a handful of tries per ban
//! period instead of thousands. Memory is bounded: expired entries are dropped whenever the
//! table grows past [`MAX_TRACKED`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept before expired ones are swept.
pub(crate) const MAX_TRACKED: usize = 10_000;

/// Shared failure counts and bans per client IP.
#[derive(Debug, Default)]
pub struct AuthBans {
    inner: Mutex<HashMap<IpAddr, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: usize,
    last: Instant,
    banned: bool,
}

impl AuthBans {
    /// How much longer `ip` stays banned at `now`, if it is.
    pub fn banned(&self, ip: IpAddr, now: Instant, ban_time: Duration) -> Option<Duration> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.get(&ip)?;
        let until = e.last + ban_time;
        (e.banned && until > now).then(|| until - now)
    }

    /// Every IP with failures counted within `ban_time` of `now`: (ip, failures, how much longer
    /// it stays banned if it is), sorted by IP.
    pub fn list(&self, now: Instant, ban_time: Duration) -> Vec<(IpAddr, usize, Option<Duration>)> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map
            .iter()
            .filter(|(_, e)| e.last + ban_time > now)
            .map(|(ip, e)| (*ip, e.failures, e.banned.then(|| e.last + ban_time - now)))
            .collect();
        v.sort_by_key(|(ip, ..)| *ip);
        v
    }

    /// Forgets `ip`'s failures and lifts its ban; false when nothing was recorded for it.
    pub fn lift(&self, ip: IpAddr) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).remove(&ip).is_some()
    }

    /// Records a failed AUTH from `ip` at `now`; returns true when this failure bans it
    /// (`limit` failures, each within `ban_time` of the previous one).
    pub fn failure(&self, ip: IpAddr, now: Instant, limit: usize, ban_time: Duration) -> bool {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, e| e.last + ban_time > now);
        }
        let e = map.entry(ip).or_insert(Entry { failures: 0, last: now, banned: false });
        if e.last + ban_time <= now {
            *e = Entry { failures: 0, last: now, banned: false };
        }
        e.failures += 1;
        e.last = now;
        if e.failures >= limit && !e.banned {
            e.banned = true;
            postern_metrics::metrics().ban();
        }
        e.banned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_after_limit_and_expires() {
        let b = AuthBans::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t = Instant::now();
        let ban = Duration::from_secs(60);
        assert!(!b.failure(ip, t, 3, ban));
        assert!(!b.failure(ip, t + Duration::from_secs(1), 3, ban));
        assert!(b.banned(ip, t, ban).is_none());
        assert!(b.failure(ip, t + Duration::from_secs(2), 3, ban));
        assert_eq!(b.banned(ip, t + Duration::from_secs(2), ban), Some(ban));
        assert!(b.banned(other, t, ban).is_none());
        assert!(b.banned(ip, t + Duration::from_secs(62), ban).is_none());
        // Failures spread wider than ban_time never add up to a ban.
        assert!(!b.failure(other, t, 2, ban));
        assert!(!b.failure(other, t + Duration::from_secs(61), 2, ban));
        // Listed, then lifted.
        assert!(b.failure(ip, t + Duration::from_secs(70), 1, ban));
        let listed = b.list(t + Duration::from_secs(70), ban);
        assert!(listed.contains(&(ip, 1, Some(ban))), "{listed:?}");
        assert!(b.lift(ip) && !b.lift(ip));
        assert!(b.banned(ip, t + Duration::from_secs(70), ban).is_none());
    }
}
