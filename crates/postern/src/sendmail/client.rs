//! The client side of the submission socket (wire format: `submit_wire.rs`), and the error
//! mailed back under `-oem` / `-oee`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use postern_types::Reply;

use super::Loaded;
use super::message::Composed;
use crate::submit_wire::{Params, Request, decode_answer};

/// Why a submission did not queue the message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubmitError {
    /// The daemon could not be reached or the exchange broke: nothing was queued.
    #[error("{0}")]
    Unreachable(String),
    /// The daemon refused the message with this reply.
    #[error("{0}")]
    Refused(Reply),
}

/// Submits `message` to the daemon of `loaded`; `Ok` is the queue ID, given once the message
/// is durable.
///
/// # Errors
/// See [`SubmitError`]; an unreachable daemon's text names the configuration and the socket.
pub(crate) fn submit(loaded: &Loaded, request: &Request, message: &[u8]) -> Result<String, SubmitError> {
    let socket = loaded.config.submit_socket();
    let mut stream = UnixStream::connect(&socket).map_err(|e| {
        SubmitError::Unreachable(format!(
            "cannot reach the Postern daemon at {} ({e}), the submission socket of {}; is `postern serve` running with it? The message was not queued.",
            socket.display(),
            loaded.describe()
        ))
    })?;
    let mut answer = String::new();
    stream
        .write_all(request.encode().as_bytes())
        .and_then(|()| stream.write_all(message))
        .and_then(|()| stream.shutdown(std::net::Shutdown::Write))
        .and_then(|()| stream.read_to_string(&mut answer).map(|_| ()))
        .map_err(|e| {
            SubmitError::Unreachable(format!(
                "talking to the daemon at {}: {e}; the message was not queued",
                socket.display()
            ))
        })?;
    decode_answer(&answer).map_err(SubmitError::Refused)
}

/// Mails `reply` back to the sender of `composed` from the null sender (sendmail's `-oem`),
/// with the headers of the message that was refused.
///
/// # Errors
/// When this notice cannot be queued either (no sender, or refused too).
pub(crate) fn mail_back(loaded: &Loaded, composed: &Composed, reply: &Reply) -> Result<String, SubmitError> {
    if composed.sender.is_empty() {
        return Err(SubmitError::Unreachable("the null sender cannot be told".into()));
    }
    let config = &loaded.config;
    let end = composed.message.windows(4).position(|w| w == b"\r\n\r\n").map_or(composed.message.len(), |i| i + 2);
    let headers = String::from_utf8_lossy(&composed.message[..end]);
    let now = chrono::Utc::now();
    let notice = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\nTo: <{to}>\r\nSubject: Returned mail: the message was not queued\r\nDate: {date}\r\nMessage-ID: <{id}.{pid}.err@{host}>\r\nAuto-Submitted: auto-replied\r\n\r\nYour message could not be queued by sendmail on {host}:\r\n\r\n    {reply}\r\n\r\nRecipients: {rcpts}\r\n\r\nThe headers of the message follow.\r\n\r\n{headers}",
        host = config.hostname,
        to = composed.sender,
        date = now.to_rfc2822(),
        id = now.timestamp_micros(),
        pid = std::process::id(),
        rcpts = composed.recipients.join(", "),
    );
    let request =
        Request { sender: String::new(), params: Params::default(), recipients: vec![composed.sender.clone()] };
    submit(loaded, &request, notice.as_bytes())
}

/// The invoking user's login name (getpwuid of the real uid; $USER as a fallback).
pub(crate) fn login_name() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy the name at once.
    let from_passwd = unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if pw.is_null() { None } else { std::ffi::CStr::from_ptr((*pw).pw_name).to_str().ok().map(str::to_owned) }
    };
    from_passwd.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "nobody".into())
}
