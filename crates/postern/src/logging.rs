//! The daemon's log: one line per event (tracing's fmt format, no colours), to standard error
//! or to syslog with facility mail (`[log] target`). Session lines carry `session{id=…}` and
//! message lines the queue ID, so a postmaster can follow one with grep.
//!
//! Syslog: one RFC 3164 datagram per line, `<PRI>postern[PID]: text`, on `[log]
//! syslog_socket` (`/dev/log`); PRI is facility mail (2) × 8 + the level's severity. When the
//! socket cannot be reached, lines go to standard error instead, so nothing is lost.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use postern_config::schema::{Log, LogTarget};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Installs the global subscriber for `log` (level from `$POSTERN_LOG`, default `info`).
pub(crate) fn init(log: &Log) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("POSTERN_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_ansi(false).with_target(false).with_env_filter(filter);
    match log.target {
        LogTarget::Stderr => builder.with_writer(std::io::stderr).init(),
        LogTarget::Syslog => {
            let socket = UnixDatagram::unbound().and_then(|s| s.connect(&log.syslog_socket).map(|()| s));
            match socket {
                Ok(s) => builder.without_time().with_writer(Syslog(Arc::new(s))).init(),
                Err(e) => {
                    builder.with_writer(std::io::stderr).init();
                    tracing::error!("[log] syslog_socket {}: {e}; logging to stderr", log.syslog_socket.display());
                }
            }
        }
    }
}

/// Makes one [`Line`] writer per event.
#[derive(Clone)]
struct Syslog(Arc<UnixDatagram>);

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { socket: self.0.clone(), severity: 6, buf: Vec::new() }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        let severity = match *meta.level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        Line { socket: self.0.clone(), severity, buf: Vec::new() }
    }
}

/// One log line, sent as one datagram when dropped.
struct Line {
    socket: Arc<UnixDatagram>,
    severity: u8,
    buf: Vec<u8>,
}

/// Facility mail (RFC 3164 §4.1.1).
const MAIL: u8 = 2;

impl Write for Line {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        let datagram = format!("<{}>postern[{}]: {text}", MAIL * 8 + self.severity, std::process::id());
        if self.socket.send(datagram.as_bytes()).is_err() {
            let _ = writeln!(std::io::stderr(), "{text}");
        }
    }
}
