use std::net::SocketAddr;

use postern_types::{Address, EnhancedStatus, ReversePath};

use super::*;

/// A filter's packet.
fn packet(code: u8, data: &[u8]) -> Vec<u8> {
    let mut p = u32::try_from(data.len() + 1).unwrap().to_be_bytes().to_vec();
    p.push(code);
    p.extend_from_slice(data);
    p
}

/// The filter's answer to our negotiation: version 6, `actions`, `steps`.
fn optneg(actions: u32, steps: u32) -> Vec<u8> {
    packet(b'O', &[6u32.to_be_bytes(), actions.to_be_bytes(), steps.to_be_bytes()].concat())
}

/// The command letters of the packets in `bytes` (macro packets as `D` and their command).
fn letters(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut rest = bytes;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        out.push(rest[4] as char);
        if rest[4] == b'D' {
            out.push(rest[5] as char);
        }
        rest = &rest[4 + len..];
    }
    out
}

struct Fixture {
    from: ReversePath,
    to: Vec<Address>,
    macros: Vec<(String, String)>,
}

impl Fixture {
    fn new() -> Self {
        Self {
            from: ReversePath::Mailbox(Address::new("alice", "a.test")),
            to: vec![Address::new("bob", "b.test"), Address::new("carol", "b.test")],
            macros: vec![("{daemon_name}".into(), "mx".into())],
        }
    }

    fn facts(&self, message: &'static [u8]) -> Facts<'_> {
        Facts {
            hostname: "mx.b.test",
            client_name: "client.a.test",
            client: SocketAddr::from(([192, 0, 2, 7], 40000)),
            local: None,
            queue_id: "QID1",
            helo: "client.a.test",
            tls: None,
            reverse_path: &self.from,
            auth: None,
            recipients: self.to.iter().collect(),
            message,
            macros: &self.macros,
            max_message_size: 1000,
        }
    }
}

const MESSAGE: &[u8] = b"Subject: hi\r\nFrom: a@a.test\r\n\r\nbody\r\n";

/// Runs `c` against a filter that answers each read with the next of `answers`; returns what
/// was sent and the verdict.
fn run(c: &mut Conversation<'_>, answers: &[Vec<u8>]) -> (String, Result<Verdict, ProtocolError>) {
    let mut sent = Vec::new();
    let mut answers = answers.iter();
    loop {
        match c.poll() {
            Step::Send(b) => sent.extend(b),
            Step::Read { .. } => c.feed(answers.next().expect("the conversation wants another answer")),
            Step::Done(v) => return (letters(&sent), v),
        }
    }
}

#[test]
fn declined_and_unanswered_steps_are_left_out() {
    let f = Fixture::new();
    let mut c = Conversation::new(f.facts(MESSAGE));
    let steps = step::NO_CONNECT | step::NO_HELO | step::NR_RCPT | step::NO_BODY | step::NR_HEADER;
    let continues = || packet(b'c', b"");
    let eom = [packet(b'h', b"X-Spam\0no\0"), packet(b'a', b"")].concat();
    let (sent, verdict) =
        run(&mut c, &[optneg(action::ADD_HEADERS, steps), continues(), continues(), continues(), eom]);
    // OptNeg; MAIL (macros, answered); RCPTs unanswered; DATA; headers unanswered; EOH; EOM.
    assert_eq!(sent, "ODMMDRRDRRTLLNDEEQ");
    let Ok(Verdict::Done { actions, quarantine: None, verdict: "accept" }) = verdict else { panic!("{verdict:?}") };
    assert_eq!(actions, [Response::AddHeader("X-Spam".into(), "no".into())]);
    assert!(c.negotiated().unwrap().skips(step::NO_BODY));
}

#[test]
fn a_refusal_at_a_step_ends_the_conversation_with_quit() {
    let f = Fixture::new();
    let mut c = Conversation::new(f.facts(MESSAGE));
    let all = step::NO_CONNECT | step::NO_HELO;
    let (sent, verdict) =
        run(&mut c, &[optneg(0, all), packet(b'c', b""), packet(b'y', b"554 5.7.1 bob does not want it\0")]);
    assert_eq!(sent, "ODMMDRRQ");
    let Ok(Verdict::Refused(reply)) = verdict else { panic!("{verdict:?}") };
    assert_eq!((reply.code, reply.status), (554, Some(EnhancedStatus(5, 7, 1))));
    assert_eq!(reply.lines, ["bob does not want it"]);
}

#[test]
fn actions_not_negotiated_unwritable_fields_and_growth_are_refused() {
    let f = Fixture::new();
    let skip_all = step::NO_CONNECT | step::NO_HELO | step::NO_MAIL | step::NO_RCPT | step::NO_DATA;
    let skip_all = skip_all | step::NO_HEADERS | step::NO_EOH | step::NO_BODY;
    let cases: [(u32, Vec<u8>); 3] = [
        (action::ADD_HEADERS, packet(b'-', b"<bob@b.test>\0")),
        (action::ADD_HEADERS, packet(b'h', b"Bad Name\0v\0")),
        (action::CHANGE_BODY, packet(b'b', &[b'x'; 2000])),
    ];
    let mut verdicts = Vec::new();
    for (actions, answer) in cases {
        let mut c = Conversation::new(f.facts(MESSAGE));
        let (sent, verdict) = run(&mut c, &[optneg(actions, skip_all), answer]);
        verdicts.push((sent, verdict));
    }
    assert!(matches!(&verdicts[0], (s, Err(ProtocolError::NotNegotiated(_))) if s == "ODEE"), "{:?}", verdicts[0]);
    assert!(matches!(&verdicts[1], (s, Err(ProtocolError::Unwritable(_))) if s == "ODEE"), "{:?}", verdicts[1]);
    let (sent, Ok(Verdict::Refused(r))) = &verdicts[2] else { panic!("{:?}", verdicts[2]) };
    assert_eq!((sent.as_str(), r.code), ("ODEEQ", 552));
}

#[test]
fn progress_and_a_quarantine_are_not_verdicts_and_garbage_breaks_the_conversation() {
    let f = Fixture::new();
    let skip_all = step::NO_CONNECT | step::NO_HELO | step::NO_MAIL | step::NO_RCPT | step::NO_DATA;
    let skip_all = skip_all | step::NO_HEADERS | step::NO_EOH | step::NO_BODY;
    let mut c = Conversation::new(f.facts(MESSAGE));
    let eom = [packet(b'p', b""), packet(b'q', b"looks odd\0"), packet(b'c', b"")].concat();
    let (_, verdict) = run(&mut c, &[optneg(action::QUARANTINE, skip_all), eom]);
    assert_eq!(
        verdict,
        Ok(Verdict::Done { actions: vec![], quarantine: Some("looks odd".into()), verdict: "continue" })
    );
    let mut c = Conversation::new(f.facts(MESSAGE));
    let (_, verdict) = run(&mut c, &[packet(b'Z', b"")]);
    assert!(matches!(verdict, Err(ProtocolError::Decode(_))), "{verdict:?}");
    let mut c = Conversation::new(f.facts(MESSAGE));
    let (_, verdict) = run(&mut c, &[packet(b'c', b"")]);
    assert!(verdict.is_err(), "no negotiation: {verdict:?}");
}

#[test]
fn the_connect_step_carries_postfix_macros_and_the_configured_ones() {
    let f = Fixture::new();
    let m = connect_macros(&f.facts(MESSAGE));
    let get = |k: &str| m.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("_"), Some("client.a.test [192.0.2.7]"));
    assert_eq!(get("{client_port}"), Some("40000"));
    assert_eq!(m.last(), Some(&("{daemon_name}".to_owned(), "mx".to_owned())));
}

#[test]
fn multi_line_filter_replies_become_one_reply() {
    let r = reply_of("550-5.7.1 one\r\n550 5.7.1 two");
    assert_eq!((r.code, r.lines.clone()), (550, vec!["one".to_owned(), "two".to_owned()]));
    assert_eq!(reply_of("hello").code, 550);
    assert_eq!(reply_of("451 try later").status, Some(EnhancedStatus(4, 7, 1)));
}
