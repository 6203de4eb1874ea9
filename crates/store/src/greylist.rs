//! Greylisting's rule, pure: what one attempt of a triplet — client network, reverse-path,
//! forward-path — gets, and what is remembered of it. The embedded backend applies it in a
//! redb transaction; `scripts/greylist.lua` is the same rule for Redis, run atomically there,
//! and the suite in `tests.rs` holds both to it.
//!
//! The first attempt is deferred; a retry at least `delay` later passes, and the triplet is
//! then remembered for `expire` after its last attempt (postgrey's and Postfix's postscreen's
//! habit). A first attempt never retried is forgotten after the retry window.

use std::net::IpAddr;
use std::time::Duration;

/// The answer for one triplet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greylist {
    /// Known and passed: accept.
    Pass,
    /// Too early: retry after this long.
    Wait(Duration),
}

/// What is remembered of a triplet: first attempt and last attempt (seconds since the epoch),
/// and whether it passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The first attempt of this round.
    pub first: u64,
    /// The latest attempt.
    pub last: u64,
    /// A retry came after the delay.
    pub passed: bool,
}

impl Seen {
    /// The stored form, `first last passed` (seconds, 0/1).
    #[must_use]
    pub fn encode(&self) -> String {
        format!("{} {} {}", self.first, self.last, u8::from(self.passed))
    }

    /// Parses [`Seen::encode`]'s form; `None` for anything else.
    #[must_use]
    pub fn decode(v: &str) -> Option<Self> {
        let mut it = v.split(' ');
        Some(Self { first: it.next()?.parse().ok()?, last: it.next()?.parse().ok()?, passed: it.next()? == "1" })
    }
}

/// The store key of a triplet: `NETWORK\tSENDER\tRECIPIENT`, addresses lower-cased, the
/// network as [`network`] gives it. The reverse-path is empty for the null sender.
#[must_use]
pub fn triplet_key(ip: IpAddr, sender: &str, rcpt: &str) -> String {
    format!("{}\t{}\t{}", network(ip, 24, 64), sender.to_lowercase(), rcpt.to_lowercase())
}

/// One attempt at `now` (seconds since the epoch) of a triplet last remembered as `old`:
/// the answer, what to remember, and whether that differs from `old` in more than the
/// last-seen time (worth making durable).
#[must_use]
pub fn attempt(old: Option<Seen>, now: u64, delay: Duration, expire: Duration) -> (Greylist, Seen, bool) {
    let (first, passed) = match old {
        Some(s) if now.saturating_sub(s.last) > forget_after(s.passed, delay, expire) => (now, false),
        Some(s) => (s.first, s.passed),
        None => (now, false),
    };
    let waited = now.saturating_sub(first);
    let answer = if passed || (old.is_some() && waited >= delay.as_secs()) {
        Greylist::Pass
    } else {
        Greylist::Wait(Duration::from_secs(delay.as_secs().saturating_sub(waited).max(1)))
    };
    let seen = Seen { first, last: now, passed: answer == Greylist::Pass };
    let changed = old.is_none_or(|o| o.first != seen.first || o.passed != seen.passed);
    (answer, seen, changed)
}

/// Seconds after its last attempt that a triplet is forgotten: `expire` once it passed; for a
/// first attempt never retried, the retry window: two days, or twice the delay if that is
/// longer (as postgrey's `--retry-window`), but never longer than `expire`. Spam engines rarely
/// retry, so most triplets are first attempts, and they go soon.
#[must_use]
pub fn forget_after(passed: bool, delay: Duration, expire: Duration) -> u64 {
    if passed { expire.as_secs() } else { (2 * 86_400u64).max(2 * delay.as_secs()).min(expire.as_secs().max(1)) }
}

/// The client's network as text: `a.b.c.0/24` for IPv4 with `v4_prefix` 24, `x:x:x:x::/64` for
/// IPv6 with `v6_prefix` 64 (a sender's pool of outbound servers usually shares one); an
/// IPv4-mapped IPv6 address counts as IPv4. Prefixes beyond the address length are clamped.
#[must_use]
pub fn network(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let p = v4_prefix.min(32);
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - u32::from(p)) };
            format!("{}/{p}", std::net::Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network(IpAddr::V4(v4), v4_prefix, v6_prefix),
            None => {
                let p = v6_prefix.min(128);
                let mask = if p == 0 { 0 } else { u128::MAX << (128 - u32::from(p)) };
                format!("{}/{p}", std::net::Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        assert_eq!(network("192.0.2.77".parse().unwrap(), 24, 64), "192.0.2.0/24");
        assert_eq!(network("192.0.2.77".parse().unwrap(), 32, 64), "192.0.2.77/32");
        assert_eq!(network("2001:db8:1:2:3::9".parse().unwrap(), 24, 64), "2001:db8:1:2::/64");
        assert_eq!(network("::ffff:192.0.2.1".parse().unwrap(), 24, 64), "192.0.2.0/24");
    }

    #[test]
    fn seen_round_trips() {
        let s = Seen { first: 5, last: 9, passed: true };
        assert_eq!(Seen::decode(&s.encode()), Some(s));
        assert_eq!(Seen::decode("5 x 1"), None);
    }
}
