//! When a session's next read must be complete: deadlines, not idle timers.
//!
//! - A command line must be complete within its stage's timeout (`[timeouts] helo`, `mail`,
//!   `rcpt`) from when the server started waiting for it; bytes that trickle in do not restart
//!   the clock (the slowloris defence). Postfix does this with `smtpd_per_record_deadline`
//!   (off by default, on under stress); Exim's `smtp_receive_timeout` is per line as well.
//! - Each read of DATA/BDAT content must arrive within `data_block`, and the content as a whole
//!   must keep up `data_min_rate` bytes per second: it must be complete by its start plus
//!   `data_block` plus its size at that rate (Postfix's `smtpd_min_data_rate`, default 500).

use std::time::{Duration, Instant};

/// The deadlines of one session.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    /// When the command line being waited for must be complete.
    line: Option<Instant>,
    /// When the content being received started, and its bytes so far.
    content: Option<(Instant, u64)>,
}

/// Which limit a deadline comes from, for the log line when it passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The command line was not complete within its stage's timeout.
    Command,
    /// No content arrived within `data_block`.
    Read,
    /// The content fell below `data_min_rate`.
    Rate,
}

impl Deadlines {
    /// The session consumed a complete command line: the next one gets a new deadline.
    pub(crate) fn line_done(&mut self) {
        self.line = None;
    }

    /// `n` bytes were read.
    pub(crate) fn received(&mut self, n: usize) {
        if let Some((_, bytes)) = &mut self.content {
            *bytes += n as u64;
        }
    }

    /// The bytes of content received so far and how long ago it started.
    pub(crate) fn content_progress(&self, now: Instant) -> (u64, Duration) {
        self.content.map_or((0, Duration::ZERO), |(start, bytes)| (bytes, now - start))
    }

    /// The instant the next read must be complete by, and the limit it comes from.
    /// `timeout` is the stage's timeout, `min_rate` `data_min_rate` (bytes/s, 0 = off).
    pub(crate) fn next(
        &mut self,
        now: Instant,
        timeout: Duration,
        in_content: bool,
        min_rate: u64,
    ) -> (Instant, Limit) {
        if !in_content {
            self.content = None;
            return (*self.line.get_or_insert(now + timeout), Limit::Command);
        }
        self.line = None;
        let (start, bytes) = *self.content.get_or_insert((now, 0));
        let read = now + timeout;
        if min_rate == 0 {
            return (read, Limit::Read);
        }
        let rate = start + timeout + Duration::from_secs_f64(bytes as f64 / min_rate as f64);
        if rate < read { (rate, Limit::Rate) } else { (read, Limit::Read) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn a_trickled_command_line_keeps_its_first_deadline() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        assert_eq!(d.next(t0, T, false, 500), (t0 + T, Limit::Command));
        d.received(1);
        // One byte every 2 s does not move the deadline.
        assert_eq!(d.next(t0 + Duration::from_secs(2), T, false, 500).0, t0 + T);
        d.line_done();
        let t1 = t0 + Duration::from_secs(4);
        assert_eq!(d.next(t1, T, false, 500).0, t1 + T);
    }

    #[test]
    fn content_must_keep_the_minimum_rate() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        assert_eq!(d.next(t0, T, true, 100), (t0 + T, Limit::Read));
        d.received(500);
        // 500 bytes at 100 bytes/s buy 5 s beyond the first timeout.
        let t1 = t0 + Duration::from_secs(8);
        assert_eq!(d.next(t1, T, true, 100), (t0 + Duration::from_secs(15), Limit::Rate));
        assert_eq!(d.content_progress(t1), (500, Duration::from_secs(8)));
        // Off: only the per-read timeout.
        assert_eq!(d.next(t1, T, true, 0), (t1 + T, Limit::Read));
        // Back to commands: the content is forgotten.
        let _ = d.next(t1, T, false, 100);
        assert_eq!(d.content_progress(t1), (0, Duration::ZERO));
    }
}
