//! Local deliveries that need another account than the daemon's, through the privileged
//! helper: when the daemon runs as `[server] user`, a pipe must still run as the alias's
//! account (or `[delivery] pipe_user`) and a new mbox must belong to its recipient, which only
//! root can arrange. The daemon asks the helper over `{data_dir}/local.sock` (0600, the
//! daemon's); the helper forks a worker per request, which checks the request against the
//! configuration and tables it reads itself, then delivers as [`crate::pipe`] and
//! [`crate::mbox`] do. This module is the wire between them and the daemon's side.
//!
//! Wire format: every field is a 4-byte big-endian length and its bytes. Request: the kind
//! (`pipe` or `mbox`), then for a pipe the alias, command, reverse-path, recipient, original
//! recipient and extension, for an mbox the mailbox, reverse-path and recipient; then the
//! message. Answer: the outcome (`delivered`, `tempfail`, `permfail`), the exit status as
//! decimal text, the outcome's text and the command's output (for the log).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::pipe::PipeOutcome;

/// The largest field but the message, in bytes (a command line, an address).
pub const MAX_FIELD: usize = 64 * 1024;

/// The helper's socket, once the daemon has dropped root and the helper listens.
static HELPER: OnceLock<PathBuf> = OnceLock::new();

/// Sends every later pipe and mbox delivery of this process through the helper at `socket`.
pub fn use_helper(socket: PathBuf) {
    let _ = HELPER.set(socket);
}

/// The helper's socket, if deliveries go through one.
pub fn helper() -> Option<&'static Path> {
    HELPER.get().map(PathBuf::as_path)
}

/// What the daemon asks of the helper. Every value is the daemon's claim: the worker checks
/// the command and mailbox against the tables it reads itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Pipe the message to `command`, named by the alias `alias` (empty: a `pipe:` route).
    Pipe {
        /// The alias that names the command, or empty for a route.
        alias: String,
        /// The command line as the table gives it.
        command: String,
        /// The reverse-path, without brackets.
        sender: String,
        /// The final recipient address.
        recipient: String,
        /// The address as given in RCPT TO.
        original_recipient: String,
        /// The recipient's sub-address, or empty.
        extension: String,
    },
    /// Append the message to the mbox of `mailbox` (a line of the users table).
    Mbox {
        /// The mailbox name.
        mailbox: String,
        /// The reverse-path, without brackets.
        sender: String,
        /// The final recipient address.
        recipient: String,
    },
}

impl Request {
    /// The request's fields, kind first.
    fn fields(&self) -> Vec<&str> {
        match self {
            Self::Pipe { alias, command, sender, recipient, original_recipient, extension } => {
                vec!["pipe", alias, command, sender, recipient, original_recipient, extension]
            }
            Self::Mbox { mailbox, sender, recipient } => vec!["mbox", mailbox, sender, recipient],
        }
    }

    /// Reads a request and its message (at most `max_message` bytes) from `r`.
    ///
    /// # Errors
    /// A short read, an unknown kind, a field or message over its bound, or text that is not
    /// UTF-8.
    pub fn read(r: &mut impl Read, max_message: usize) -> io::Result<(Self, Vec<u8>)> {
        let mut text = || read_field(r, MAX_FIELD).and_then(|b| String::from_utf8(b).map_err(io::Error::other));
        let request = match text()?.as_str() {
            "pipe" => Self::Pipe {
                alias: text()?,
                command: text()?,
                sender: text()?,
                recipient: text()?,
                original_recipient: text()?,
                extension: text()?,
            },
            "mbox" => Self::Mbox { mailbox: text()?, sender: text()?, recipient: text()? },
            other => return Err(io::Error::other(format!("unknown request {other:?}"))),
        };
        Ok((request, read_field(r, max_message)?))
    }
}

/// Writes `bytes` as one field.
fn write_field(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(io::Error::other)?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(bytes)
}

/// Reads one field of at most `max` bytes.
fn read_field(r: &mut impl Read, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::other(format!("a field of {len} bytes, more than {max}")));
    }
    let mut out = vec![0; len];
    r.read_exact(&mut out)?;
    Ok(out)
}

/// Writes the worker's answer: the outcome and the command's output.
///
/// # Errors
/// The write failed (the daemon went away).
pub fn write_answer(w: &mut impl Write, outcome: &PipeOutcome, output: &str) -> io::Result<()> {
    let (kind, status, text) = match outcome {
        PipeOutcome::Delivered => ("delivered", 0, ""),
        PipeOutcome::TempFail(t) => ("tempfail", 0, t.as_str()),
        PipeOutcome::PermFail { status, text } => ("permfail", *status, text.as_str()),
    };
    for f in [kind, &status.to_string(), text, output] {
        write_field(w, f.as_bytes())?;
    }
    w.flush()
}

/// Asks the helper at `socket` for `request` with `message`, waiting at most `timeout` for
/// the answer. Returns the outcome and the command's output; a helper that cannot be reached
/// or answers nothing is a temporary failure (the message stays queued).
pub fn deliver(socket: &Path, request: &Request, message: &[u8], timeout: Duration) -> (PipeOutcome, String) {
    match exchange(socket, request, message, timeout) {
        Ok(answer) => answer,
        Err(e) => (PipeOutcome::TempFail(format!("privileged helper: {e}")), String::new()),
    }
}

fn exchange(socket: &Path, request: &Request, message: &[u8], timeout: Duration) -> io::Result<(PipeOutcome, String)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut w = io::BufWriter::new(&s);
    for f in request.fields() {
        write_field(&mut w, f.as_bytes())?;
    }
    write_field(&mut w, message)?;
    w.flush()?;
    drop(w);
    let mut text = || read_field(&mut s, MAX_FIELD).map(|b| String::from_utf8_lossy(&b).into_owned());
    let (kind, status, said, output) = (text()?, text()?, text()?, text()?);
    let outcome = match kind.as_str() {
        "delivered" => PipeOutcome::Delivered,
        "tempfail" => PipeOutcome::TempFail(said),
        "permfail" => PipeOutcome::PermFail { status: status.parse().unwrap_or(1), text: said },
        other => return Err(io::Error::other(format!("unknown answer {other:?}"))),
    };
    Ok((outcome, output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip() {
        let request = Request::Pipe {
            alias: "carol".into(),
            command: "procmail -d carol".into(),
            sender: "a@x.test".into(),
            recipient: "carol@y.test".into(),
            original_recipient: "c@y.test".into(),
            extension: String::new(),
        };
        let mut wire = Vec::new();
        for f in request.fields() {
            write_field(&mut wire, f.as_bytes()).unwrap();
        }
        write_field(&mut wire, b"message").unwrap();
        let (back, message) = Request::read(&mut wire.as_slice(), 100).unwrap();
        assert_eq!((back, message.as_slice()), (request, &b"message"[..]));
        assert!(Request::read(&mut wire.as_slice(), 3).is_err(), "a message over the bound");
        let mut answer = Vec::new();
        write_answer(&mut answer, &PipeOutcome::PermFail { status: 67, text: "no user".into() }, "out").unwrap();
        let mut r = answer.as_slice();
        let fields: Vec<_> = (0..4).map(|_| read_field(&mut r, 100).unwrap()).collect();
        assert_eq!(fields, [&b"permfail"[..], b"67", b"no user", b"out"]);
    }
}
