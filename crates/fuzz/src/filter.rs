//! The `filter` target: one milter conversation ([`postern_milter::conversation`]) with a
//! hostile filter. The first byte picks the message size limit and how the filter's bytes are
//! cut into reads; the rest is everything the filter says.
//!
//! Invariants: the conversation ends (no step loops without reading input); every packet sent
//! is well framed with a command code of the protocol; a refusal is a 4xx or 5xx reply; every
//! end-of-message action kept was negotiated, and every header field it writes is writable.

use std::net::SocketAddr;

use postern_milter::conversation::{Conversation, Facts, Step, Verdict};
use postern_milter::{Response, edit};
use postern_types::{Address, ReversePath};

/// The commands an MTA sends (libmilter's `SMFIC_*` that Postern uses).
const CODES: &[u8] = b"ODCHMRTLNBEAQ";

const MESSAGE: &[u8] = b"Subject: fuzz\r\nFrom: a@a.test\r\nX-Long: a\r\n folded\r\n\r\nbody line\r\n.dot\r\n";

/// The target.
pub fn target(data: &[u8]) {
    let (mode, filter) = crate::split(data);
    let step = [1, 5, 64, 4096][usize::from(mode & 3)];
    let max_message_size = 64 + usize::from(mode >> 2) * 64;
    let from = ReversePath::Mailbox(Address::new("a", "a.test"));
    let to = [Address::new("b", "b.test"), Address::new("c", "b.test")];
    let macros = [("{daemon_name}".to_owned(), "mx".to_owned())];
    let facts = Facts {
        hostname: "mx.b.test",
        client_name: "client.a.test",
        client: SocketAddr::from(([192, 0, 2, 7], 40000)),
        local: None,
        queue_id: "QID",
        helo: "client.a.test",
        tls: Some(("TLSv1.3", "TLS13_AES_128_GCM_SHA256")),
        reverse_path: &from,
        auth: Some(("PLAIN", "alice")),
        recipients: to.iter().collect(),
        message: MESSAGE,
        macros: &macros,
        max_message_size,
    };
    let mut c = Conversation::new(facts);
    let mut fed = 0;
    let bound = 256 + filter.len() * 4;
    for _ in 0..bound {
        match c.poll() {
            Step::Send(bytes) => check_packets(&bytes),
            Step::Read { .. } if fed >= filter.len() => return,
            Step::Read { .. } => {
                let end = (fed + step).min(filter.len());
                c.feed(&filter[fed..end]);
                fed = end;
            }
            Step::Done(verdict) => return check_verdict(&c, verdict),
        }
    }
    panic!("the conversation did not end within {bound} steps for {} bytes", filter.len());
}

fn check_packets(mut bytes: &[u8]) {
    assert!(!bytes.is_empty());
    while !bytes.is_empty() {
        assert!(bytes.len() >= 5, "a short packet: {bytes:?}");
        let len = u32::from_be_bytes(bytes[..4].try_into().expect("four bytes")) as usize;
        assert!(len >= 1 && bytes.len() >= 4 + len, "a packet longer than what was sent");
        assert!(CODES.contains(&bytes[4]), "unknown command {:?}", bytes[4] as char);
        bytes = &bytes[4 + len..];
    }
}

fn check_verdict(c: &Conversation<'_>, verdict: Result<Verdict, postern_milter::conversation::ProtocolError>) {
    match verdict {
        Ok(Verdict::Refused(reply)) => assert!((400..600).contains(&reply.code), "{reply:?}"),
        Ok(Verdict::Done { actions, .. }) => {
            let negotiated = c.negotiated().expect("actions come after the negotiation");
            for a in &actions {
                if let Response::AddHeader(n, v) | Response::InsertHeader(_, n, v) | Response::ChangeHeader(_, n, v) = a
                {
                    assert!(edit::writable(n, v), "{a:?}");
                    assert!(negotiated.actions != 0, "{a:?} without negotiation");
                }
            }
            // The edits apply without panicking, whatever they are.
            let _ = edit::apply(MESSAGE, &actions);
        }
        Ok(Verdict::Accepted | Verdict::Discarded) | Err(_) => {}
    }
}
