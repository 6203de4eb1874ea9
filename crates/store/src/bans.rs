//! Failed-AUTH bans' rule, pure (`[server] auth_failures_before_ban`, `ban_time`): an address
//! that fails AUTH `limit` times, each failure within `ban_time` of the one before, is banned
//! until `ban_time` has passed since its last failure. The embedded backend keeps the strikes
//! in memory; `scripts/ban.lua` is the same rule for Redis.

use std::time::Duration;

/// What is remembered of one client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Strikes {
    /// Failures counted in this round.
    pub(crate) failures: u32,
    /// The latest failure (milliseconds since the epoch).
    pub(crate) last: u64,
    /// Banned since the `limit`-th failure.
    pub(crate) banned: bool,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One failure at `now_ms`: the new strikes, and whether this failure is the one that banned.
#[must_use]
pub(crate) fn failure(old: Option<Strikes>, now_ms: u64, limit: u32, ban_time: Duration) -> (Strikes, bool) {
    let mut s = match old {
        Some(s) if s.last.saturating_add(ms(ban_time)) > now_ms => s,
        _ => Strikes { failures: 0, last: now_ms, banned: false },
    };
    s.failures += 1;
    s.last = now_ms;
    let newly = s.failures >= limit && !s.banned;
    s.banned |= newly;
    (s, newly)
}

/// How much longer `s` stays banned at `now_ms`, if it is.
#[must_use]
pub(crate) fn remaining(s: &Strikes, now_ms: u64, ban_time: Duration) -> Option<Duration> {
    let until = s.last.saturating_add(ms(ban_time));
    (s.banned && until > now_ms).then(|| Duration::from_millis(until - now_ms))
}

/// Whether `s` still counts at `now_ms` (a failure within `ban_time`).
#[must_use]
pub(crate) fn current(s: &Strikes, now_ms: u64, ban_time: Duration) -> bool {
    s.last.saturating_add(ms(ban_time)) > now_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_after_limit_and_expires() {
        let ban = Duration::from_secs(60);
        let (s, newly) = failure(None, 1000, 2, ban);
        assert!(!newly && !s.banned);
        let (s, newly) = failure(Some(s), 2000, 2, ban);
        assert!(newly && s.banned);
        assert_eq!(remaining(&s, 2000, ban), Some(ban));
        assert_eq!(remaining(&s, 62_000, ban), None);
        // Failures spread wider than ban_time never add up to a ban.
        let (s, _) = failure(None, 0, 2, ban);
        let (s, newly) = failure(Some(s), 61_000, 2, ban);
        assert!(!newly && s.failures == 1);
    }
}
