//! Greylisting (`[policy] greylist`): the first delivery attempt of a triplet — client network
//! (/24 for IPv4, /64 for IPv6), reverse-path, forward-path — is deferred with `451 4.7.1`; a
//! retry after the delay is accepted, and the triplet is then remembered, across restarts (an
//! embedded redb store), for as long as it keeps being seen within the expiry. Real MTAs retry;
//! most spam engines do not.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

/// Triplet → `first_seen last_seen passed` (seconds since the epoch, 0/1).
const TRIPLETS: TableDefinition<'_, &str, &str> = TableDefinition::new("greylist");

/// The answer for one triplet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greylist {
    /// Known and passed: accept.
    Pass,
    /// Too early: retry after this long.
    Wait(Duration),
}

/// The greylisting store.
#[derive(Debug)]
pub struct GreylistStore {
    db: Database,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl GreylistStore {
    /// Opens (or creates) the store at `path`.
    ///
    /// # Errors
    /// The database cannot be opened.
    pub fn open(path: &Path) -> Result<Self, String> {
        Database::create(path).map(|db| Self { db }).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Checks and records the triplet at `now` (seconds since the epoch).
    ///
    /// # Errors
    /// The store's error text.
    pub fn check(
        &self,
        ip: IpAddr,
        sender: &str,
        rcpt: &str,
        now: u64,
        delay: Duration,
        expire: Duration,
    ) -> Result<Greylist, String> {
        let key = format!("{}\t{}\t{}", network(ip), sender.to_lowercase(), rcpt.to_lowercase());
        let mut tx = self.db.begin_write().map_err(err)?;
        let answer = {
            let mut t = tx.open_table(TRIPLETS).map_err(err)?;
            let old = t.get(key.as_str()).map_err(err)?.map(|v| v.value().to_owned());
            let parsed = old.as_deref().and_then(parse);
            let (first, passed) = match parsed {
                // Forgotten: a pass not seen for `expire`, or a first attempt not retried
                // within the retry window.
                Some((_, last, passed)) if now.saturating_sub(last) > forget_after(passed, delay, expire) => {
                    (now, false)
                }
                Some((first, _, passed)) => (first, passed),
                None => (now, false),
            };
            let waited = now.saturating_sub(first);
            let answer = if passed || (parsed.is_some() && waited >= delay.as_secs()) {
                Greylist::Pass
            } else {
                Greylist::Wait(Duration::from_secs(delay.as_secs().saturating_sub(waited).max(1)))
            };
            let value = format!("{first} {now} {}", u8::from(answer == Greylist::Pass));
            t.insert(key.as_str(), value.as_str()).map_err(err)?;
            // A new triplet or one that just passed is made durable (it must survive a crash or
            // restart); refreshing the last-seen time of a known one is not worth an fsync.
            let changed = parsed.is_none_or(|(f, _, p)| f != first || p != (answer == Greylist::Pass));
            (answer, changed)
        };
        let (answer, changed) = answer;
        if !changed {
            tx.set_durability(Durability::None).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        postern_metrics::metrics().greylist(answer == Greylist::Pass);
        Ok(answer)
    }

    /// Deletes the triplets [`check`](Self::check) would no longer remember at `now` (seconds
    /// since the epoch): passed ones not seen for `expire`, first attempts not retried within
    /// the retry window. Returns how many were deleted. The daemon runs it hourly, so a flood
    /// of spam triplets does not grow the store without bound.
    ///
    /// # Errors
    /// The store's error text.
    pub fn purge(&self, now: u64, delay: Duration, expire: Duration) -> Result<u64, String> {
        use redb::ReadableTableMetadata as _;
        let tx = self.db.begin_write().map_err(err)?;
        let removed = {
            let mut t = tx.open_table(TRIPLETS).map_err(err)?;
            let before = t.len().map_err(err)?;
            t.retain(|_, v| {
                parse(v)
                    .is_some_and(|(_, last, passed)| now.saturating_sub(last) <= forget_after(passed, delay, expire))
            })
            .map_err(err)?;
            before - t.len().map_err(err)?
        };
        tx.commit().map_err(err)?;
        Ok(removed)
    }

    /// Triplets held (for tests and logs).
    ///
    /// # Errors
    /// The store's error text.
    pub fn triplets(&self) -> Result<u64, String> {
        use redb::ReadableTableMetadata as _;
        let tx = self.db.begin_read().map_err(err)?;
        match tx.open_table(TRIPLETS) {
            Ok(t) => t.len().map_err(err),
            Err(_) => Ok(0),
        }
    }
}

/// Seconds after its last attempt that a triplet is forgotten: `expire` once it passed; for a
/// first attempt never retried, the retry window: two days, or twice the delay if that is
/// longer (as postgrey's `--retry-window`), but never longer than `expire`. Spam engines rarely
/// retry, so most triplets are first attempts, and they go soon.
fn forget_after(passed: bool, delay: Duration, expire: Duration) -> u64 {
    if passed { expire.as_secs() } else { (2 * 86_400u64).max(2 * delay.as_secs()).min(expire.as_secs().max(1)) }
}

fn parse(v: &str) -> Option<(u64, u64, bool)> {
    let mut it = v.split(' ');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()? == "1"))
}

/// The client's network: /24 for IPv4, /64 for IPv6 (a sender's pool of outbound servers
/// usually shares one).
fn network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_defers_retry_after_delay_passes_and_expires() {
        let dir = std::env::temp_dir().join(format!("postern-grey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let g = GreylistStore::open(&dir.join("g.redb")).unwrap();
        let (d, e) = (Duration::from_secs(300), Duration::from_secs(86400));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let same_net: IpAddr = "192.0.2.99".parse().unwrap();
        assert_eq!(g.check(ip, "a@x.test", "b@y.test", 1000, d, e).unwrap(), Greylist::Wait(Duration::from_secs(300)));
        assert_eq!(g.check(ip, "a@x.test", "b@y.test", 1100, d, e).unwrap(), Greylist::Wait(Duration::from_secs(200)));
        assert_eq!(g.check(same_net, "A@x.test", "b@y.test", 1300, d, e).unwrap(), Greylist::Pass);
        assert_eq!(g.check(ip, "a@x.test", "b@y.test", 80_000, d, e).unwrap(), Greylist::Pass, "seen within expiry");
        assert!(matches!(g.check(ip, "a@x.test", "b@y.test", 200_000, d, e).unwrap(), Greylist::Wait(_)), "expired");
        assert!(matches!(g.check(ip, "other@x.test", "b@y.test", 1300, d, e).unwrap(), Greylist::Wait(_)));
        assert_eq!(g.triplets().unwrap(), 2);
        // A first attempt never retried is forgotten after the retry window (two days).
        assert!(matches!(g.check(ip, "late@x.test", "b@y.test", 300_000, d, e).unwrap(), Greylist::Wait(_)));
        assert!(matches!(
            g.check(ip, "late@x.test", "b@y.test", 300_000 + 3 * 86_400, d, e).unwrap(),
            Greylist::Wait(_)
        ));
        // Purging deletes what would be forgotten, and keeps the rest.
        assert_eq!(g.check(ip, "kept@x.test", "b@y.test", 1_000_000, d, e).unwrap(), Greylist::Wait(d));
        assert_eq!(g.triplets().unwrap(), 4);
        assert_eq!(g.purge(1_000_100, d, e).unwrap(), 3);
        assert_eq!(g.triplets().unwrap(), 1);
        assert_eq!(g.check(ip, "kept@x.test", "b@y.test", 1_000_400, d, e).unwrap(), Greylist::Pass);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
