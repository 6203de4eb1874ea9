//! The generic cell rate algorithm (GCRA, ITU-T I.371; the rule of redis-cell and of
//! Stalwart's rate limiter), pure. A limit of `limit` per `window` spaces cells
//! `window / limit` apart and tolerates a burst of the whole `limit`; the only state is the
//! theoretical arrival time (TAT) of the next cell. The embedded backend applies it under a
//! lock; `scripts/gcra.lua` is the same rule for Redis, run atomically there.

use std::time::Duration;

/// A rate limit's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// Within the limit: counted.
    Allowed,
    /// Over the limit: not counted; the same request would be allowed after this long.
    Exceeded(Duration),
}

/// The outcome of one request of `cost` cells at `now_ms` (milliseconds since the epoch) under
/// `limit` per `window`, given the stored TAT (ms, `None` when unknown): the answer and the
/// TAT to store (unchanged when exceeded). A cost above `limit` is never allowed.
#[must_use]
pub fn gcra(tat: Option<u64>, now_ms: u64, cost: u32, limit: u32, window: Duration) -> (Rate, u64) {
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
    let interval = (window_ms / u64::from(limit.max(1))).max(1);
    let tat = tat.unwrap_or(now_ms).max(now_ms);
    let new_tat = tat.saturating_add(interval.saturating_mul(u64::from(cost)));
    // Allowed while the new TAT is at most one window ahead of now.
    let ahead = new_tat - now_ms;
    if ahead <= window_ms {
        (Rate::Allowed, new_tat)
    } else {
        (Rate::Exceeded(Duration::from_millis(ahead - window_ms)), tat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_spaced() {
        let w = Duration::from_secs(60);
        let mut tat = None;
        for _ in 0..3 {
            let (r, t) = gcra(tat, 1_000_000, 1, 3, w);
            assert_eq!(r, Rate::Allowed);
            tat = Some(t);
        }
        let (r, t) = gcra(tat, 1_000_000, 1, 3, w);
        assert_eq!(r, Rate::Exceeded(Duration::from_secs(20)));
        assert_eq!(Some(t), tat, "a refusal is not counted");
        assert_eq!(gcra(tat, 1_020_000, 1, 3, w).0, Rate::Allowed, "one interval later, one more");
        assert!(matches!(gcra(None, 0, 4, 3, w).0, Rate::Exceeded(_)), "a cost above the limit");
    }
}
