//! The state of one alert rule, without I/O: fed a reading per check, it says which mail to
//! send. A rule is OK or firing; each change (OK → firing, firing → OK) gives one mail, and
//! while it stays firing, one reminder every `repeat` (Alertmanager's `repeat_interval`). A
//! reading that could not be taken (DNS did not answer) changes nothing.

use std::collections::VecDeque;
use std::time::Duration;

/// One check of a rule: what was measured, in words for the mail and `postern alerts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Within bounds.
    Ok(String),
    /// Beyond the rule's threshold.
    Firing(String),
    /// Could not be measured (the reason); the state stays as it was.
    Unknown(String),
}

impl Reading {
    /// What was measured, in words.
    pub(crate) fn text(&self) -> &str {
        match self {
            Self::Ok(t) | Self::Firing(t) | Self::Unknown(t) => t,
        }
    }
}

/// The mail a check calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// OK → firing.
    Firing,
    /// Still firing, `repeat` after the last mail.
    Reminder,
    /// Firing → OK.
    Resolved,
}

/// A rule's state between checks. Times are Unix seconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tracker {
    /// When it started firing; `None` while OK.
    pub(crate) firing_since: Option<u64>,
    /// When its last mail was sent (firing or reminder).
    last_mail: Option<u64>,
    /// The last reading and when it was taken.
    pub(crate) last: Option<(u64, Reading)>,
    /// Checks since start.
    pub(crate) checks: u64,
    /// Mails since start.
    pub(crate) mails: u64,
}

impl Tracker {
    /// Takes the reading of a check at `now` and returns the mail to send, if any.
    pub(crate) fn step(&mut self, now: u64, reading: Reading, repeat: Duration) -> Option<Notice> {
        self.checks += 1;
        let notice = match (&reading, self.firing_since) {
            (Reading::Firing(_), None) => {
                self.firing_since = Some(now);
                Some(Notice::Firing)
            }
            (Reading::Firing(_), Some(_)) => {
                let due = self.last_mail.map_or(0, |t| t.saturating_add(repeat.as_secs().max(1)));
                (now >= due).then_some(Notice::Reminder)
            }
            (Reading::Ok(_), Some(_)) => {
                self.firing_since = None;
                Some(Notice::Resolved)
            }
            (Reading::Ok(_), None) | (Reading::Unknown(_), _) => None,
        };
        if matches!(notice, Some(Notice::Firing | Notice::Reminder)) {
            self.last_mail = Some(now);
        }
        self.mails += u64::from(notice.is_some());
        self.last = Some((now, reading));
        notice
    }
}

/// Samples of the attempt counters (delivered, failed), one per check, for the share of
/// failed attempts over a window.
#[derive(Debug, Default)]
pub(crate) struct AttemptHistory {
    samples: VecDeque<(u64, u64, u64)>,
}

impl AttemptHistory {
    /// Records the counters (`delivered`, `failed`, totals since start) at `now` (Unix seconds),
    /// forgetting samples older than `keep`.
    pub(crate) fn record(&mut self, now: u64, delivered: u64, failed: u64, keep: Duration) {
        self.samples.push_back((now, delivered, failed));
        while self.samples.len() > 1 && self.samples[1].0 + keep.as_secs() <= now {
            self.samples.pop_front();
        }
    }

    /// (attempts, failed) over the last `window`: the latest sample less the oldest one at
    /// least `window` old, else the oldest kept (the whole run so far).
    pub(crate) fn over(&self, now: u64, window: Duration) -> (u64, u64) {
        let Some(&(_, d1, f1)) = self.samples.back() else { return (0, 0) };
        let start = now.saturating_sub(window.as_secs());
        let base = self.samples.iter().rev().find(|s| s.0 <= start).or(self.samples.front());
        let (_, d0, f0) = base.copied().unwrap_or_default();
        let failed = f1.saturating_sub(f0);
        (d1.saturating_sub(d0) + failed, failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn fire() -> Reading {
        Reading::Firing("x".into())
    }

    fn ok() -> Reading {
        Reading::Ok("y".into())
    }

    #[test]
    fn one_mail_per_change_and_reminders_every_repeat() {
        let mut t = Tracker::default();
        assert_eq!(t.step(0, ok(), HOUR), None);
        assert_eq!(t.step(60, fire(), HOUR), Some(Notice::Firing));
        assert_eq!(t.firing_since, Some(60));
        assert_eq!(t.step(120, fire(), HOUR), None);
        assert_eq!(t.step(3659, fire(), HOUR), None);
        assert_eq!(t.step(3660, fire(), HOUR), Some(Notice::Reminder));
        assert_eq!(t.step(3720, Reading::Unknown("dns".into()), HOUR), None);
        assert_eq!(t.step(3780, fire(), HOUR), None);
        assert_eq!(t.step(3840, ok(), HOUR), Some(Notice::Resolved));
        assert_eq!(t.step(3900, ok(), HOUR), None);
        assert_eq!((t.checks, t.mails, t.firing_since), (9, 3, None));
    }

    #[test]
    fn unknown_readings_neither_fire_nor_resolve() {
        let mut t = Tracker::default();
        assert_eq!(t.step(0, Reading::Unknown("timeout".into()), HOUR), None);
        assert_eq!(t.step(1, fire(), HOUR), Some(Notice::Firing));
        assert_eq!(t.step(2, Reading::Unknown("timeout".into()), HOUR), None);
        assert_eq!(t.firing_since, Some(1));
    }

    #[test]
    fn failure_share_over_a_window() {
        let mut h = AttemptHistory::default();
        assert_eq!(h.over(0, HOUR), (0, 0));
        h.record(0, 100, 0, HOUR * 2);
        h.record(3600, 150, 10, HOUR * 2);
        h.record(7200, 160, 40, HOUR * 2);
        // Last hour: 10 delivered, 30 failed.
        assert_eq!(h.over(7200, HOUR), (40, 30));
        // Young history: everything since the first sample.
        assert_eq!(h.over(7200, HOUR * 10), (100, 40));
        h.record(20_000, 160, 40, HOUR * 2);
        assert!(h.samples.len() <= 3, "old samples are forgotten");
    }
}
