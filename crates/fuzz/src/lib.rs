//! Fuzz targets: one function per parser that takes arbitrary bytes, runs the parser, and
//! panics only when an invariant of that parser is broken (a crash is a bug). The AFL++ harness
//! (`fuzz/`, run by `just fuzz TARGET [SECONDS]`) calls them; `tests/regressions.rs` replays the
//! committed seeds and every crash found under `fuzz/regressions/TARGET/`.
//!
//! The targets ([`TARGETS`]): the command parser, the server session (command parser, DATA and
//! BDAT decoders, state machine), the DATA decoder alone, the address parser, the client's
//! reply parser, the client conversation (SMTP and LMTP) fed by a hostile peer, the envelope
//! reader, the configuration, the table files, the `[policy]`
//! network lists and DNSBL zone specs, the milter response decoder, one milter conversation with a hostile filter, the SRS decoder, and the
//! MTA-STS policy and record parsers.

pub mod client;
pub mod filter;
pub mod session;

use std::path::Path;

use postern_config::{TableKind, Tables};
use postern_proto::Command;
use postern_proto::data::DataDecoder;
use postern_types::Address;

/// A fuzz target: arbitrary bytes in, a panic only for a broken invariant.
pub type Target = fn(&[u8]);

/// Every target by name, as `just fuzz` and the regression test know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("command", command),
    ("session", session::target),
    ("data", data),
    ("address", address),
    ("reply", reply),
    ("client", client::target),
    ("envelope", envelope),
    ("config", config),
    ("tables", tables),
    ("policy", policy),
    ("milter", milter),
    ("filter", filter::target),
    ("srs", srs),
    ("sts", sts),
];

/// The target named `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Splits `data` into a control byte and the rest (for targets that choose a mode).
fn split(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((b, rest)) => (*b, rest),
        None => (0, data),
    }
}

/// `Command::parse` on one line: a refusal never echoes a control character.
pub fn command(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else { return };
    if let Err(reply) = Command::parse(line) {
        assert!((500..600).contains(&reply.code), "{reply:?}");
        assert!(!reply.lines.iter().any(|l| postern_proto::command::has_control(l)), "{reply:?}");
    }
}

/// `DataDecoder` fed in pieces: it never consumes more than it is given, stops at the first
/// CRLF.CRLF, and what it returns is within the size limit.
pub fn data(data: &[u8]) {
    let (mode, input) = split(data);
    let max = 64 + usize::from(mode) * 16;
    let step = usize::from(mode % 7) + 1;
    let mut decoder = DataDecoder::new(max);
    let mut fed = 0;
    while fed < input.len() {
        let given = &input[fed..(fed + step).min(input.len())];
        let (n, done) = decoder.feed(given);
        assert!(n <= given.len());
        fed += n;
        if done {
            assert!(input[..fed].ends_with(b"\r\n.\r\n") || input[..fed] == *b".\r\n", "ended early");
            if let Ok(message) = decoder.finish() {
                assert!(message.len() <= max);
            }
            return;
        }
        assert_eq!(n, given.len(), "an unfinished decoder consumes all it is given");
    }
}

/// `Address::parse`: what it accepts prints as an address that parses back to itself.
pub fn address(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(a) = Address::parse(text) {
        let printed = a.to_string();
        let again = Address::parse(&printed).unwrap_or_else(|e| panic!("{printed:?} does not parse back: {e}"));
        assert_eq!(again.to_string(), printed);
    }
}

/// The client's `ReplyParser`, fed in pieces until it errs or runs dry: every reply it returns
/// has a code of a real class (2xx to 5xx).
pub fn reply(data: &[u8]) {
    let (mode, input) = split(data);
    let mut parser = postern_proto::client::ReplyParser::default();
    for piece in input.chunks(usize::from(mode % 13) + 1) {
        parser.feed(piece);
        loop {
            match parser.next_reply() {
                Ok(Some(r)) => {
                    assert!((200..600).contains(&r.code), "{r:?}");
                    // A remote server's text reaches logs and DSNs: no control but HT in it.
                    assert!(r.lines.iter().all(|l| !l.chars().any(|c| c.is_control() && c != '\t')), "{r:?}");
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// `Envelope::from_text`: an envelope it accepts writes out to text that reads back the same.
pub fn envelope(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(env) = postern_spool::Envelope::from_text(text) {
        let out = env.to_text();
        let again = postern_spool::Envelope::from_text(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
        assert_eq!(again.to_text(), out);
    }
}

/// The configuration file (TOML, then validation), reading no file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = postern_config::parse_str(text, Path::new("/fuzz/postern.toml"), Path::new("/fuzz"));
}

/// Each table file; the first byte chooses the table.
pub fn tables(data: &[u8]) {
    const KINDS: [TableKind; 7] = [
        TableKind::Users,
        TableKind::Aliases,
        TableKind::Virtual,
        TableKind::Routes,
        TableKind::SenderRoutes,
        TableKind::Senders,
        TableKind::TlsPolicy,
    ];
    let (mode, input) = split(data);
    let Ok(text) = std::str::from_utf8(input) else { return };
    let mut t = Tables::default();
    let mut errors = Vec::new();
    t.parse_into(KINDS[usize::from(mode) % KINDS.len()], Path::new("/fuzz/table"), text, &mut errors);
    for e in &errors {
        let _ = e.to_string();
    }
}

/// The `[policy]` network lists and the DNSBL/RHSBL zone specs.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(list) = postern_policy::screen::IpList::parse(text) {
        let _ = list.contains(std::net::IpAddr::from([127, 0, 0, 2]));
    }
    for line in text.lines() {
        if let Ok(spec) = postern_config::schema::ZoneSpec::parse(line) {
            assert!(!spec.zone.is_empty() && !spec.zone.contains(char::is_whitespace), "{spec:?}");
        }
    }
}

/// The milter response decoder, then option negotiation on what it decodes.
pub fn milter(data: &[u8]) {
    let (mode, input) = split(data);
    let mut decoder = postern_milter::Decoder::default();
    for piece in input.chunks(usize::from(mode % 17) + 1) {
        decoder.feed(piece);
        loop {
            match decoder.next_response() {
                Ok(Some(r)) => {
                    let _ = postern_milter::Negotiated::from_reply(&r, 0x1FF, 0x1F_FFFF);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// The MTA-STS policy file and TXT record parsers: a policy they accept matches none but its
/// own patterns' forms, and its `max_age` is within the RFC 8461 bound.
pub fn sts(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(p) = postern_policy::sts::Policy::parse(text) {
        assert!(p.max_age <= postern_policy::sts::MAX_AGE_LIMIT);
        for mx in &p.mx {
            let host = mx.strip_prefix("*.").map_or_else(|| mx.clone(), |parent| format!("x.{parent}"));
            assert!(p.matches(&host) || host.is_empty() || mx.is_empty(), "{mx:?} does not match {host:?}");
        }
    }
    let _ = postern_policy::sts::Record::find(&text.lines().map(str::to_owned).collect::<Vec<_>>());
}

/// The SRS decoder (`SRS0=`/`SRS1=` addresses in our domain), with a fixed secret.
pub fn srs(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(address) = Address::parse(text) else { return };
    let srs = postern_policy::srs::Srs {
        domain: "fwd.example.test".into(),
        secrets: vec![b"fuzz-secret".to_vec()],
        max_age_days: 21,
        // The shortest hash, so that the fuzzer can reach the addresses that verify.
        hash_len: 4,
    };
    let today = 20_000;
    if let Ok(original) = srs.reverse(&address, today) {
        // What SRS forwards, it reverses to the same address.
        let forwarded = srs.forward(&original, today);
        assert_eq!(srs.reverse(&forwarded, today).map(|a| a.to_string()), Ok(original.to_string()));
    }
}
