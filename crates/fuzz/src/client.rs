//! The `client` target: the sans-I/O SMTP/LMTP client conversation
//! ([`postern_proto::client::session::Session`]) driven by a hostile peer. The first byte picks
//! the dialect, the number of recipients, STARTTLS, address probes and how the peer's bytes are
//! cut into reads; the rest is everything the peer says. The driver acts as outbound delivery
//! does (STARTTLS when offered, then transactions, RSET between them, QUIT at the end).
//!
//! Invariants: the conversation ends (no step loops without reading input), every write is
//! whole command lines of our own (a known verb, CRLF-terminated, no control character: nothing
//! the peer said is echoed into a command), and every transaction answers each recipient once,
//! with a reply to MAIL, RCPT, DATA or the message.

use postern_proto::client::Outgoing;
use postern_proto::client::session::{Dialect, Event, RcptTo, Session, Stage, Step};
use postern_types::{Address, ReversePath};

/// The verbs a client conversation may send.
const VERBS: &[&str] = &["EHLO ", "HELO ", "LHLO ", "STARTTLS", "MAIL FROM:", "RCPT TO:", "DATA", "RSET", "QUIT"];

/// At most this many transactions a conversation.
const TRANSACTIONS: u32 = 3;

/// The target.
pub fn target(data: &[u8]) {
    let (mode, peer) = crate::split(data);
    let dialect = if mode & 1 == 0 { Dialect::Smtp } else { Dialect::Lmtp };
    let count = usize::from((mode >> 1) & 3) + 1;
    let probe = mode & 8 != 0;
    // STARTTLS is SMTP's (RFC 2033 leaves it out of LMTP, and so does the client).
    let starttls = mode & 16 != 0 && dialect == Dialect::Smtp;
    let step = [1, 3, 7, 64][usize::from(mode >> 6)];
    let addresses: Vec<Address> = (0..count).map(|i| Address::new(format!("r{i}"), "b.test")).collect();
    let rcpts: Vec<RcptTo<'_>> = addresses.iter().map(|a| RcptTo { address: a, notify: None, orcpt: None }).collect();
    let from = ReversePath::Mailbox(Address::new("a", "a.test"));
    let message = Outgoing {
        reverse_path: &from,
        size: 10,
        body_8bit: true,
        smtputf8: false,
        ret: None,
        envid: None,
        require_tls: false,
    };
    let mut s = Session::new(dialect, "us.test");
    let mut fed = 0;
    let bound = 64 + peer.len() * 8;
    for _ in 0..bound {
        let step_result = s.poll();
        let Ok(next) = step_result else { return };
        match next {
            Step::Send(bytes) => check_commands(&bytes),
            Step::Read if fed >= peer.len() => return,
            Step::Read => {
                let end = (fed + step).min(peer.len());
                s.feed(&peer[fed..end]);
                fed = end;
            }
            Step::Event(e) => {
                if !on_event(&mut s, e, (&message, &rcpts, probe, starttls)) {
                    return;
                }
            }
        }
    }
    panic!("the conversation did not end within {bound} steps for {} bytes", peer.len());
}

/// Acts on an event as outbound delivery does; false when the conversation is over.
fn on_event(
    s: &mut Session,
    e: Event,
    (message, rcpts, probe, starttls): (&Outgoing<'_>, &[RcptTo<'_>], bool, bool),
) -> bool {
    let started = match e {
        Event::Ready if starttls && s.capabilities().starttls && !s.tls() => s.starttls(),
        Event::StartTls => s.tls_started(),
        // A refused STARTTLS leaves the session in clear text, as opportunistic TLS goes on.
        Event::Ready | Event::Reset | Event::Refused { stage: Stage::StartTls, .. }
            if s.transactions() < TRANSACTIONS =>
        {
            s.transaction(message, rcpts, probe)
                .expect("a ready session takes a transaction")
                .map_or(Ok(()), |_| s.quit())
        }
        Event::SendContent => s.content_sent(),
        Event::Done(answers) => {
            assert_eq!(answers.len(), rcpts.len(), "one answer per recipient");
            for a in &answers {
                assert!(matches!(a.stage, Stage::Mail | Stage::Rcpt | Stage::Data | Stage::Content), "{a:?}");
                assert!(!probe || a.stage != Stage::Content, "a probe sends no message: {a:?}");
            }
            if s.reusable() { s.reset() } else { s.quit() }
        }
        Event::Closed => return false,
        Event::Ready | Event::Reset | Event::Refused { .. } => s.quit(),
    };
    started.expect("the driver follows the session's events");
    true
}

/// Every line written is a command of ours.
fn check_commands(bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).expect("commands are UTF-8");
    assert!(text.ends_with("\r\n"), "{text:?}");
    for line in text.split_terminator("\r\n") {
        assert!(VERBS.iter().any(|v| line.starts_with(v)), "not a command of ours: {line:?}");
        assert!(!line.chars().any(char::is_control), "a control character in {line:?}");
    }
}
