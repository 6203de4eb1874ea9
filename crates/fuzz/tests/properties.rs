//! Property tests (proptest) on the server state machine, driven through the same in-memory
//! harness as the `session` fuzz target: whatever the command sequence, how it is split into
//! reads, and whatever the message bytes (bare CR and LF, lone dots, smuggling attempts),
//! - no message is accepted that was not ended by CRLF.CRLF (or `BDAT n LAST`);
//! - nothing is relayed for an untrusted client that has not authenticated;
//! - AUTH is neither offered nor accepted before TLS.

use std::net::IpAddr;

use postern_fuzz::session::{Outcome, run};
use proptest::prelude::*;

/// One client action: a command line, or raw bytes (message content, garbage).
fn action() -> impl Strategy<Value = Vec<u8>> {
    let auth = b64(b"\0bob\0bob-secret");
    let lines = prop::sample::select(vec![
        "EHLO client.test".to_owned(),
        "HELO client.test".to_owned(),
        "MAIL FROM:<a@far.test>".to_owned(),
        "MAIL FROM:<bob@example.test>".to_owned(),
        "MAIL FROM:<>".to_owned(),
        "RCPT TO:<bob@example.test>".to_owned(),
        "RCPT TO:<x@elsewhere.test>".to_owned(),
        "RCPT TO:<bob@elsewhere.test>".to_owned(),
        "RCPT TO:<postmaster>".to_owned(),
        "DATA".to_owned(),
        "BDAT 4".to_owned(),
        "BDAT 3 LAST".to_owned(),
        "RSET".to_owned(),
        "NOOP".to_owned(),
        "STARTTLS".to_owned(),
        format!("AUTH PLAIN {auth}"),
        "AUTH LOGIN".to_owned(),
        "QUIT".to_owned(),
    ])
    .prop_map(|l| format!("{l}\r\n").into_bytes());
    let content = prop::collection::vec(
        prop::sample::select(vec![
            b"text".to_vec(),
            b"\r\n".to_vec(),
            b"\n".to_vec(),
            b"\r".to_vec(),
            b".".to_vec(),
            b"\r\n.\r\n".to_vec(),
            b"\n.\n".to_vec(),
            b"\r.\r".to_vec(),
            b"\n.\r\n".to_vec(),
            b"\r\n.\n".to_vec(),
            b"MAIL FROM:<smuggled@far.test>".to_vec(),
        ]),
        1..12,
    )
    .prop_map(|parts| parts.concat());
    prop_oneof![3 => lines, 1 => content]
}

/// The standard base64 of `data` (for the AUTH PLAIN line).
fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Splits the concatenated `actions` at the `cuts` (fractions of the length) into reads.
fn session(ip: IpAddr, actions: &[Vec<u8>], cuts: &[usize]) -> Outcome {
    let input = actions.concat();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.extend([0, input.len()]);
    points.sort_unstable();
    points.dedup();
    let pieces: Vec<&[u8]> = points.windows(2).map(|w| &input[w[0]..w[1]]).collect();
    run(ip, &pieces)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn an_untrusted_client_keeps_every_invariant(
        actions in prop::collection::vec(action(), 1..25),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let ip: IpAddr = [192, 0, 2, 1].into();
        session(ip, &actions, &cuts).check(ip);
    }

    #[test]
    fn a_trusted_client_keeps_the_framing_invariants(
        actions in prop::collection::vec(action(), 1..25),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let ip: IpAddr = [127, 0, 0, 1].into();
        session(ip, &actions, &cuts).check(ip);
    }
}

/// The harness can see what the properties forbid: a relay for an authenticated client is
/// committed (so the relay property is not vacuous), and so is a message ended by CRLF.CRLF.
#[test]
fn the_properties_are_not_vacuous() {
    let ip: IpAddr = [192, 0, 2, 1].into();
    let auth = b64(b"\0bob\0bob-secret");
    let script = format!(
        "EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\nAUTH PLAIN {auth}\r\nMAIL FROM:<bob@example.test>\r\n\
         RCPT TO:<x@elsewhere.test>\r\nDATA\r\nhello\r\n.\r\n"
    );
    // STARTTLS discards what followed it in the same read, so the script goes line by line.
    let lines: Vec<&[u8]> = script.split_inclusive('\n').map(str::as_bytes).collect();
    let out = run(ip, &lines);
    out.check(ip);
    assert_eq!(out.committed.len(), 1, "{}", String::from_utf8_lossy(&out.output));
    assert!(out.tls_at.is_some());
    let after_tls = String::from_utf8_lossy(&out.output[out.tls_at.unwrap()..]).into_owned();
    assert!(after_tls.contains("250-AUTH PLAIN LOGIN") || after_tls.contains("250 AUTH"), "{after_tls}");
    // Without AUTH the same recipient is refused.
    let script = "EHLO c.test\r\nMAIL FROM:<a@far.test>\r\nRCPT TO:<x@elsewhere.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nhi\r\n.\r\n";
    let out = run(ip, &[script.as_bytes()]);
    out.check(ip);
    assert_eq!(out.committed.len(), 1);
    assert!(String::from_utf8_lossy(&out.output).contains("550 5.7.1"), "relay refused");
}
