//! The daemon's log: one line per event (tracing's fmt format, no colours), to standard error
//! or to syslog with facility mail (`[log] target`). Session lines carry `session{id=…}` and
//! message lines the queue ID, so a postmaster can follow one with grep.
//!
//! Syslog: one RFC 3164 datagram per line, `<PRI>postern[PID]: text`, on `[log]
//! syslog_socket` (`/dev/log`); PRI is facility mail (2) × 8 + the level's severity. When the
//! socket cannot be reached, lines go to standard error instead, so nothing is lost.
//!
//! Every line passes through [`escape_line`] on its way out: a control character in anything a
//! client sent (a SASL login, a milter's reply, an error text) is written as `\xNN`, so no
//! client can forge a log line, colour a terminal or hide text with NUL.

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
        LogTarget::Stderr => builder.with_writer(|| Escaping(std::io::stderr())).init(),
        LogTarget::Syslog => {
            let socket = UnixDatagram::unbound().and_then(|s| s.connect(&log.syslog_socket).map(|()| s));
            match socket {
                Ok(s) => builder.without_time().with_writer(Syslog(Arc::new(s))).init(),
                Err(e) => {
                    builder.with_writer(|| Escaping(std::io::stderr())).init();
                    tracing::error!("[log] syslog_socket {}: {e}; logging to stderr", log.syslog_socket.display());
                }
            }
        }
    }
}

/// Writes each formatted event through [`escape_line`] (the fmt layer writes an event with one
/// `write_all` of the whole line).
struct Escaping<W>(W);

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&escape_line(data))?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// `line` with every C0 control but a final LF, DEL and every C1 control (UTF-8 `C2 80`–`C2 9F`)
/// written as `\xnn` (the code point in lower-case hex, as tracing itself writes an ESC in a
/// field), so that the result is one line of printable text. Borrowed when nothing changes.
pub(crate) fn escape_line(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let special = |i: usize, b: u8| {
        b < 0x20 || b == 0x7F || (b == 0xC2 && body.get(i + 1).is_some_and(|n| (0x80..0xA0).contains(n)))
    };
    if !body.iter().enumerate().any(|(i, &b)| special(i, b)) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len() + 16);
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        match b {
            _ if special(i, b) && b == 0xC2 => {
                out.extend_from_slice(format!("\\x{:02x}", body[i + 1]).as_bytes());
                i += 1;
            }
            _ if special(i, b) => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
        i += 1;
    }
    out.extend_from_slice(&line[body.len()..]);
    std::borrow::Cow::Owned(out)
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
        self.buf.extend_from_slice(&escape_line(data));
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

#[cfg(test)]
mod tests {
    use super::escape_line;

    #[test]
    fn escapes_controls_and_keeps_one_line() {
        let e = |s: &[u8]| String::from_utf8(escape_line(s).into_owned()).unwrap();
        assert_eq!(e(b"helo=<a\x00b\x1b[31m> ok\n"), "helo=<a\\x00b\\x1b[31m> ok\n");
        assert_eq!(e(b"two\nlines\r\n"), "two\\x0alines\\x0d\n");
        assert_eq!(e("nel\u{85} caf\u{e9} del\x7f".as_bytes()), "nel\\x85 caf\u{e9} del\\x7f");
        assert!(matches!(escape_line(b"plain line\n"), std::borrow::Cow::Borrowed(_)));
    }
}
