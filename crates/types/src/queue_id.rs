//! Queue IDs: one per accepted message, in every log line about it and in its spool file names.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A queue ID: 16 upper-case hex digits, the microseconds since the Unix epoch at which it was
/// issued, made strictly increasing within a process.
///
/// IDs sort by arrival time, are safe as file names, and are unique across restarts as long as
/// the clock does not step back by more than the lifetime of the previous process's last ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(u64);

static LAST: AtomicU64 = AtomicU64::new(0);

impl QueueId {
    /// Issues a new, never-before-issued (in this process) ID from the wall clock.
    pub fn generate() -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let mut last = LAST.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Self(next),
                Err(seen) => last = seen,
            }
        }
    }

    /// Parses the 16-hex-digit form; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
            .then(|| u64::from_str_radix(s, 16).ok().map(Self))
            .flatten()
    }

    /// Seconds since the Unix epoch at which the ID was issued (the message's arrival time).
    pub fn arrival_secs(self) -> u64 {
        self.0 / 1_000_000
    }

    /// Microseconds since the Unix epoch at which the ID was issued.
    pub fn arrival_micros(self) -> u64 {
        self.0
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_sortable_roundtrip() {
        let a = QueueId::generate();
        let b = QueueId::generate();
        assert!(b > a);
        assert_eq!(QueueId::parse(&a.to_string()), Some(a));
        assert_eq!(QueueId::parse("xyz"), None);
        assert_eq!(QueueId::parse("0123456789abcdef"), None);
    }
}
