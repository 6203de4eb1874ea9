//! One filter's conversation about one message, sans I/O: option negotiation, the macros and
//! the connect, HELO, MAIL, RCPT, DATA, header, end-of-header and body steps the filter did not
//! decline, then end of message with its actions (Postfix's `smtpd_milters`, replayed once the
//! message is complete). The driver writes what [`Conversation::poll`] gives it, reads with the
//! timeout it names, feeds the bytes back, and acts on the [`Verdict`] at the end.
//!
//! Everything the filter says is hostile: actions it did not negotiate, header fields that
//! cannot be written and growth past the message size limit end the conversation (the filter's
//! default action applies, or `552 5.3.4`), and its `y` replies become ours only through
//! [`reply_of`].

use std::collections::VecDeque;
use std::net::SocketAddr;

use postern_types::{Address, EnhancedStatus, Reply, ReversePath, printable};

use crate::{Command, DecodeError, Decoder, Family, Negotiated, Response, action, edit, step};

/// What the filter is told about the client and the transaction (Postfix's macros and steps).
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// Our host name (macro `j`).
    pub hostname: &'a str,
    /// The client's forward-confirmed name, `unknown` when none.
    pub client_name: &'a str,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The address and port it connected to, if the socket said.
    pub local: Option<SocketAddr>,
    /// The queue ID the message will have (macro `i`).
    pub queue_id: &'a str,
    /// The HELO/EHLO argument.
    pub helo: &'a str,
    /// The TLS version and cipher, when the session was under TLS.
    pub tls: Option<(&'a str, &'a str)>,
    /// The reverse-path.
    pub reverse_path: &'a ReversePath,
    /// The SASL mechanism and login, when the client authenticated.
    pub auth: Option<(&'a str, &'a str)>,
    /// The forward-paths.
    pub recipients: Vec<&'a Address>,
    /// The message (header and body, CRLF line endings).
    pub message: &'a [u8],
    /// Macros of the filter's configuration, sent with the connect step.
    pub macros: &'a [(String, String)],
    /// `[limits] max_message_size`, bytes: the filter's actions may not grow the message past
    /// it, nor may one of its packets be much larger.
    pub max_message_size: usize,
}

/// How a conversation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The filter accepted before the end of the message: no more filtering by it.
    Accepted,
    /// The end of the message was reached: the filter's actions in order, the quarantine
    /// reason if it asked to hold the message, and its verdict (`accept` or `continue`).
    Done {
        /// End-of-message actions (header, body, envelope changes).
        actions: Vec<Response>,
        /// `q`'s reason.
        quarantine: Option<String>,
        /// `accept` or `continue`, for the log.
        verdict: &'static str,
    },
    /// Refuse the message with this reply.
    Refused(Reply),
    /// Reply 250 and drop the message.
    Discarded,
}

/// The filter broke the protocol: its default action applies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A packet that does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A response that does not answer the command sent.
    #[error("unexpected {0}")]
    Unexpected(String),
    /// An end-of-message action the filter did not negotiate.
    #[error("{0} was not negotiated")]
    NotNegotiated(String),
    /// A header field that cannot be written (RFC 5322 §2.2: a name of printable ASCII but
    /// `:`, a value without bare CR or LF).
    #[error("header field {0:?} cannot be written")]
    Unwritable(String),
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write these bytes to the filter.
    Send(Vec<u8>),
    /// Read from the filter and [`Conversation::feed`] the bytes, within the filter's
    /// `eom_timeout` when `end_of_message`, its `command_timeout` otherwise (a `p` progress
    /// packet starts the wait again).
    Read {
        /// The end-of-message wait.
        end_of_message: bool,
    },
    /// The conversation is over (QUIT, when due, was given as a [`Step::Send`] before).
    Done(Result<Verdict, ProtocolError>),
}

/// Where the conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Our option negotiation sent, the filter's awaited.
    Negotiating,
    /// Steps being sent; a reply awaited when `awaiting`.
    Steps,
    /// End of message sent: actions, then a verdict.
    EndOfMessage,
    /// Over.
    Ended,
}

/// The actions offered to filters (all but `SETSYMLIST`, whose macro lists Postern ignores).
const OFFERED_ACTIONS: u32 = action::ALL & !action::SET_SYMLIST;

/// One filter's conversation about one message.
#[derive(Debug)]
pub struct Conversation<'a> {
    facts: Facts<'a>,
    decoder: Decoder,
    state: State,
    /// The commands still to send, each with whether the filter answers it.
    queue: VecDeque<(Command, bool)>,
    /// Bytes to write.
    out: Vec<u8>,
    /// A reply to the last command sent is awaited.
    awaiting: bool,
    negotiated: Option<Negotiated>,
    actions: Vec<Response>,
    quarantine: Option<String>,
    growth: Growth,
    verdict: Option<Result<Verdict, ProtocolError>>,
}

impl<'a> Conversation<'a> {
    /// A conversation about `facts`; its first step sends our option negotiation.
    #[must_use]
    pub fn new(facts: Facts<'a>) -> Self {
        let limit = facts.max_message_size.saturating_add(64 << 10);
        let (_, body) = edit::split(facts.message);
        let growth = Growth::new(facts.message.len(), body.len(), facts.max_message_size);
        let mut c = Self {
            facts,
            decoder: Decoder::with_limit(limit),
            state: State::Negotiating,
            queue: VecDeque::new(),
            out: Vec::new(),
            awaiting: true,
            negotiated: None,
            actions: Vec::new(),
            quarantine: None,
            growth,
            verdict: None,
        };
        c.send(&Command::OptNeg { version: crate::VERSION, actions: OFFERED_ACTIONS, steps: step::OFFERED });
        c
    }

    /// What was agreed with the filter, once it answered our negotiation.
    #[must_use]
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Appends bytes read from the filter.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.decoder.feed(bytes);
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Step {
        loop {
            if !self.out.is_empty() {
                return Step::Send(std::mem::take(&mut self.out));
            }
            if let Some(v) = self.verdict.take() {
                self.state = State::Ended;
                return Step::Done(v);
            }
            if self.state == State::Ended {
                return Step::Done(Err(ProtocolError::Unexpected("a poll after the end".into())));
            }
            if !self.awaiting {
                self.send_steps();
                continue;
            }
            match self.decoder.next_response() {
                Ok(Some(Response::Progress)) => {}
                Ok(Some(r)) => self.on_response(r),
                Ok(None) => return Step::Read { end_of_message: self.state == State::EndOfMessage },
                Err(e) => self.verdict = Some(Err(e.into())),
            }
        }
    }

    fn send(&mut self, c: &Command) {
        self.out.extend_from_slice(&c.encode());
    }

    /// Sends queued commands up to one the filter answers; at the end of the queue, the end of
    /// message.
    fn send_steps(&mut self) {
        while let Some((command, answers)) = self.queue.pop_front() {
            self.send(&command);
            if answers {
                self.awaiting = true;
                return;
            }
        }
        let i = self.facts.queue_id.to_owned();
        self.send(&Command::Macros { for_command: b'E', macros: vec![("i".to_owned(), i)] });
        self.send(&Command::EndOfMessage);
        self.state = State::EndOfMessage;
        self.awaiting = true;
    }

    fn on_response(&mut self, r: Response) {
        match self.state {
            State::Negotiating => self.on_negotiation(&r),
            State::Steps => self.on_step(r),
            State::EndOfMessage => self.on_end_of_message(r),
            State::Ended => {}
        }
    }

    fn on_negotiation(&mut self, r: &Response) {
        match Negotiated::from_reply(r, action::ALL, step::OFFERED) {
            Ok(n) => {
                self.queue = steps(&self.facts, &n);
                self.negotiated = Some(n);
                self.state = State::Steps;
                self.awaiting = false;
            }
            Err(e) => self.verdict = Some(Err(e.into())),
        }
    }

    /// The filter's answer to a step: go on, or its decision.
    fn on_step(&mut self, r: Response) {
        let decided = match r {
            Response::Continue => {
                self.awaiting = false;
                return;
            }
            Response::Accept => Verdict::Accepted,
            Response::Discard => Verdict::Discarded,
            Response::Reject => Verdict::Refused(rejected()),
            Response::TempFail => Verdict::Refused(unavailable()),
            Response::ReplyCode(text) => Verdict::Refused(reply_of(&text)),
            other => return self.verdict = Some(Err(ProtocolError::Unexpected(format!("{other:?}")))),
        };
        self.quit(decided);
    }

    fn on_end_of_message(&mut self, r: Response) {
        let verdict = match r {
            Response::Quarantine(reason) => return self.quarantine = Some(reason),
            a if !a.is_verdict() => return self.on_action(a),
            Response::Accept | Response::Continue => Verdict::Done {
                actions: std::mem::take(&mut self.actions),
                quarantine: self.quarantine.take(),
                verdict: if r == Response::Accept { "accept" } else { "continue" },
            },
            Response::Discard => Verdict::Discarded,
            Response::Reject => Verdict::Refused(Reply::new(550, EnhancedStatus(5, 7, 1), "Message content rejected")),
            Response::TempFail => Verdict::Refused(Reply::new(
                451,
                EnhancedStatus(4, 7, 1),
                "Message content could not be checked, try again later",
            )),
            Response::ReplyCode(text) => Verdict::Refused(reply_of(&text)),
            other => {
                let e = ProtocolError::Unexpected(format!("{other:?} at end of message"));
                return self.verdict = Some(Err(e));
            }
        };
        self.quit(verdict);
    }

    /// An end-of-message action: checked, counted, kept.
    fn on_action(&mut self, a: Response) {
        let negotiated = self.negotiated.unwrap_or(Negotiated { version: 0, actions: 0, steps: 0 });
        if !allowed(&negotiated, &a) {
            return self.verdict = Some(Err(ProtocolError::NotNegotiated(format!("{a:?}"))));
        }
        if let Response::AddHeader(n, v) | Response::InsertHeader(_, n, v) | Response::ChangeHeader(_, n, v) = &a
            && !edit::writable(n, v)
        {
            return self.verdict = Some(Err(ProtocolError::Unwritable(printable(n).into_owned())));
        }
        if let Some(refusal) = self.growth.add(&a) {
            return self.quit(Verdict::Refused(refusal));
        }
        self.actions.push(a);
    }

    /// Ends with `verdict`, telling the filter goodbye.
    fn quit(&mut self, verdict: Verdict) {
        self.send(&Command::Quit);
        self.verdict = Some(Ok(verdict));
    }
}

/// The commands of the steps the filter did not decline, in order, each with whether it
/// answers (Postfix's order: connect, HELO, MAIL, RCPT, DATA, headers, end of headers, body).
fn steps(f: &Facts<'_>, neg: &Negotiated) -> VecDeque<(Command, bool)> {
    let mut q = VecDeque::new();
    let macros = |for_command: u8, list: Vec<(String, String)>| (Command::Macros { for_command, macros: list }, false);
    let owned = |pairs: &[(&str, String)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect::<Vec<_>>();
    let ip = f.client.ip();
    if !neg.skips(step::NO_CONNECT) {
        q.push_back(macros(b'C', connect_macros(f)));
        let family = if ip.is_ipv4() { Family::Inet } else { Family::Inet6 };
        let hostname = f.client_name.to_owned();
        let c = Command::Connect { hostname, family, port: f.client.port(), address: ip.to_string() };
        q.push_back((c, neg.replies(step::NR_CONNECT)));
    }
    if !neg.skips(step::NO_HELO) {
        let tls = f.tls.map(|(v, c)| owned(&[("{tls_version}", v.to_owned()), ("{cipher}", c.to_owned())]));
        q.push_back(macros(b'H', tls.unwrap_or_default()));
        q.push_back((Command::Helo(f.helo.to_owned()), neg.replies(step::NR_HELO)));
    }
    if !neg.skips(step::NO_MAIL) {
        let sender = match f.reverse_path {
            ReversePath::Null => String::new(),
            ReversePath::Mailbox(a) => a.to_string(),
        };
        // Postfix sends `i` from MAIL on; Postern's ID is chosen at the end of DATA, before
        // the filters run, and is the one the message is queued under.
        let mut m = owned(&[("i", f.queue_id.to_owned()), ("{mail_addr}", sender.clone())]);
        if let Some((mechanism, login)) = f.auth {
            m.extend(owned(&[("{auth_type}", mechanism.to_owned()), ("{auth_authen}", login.to_owned())]));
        }
        q.push_back(macros(b'M', m));
        q.push_back((Command::Mail(vec![format!("<{sender}>")]), neg.replies(step::NR_MAIL)));
    }
    if !neg.skips(step::NO_RCPT) {
        for r in &f.recipients {
            q.push_back(macros(b'R', owned(&[("{rcpt_addr}", r.to_string())])));
            q.push_back((Command::Rcpt(vec![format!("<{r}>")]), neg.replies(step::NR_RCPT)));
        }
    }
    if !neg.skips(step::NO_DATA) {
        q.push_back((Command::Data, neg.replies(step::NR_DATA)));
    }
    content_steps(f, neg, &mut q);
    q
}

/// The header, end-of-header and body steps.
fn content_steps(f: &Facts<'_>, neg: &Negotiated, q: &mut VecDeque<(Command, bool)>) {
    let (fields, body) = edit::split(f.message);
    if !neg.skips(step::NO_HEADERS) {
        let leading = neg.skips(step::HEADER_LEADING_SPACE);
        for (name, raw) in &fields {
            let value = edit::value(raw, leading);
            q.push_back((Command::Header(name.clone(), value), neg.replies(step::NR_HEADER)));
        }
    }
    if !neg.skips(step::NO_EOH) {
        q.push_back((Command::EndOfHeaders, neg.replies(step::NR_EOH)));
    }
    if !neg.skips(step::NO_BODY) {
        q.extend(Command::body_chunks(body).into_iter().map(|c| (c, neg.replies(step::NR_BODY))));
    }
}

/// The connect step's macros (Postfix's names), then the filter's configured ones.
fn connect_macros(f: &Facts<'_>) -> Vec<(String, String)> {
    let ip = f.client.ip().to_string();
    let mut m = vec![
        ("j".to_owned(), f.hostname.to_owned()),
        ("_".to_owned(), format!("{} [{ip}]", f.client_name)),
        ("{daemon_name}".to_owned(), "postern".to_owned()),
        ("{client_addr}".to_owned(), ip.clone()),
        ("{client_name}".to_owned(), f.client_name.to_owned()),
        ("{client_port}".to_owned(), f.client.port().to_string()),
    ];
    if let Some(local) = f.local {
        m.push(("{if_addr}".to_owned(), local.ip().to_string()));
        m.push(("{daemon_addr}".to_owned(), local.ip().to_string()));
        m.push(("{daemon_port}".to_owned(), local.port().to_string()));
    }
    m.extend(f.macros.iter().cloned());
    m
}

/// `451 4.7.1`: the filter asked for a temporary failure, or is down and its default action
/// says `tempfail`.
#[must_use]
pub fn unavailable() -> Reply {
    Reply::new(451, EnhancedStatus(4, 7, 1), "Service unavailable, try again later")
}

/// `451 4.7.1` for a filter that cannot be reached or broke the protocol, when its default
/// action is `tempfail` (Postfix's `milter_default_action = tempfail`).
#[must_use]
pub fn filter_down() -> Reply {
    Reply::new(451, EnhancedStatus(4, 7, 1), "Service unavailable: content filter down, try again later")
}

/// `550 5.7.1`: the filter rejected a step, or is down and its default action says `reject`.
#[must_use]
pub fn rejected() -> Reply {
    Reply::new(550, EnhancedStatus(5, 7, 1), "Command rejected")
}

/// The size of the message as a filter's end-of-message actions make it, bounded by
/// `[limits] max_message_size` as the message from the client was.
#[derive(Debug)]
struct Growth {
    headers: usize,
    body: usize,
    replaced: Option<usize>,
    limit: usize,
}

impl Growth {
    fn new(message: usize, body: usize, limit: usize) -> Self {
        Self { headers: message.saturating_sub(body), body, replaced: None, limit }
    }

    /// Counts `a`; `552 5.3.4` once the message would be larger than the limit.
    fn add(&mut self, a: &Response) -> Option<Reply> {
        match a {
            Response::AddHeader(n, v) | Response::InsertHeader(_, n, v) | Response::ChangeHeader(_, n, v) => {
                self.headers = self.headers.saturating_add(n.len() + v.len() + 4);
            }
            Response::ReplaceBody(chunk) => *self.replaced.get_or_insert(0) += chunk.len(),
            _ => {}
        }
        let total = self.headers.saturating_add(self.replaced.unwrap_or(self.body));
        (total > self.limit).then(|| {
            Reply::new(552, EnhancedStatus(5, 3, 4), "Message size exceeds fixed limit after content filtering")
        })
    }
}

/// Whether the negotiated actions allow `a`.
fn allowed(neg: &Negotiated, a: &Response) -> bool {
    let needed = match a {
        Response::AddHeader(..) => action::ADD_HEADERS,
        Response::ChangeHeader(..) | Response::InsertHeader(..) => action::CHANGE_HEADERS | action::ADD_HEADERS,
        Response::ChangeFrom(..) => action::CHANGE_FROM,
        Response::AddRcpt(..) => action::ADD_RCPT | action::ADD_RCPT_PAR,
        Response::DelRcpt(..) => action::DEL_RCPT,
        Response::ReplaceBody(..) => action::CHANGE_BODY,
        _ => return true,
    };
    neg.actions & needed != 0
}

/// A filter's `y` reply as ours: `550 5.7.1 text`, or several lines (`550-5.7.1 one\r\n550
/// 5.7.1 two`, libmilter's `smfi_setmlreply`) as one multi-line reply whose code and status
/// are the first line's. An unusable one is `550 5.7.1 Command rejected`. The text's controls
/// are escaped when the reply is encoded ([`Reply::encode`]), so a CR LF inside a line can
/// never make two replies of one.
#[must_use]
pub fn reply_of(text: &str) -> Reply {
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r')).filter(|l| !l.is_empty());
    let mut words = lines.next().unwrap_or("").splitn(3, ' ');
    let code = words.next().and_then(|c| c.get(..3)?.parse::<u16>().ok()).filter(|c| (400..600).contains(c));
    let Some(code) = code else { return rejected() };
    let class = (code / 100) as u8;
    let second = words.next().unwrap_or("");
    let parsed: Vec<u16> = second.split('.').filter_map(|p| p.parse().ok()).collect();
    let (status, first) = match parsed.as_slice() {
        [c, s, d] if u16::from(class) == *c => (EnhancedStatus(class, *s, *d), words.next().unwrap_or("").to_owned()),
        _ => (EnhancedStatus(class, 7, 1), [second, words.next().unwrap_or("")].join(" ").trim().to_owned()),
    };
    let mut reply = Reply::new(code, status, first);
    for line in lines {
        // "550-5.7.1 text" or "550 5.7.1 text": the text after the code and status.
        let rest = line.get(4..).filter(|_| line.get(..3) == Some(code.to_string().as_str())).unwrap_or(line);
        let rest = rest.strip_prefix(&format!("{status} ")).unwrap_or(rest);
        reply.lines.push(rest.to_owned());
    }
    reply
}

#[cfg(test)]
#[path = "conversation_tests.rs"]
mod tests;
