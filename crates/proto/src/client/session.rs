//! The client's side of an SMTP or LMTP conversation as a state machine, sans I/O, in the shape
//! of the server's [`crate::Session`]: the driver feeds it the bytes the peer sent and asks it
//! for the next [`Step`]: bytes to write, a read to perform, or an [`Event`] that ends a stage
//! (the session is open, STARTTLS may begin, the message may be sent, the transaction's replies
//! per recipient). The driver performs the I/O (sockets, TLS handshakes, timeouts, streaming the
//! message) and decides policy (when TLS is required, how a reply becomes a delivery outcome).
//!
//! The stages follow RFC 5321 §3 and §4.1: the greeting, EHLO (HELO when EHLO is refused with a
//! 5xx, §3.2), STARTTLS (RFC 3207) and EHLO again, then transactions: MAIL, RCPT for each
//! recipient and DATA, pipelined in one write when the peer offers PIPELINING (RFC 2920 §3.1),
//! one command at a time otherwise; RSET between transactions on a reused connection, QUIT at
//! the end. LMTP (RFC 2033) differs in LHLO for EHLO and one reply per accepted recipient after
//! the message (§4.2). An address probe (the shape of Postfix's address verification) stops
//! after the RCPT replies and sends no DATA.

use std::collections::VecDeque;

use postern_types::dsn::{Notify, Orcpt};
use postern_types::{Address, Reply};

use super::{Capabilities, MalformedReply, Outgoing, ReplyParser, Unsendable, mail_command};

/// SMTP or LMTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SMTP (RFC 5321): EHLO, HELO as a fallback, one reply after the message.
    Smtp,
    /// LMTP (RFC 2033): LHLO, one reply per accepted recipient after the message.
    Lmtp,
}

/// The command a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The server's greeting (RFC 5321 §4.3.1: 220 expected).
    Greeting,
    /// EHLO.
    Ehlo,
    /// HELO, after EHLO was refused with a 5xx.
    Helo,
    /// LHLO (LMTP).
    Lhlo,
    /// STARTTLS (RFC 3207 §4: 220 expected).
    StartTls,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA (354 expected).
    Data,
    /// The end of the message (`.`).
    Content,
    /// RSET.
    Rset,
    /// QUIT.
    Quit,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Greeting => "greeting",
            Self::Ehlo => "EHLO",
            Self::Helo => "HELO",
            Self::Lhlo => "LHLO",
            Self::StartTls => "STARTTLS",
            Self::Mail => "MAIL",
            Self::Rcpt => "RCPT",
            Self::Data => "DATA",
            Self::Content => "end of data",
            Self::Rset => "RSET",
            Self::Quit => "QUIT",
        })
    }
}

/// One recipient of a transaction.
#[derive(Debug, Clone, Copy)]
pub struct RcptTo<'a> {
    /// The forward-path.
    pub address: &'a Address,
    /// `NOTIFY=` (RFC 3461 §4.1), sent when the peer offers DSN.
    pub notify: Option<Notify>,
    /// `ORCPT=` (RFC 3461 §4.2, `addr-type;xtext`), sent when the peer offers DSN.
    pub orcpt: Option<&'a Orcpt>,
}

/// The reply that decided one recipient of a transaction, and the command it answered: the
/// MAIL reply when MAIL was refused, the recipient's RCPT reply when that was refused (or in an
/// address probe), the DATA reply when DATA was not answered 354, else the reply after the
/// message (LMTP: the recipient's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The command answered.
    pub stage: Stage,
    /// The peer's reply.
    pub reply: Reply,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write these bytes to the peer.
    Send(Vec<u8>),
    /// Read from the peer and [`Session::feed`] what arrives (with the driver's timeout).
    Read,
    /// A stage ended.
    Event(Event),
}

/// The end of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The greeting and EHLO/HELO/LHLO succeeded: [`Session::capabilities`] holds what the
    /// peer offers; next [`Session::starttls`], [`Session::transaction`] or [`Session::quit`].
    Ready,
    /// The peer answered STARTTLS with 220: perform the TLS handshake now, then call
    /// [`Session::tls_started`].
    StartTls,
    /// The peer answered DATA with 354: send the message ([`super::DotStuffed`]), then call
    /// [`Session::content_sent`].
    SendContent,
    /// The transaction ended: one answer per recipient, in the order given.
    Done(Vec<Answer>),
    /// RSET was answered 250: the next transaction may begin.
    Reset,
    /// QUIT was answered; the connection may be closed.
    Closed,
    /// A stage was refused: the greeting was not 220, EHLO/HELO/LHLO was refused, STARTTLS was
    /// not answered 220 (the session stays usable in clear text), or RSET was refused.
    Refused {
        /// The command refused.
        stage: Stage,
        /// The peer's reply.
        reply: Reply,
    },
}

/// The conversation cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The peer sent something that is not a reply (RFC 5321 §4.2).
    #[error(transparent)]
    Malformed(#[from] MalformedReply),
    /// The driver called a method the session's state does not allow (a bug in the driver).
    #[error("client session misused: {0} while {1}")]
    OutOfOrder(&'static str, &'static str),
}

/// Where the conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the greeting and EHLO/HELO/LHLO replies.
    Opening,
    /// Between stages: the driver may start one.
    Idle,
    /// Replies to STARTTLS, MAIL, RCPT, DATA, RSET or QUIT awaited.
    Waiting,
    /// The message is being sent by the driver.
    Content,
    /// The TLS handshake is the driver's.
    Handshake,
    /// QUIT answered, or the opening failed.
    Ended,
}

/// The replies of the transaction under way.
#[derive(Debug, Default)]
struct Transaction {
    /// RCPT command lines not yet sent (lockstep).
    unsent: VecDeque<String>,
    /// Recipients in the transaction.
    count: usize,
    mail: Option<Reply>,
    rcpts: Vec<Reply>,
    data: Option<Reply>,
    /// Replies after the message.
    finals: Vec<Reply>,
    /// An address probe: no DATA.
    probe: bool,
}

impl Transaction {
    fn accepted(&self) -> usize {
        self.rcpts.iter().filter(|r| positive(r)).count()
    }

    fn mail_accepted(&self) -> bool {
        self.mail.as_ref().is_some_and(positive)
    }
}

/// One client conversation with an SMTP or LMTP server.
#[derive(Debug)]
pub struct Session {
    dialect: Dialect,
    /// Our name in EHLO/HELO/LHLO.
    hostname: String,
    parser: ReplyParser,
    /// Bytes to write.
    out: Vec<u8>,
    /// The commands whose replies are awaited, oldest first.
    awaited: VecDeque<Stage>,
    /// An event ready for the driver.
    event: Option<Event>,
    state: State,
    greeting: Option<Reply>,
    caps: Capabilities,
    tls: bool,
    reusable: bool,
    transactions: u32,
    txn: Option<Transaction>,
}

impl Session {
    /// A conversation on a new connection: the greeting is awaited first. `hostname` is our
    /// name in EHLO/HELO/LHLO.
    #[must_use]
    pub fn new(dialect: Dialect, hostname: &str) -> Self {
        Self {
            dialect,
            hostname: hostname.to_owned(),
            parser: ReplyParser::default(),
            out: Vec::new(),
            awaited: VecDeque::from([Stage::Greeting]),
            event: None,
            state: State::Opening,
            greeting: None,
            caps: Capabilities::default(),
            tls: false,
            reusable: true,
            transactions: 0,
            txn: None,
        }
    }

    /// What the peer offered in its last EHLO/LHLO reply (nothing after HELO).
    #[must_use]
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The server's greeting, once it arrived.
    #[must_use]
    pub fn greeting(&self) -> Option<&Reply> {
        self.greeting.as_ref()
    }

    /// Whether TLS was started on this conversation.
    #[must_use]
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Whether the connection may carry another transaction: false after a 421 (RFC 5321
    /// §3.8), a malformed reply, a refused stage, or a DATA answered oddly.
    #[must_use]
    pub fn reusable(&self) -> bool {
        self.reusable && self.state == State::Idle
    }

    /// Transactions begun on this connection.
    #[must_use]
    pub fn transactions(&self) -> u32 {
        self.transactions
    }

    /// The command whose reply is awaited next (the end of data while the message is being
    /// sent), to say where a broken conversation broke.
    #[must_use]
    pub fn awaiting(&self) -> Option<Stage> {
        if self.state == State::Content { Some(Stage::Content) } else { self.awaited.front().copied() }
    }

    /// Appends bytes read from the peer.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.parser.feed(bytes);
    }

    /// The next thing to do: write, read, or act on an event.
    ///
    /// # Errors
    /// [`ClientError::Malformed`] when the peer sent something that is not a reply; the
    /// connection is then of no further use.
    pub fn poll(&mut self) -> Result<Step, ClientError> {
        loop {
            if !self.out.is_empty() {
                return Ok(Step::Send(std::mem::take(&mut self.out)));
            }
            if let Some(e) = self.event.take() {
                return Ok(Step::Event(e));
            }
            if self.awaited.is_empty() {
                return Err(ClientError::OutOfOrder("poll", "nothing is awaited"));
            }
            match self.parser.next_reply() {
                Ok(Some(reply)) => self.on_reply(reply),
                Ok(None) => return Ok(Step::Read),
                Err(e) => {
                    self.reusable = false;
                    self.state = State::Ended;
                    return Err(e.into());
                }
            }
        }
    }

    /// Sends STARTTLS (RFC 3207 §4); after [`Event::StartTls`] the driver performs the
    /// handshake and calls [`Session::tls_started`].
    ///
    /// # Errors
    /// [`ClientError::OutOfOrder`] unless the session is ready and not yet under TLS.
    pub fn starttls(&mut self) -> Result<(), ClientError> {
        self.expect_idle("STARTTLS")?;
        if self.tls || self.dialect == Dialect::Lmtp {
            return Err(ClientError::OutOfOrder("STARTTLS", "TLS is not available"));
        }
        self.command("STARTTLS\r\n", Stage::StartTls);
        Ok(())
    }

    /// The TLS handshake succeeded: everything learnt before is forgotten and EHLO is sent
    /// again (RFC 3207 §4.2).
    ///
    /// # Errors
    /// [`ClientError::OutOfOrder`] unless [`Event::StartTls`] came last.
    pub fn tls_started(&mut self) -> Result<(), ClientError> {
        if self.state != State::Handshake {
            return Err(ClientError::OutOfOrder("tls_started", "no STARTTLS was accepted"));
        }
        self.tls = true;
        self.parser = ReplyParser::default();
        self.caps = Capabilities::default();
        self.state = State::Opening;
        self.hello(Stage::Ehlo);
        Ok(())
    }

    /// Begins a transaction: MAIL for `message` (built by [`mail_command`] for the peer's
    /// capabilities), RCPT for each of `rcpts` (with NOTIFY and ORCPT when the peer offers
    /// DSN, RFC 3461 §5.2), and DATA unless `probe`; pipelined when the peer offers PIPELINING.
    ///
    /// # Errors
    /// [`Unsendable`] when the peer cannot take the message (nothing is sent then);
    /// [`ClientError::OutOfOrder`] (as `Ok(Err)`) unless the session is ready.
    pub fn transaction(
        &mut self,
        message: &Outgoing<'_>,
        rcpts: &[RcptTo<'_>],
        probe: bool,
    ) -> Result<Result<(), Unsendable>, ClientError> {
        self.expect_idle("MAIL")?;
        if rcpts.is_empty() {
            return Err(ClientError::OutOfOrder("MAIL", "no recipient was given"));
        }
        let mail = match mail_command(message, &self.caps) {
            Ok(m) => m,
            Err(why) => return Ok(Err(why)),
        };
        let lines: VecDeque<String> = rcpts.iter().map(|r| self.rcpt_line(r)).collect();
        self.transactions += 1;
        let pipelined = self.caps.pipelining;
        let mut txn = Transaction { count: rcpts.len(), probe, ..Transaction::default() };
        self.command(&mail, Stage::Mail);
        if pipelined {
            for line in lines {
                self.command(&line, Stage::Rcpt);
            }
            if !probe {
                self.command("DATA\r\n", Stage::Data);
            }
        } else {
            txn.unsent = lines;
        }
        self.txn = Some(txn);
        Ok(Ok(()))
    }

    /// The driver sent the whole message after [`Event::SendContent`]: the reply (LMTP: one per
    /// accepted recipient) is awaited.
    ///
    /// # Errors
    /// [`ClientError::OutOfOrder`] unless [`Event::SendContent`] came last.
    pub fn content_sent(&mut self) -> Result<(), ClientError> {
        let Some(txn) = self.txn.as_ref().filter(|_| self.state == State::Content) else {
            return Err(ClientError::OutOfOrder("content_sent", "DATA was not accepted"));
        };
        let replies = if self.dialect == Dialect::Lmtp { txn.accepted() } else { 1 };
        self.awaited.extend(std::iter::repeat_n(Stage::Content, replies));
        self.state = State::Waiting;
        Ok(())
    }

    /// Sends RSET (RFC 5321 §4.1.1.5), before a transaction on a reused connection or after
    /// an address probe.
    ///
    /// # Errors
    /// [`ClientError::OutOfOrder`] unless the session is ready.
    pub fn reset(&mut self) -> Result<(), ClientError> {
        self.expect_idle("RSET")?;
        self.command("RSET\r\n", Stage::Rset);
        Ok(())
    }

    /// Sends QUIT; [`Event::Closed`] follows its reply. Allowed in any state but while the
    /// message is being sent or TLS negotiated.
    ///
    /// # Errors
    /// [`ClientError::OutOfOrder`] while the message is being sent or TLS negotiated.
    pub fn quit(&mut self) -> Result<(), ClientError> {
        if matches!(self.state, State::Content | State::Handshake) {
            return Err(ClientError::OutOfOrder("QUIT", "the connection is busy"));
        }
        self.awaited.clear();
        self.out.clear();
        self.txn = None;
        self.event = None;
        self.command("QUIT\r\n", Stage::Quit);
        Ok(())
    }

    fn expect_idle(&self, what: &'static str) -> Result<(), ClientError> {
        match self.state {
            State::Idle => Ok(()),
            State::Opening => Err(ClientError::OutOfOrder(what, "the session is opening")),
            State::Waiting => Err(ClientError::OutOfOrder(what, "replies are awaited")),
            State::Content => Err(ClientError::OutOfOrder(what, "the message is being sent")),
            State::Handshake => Err(ClientError::OutOfOrder(what, "the TLS handshake is under way")),
            State::Ended => Err(ClientError::OutOfOrder(what, "the session ended")),
        }
    }

    fn command(&mut self, line: &str, stage: Stage) {
        self.out.extend_from_slice(line.as_bytes());
        self.awaited.push_back(stage);
        if self.state == State::Idle {
            self.state = State::Waiting;
        }
    }

    fn rcpt_line(&self, r: &RcptTo<'_>) -> String {
        let mut line = format!("RCPT TO:<{}>", r.address);
        if self.caps.dsn {
            if let Some(n) = r.notify {
                line.push_str(&format!(" NOTIFY={n}"));
            }
            if let Some(o) = r.orcpt {
                line.push_str(&format!(" ORCPT={o}"));
            }
        }
        line.push_str("\r\n");
        line
    }

    fn hello(&mut self, stage: Stage) {
        let verb = match stage {
            Stage::Helo => "HELO",
            Stage::Lhlo => "LHLO",
            _ => "EHLO",
        };
        let line = format!("{verb} {}\r\n", self.hostname);
        self.command(&line, stage);
    }

    /// Takes one reply: to the oldest command awaiting one.
    fn on_reply(&mut self, reply: Reply) {
        if reply.code == 421 {
            self.reusable = false;
        }
        let Some(stage) = self.awaited.pop_front() else { return };
        match stage {
            Stage::Greeting | Stage::Ehlo | Stage::Helo | Stage::Lhlo => self.on_opening(stage, reply),
            Stage::StartTls => self.on_starttls(reply),
            Stage::Mail | Stage::Rcpt | Stage::Data => self.on_envelope(stage, reply),
            Stage::Content => self.on_content(reply),
            Stage::Rset => self.on_rset(reply),
            Stage::Quit => self.end(Event::Closed),
        }
    }

    fn on_opening(&mut self, stage: Stage, reply: Reply) {
        match stage {
            Stage::Greeting if reply.code == 220 => {
                self.greeting = Some(reply);
                self.hello(if self.dialect == Dialect::Lmtp { Stage::Lhlo } else { Stage::Ehlo });
            }
            Stage::Ehlo | Stage::Lhlo if reply.code == 250 => {
                self.caps = Capabilities::from_ehlo(&reply);
                self.ready(Event::Ready);
            }
            Stage::Helo if reply.code == 250 => self.ready(Event::Ready),
            // RFC 5321 §3.2: a server that does not know EHLO refuses it with a 5xx; HELO then.
            Stage::Ehlo if reply.code / 100 == 5 => self.hello(Stage::Helo),
            _ => {
                self.greeting.get_or_insert_with(|| reply.clone());
                self.reusable = false;
                self.end(Event::Refused { stage, reply });
            }
        }
    }

    fn on_starttls(&mut self, reply: Reply) {
        if reply.code == 220 {
            // The handshake is the driver's; nothing else is said until it reports.
            self.state = State::Handshake;
            self.event = Some(Event::StartTls);
        } else {
            self.ready(Event::Refused { stage: Stage::StartTls, reply });
        }
    }

    fn on_rset(&mut self, reply: Reply) {
        if reply.code == 250 {
            self.txn = None;
            self.ready(Event::Reset);
        } else {
            self.reusable = false;
            self.ready(Event::Refused { stage: Stage::Rset, reply });
        }
    }

    fn on_envelope(&mut self, stage: Stage, reply: Reply) {
        let Some(txn) = self.txn.as_mut() else { return };
        match stage {
            Stage::Mail => txn.mail = Some(reply),
            Stage::Rcpt => txn.rcpts.push(reply),
            _ => txn.data = Some(reply),
        }
        // Pipelined, the commands went in one write: wait for every reply.
        if self.awaited.is_empty() {
            self.after_envelope(stage);
        }
    }

    /// After the last awaited reply of the envelope: the next command (one at a time without
    /// PIPELINING), the message, or the end.
    fn after_envelope(&mut self, stage: Stage) {
        let Some(txn) = self.txn.as_mut() else { return };
        if !txn.mail_accepted() {
            // A DATA answered 354 all the same leaves the peer waiting for a message.
            if txn.data.as_ref().is_some_and(|d| d.code / 100 < 4) {
                self.reusable = false;
            }
            return self.finish();
        }
        if let Some(line) = txn.unsent.pop_front() {
            return self.command(&line, Stage::Rcpt);
        }
        if stage == Stage::Rcpt && txn.rcpts.len() == txn.count && !txn.probe && txn.accepted() > 0 {
            return self.command("DATA\r\n", Stage::Data);
        }
        match &txn.data {
            Some(data) if data.code == 354 && txn.accepted() > 0 => {
                self.state = State::Content;
                self.event = Some(Event::SendContent);
            }
            Some(data) => {
                // A peer that invites the message with no recipient accepted, or answers DATA
                // with anything but 354 or a refusal, is out of step: never reuse it.
                if data.code / 100 < 4 {
                    self.reusable = false;
                }
                self.finish();
            }
            None => self.finish(),
        }
    }

    fn on_content(&mut self, reply: Reply) {
        let Some(txn) = self.txn.as_mut() else { return };
        txn.finals.push(reply);
        if !self.awaited.iter().any(|s| *s == Stage::Content) {
            self.finish();
        }
    }

    /// Ends the transaction: one answer per recipient.
    fn finish(&mut self) {
        let Some(txn) = self.txn.take() else { return };
        let answers = answers(&txn);
        self.ready(Event::Done(answers));
    }

    fn ready(&mut self, event: Event) {
        self.state = State::Idle;
        self.event = Some(event);
    }

    fn end(&mut self, event: Event) {
        self.state = State::Ended;
        self.awaited.clear();
        self.event = Some(event);
    }
}

/// The answer of each recipient of `txn` (see [`Answer`]). The session ends a transaction
/// only when MAIL, every RCPT once MAIL was accepted, and the message (once DATA got 354) are
/// answered; the last reply received stands in for any other all the same, so that no order of
/// replies can panic.
fn answers(txn: &Transaction) -> Vec<Answer> {
    let answer = |stage, reply: &Reply| Answer { stage, reply: reply.clone() };
    let mut finals = txn.finals.iter();
    let fallback = [txn.finals.last(), txn.data.as_ref(), txn.rcpts.last(), txn.mail.as_ref()]
        .into_iter()
        .flatten()
        .next()
        .cloned()
        .unwrap_or_else(|| Reply::plain(451, "no reply"));
    (0..txn.count)
        .map(|i| {
            let mail = txn.mail.as_ref().unwrap_or(&fallback);
            if !positive(mail) {
                return answer(Stage::Mail, mail);
            }
            let rcpt = txn.rcpts.get(i).unwrap_or(&fallback);
            if !positive(rcpt) || txn.probe {
                return answer(Stage::Rcpt, rcpt);
            }
            match &txn.data {
                Some(d) if d.code != 354 => answer(Stage::Data, d),
                _ => answer(Stage::Content, finals.next().or(txn.finals.last()).unwrap_or(&fallback)),
            }
        })
        .collect()
}

/// A 2xx reply (RFC 5321 §4.2.1: positive completion).
fn positive(reply: &Reply) -> bool {
    reply.code / 100 == 2
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
