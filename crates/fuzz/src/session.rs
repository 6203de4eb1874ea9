//! The server [`Session`] driven in memory: bytes in (in pieces), every [`Step`] answered as the
//! daemon would (recipients through the real `resolve_recipient`, one known password), and what
//! happened recorded for the invariants checked by the fuzz target and the property tests.

use std::net::IpAddr;

use postern_config::Tables;
use postern_policy::{RecipientPolicy, resolve_recipient};
use postern_proto::{AuthOutcome, Session, SessionParams, Step, TlsInfo, Transaction};
use postern_types::{Destination, QueueId, Verdict};

/// The one local domain of [`run`]'s policy; `bob` is its one mailbox.
pub const LOCAL_DOMAIN: &str = "example.test";
/// The password `bob` authenticates with.
pub const PASSWORD: &[u8] = b"bob-secret";

/// What happened in one session.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Everything the server wrote, in order; `tls_at` is its length when TLS started.
    pub output: Vec<u8>,
    /// The output length when the TLS handshake happened, if it did.
    pub tls_at: Option<usize>,
    /// Committed transactions with the bytes of input consumed when each was committed.
    pub committed: Vec<(Transaction, usize)>,
    /// All the input, as fed.
    pub input: Vec<u8>,
}

/// Session parameters of an `mx` listener offering STARTTLS and AUTH, for a client at `ip`.
pub fn params(ip: IpAddr) -> SessionParams {
    SessionParams {
        hostname: "mx.example.test".into(),
        client_ip: ip,
        postmaster_domain: LOCAL_DOMAIN.into(),
        max_message_size: 4096,
        max_recipients: 10,
        max_line_length: 512,
        max_errors: 1000,
        starttls: true,
        implicit_tls: None,
        auth: true,
        require_auth: false,
        screen: false,
        check_sender: false,
        refuse: None,
        qualify_bare_names: None,
    }
}

/// Runs a session for a client at `ip` over `pieces` of input (as separate reads).
pub fn run(ip: IpAddr, pieces: &[&[u8]]) -> Outcome {
    let mut tables = Tables::default();
    tables.users.insert("bob".into(), None);
    let local = [LOCAL_DOMAIN.to_owned()];
    let trusted = ["127.0.0.0/8".parse().expect("a network")];
    let policy =
        RecipientPolicy { local_domains: &local, trusted_networks: &trusted, separators: "+", tables: &tables };
    let mut session = Session::new(params(ip));
    let mut out = Outcome::default();
    let mut input = Vec::new();
    let mut next = pieces.iter();
    let mut fed = 0;
    loop {
        match session.advance(&mut input) {
            Step::NeedInput => {
                out.output.extend(session.take_output());
                let Some(piece) = next.next() else { break };
                input.extend_from_slice(piece);
                out.input.extend_from_slice(piece);
                fed += piece.len();
            }
            Step::StartTls => {
                out.output.extend(session.take_output());
                out.tls_at = Some(out.output.len());
                // The session discarded what followed STARTTLS in the same read.
                session.tls_started(TlsInfo { version: "TLSv1.3".into(), cipher: "TLS13_AES_128_GCM_SHA256".into() });
            }
            Step::Authenticate { login, password } => {
                let ok = login == "bob" && password == PASSWORD;
                session.auth_result(if ok { AuthOutcome::Success } else { AuthOutcome::Invalid });
            }
            Step::CheckSender(_) => session.sender_verdict(Verdict::Ok(())),
            Step::CheckClient(_) => session.client_verdict(Verdict::Ok(())),
            Step::CheckRecipient(rcpt) => {
                let authenticated = session.authenticated().is_some();
                session.recipient_verdict(resolve_recipient(&policy, ip, authenticated, &rcpt));
            }
            Step::Commit(tx) => {
                out.committed.push((*tx, fed - input.len()));
                session.commit_result(Ok(QueueId::generate()));
            }
            Step::Close => {
                out.output.extend(session.take_output());
                break;
            }
        }
    }
    out
}

impl Outcome {
    /// The server's output before TLS started (all of it without TLS).
    pub fn clear_text_output(&self) -> &[u8] {
        &self.output[..self.tls_at.unwrap_or(self.output.len())]
    }

    /// Checks the invariants every session keeps, whatever the client sent:
    /// - every reply line is a code and text, without a bare CR or LF;
    /// - AUTH is never offered, nor accepted, before TLS;
    /// - a message committed after DATA was ended by CRLF.CRLF (RFC 5321 §4.1.1.4), one after
    ///   BDAT by `BDAT n LAST` (RFC 3030);
    /// - an untrusted client that has not authenticated never gets a remote recipient (no open
    ///   relay).
    ///
    /// # Panics
    /// When one is broken, naming it.
    pub fn check(&self, ip: IpAddr) {
        for line in self.output.split_inclusive(|b| *b == b'\n') {
            assert!(line.len() >= 6 && line.ends_with(b"\r\n"), "malformed reply line {line:?}");
            assert!(line[..3].iter().all(u8::is_ascii_digit) && matches!(line[3], b' ' | b'-'), "{line:?}");
            assert!(!line[..line.len() - 2].contains(&b'\r'), "bare CR in reply {line:?}");
        }
        let clear = String::from_utf8_lossy(self.clear_text_output());
        assert!(
            !clear.lines().any(|l| l.starts_with("250-AUTH") || l.starts_with("250 AUTH")),
            "AUTH offered in clear"
        );
        assert!(!clear.lines().any(|l| l.starts_with("235")), "AUTH accepted in clear");
        let trusted = ip.is_loopback();
        for (tx, consumed) in &self.committed {
            let before = &self.input[..*consumed];
            let by_data = before.ends_with(b"\r\n.\r\n");
            let by_bdat = tx.message.is_empty() || contains_bdat_last(before);
            assert!(by_data || by_bdat, "a message was committed without CRLF.CRLF or BDAT LAST: {before:?}");
            if !trusted && tx.auth.is_none() {
                let remote =
                    tx.recipients.iter().flat_map(|r| &r.destinations).any(|d| matches!(d, Destination::Remote(_)));
                assert!(!remote, "relayed for an untrusted client: {:?}", tx.recipients);
            }
        }
    }
}

/// Whether `input` holds a `BDAT n LAST` command line.
fn contains_bdat_last(input: &[u8]) -> bool {
    input.split(|b| *b == b'\n').any(|l| {
        let l = String::from_utf8_lossy(l).to_ascii_uppercase();
        l.starts_with("BDAT ") && l.trim_end().ends_with(" LAST")
    })
}

/// The fuzz target: the first byte picks the client (untrusted or loopback) and the size of
/// the reads; the rest is what the client sends.
pub fn target(data: &[u8]) {
    let (mode, input) = match data.split_first() {
        Some((b, rest)) => (*b, rest),
        None => return,
    };
    let ip: IpAddr = if mode & 1 == 0 { [192, 0, 2, 1].into() } else { [127, 0, 0, 1].into() };
    let size = usize::from(mode >> 1) + 1;
    let pieces: Vec<&[u8]> = input.chunks(size).collect();
    run(ip, &pieces).check(ip);
}
