//! The server side of an SMTP session (RFC 5321 §4), as a state machine.
//!
//! The driver owns the socket and an input buffer. It calls [`Session::advance`] with the
//! buffer; the session consumes whole commands (and DATA/BDAT content), appends replies to its
//! outbox, and returns the next [`Step`] the driver must perform. Commands pipelined by the
//! client (RFC 2920) are processed back to back; the driver writes the outbox whenever the
//! session asks for input, so replies to a pipelined group leave in one write.
//!
//! One file per stage: [`helo`](self) handling lives in `helo.rs`, STARTTLS in `tls.rs`, AUTH in
//! `auth.rs`, MAIL in `mail.rs`, RCPT in `rcpt.rs`, DATA and BDAT in `data.rs`.

mod auth;
mod data;
mod helo;
mod mail;
mod rcpt;
mod tls;

pub use auth::AuthOutcome;

use std::net::IpAddr;

use postern_types::dsn::{Notify, Orcpt};
use postern_types::{Address, Destination, EnhancedStatus, QueueId, Reply, ReversePath, Verdict};

use crate::command::Command;
use crate::data::{DataDecoder, LineEndings};
use crate::refusal::Refusal;
use crate::replies;

/// Fixed parameters of one session, taken from the configuration at accept time.
#[derive(Debug, Clone)]
pub struct SessionParams {
    /// Our host name, used in the greeting and EHLO reply.
    pub hostname: String,
    /// The client's IP address.
    pub client_ip: IpAddr,
    /// Domain given to `RCPT TO:<postmaster>` (RFC 5321 §4.5.1): the first local domain.
    pub postmaster_domain: String,
    /// Largest accepted message in octets (SIZE, RFC 1870), counted after dot-unstuffing.
    pub max_message_size: usize,
    /// Most recipients per transaction; more get 452 4.5.3.
    pub max_recipients: usize,
    /// Longest command line in octets, CRLF included (RFC 5321 §4.5.3.1.4 allows extensions to
    /// exceed 512).
    pub max_line_length: usize,
    /// Error replies tolerated before the session is closed with 421 4.7.0.
    pub max_errors: usize,
    /// Whether STARTTLS is offered (RFC 3207): a certificate is configured and the connection
    /// is not already encrypted.
    pub starttls: bool,
    /// Set when the connection is TLS from its first byte (RFC 8314 implicit TLS).
    pub implicit_tls: Option<TlsInfo>,
    /// Whether AUTH (RFC 4954) is offered; it is only ever offered and accepted under TLS.
    pub auth: bool,
    /// Whether MAIL requires a successful AUTH first (submission, RFC 6409 §4.3).
    pub require_auth: bool,
    /// Whether the client is screened after its first HELO/EHLO ([`Step::CheckClient`]).
    pub screen: bool,
    /// Whether the MAIL FROM of a client that is not authenticated waits for
    /// [`Step::CheckSender`] (sender checks, SPF at MAIL).
    pub check_sender: bool,
    /// Refuse the connection at once with this refusal's reply instead of the 220 greeting (a
    /// client in `[policy] block_networks`). RFC 5321 §3.1: after a 554 greeting the server
    /// waits for QUIT and answers every other command with 503.
    pub refuse: Option<Refusal>,
    /// A domain given to bare names in MAIL FROM and RCPT TO (`<root>` is `<root@DOMAIN>`):
    /// `sendmail -bs`, a local submission, where sendmail took them. `None` (SMTP over the
    /// network): a bare name is `501` (RFC 5321 §4.1.2), but `<postmaster>`.
    pub qualify_bare_names: Option<String>,
}

/// The negotiated TLS parameters, for the Received header and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// Protocol version, e.g. `TLSv1.3`.
    pub version: String,
    /// Cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Step {
    /// Write the outbox, then read more bytes and call `advance` again. The read timeout is the
    /// one configured for [`Session::phase`].
    NeedInput,
    /// Resolve this recipient (policy) and pass the verdict to [`Session::recipient_verdict`].
    CheckRecipient(Address),
    /// Spool this transaction durably and pass the result to [`Session::commit_result`]. The
    /// session sends `250` only after that (the durability rule).
    Commit(Box<Transaction>),
    /// Write the outbox (the `220` to STARTTLS), then perform the TLS handshake as server and
    /// call [`Session::tls_started`]; if it fails, close the connection. Input the client sent
    /// after the STARTTLS line has already been discarded (RFC 3207 §4.2, CVE-2011-0411).
    StartTls,
    /// Check these credentials (SASL PLAIN or LOGIN, RFC 4616 / RFC 4954) and pass the outcome
    /// to [`Session::auth_result`].
    Authenticate {
        /// The authentication identity (user name) as given.
        login: String,
        /// The password as given.
        password: Vec<u8>,
    },
    /// A client gave this envelope sender: when authenticated, check it may use it; in a
    /// screened session, check the sender domain. Pass the verdict to
    /// [`Session::sender_verdict`].
    CheckSender(Address),
    /// The client said HELO/EHLO with this name: screen it (IP lists, reverse DNS, HELO,
    /// DNSBLs) and pass the verdict to [`Session::client_verdict`].
    CheckClient(String),
    /// Write the outbox and close the connection.
    Close,
}

/// Which command the session is waiting for; selects the read timeout (like sendmail's
/// `confTO_HELO`, `confTO_MAIL`, `confTO_RCPT`, `confTO_DATABLOCK`, `confTO_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before HELO/EHLO.
    Helo,
    /// After HELO, no transaction.
    Mail,
    /// In a transaction, before DATA.
    Rcpt,
    /// Reading DATA or BDAT content.
    Data,
}

impl std::fmt::Display for Phase {
    /// `helo`, `mail`, `rcpt` or `data`, as in the log and `[timeouts]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Helo => "helo",
            Self::Mail => "mail",
            Self::Rcpt => "rcpt",
            Self::Data => "data",
        })
    }
}

/// A recipient accepted at RCPT time with where it resolved to.
#[derive(Debug, Clone)]
pub struct AcceptedRecipient {
    /// The forward-path as given in RCPT TO.
    pub forward_path: Address,
    /// Where it goes (several for an alias fanning out).
    pub destinations: Vec<Destination>,
    /// `NOTIFY=` (RFC 3461 §4.1), if given.
    pub notify: Option<Notify>,
    /// `ORCPT=` as given (RFC 3461 §4.2).
    pub orcpt: Option<Orcpt>,
}

/// A complete mail transaction, ready for the spool.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// The HELO/EHLO argument.
    pub helo: String,
    /// Whether EHLO (ESMTP) was used.
    pub esmtp: bool,
    /// The client's IP address.
    pub client_ip: IpAddr,
    /// MAIL FROM.
    pub reverse_path: ReversePath,
    /// Accepted recipients in RCPT order.
    pub recipients: Vec<AcceptedRecipient>,
    /// `BODY=8BITMIME` was given (RFC 6152).
    pub body_8bit: bool,
    /// `SMTPUTF8` was given (RFC 6531).
    pub smtputf8: bool,
    /// `RET=FULL` (true) or `RET=HDRS` (false), if given (RFC 3461 §4.3).
    pub ret_full: Option<bool>,
    /// `ENVID=` as given, xtext (RFC 3461 §4.4).
    pub envid: Option<String>,
    /// `REQUIRETLS` was given (RFC 8689 §4.1): every onward hop must be TLS-validated and
    /// offer REQUIRETLS, else the message bounces with 5.7.30.
    pub require_tls: bool,
    /// TLS in use when the message was received.
    pub tls: Option<TlsInfo>,
    /// The authenticated login (RFC 4954), if any.
    pub auth: Option<String>,
    /// The SASL mechanism it authenticated with (`PLAIN`, `LOGIN`), if any.
    pub auth_mechanism: Option<&'static str>,
    /// The message as received: CRLF line endings, dot-unstuffed, no trace headers yet.
    pub message: Vec<u8>,
}

impl Transaction {
    /// Limits what a client that is not ours (neither authenticated nor in `[relay]
    /// trusted_networks`) may ask of our DSNs, as Postfix's `smtpd_discard_ehlo_keywords`
    /// lets a site do: `NOTIFY=SUCCESS` is dropped (a forged reverse-path would otherwise get
    /// a report of every delivery, to an address of the forger's choice) and `RET=FULL`
    /// becomes `RET=HDRS` (a failure DSN never mails a whole message to that address).
    /// FAILURE and DELAY reports stay, as the RFC 5321 §3.6.2 bounce they replace. Returns
    /// whether anything was dropped.
    pub fn limit_dsn_for_outsiders(&mut self) -> bool {
        let mut dropped = false;
        for r in &mut self.recipients {
            if let Some(n) = &mut r.notify
                && n.success
            {
                n.success = false;
                dropped = true;
            }
        }
        if self.ret_full == Some(true) {
            self.ret_full = Some(false);
            dropped = true;
        }
        dropped
    }
}

#[derive(Debug)]
struct MailTx {
    reverse_path: ReversePath,
    body_8bit: bool,
    smtputf8: bool,
    ret_full: Option<bool>,
    envid: Option<String>,
    require_tls: bool,
    recipients: Vec<AcceptedRecipient>,
    /// BDAT content so far, and its line-ending check.
    chunks: Option<(Vec<u8>, LineEndings)>,
    /// Set when a BDAT chunk exceeded the size limit; the rest is discarded.
    chunks_too_big: bool,
}

#[derive(Debug)]
enum State {
    Command,
    /// Discarding an over-long command line up to its LF.
    SkipLine,
    Data(DataDecoder),
    /// Reading `remaining` octets of a BDAT chunk.
    Bdat {
        remaining: u64,
        last: bool,
        error: Option<Reply>,
    },
    /// The driver is checking this recipient; its NOTIFY and ORCPT wait here for the verdict.
    AwaitRecipient(Address, Option<Notify>, Option<Orcpt>),
    /// The driver is checking an authenticated sender; the transaction waits here.
    AwaitSender(Box<MailTx>),
    /// The driver is screening the client after HELO/EHLO (name, EHLO?).
    AwaitClient(String, bool),
    /// A SASL exchange waits for the client's next response line.
    Sasl(auth::Sasl),
    /// The login and the SASL mechanism, waiting for the credentials check.
    AwaitAuth(String, &'static str),
    AwaitTls,
    AwaitCommit,
    Closed,
}

/// The per-connection SMTP server state machine. See the module documentation.
#[derive(Debug)]
pub struct Session {
    params: SessionParams,
    state: State,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<MailTx>,
    outbox: Vec<u8>,
    errors: usize,
    tls: Option<TlsInfo>,
    auth: Option<String>,
    auth_mechanism: Option<&'static str>,
    screened: bool,
    /// Events for the driver's log (see [`Session::take_notices`]).
    notices: Vec<String>,
    /// The reply MAIL gets for now (see [`Session::set_mail_refusal`]).
    mail_refusal: Option<Reply>,
}

impl Session {
    /// A new session; the greeting `220 hostname ESMTP Postern` (or the refusal of
    /// [`SessionParams::refuse`]) is already in the outbox.
    pub fn new(params: SessionParams) -> Self {
        let mut s = Self {
            state: State::Command,
            helo: None,
            esmtp: false,
            tx: None,
            outbox: Vec::new(),
            errors: 0,
            tls: params.implicit_tls.clone(),
            auth: None,
            auth_mechanism: None,
            screened: false,
            notices: Vec::new(),
            mail_refusal: None,
            params,
        };
        let greeting = match &s.params.refuse {
            Some(refusal) => refusal.reply(),
            None => Reply::plain(220, format!("{} ESMTP Postern", s.params.hostname)),
        };
        s.reply(greeting);
        s
    }

    /// Replies produced so far, to be written to the client; empties the outbox.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.outbox)
    }

    /// Events worth a log line that no [`Step`] carries (a command refused for a control
    /// character, with the raw line: the log writer escapes it); empties the list.
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// Sets the reply every MAIL gets until it is cleared with `None`: the driver's view of the
    /// server, e.g. `452 4.3.1` while the spool is short of space (RFC 5321 §4.2.2).
    pub fn set_mail_refusal(&mut self, refusal: Option<Refusal>) {
        self.mail_refusal = refusal.map(|r| r.reply());
    }

    /// Whether replies are waiting to be written.
    pub fn has_output(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// The stage the session waits in, for choosing the read timeout.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Data(_) | State::Bdat { .. } => Phase::Data,
            _ if self.helo.is_none() => Phase::Helo,
            _ if self.tx.is_some() => Phase::Rcpt,
            _ => Phase::Mail,
        }
    }

    /// Whether an over-long command line is being discarded up to its LF (the bytes consumed
    /// then complete no command).
    pub fn skipping_line(&self) -> bool {
        matches!(self.state, State::SkipLine)
    }

    /// Whether a message is being received (DATA/BDAT content); a graceful shutdown lets such a
    /// session finish.
    pub fn in_content(&self) -> bool {
        matches!(self.state, State::Data(_) | State::Bdat { .. })
    }

    /// The HELO/EHLO name given, if any.
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// The TLS parameters, once TLS is up.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// The reverse-path of the transaction in progress.
    pub fn reverse_path(&self) -> Option<&ReversePath> {
        self.tx.as_ref().map(|t| &t.reverse_path)
    }

    /// The authenticated login, after a successful AUTH.
    pub fn authenticated(&self) -> Option<&str> {
        self.auth.as_deref()
    }

    /// Consumes what it can from `input` (removing the consumed bytes) and returns the next step.
    pub fn advance(&mut self, input: &mut Vec<u8>) -> Step {
        let mut pos = 0;
        let step = loop {
            if let Some(step) = self.advance_once(input, &mut pos) {
                break step;
            }
        };
        if matches!(step, Step::StartTls) {
            // RFC 3207 §4.2: nothing the client sent before the handshake may be acted on
            // after it (the CVE-2011-0411 plaintext injection).
            input.clear();
        } else {
            input.drain(..pos);
        }
        step
    }

    /// One unit of progress: `Some(step)` when the driver must act.
    fn advance_once(&mut self, input: &[u8], pos: &mut usize) -> Option<Step> {
        let rest = &input[*pos..];
        match &mut self.state {
            State::Closed => Some(Step::Close),
            State::AwaitRecipient(..)
            | State::AwaitSender(_)
            | State::AwaitClient(..)
            | State::AwaitAuth(..)
            | State::AwaitTls
            | State::AwaitCommit => {
                panic!("Session::advance called while a step is outstanding")
            }
            State::SkipLine => match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    *pos += i + 1;
                    self.state = State::Command;
                    self.error(replies::line_too_long());
                    None
                }
                None => {
                    *pos = input.len();
                    Some(Step::NeedInput)
                }
            },
            State::Command | State::Sasl(_) => {
                let Some(lf) = memchr::memchr(b'\n', rest) else {
                    if rest.len() >= self.params.max_line_length {
                        *pos = input.len();
                        self.state = State::SkipLine;
                    }
                    return Some(Step::NeedInput);
                };
                *pos += lf + 1;
                if lf + 1 > self.params.max_line_length {
                    self.error(replies::line_too_long());
                    return self.closed_step();
                }
                if lf == 0 || rest[lf - 1] != b'\r' {
                    // The client's line does not end here, and where it does is a guess: one
                    // reply and the end of the session (as Postfix's smtpd_forbid_bare_newline
                    // and sendmail's option `g` do), never a reply to each piece.
                    self.close_with(replies::bare_lf_in_command());
                    return self.closed_step();
                }
                let line = &rest[..lf - 1];
                if line.contains(&b'\r') {
                    self.error(replies::bare_lf_in_command());
                    return self.closed_step();
                }
                match std::str::from_utf8(line) {
                    Ok(line) => {
                        let line = line.to_owned();
                        match std::mem::replace(&mut self.state, State::Command) {
                            State::Sasl(sasl) => self.sasl_response(sasl, &line),
                            _ => self.command(&line),
                        }
                    }
                    Err(_) => {
                        self.error(replies::bad_utf8());
                        self.closed_step()
                    }
                }
            }
            State::Data(decoder) => {
                let (n, done) = decoder.feed(rest);
                *pos += n;
                if !done {
                    return Some(Step::NeedInput);
                }
                let State::Data(decoder) = std::mem::replace(&mut self.state, State::Command) else { unreachable!() };
                self.end_of_data(decoder.finish())
            }
            State::Bdat { remaining, .. } => {
                let take = (*remaining).min(rest.len() as u64) as usize;
                *remaining -= take as u64;
                let done = *remaining == 0;
                *pos += take;
                self.bdat_content(&rest[..take]);
                if done { self.end_of_chunk() } else { Some(Step::NeedInput) }
            }
        }
    }

    fn command(&mut self, line: &str) -> Option<Step> {
        let cmd = match Command::parse_with(line, self.params.qualify_bare_names.as_deref()) {
            Ok(c) => c,
            Err(reply) => {
                if crate::command::has_control(line) {
                    self.notices.push(format!("refused a command with a control character: {line}"));
                }
                self.error(reply);
                return self.closed_step();
            }
        };
        if self.params.refuse.is_some() {
            // RFC 5321 §3.1: a session greeted with 554 only waits for QUIT.
            if matches!(cmd, Command::Quit) {
                self.reply(replies::bye());
                self.state = State::Closed;
            } else {
                self.error(replies::refused_session());
            }
            return self.closed_step();
        }
        match cmd {
            Command::Ehlo(name) => return self.check_helo(name, true),
            Command::Helo(name) => return self.check_helo(name, false),
            Command::Mail { path, params } => return self.check_mail(path, params),
            Command::StartTls => return self.starttls(),
            Command::Auth { mechanism, initial } => return self.auth(&mechanism, initial.as_deref()),
            Command::Rcpt { local, domain, path, params } => return self.check_rcpt(local, domain, path, params),
            Command::Data => return self.check_data(),
            Command::Bdat { size, last } => self.check_bdat(size, last),
            Command::Rset => {
                self.tx = None;
                self.reply(replies::ok(EnhancedStatus(2, 0, 0)));
            }
            Command::Noop => self.reply(replies::ok(EnhancedStatus(2, 0, 0))),
            Command::Quit => {
                self.reply(replies::bye());
                self.state = State::Closed;
            }
            Command::Vrfy => self.reply(replies::vrfy()),
            Command::Expn => self.error(replies::expn()),
            Command::Help => self.reply(replies::help()),
            Command::Unknown(_) => self.error(replies::unrecognized()),
        }
        self.closed_step()
    }

    /// The answer to [`Step::CheckRecipient`].
    pub fn recipient_verdict(&mut self, verdict: Verdict<Vec<Destination>>) {
        let State::AwaitRecipient(address, notify, orcpt) = std::mem::replace(&mut self.state, State::Command) else {
            panic!("recipient_verdict without CheckRecipient");
        };
        self.proceed_rcpt(address, notify, orcpt, verdict);
    }

    /// The answer to [`Step::Commit`], the end of the message stage: the queue ID once the
    /// message is durable (a filter's `discard` gives one too, with nothing queued), or why
    /// the driver refused it ([`Refusal`]: the end-of-DATA checks, a filter, authentication,
    /// 451 4.3.0 when the spool could not be written).
    pub fn commit_result(&mut self, result: Result<QueueId, Refusal>) {
        assert!(matches!(self.state, State::AwaitCommit), "commit_result without Commit");
        self.state = State::Command;
        self.tx = None;
        match result {
            Ok(id) => self.reply(replies::queued(id)),
            Err(refusal) => self.error(refusal.reply()),
        }
    }

    /// The answer to [`Step::CheckSender`]: `Ok` accepts the MAIL command, a failure refuses it
    /// with the verdict's reply (553 5.7.1 for an address the login does not own).
    pub fn sender_verdict(&mut self, verdict: Verdict<()>) {
        let State::AwaitSender(tx) = std::mem::replace(&mut self.state, State::Command) else {
            panic!("sender_verdict without CheckSender");
        };
        match verdict {
            Verdict::Ok(()) => {
                self.tx = Some(*tx);
                self.reply(replies::ok(EnhancedStatus(2, 1, 0)));
            }
            Verdict::TempFail(r) | Verdict::PermFail(r) => self.error(r),
        }
    }

    /// Ends the session with `refusal`'s reply (a 421), e.g. when the client's network has
    /// just been banned.
    pub fn abort(&mut self, refusal: Refusal) {
        self.close_with(refusal.reply());
    }

    /// Queues `reply` and closes.
    fn close_with(&mut self, reply: Reply) {
        self.reply(reply);
        self.state = State::Closed;
    }

    /// The read timed out: queues 421 4.4.2 and closes.
    pub fn timed_out(&mut self) {
        let r = replies::timeout(&self.params.hostname);
        self.reply(r);
        self.state = State::Closed;
    }

    /// The server is shutting down: queues 421 4.3.2 and closes.
    pub fn shutdown(&mut self) {
        let r = replies::shutting_down(&self.params.hostname);
        self.reply(r);
        self.state = State::Closed;
    }

    fn reply(&mut self, reply: Reply) {
        reply.encode(&mut self.outbox);
    }

    /// Sends an error reply and counts it; past `max_errors` the session ends with 421.
    fn error(&mut self, reply: Reply) {
        self.reply(reply);
        self.errors += 1;
        if self.errors >= self.params.max_errors && !matches!(self.state, State::Closed) {
            let r = replies::too_many_errors(&self.params.hostname);
            self.reply(r);
            self.state = State::Closed;
        }
    }

    fn closed_step(&self) -> Option<Step> {
        matches!(self.state, State::Closed).then_some(Step::Close)
    }
}

#[cfg(test)]
mod tests;
