use postern_types::{EnhancedStatus, ReversePath};

use super::*;

/// A peer's side of the conversation: the bytes it will send, fed one at a time so that every
/// reply arrives in pieces.
struct Peer {
    replies: std::collections::VecDeque<u8>,
    sent: String,
}

impl Peer {
    fn new(replies: &str) -> Self {
        Self { replies: replies.bytes().collect(), sent: String::new() }
    }

    /// Drives `s` to its next event; what it wrote is appended to `self.sent`.
    fn next(&mut self, s: &mut Session) -> Event {
        loop {
            match s.poll().expect("well-formed replies") {
                Step::Send(bytes) => self.sent.push_str(std::str::from_utf8(&bytes).unwrap()),
                Step::Read => {
                    let byte = self.replies.pop_front().expect("the session wants more replies");
                    s.feed(&[byte]);
                }
                Step::Event(e) => return e,
            }
        }
    }

    fn take_sent(&mut self) -> String {
        std::mem::take(&mut self.sent)
    }
}

fn sender() -> ReversePath {
    ReversePath::Mailbox(Address::new("alice", "a.test"))
}

fn outgoing(reverse_path: &ReversePath) -> Outgoing<'_> {
    Outgoing { reverse_path, size: 10, body_8bit: false, smtputf8: false, ret: None, envid: None, require_tls: false }
}

fn rcpts(addresses: &[Address]) -> Vec<RcptTo<'_>> {
    addresses.iter().map(|a| RcptTo { address: a, notify: None, orcpt: None }).collect()
}

fn addresses(n: usize) -> Vec<Address> {
    (0..n).map(|i| Address::new(format!("r{i}"), "b.test")).collect()
}

fn codes(answers: &[Answer]) -> Vec<(Stage, u16)> {
    answers.iter().map(|a| (a.stage, a.reply.code)).collect()
}

const EHLO_PIPELINING: &str = "220 mx.b.test ESMTP\r\n250-mx.b.test\r\n250-PIPELINING\r\n250 DSN\r\n";

#[test]
fn a_pipelined_transaction_sends_the_envelope_in_one_write() {
    let mut peer = Peer::new(concat!(
        "220 mx.b.test ESMTP\r\n250-mx.b.test\r\n250-PIPELINING\r\n250 DSN\r\n",
        "250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok\r\n354 go\r\n",
        "250 2.0.0 queued as X\r\n",
    ));
    let mut s = Session::new(Dialect::Smtp, "us.test");
    assert_eq!(peer.next(&mut s), Event::Ready);
    assert_eq!(peer.take_sent(), "EHLO us.test\r\n");
    assert!(s.capabilities().pipelining && s.capabilities().dsn);
    assert_eq!(s.greeting().unwrap().lines[0], "mx.b.test ESMTP");
    let (from, to) = (sender(), addresses(3));
    let mut list = rcpts(&to);
    list[0].notify = Some(Notify { success: false, failure: true, delay: false });
    let orcpt = Orcpt::rfc822("r0@b.test");
    list[0].orcpt = Some(&orcpt);
    s.transaction(&outgoing(&from), &list, false).unwrap().unwrap();
    let Step::Send(group) = s.poll().unwrap() else { panic!("the envelope first") };
    assert_eq!(
        String::from_utf8(group).unwrap(),
        "MAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test> NOTIFY=FAILURE ORCPT=rfc822;r0@b.test\r\n\
         RCPT TO:<r1@b.test>\r\nRCPT TO:<r2@b.test>\r\nDATA\r\n"
    );
    assert_eq!(peer.next(&mut s), Event::SendContent);
    s.content_sent().unwrap();
    let Event::Done(answers) = peer.next(&mut s) else { panic!("the transaction's end") };
    assert_eq!(codes(&answers), [(Stage::Content, 250), (Stage::Rcpt, 550), (Stage::Content, 250)]);
    assert_eq!(answers[1].reply.status, Some(EnhancedStatus(5, 1, 1)));
    assert!(s.reusable());
    assert_eq!(s.transactions(), 1);
    s.reset().unwrap();
    let mut peer = Peer::new("250 ok\r\n221 bye\r\n");
    assert_eq!(peer.next(&mut s), Event::Reset);
    s.quit().unwrap();
    assert_eq!(peer.next(&mut s), Event::Closed);
    assert_eq!(peer.take_sent(), "RSET\r\nQUIT\r\n");
    assert!(!s.reusable());
}

#[test]
fn without_pipelining_commands_go_one_at_a_time_and_no_data_without_a_recipient() {
    let mut peer = Peer::new("220 mx\r\n250 mx\r\n250 ok\r\n550 no\r\n550 no\r\n");
    let mut s = Session::new(Dialect::Smtp, "us.test");
    assert_eq!(peer.next(&mut s), Event::Ready);
    let (from, to) = (sender(), addresses(2));
    s.transaction(&outgoing(&from), &rcpts(&to), false).unwrap().unwrap();
    let Event::Done(answers) = peer.next(&mut s) else { panic!() };
    assert_eq!(codes(&answers), [(Stage::Rcpt, 550), (Stage::Rcpt, 550)]);
    assert_eq!(
        peer.take_sent(),
        "EHLO us.test\r\nMAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test>\r\nRCPT TO:<r1@b.test>\r\n"
    );
    assert!(s.reusable());
}

#[test]
fn a_refused_mail_decides_every_recipient_and_a_refused_data_the_accepted_ones() {
    // Lockstep: nothing after the refused MAIL.
    let mut peer = Peer::new("220 mx\r\n250 mx\r\n451 4.3.0 try later\r\n");
    let mut s = Session::new(Dialect::Smtp, "us.test");
    peer.next(&mut s);
    let (from, to) = (sender(), addresses(2));
    s.transaction(&outgoing(&from), &rcpts(&to), false).unwrap().unwrap();
    let Event::Done(answers) = peer.next(&mut s) else { panic!() };
    assert_eq!(codes(&answers), [(Stage::Mail, 451), (Stage::Mail, 451)]);
    assert!(!peer.take_sent().contains("RCPT"));
    // Pipelined: every reply is read; DATA's refusal decides the accepted recipient.
    let mut peer = Peer::new(&format!("{EHLO_PIPELINING}250 ok\r\n550 no\r\n250 ok\r\n554 5.5.1 no valid\r\n"));
    let mut s = Session::new(Dialect::Smtp, "us.test");
    peer.next(&mut s);
    s.transaction(&outgoing(&from), &rcpts(&to), false).unwrap().unwrap();
    let Event::Done(answers) = peer.next(&mut s) else { panic!() };
    assert_eq!(codes(&answers), [(Stage::Rcpt, 550), (Stage::Data, 554)]);
    assert!(s.reusable());
}

#[test]
fn a_peer_inviting_a_message_with_no_recipient_is_not_reused() {
    let mut peer = Peer::new(&format!("{EHLO_PIPELINING}250 ok\r\n550 no\r\n354 go ahead anyway\r\n"));
    let mut s = Session::new(Dialect::Smtp, "us.test");
    peer.next(&mut s);
    let (from, to) = (sender(), addresses(1));
    s.transaction(&outgoing(&from), &rcpts(&to), false).unwrap().unwrap();
    let Event::Done(answers) = peer.next(&mut s) else { panic!() };
    assert_eq!(codes(&answers), [(Stage::Rcpt, 550)]);
    assert!(!s.reusable());
}

#[test]
fn ehlo_refused_falls_back_to_helo_and_other_refusals_end_the_opening() {
    let mut peer = Peer::new("220 old\r\n502 what\r\n250 old\r\n");
    let mut s = Session::new(Dialect::Smtp, "us.test");
    assert_eq!(peer.next(&mut s), Event::Ready);
    assert_eq!(peer.take_sent(), "EHLO us.test\r\nHELO us.test\r\n");
    assert_eq!(s.capabilities(), &Capabilities::default());
    for (script, stage) in [
        ("554 go away\r\n", Stage::Greeting),
        ("220 mx\r\n421 busy\r\n", Stage::Ehlo),
        ("220 mx\r\n502 x\r\n501 y\r\n", Stage::Helo),
    ] {
        let mut peer = Peer::new(script);
        let mut s = Session::new(Dialect::Smtp, "us.test");
        let Event::Refused { stage: refused, .. } = peer.next(&mut s) else { panic!("{script}") };
        assert_eq!(refused, stage, "{script}");
        assert!(!s.reusable());
        assert!(s.transaction(&outgoing(&sender()), &rcpts(&addresses(1)), false).is_err());
    }
}

#[test]
fn starttls_forgets_the_capabilities_and_says_ehlo_again() {
    let mut peer = Peer::new("220 mx\r\n250-mx\r\n250-STARTTLS\r\n250 PIPELINING\r\n220 go\r\n");
    let mut s = Session::new(Dialect::Smtp, "us.test");
    peer.next(&mut s);
    assert!(s.capabilities().starttls);
    s.starttls().unwrap();
    assert_eq!(peer.next(&mut s), Event::StartTls);
    assert!(s.reset().is_err(), "nothing but the handshake now");
    s.tls_started().unwrap();
    assert!(s.tls());
    let mut peer2 = Peer::new("250-mx\r\n250 SIZE 100\r\n");
    assert_eq!(peer2.next(&mut s), Event::Ready);
    assert_eq!(peer.take_sent() + &peer2.take_sent(), "EHLO us.test\r\nSTARTTLS\r\nEHLO us.test\r\n");
    assert!(!s.capabilities().starttls && !s.capabilities().pipelining);
    assert_eq!(s.capabilities().size, Some(100));
    assert!(s.starttls().is_err(), "TLS once");
    // Too big for the peer: nothing is sent.
    let from = sender();
    let big = Outgoing { size: 101, ..outgoing(&from) };
    assert_eq!(s.transaction(&big, &rcpts(&addresses(1)), false), Ok(Err(Unsendable::TooBig { limit: 100 })));
    assert!(s.reusable());
}

#[test]
fn a_refused_starttls_leaves_the_session_in_clear_text() {
    let mut peer = Peer::new("220 mx\r\n250-mx\r\n250 STARTTLS\r\n454 4.7.0 TLS not available\r\n");
    let mut s = Session::new(Dialect::Smtp, "us.test");
    peer.next(&mut s);
    s.starttls().unwrap();
    let Event::Refused { stage: Stage::StartTls, reply } = peer.next(&mut s) else { panic!() };
    assert_eq!(reply.code, 454);
    assert!(s.reusable() && !s.tls());
}

#[test]
fn lmtp_gives_one_reply_per_accepted_recipient() {
    let mut peer = Peer::new(concat!(
        "220 dovecot LMTP\r\n250-dovecot\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
        "250 ok\r\n250 ok\r\n550 no\r\n250 ok\r\n354 go\r\n",
        "250 2.0.0 r0 saved\r\n452 4.2.2 r2 over quota\r\n",
    ));
    let mut s = Session::new(Dialect::Lmtp, "us.test");
    assert_eq!(peer.next(&mut s), Event::Ready);
    assert!(s.starttls().is_err());
    let (from, to) = (sender(), addresses(3));
    s.transaction(&outgoing(&from), &rcpts(&to), false).unwrap().unwrap();
    assert_eq!(peer.next(&mut s), Event::SendContent);
    s.content_sent().unwrap();
    let Event::Done(answers) = peer.next(&mut s) else { panic!() };
    assert_eq!(codes(&answers), [(Stage::Content, 250), (Stage::Rcpt, 550), (Stage::Content, 452)]);
    assert!(peer.take_sent().starts_with("LHLO us.test\r\n"));
}

#[test]
fn an_address_probe_stops_after_the_recipients() {
    let mut peer = Peer::new(&format!("{EHLO_PIPELINING}250 ok\r\n250 ok\r\n550 5.7.1 relaying denied\r\n"));
    let mut s = Session::new(Dialect::Smtp, "us.test");
    peer.next(&mut s);
    let (from, to) = (sender(), addresses(2));
    s.transaction(&outgoing(&from), &rcpts(&to), true).unwrap().unwrap();
    let Event::Done(answers) = peer.next(&mut s) else { panic!() };
    assert_eq!(codes(&answers), [(Stage::Rcpt, 250), (Stage::Rcpt, 550)]);
    assert!(!peer.take_sent().contains("DATA"));
}

#[test]
fn a_421_forbids_reuse_and_garbage_ends_the_conversation() {
    let mut peer = Peer::new(&format!("{EHLO_PIPELINING}421 4.3.2 shutting down\r\n"));
    let mut s = Session::new(Dialect::Smtp, "us.test");
    peer.next(&mut s);
    s.reset().unwrap();
    let Event::Refused { stage: Stage::Rset, .. } = peer.next(&mut s) else { panic!() };
    assert!(!s.reusable());
    let mut s = Session::new(Dialect::Smtp, "us.test");
    s.feed(b"hello there\r\n");
    assert!(matches!(s.poll(), Err(ClientError::Malformed(_))));
}

#[test]
fn calls_out_of_order_are_refused() {
    let mut s = Session::new(Dialect::Smtp, "us.test");
    assert!(s.reset().is_err());
    assert!(s.content_sent().is_err());
    assert!(s.tls_started().is_err());
    assert!(s.transaction(&outgoing(&sender()), &[], false).is_err());
}
