//! The replies the session sends, in one place so that codes stay consistent (RFC 5321 §4.2.2,
//! enhanced status codes from RFC 3463 and the IANA registry). Texts follow Postfix's where a
//! postmaster would grep for them.

use postern_types::{EnhancedStatus as S, Reply};

pub(crate) fn queued(id: postern_types::QueueId) -> Reply {
    Reply::new(250, S(2, 0, 0), format!("Ok: queued as {id}"))
}
pub(crate) fn ok(status: S) -> Reply {
    Reply::new(250, status, "Ok")
}
pub(crate) fn refused_session() -> Reply {
    Reply::new(503, S(5, 5, 1), "Error: this connection was refused; send QUIT")
}
pub(crate) fn need_helo() -> Reply {
    Reply::new(503, S(5, 5, 1), "Error: send HELO/EHLO first")
}
pub(crate) fn nested_mail() -> Reply {
    Reply::new(503, S(5, 5, 1), "Error: nested MAIL command")
}
pub(crate) fn need_mail() -> Reply {
    Reply::new(503, S(5, 5, 1), "Error: need MAIL command")
}
pub(crate) fn no_valid_recipients() -> Reply {
    Reply::new(554, S(5, 5, 1), "Error: no valid recipients")
}
pub(crate) fn too_many_recipients() -> Reply {
    // RFC 5321 §4.5.3.1.10: 452 so that the client sends the rest in another transaction.
    Reply::new(452, S(4, 5, 3), "Error: too many recipients")
}
pub(crate) fn size_exceeded() -> Reply {
    Reply::new(552, S(5, 3, 4), "Error: message size exceeds fixed limit")
}
pub(crate) fn bare_line_ending() -> Reply {
    Reply::new(550, S(5, 5, 2), "Error: bare <CR> or <LF> received; see RFC 5321 section 2.3.8")
}
pub(crate) fn nul_dot_line() -> Reply {
    Reply::new(550, S(5, 5, 2), "Error: a line of NUL and a dot received; a next hop could take it for the end of data")
}
pub(crate) fn bare_lf_in_command() -> Reply {
    Reply::new(500, S(5, 5, 2), "Error: bare <LF> received in command; lines must end with <CR><LF>; closing")
}
pub(crate) fn line_too_long() -> Reply {
    Reply::new(500, S(5, 5, 2), "Error: command line too long")
}
pub(crate) fn bad_utf8() -> Reply {
    Reply::new(500, S(5, 5, 2), "Error: command line is not valid UTF-8")
}
/// REQUIRETLS in clear text (RFC 8689 §2: it is offered only under TLS).
pub(crate) fn requiretls_needs_tls() -> Reply {
    Reply::new(555, S(5, 5, 4), "REQUIRETLS is offered only after STARTTLS")
}

pub(crate) fn needs_smtputf8() -> Reply {
    Reply::new(553, S(5, 6, 7), "Error: non-ASCII address requires the SMTPUTF8 parameter")
}
pub(crate) fn unsupported_param(name: &str) -> Reply {
    Reply::new(555, S(5, 5, 4), format!("Error: unsupported parameter {name}"))
}
pub(crate) fn bad_param_value(name: &str) -> Reply {
    Reply::new(501, S(5, 5, 4), format!("Error: bad value for parameter {name}"))
}
pub(crate) fn unrecognized() -> Reply {
    Reply::new(500, S(5, 5, 2), "Error: command not recognized")
}
pub(crate) fn data_then_bdat() -> Reply {
    Reply::new(503, S(5, 5, 1), "Error: DATA and BDAT cannot be mixed in one transaction")
}
pub(crate) fn vrfy() -> Reply {
    Reply::new(252, S(2, 5, 2), "Cannot VRFY user; try RCPT to attempt delivery")
}
pub(crate) fn expn() -> Reply {
    Reply::new(502, S(5, 5, 1), "Error: EXPN is disabled")
}
pub(crate) fn help() -> Reply {
    Reply::new(214, S(2, 0, 0), "Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT")
}
pub(crate) fn start_data() -> Reply {
    Reply::plain(354, "End data with <CR><LF>.<CR><LF>")
}
pub(crate) fn bye() -> Reply {
    Reply::new(221, S(2, 0, 0), "Bye")
}
pub(crate) fn too_many_errors(host: &str) -> Reply {
    Reply::new(421, S(4, 7, 0), format!("{host} Error: too many errors"))
}
pub(crate) fn timeout(host: &str) -> Reply {
    Reply::new(421, S(4, 4, 2), format!("{host} Error: timeout exceeded"))
}
pub(crate) fn ready_for_tls() -> Reply {
    Reply::new(220, S(2, 0, 0), "Ready to start TLS")
}
pub(crate) fn tls_not_available() -> Reply {
    Reply::new(502, S(5, 5, 1), "Error: STARTTLS not available")
}
pub(crate) fn tls_already_active() -> Reply {
    Reply::new(503, S(5, 5, 1), "Error: TLS already active")
}
pub(crate) fn in_transaction() -> Reply {
    Reply::new(503, S(5, 5, 1), "Error: MAIL transaction in progress")
}
/// RFC 3207 §4 / RFC 4954 §6: 530 5.7.0 when a command needs TLS first.
pub(crate) fn need_tls() -> Reply {
    Reply::new(530, S(5, 7, 0), "Must issue a STARTTLS command first")
}
/// RFC 4954 §6: 530 5.7.0 "Authentication required".
pub(crate) fn need_auth() -> Reply {
    Reply::new(530, S(5, 7, 0), "Authentication required")
}
pub(crate) fn auth_not_enabled() -> Reply {
    Reply::new(503, S(5, 5, 1), "Error: authentication not enabled")
}
pub(crate) fn already_authenticated() -> Reply {
    Reply::new(503, S(5, 5, 1), "Error: already authenticated")
}
/// RFC 4954 §6: 504 5.5.4 for an unknown mechanism.
pub(crate) fn unknown_mechanism() -> Reply {
    Reply::new(504, S(5, 5, 4), "Unrecognized authentication type")
}
/// RFC 4954 §4: 501 5.5.2 when the response cannot be base64-decoded.
pub(crate) fn bad_base64() -> Reply {
    Reply::new(501, S(5, 5, 2), "Error: invalid base64 data")
}
/// RFC 4954 §4: the client cancelled with `*`.
pub(crate) fn auth_aborted() -> Reply {
    Reply::new(501, S(5, 0, 0), "Authentication aborted")
}
/// RFC 4954 §6: 235 2.7.0.
pub(crate) fn auth_ok() -> Reply {
    Reply::new(235, S(2, 7, 0), "Authentication successful")
}
/// RFC 4954 §6: 535 5.7.8 "Authentication credentials invalid".
pub(crate) fn auth_failed() -> Reply {
    Reply::new(535, S(5, 7, 8), "Error: authentication failed")
}
/// RFC 4954 §6: 454 4.7.0 "Temporary authentication failure".
pub(crate) fn auth_temp_failure() -> Reply {
    Reply::new(454, S(4, 7, 0), "Temporary authentication failure")
}
pub(crate) fn shutting_down(host: &str) -> Reply {
    Reply::new(421, S(4, 3, 2), format!("{host} Service shutting down, try again later"))
}
