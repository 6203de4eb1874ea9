//! Session unit tests: the state machine driven with byte strings, no sockets.

use super::*;
use postern_types::{Address, Destination};

fn params() -> SessionParams {
    SessionParams {
        hostname: "mx.test".into(),
        client_ip: "127.0.0.1".parse().unwrap(),
        postmaster_domain: "example.test".into(),
        max_message_size: 100,
        max_recipients: 2,
        max_line_length: 128,
        max_errors: 50,
        starttls: false,
        implicit_tls: None,
        auth: false,
        require_auth: false,
        screen: false,
        check_sender: false,
        refuse: None,
        qualify_bare_names: None,
    }
}

/// Drives a session over `input`, accepting every recipient and committing as ID 1; returns
/// the output and the committed transactions.
fn run(input: &[u8]) -> (String, Vec<Transaction>) {
    run_with(params(), input)
}

/// As [`run`] with `params`. TLS handshakes succeed; the password of every login is `pw`; a
/// login owns the sender addresses whose local part is the login.
fn run_with(params: SessionParams, input: &[u8]) -> (String, Vec<Transaction>) {
    let mut s = Session::new(params);
    let mut buf = input.to_vec();
    let mut committed = Vec::new();
    loop {
        match s.advance(&mut buf) {
            Step::NeedInput => {
                if buf.is_empty() {
                    break;
                }
                panic!("NeedInput with {} unconsumed bytes that are not a partial line", buf.len());
            }
            Step::CheckRecipient(a) => {
                let v = if a.local_part() == "nobody" {
                    Verdict::PermFail(Reply::new(550, EnhancedStatus(5, 1, 1), "User unknown"))
                } else {
                    Verdict::Ok(vec![Destination::Remote(a)])
                };
                s.recipient_verdict(v);
            }
            Step::Commit(tx) => {
                committed.push(*tx);
                s.commit_result(Ok(QueueId::parse("0000000000000001").unwrap()));
            }
            Step::StartTls => {
                s.tls_started(TlsInfo { version: "TLSv1.3".into(), cipher: "TLS13_AES_128_GCM_SHA256".into() });
            }
            Step::Authenticate { password, .. } => {
                s.auth_result(if password == b"pw" { AuthOutcome::Success } else { AuthOutcome::Invalid });
            }
            Step::CheckSender(a) => {
                // Unauthenticated (screened) sessions: every sender domain passes.
                let login = s.authenticated().map_or_else(|| a.local_part().to_owned(), str::to_owned);
                s.sender_verdict(if a.local_part() == login {
                    Verdict::Ok(())
                } else {
                    Verdict::PermFail(Reply::new(553, EnhancedStatus(5, 7, 1), "not yours"))
                });
            }
            Step::CheckClient(name) => s.client_verdict(if name == "bad.test" {
                Verdict::PermFail(Reply::new(550, EnhancedStatus(5, 7, 25), "no"))
            } else {
                Verdict::Ok(())
            }),
            Step::Close => break,
        }
    }
    (String::from_utf8(s.take_output()).unwrap(), committed)
}

fn codes(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.as_bytes().get(3) == Some(&b' ')).map(|l| &l[..3]).collect()
}

#[test]
fn pipelined_transaction() {
    let (out, tx) = run(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.test>\r\nRCPT TO:<nobody@example.test>\r\nDATA\r\nSubject: hi\r\n\r\n..body\r\n.\r\nQUIT\r\n");
    assert_eq!(codes(&out), ["220", "250", "250", "250", "550", "354", "250", "221"]);
    assert!(out.contains("250 2.0.0 Ok: queued as 0000000000000001"));
    assert!(
        out.contains("250-PIPELINING")
            && out.contains("250-SIZE 100")
            && out.contains("250-CHUNKING")
            && out.contains("250 DSN")
    );
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].message, b"Subject: hi\r\n\r\n.body\r\n");
    assert_eq!(tx[0].recipients.len(), 1);
}

#[test]
fn order_of_commands_is_enforced() {
    let (out, _) = run(b"MAIL FROM:<a@b.test>\r\nHELO c\r\nRCPT TO:<x@y.test>\r\nDATA\r\nMAIL FROM:<a@b.test>\r\nMAIL FROM:<a@b.test>\r\nDATA\r\n");
    assert_eq!(codes(&out), ["220", "503", "250", "503", "503", "250", "503", "554"]);
}

#[test]
fn rset_clears_transaction() {
    let (out, tx) =
        run(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRSET\r\nDATA\r\nRCPT TO:<x@y.test>\r\n");
    assert_eq!(codes(&out), ["220", "250", "250", "250", "250", "503", "503"]);
    assert!(tx.is_empty());
}

#[test]
fn limits() {
    let (out, _) = run(b"EHLO c\r\nMAIL FROM:<a@b.test> SIZE=101\r\nMAIL FROM:<a@b.test> SIZE=100\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<y@y.test>\r\nRCPT TO:<z@y.test>\r\n");
    assert_eq!(codes(&out), ["220", "250", "552", "250", "250", "250", "452"]);
    let long = format!("NOOP {}\r\nNOOP\r\n", "x".repeat(200));
    let (out, _) = run(long.as_bytes());
    assert_eq!(codes(&out), ["220", "500", "250"]);
    let (out, tx) = run(format!(
        "HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n{}\r\n.\r\nNOOP\r\n",
        "y".repeat(150)
    )
    .as_bytes());
    assert_eq!(codes(&out), ["220", "250", "250", "250", "354", "552", "250"]);
    assert!(tx.is_empty());
}

#[test]
fn bare_line_endings() {
    // One reply to a line with a bare LF, and the session ends: never one reply per piece.
    let (out, _) = run(b"NOOP\nNOOP\r\n");
    assert_eq!(codes(&out), ["220", "500"]);
    // The smuggled second transaction stays inside the rejected first message.
    let (out, tx) = run(b"HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\nhi\n.\nMAIL FROM:<e@vil.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\nsmuggled\r\n.\r\nNOOP\r\n");
    assert_eq!(codes(&out), ["220", "250", "250", "250", "354", "550", "250"]);
    assert!(out.contains("550 5.5.2"));
    assert!(tx.is_empty());
}

#[test]
fn vrfy_expn_help() {
    let (out, _) = run(b"VRFY root\r\nEXPN staff\r\nHELP\r\nFOO\r\n");
    assert!(out.contains("252 2.5.2"));
    assert!(out.contains("502 5.5.1"));
    assert_eq!(codes(&out), ["220", "252", "502", "214", "500"]);
}

#[test]
fn bdat_chunks() {
    let (out, tx) =
        run(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nBDAT 4\r\nab\r\nBDAT 3 LAST\r\nc\r\nNOOP\r\n");
    assert_eq!(codes(&out), ["220", "250", "250", "250", "250", "250", "250"]);
    assert_eq!(tx[0].message, b"ab\r\nc\r\n");
    // No trailing newline survives BDAT exactly.
    let (_, tx) = run(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nBDAT 3 LAST\r\nabc");
    assert_eq!(tx[0].message, b"abc");
    // Refused BDAT still consumes its chunk.
    let (out, _) = run(b"EHLO c\r\nBDAT 6\r\nNOOP\r\nNOOP\r\n");
    assert_eq!(codes(&out), ["220", "250", "503", "250"]);
    let (out, tx) = run(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nBDAT 4 LAST\r\na\nb\r\n");
    assert!(out.contains("550 5.5.2"), "{out}");
    assert!(tx.is_empty());
}

#[test]
fn smtputf8_and_postmaster() {
    let (out, _) =
        run("EHLO c\r\nMAIL FROM:<jörg@b.test>\r\nMAIL FROM:<jörg@b.test> SMTPUTF8\r\nRCPT TO:<Postmaster>\r\n"
            .as_bytes());
    assert_eq!(codes(&out), ["220", "250", "553", "250", "250"]);
    let (out, _) = run(b"HELO c\r\nMAIL FROM:<a@b.test> BODY=8BITMIME\r\n");
    assert!(out.contains("555 5.5.4"));
}

#[test]
fn error_limit_closes() {
    let mut p = params();
    p.max_errors = 3;
    let mut s = Session::new(p);
    let mut buf = b"X\r\nX\r\nX\r\nNOOP\r\n".to_vec();
    assert!(matches!(s.advance(&mut buf), Step::Close));
    let out = String::from_utf8(s.take_output()).unwrap();
    assert!(out.ends_with("421 4.7.0 mx.test Error: too many errors\r\n"), "{out}");
}

#[test]
fn dsn_parameters() {
    let (out, tx) = run(b"EHLO c\r\nMAIL FROM:<a@b.test> RET=HDRS ENVID=abc+2B1\r\nRCPT TO:<x@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+2Bt@y.test\r\nRCPT TO:<z@y.test> NOTIFY=NEVER\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(codes(&out), ["220", "250", "250", "250", "250", "354", "250"]);
    let t = &tx[0];
    assert_eq!((t.ret_full, t.envid.as_deref()), (Some(false), Some("abc+2B1")));
    assert_eq!(t.recipients[0].notify.unwrap().to_string(), "SUCCESS,FAILURE");
    let orcpt = t.recipients[0].orcpt.as_ref().expect("ORCPT kept");
    assert_eq!((orcpt.to_string(), orcpt.address()), ("rfc822;x+2Bt@y.test".to_owned(), "x+t@y.test".to_owned()));
    assert_eq!(t.recipients[1].notify, Some(postern_types::dsn::Notify::NEVER));
    let (out, _) = run(b"EHLO c\r\nMAIL FROM:<a@b.test> RET=SOME\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test> NOTIFY=NEVER,DELAY\r\nRCPT TO:<x@y.test> ORCPT=noseparator\r\n");
    assert_eq!(codes(&out), ["220", "250", "501", "250", "501", "501"]);
}

#[test]
fn an_outsider_gets_no_success_report_and_no_full_return() {
    let (_, tx) = run(b"EHLO c\r\nMAIL FROM:<victim@far.test> RET=FULL\r\nRCPT TO:<x@y.test> NOTIFY=SUCCESS,DELAY\r\nRCPT TO:<z@y.test>\r\nDATA\r\nx\r\n.\r\n");
    let mut t = tx[0].clone();
    assert!(t.limit_dsn_for_outsiders());
    assert_eq!(t.ret_full, Some(false), "RET=FULL becomes HDRS");
    assert_eq!(t.recipients[0].notify.unwrap().to_string(), "DELAY");
    assert_eq!(t.recipients[1].notify, None);
    assert!(!t.limit_dsn_for_outsiders(), "nothing left to drop");
}

#[test]
fn recipient_address_is_parsed() {
    let mut s = Session::new(params());
    let mut buf = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<Bob+x@EXAMPLE.test>\r\n".to_vec();
    let Step::CheckRecipient(a) = s.advance(&mut buf) else { panic!() };
    assert_eq!(a, Address::new("Bob+x", "example.test"));
    assert_eq!(s.phase(), Phase::Rcpt);
}

fn b64(s: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn starttls_discards_what_was_pipelined_after_it() {
    let p = SessionParams { starttls: true, ..params() };
    // CVE-2011-0411: the MAIL command rides in the same packet as STARTTLS, in clear text.
    let (out, _) = run_with(p.clone(), b"EHLO c.test\r\nSTARTTLS\r\nMAIL FROM:<a@b.test>\r\n");
    assert_eq!(codes(&out), ["220", "250", "220"], "{out}");
    assert!(out.contains("250-STARTTLS") || out.contains("250 STARTTLS"), "{out}");
    assert!(out.ends_with("220 2.0.0 Ready to start TLS\r\n"), "{out}");
    // After the handshake the client starts over: EHLO no longer offers STARTTLS, and a second
    // STARTTLS is refused.
    let (out, _) = run_with(p, b"STARTTLS\r\n");
    assert_eq!(codes(&out), ["220", "220"]);
    let mut s = Session::new(SessionParams { starttls: true, ..params() });
    let mut buf = b"EHLO c\r\nSTARTTLS\r\n".to_vec();
    assert!(matches!(s.advance(&mut buf), Step::StartTls));
    s.tls_started(TlsInfo { version: "TLSv1.3".into(), cipher: "X".into() });
    s.take_output();
    let mut buf = b"MAIL FROM:<a@b.test>\r\nEHLO c\r\nSTARTTLS\r\n".to_vec();
    assert!(matches!(s.advance(&mut buf), Step::NeedInput));
    let out = String::from_utf8(s.take_output()).unwrap();
    assert!(out.contains("503 5.5.1 Error: send HELO/EHLO first"), "HELO forgotten after TLS: {out}");
    assert!(!out.contains("STARTTLS\r\n"), "{out}");
    assert!(out.ends_with("503 5.5.1 Error: TLS already active\r\n"), "{out}");
}

#[test]
fn auth_is_neither_offered_nor_accepted_before_tls() {
    let p = SessionParams { starttls: true, auth: true, require_auth: true, ..params() };
    let line = format!("AUTH PLAIN {}\r\n", b64(b"\0bob\0pw"));
    let (out, _) = run_with(p, format!("EHLO c\r\n{line}MAIL FROM:<bob@b.test>\r\n").as_bytes());
    assert_eq!(codes(&out), ["220", "250", "530", "530"], "{out}");
    assert!(!out.contains("AUTH"), "{out}");
    assert!(out.contains("530 5.7.0 Must issue a STARTTLS command first"));
}

#[test]
fn auth_plain_then_sender_check_on_implicit_tls() {
    let tls = TlsInfo { version: "TLSv1.3".into(), cipher: "TLS13_AES_256_GCM_SHA384".into() };
    let p = SessionParams { implicit_tls: Some(tls.clone()), auth: true, require_auth: true, ..params() };
    let input = format!(
        "EHLO c\r\nMAIL FROM:<bob@b.test>\r\nAUTH PLAIN {}\r\nAUTH PLAIN {}\r\nAUTH PLAIN {}\r\n\
         MAIL FROM:<alice@b.test>\r\nMAIL FROM:<bob@b.test>\r\nRCPT TO:<x@far.test>\r\nDATA\r\nhi\r\n.\r\n",
        b64(b"\0bob\0bad"),
        b64(b"alice\0bob\0pw"),
        b64(b"\0bob\0pw"),
    );
    let (out, tx) = run_with(p, input.as_bytes());
    assert_eq!(codes(&out), ["220", "250", "530", "535", "535", "235", "553", "250", "250", "354", "250"], "{out}");
    assert!(out.contains("250 AUTH PLAIN LOGIN\r\n"), "{out}");
    assert!(out.contains("530 5.7.0 Authentication required"));
    assert!(out.contains("535 5.7.8 "));
    assert!(out.contains("235 2.7.0 "));
    assert_eq!(tx[0].auth.as_deref(), Some("bob"));
    assert_eq!(tx[0].tls, Some(tls));
}

#[test]
fn auth_login_exchange_and_cancel() {
    let tls = TlsInfo { version: "TLSv1.2".into(), cipher: "X".into() };
    let p = SessionParams { implicit_tls: Some(tls), auth: true, ..params() };
    let input =
        format!("EHLO c\r\nAUTH LOGIN\r\n*\r\nAUTH LOGIN\r\n{}\r\n{}\r\nAUTH LOGIN\r\n", b64(b"bob"), b64(b"pw"));
    let (out, _) = run_with(p.clone(), input.as_bytes());
    assert_eq!(codes(&out), ["220", "250", "334", "501", "334", "334", "235", "503"], "{out}");
    assert!(out.contains("334 VXNlcm5hbWU6\r\n") && out.contains("334 UGFzc3dvcmQ6\r\n"), "{out}");
    let (out, _) = run_with(p, b"EHLO c\r\nAUTH CRAM-MD5\r\nAUTH PLAIN !!!\r\n");
    assert_eq!(codes(&out), ["220", "250", "504", "501"], "{out}");
}

#[test]
fn refused_at_connect_waits_for_quit() {
    let refusal = crate::Refusal::Blocked([127, 0, 0, 1].into());
    let p = SessionParams { refuse: Some(refusal), ..params() };
    let (out, committed) = run_with(p, b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nNOOP\r\nQUIT\r\n");
    assert_eq!(codes(&out), ["554", "503", "503", "503", "221"], "{out}");
    assert!(out.starts_with("554 5.7.1 Client host [127.0.0.1] blocked"), "{out}");
    assert!(committed.is_empty());
    // The errors count: a client that never says QUIT is dropped at max_errors.
    let no = crate::Refusal::Decided(Reply::new(554, EnhancedStatus(5, 7, 1), "no"));
    let p = SessionParams { refuse: Some(no), max_errors: 2, ..params() };
    let (out, _) = run_with(p, b"NOOP\r\nNOOP\r\nNOOP\r\n");
    assert_eq!(codes(&out), ["554", "503", "503", "421"], "{out}");
}

#[test]
fn screened_helo_refused_then_accepted() {
    let p = SessionParams { screen: true, check_sender: true, ..params() };
    let (out, _) = run_with(
        p,
        b"EHLO bad.test\r\nMAIL FROM:<a@b.test>\r\nEHLO good.test\r\nMAIL FROM:<a@b.test>\r\nEHLO bad.test\r\n",
    );
    // Refused EHLO leaves no HELO; once one passed, the client is not screened again.
    assert_eq!(codes(&out), ["220", "550", "503", "250", "250", "250"], "{out}");
}

#[test]
fn requiretls_is_offered_and_taken_only_under_tls() {
    // Clear text: not offered, and the parameter is refused (RFC 8689 §2).
    let p = SessionParams { starttls: true, ..params() };
    let (out, tx) = run_with(p.clone(), b"EHLO c\r\nMAIL FROM:<a@b.test> REQUIRETLS\r\n");
    assert!(!out.contains("REQUIRETLS\r\n"), "{out}");
    assert!(out.ends_with("555 5.5.4 REQUIRETLS is offered only after STARTTLS\r\n"), "{out}");
    assert!(tx.is_empty());
    // Under TLS: offered, and the transaction carries the flag (§4.1).
    let tls = TlsInfo { version: "TLSv1.3".into(), cipher: "X".into() };
    let p = SessionParams { implicit_tls: Some(tls), ..params() };
    let input = b"EHLO c\r\nMAIL FROM:<a@b.test> REQUIRETLS\r\nRCPT TO:<x@y.test>\r\nDATA\r\ns\r\n.\r\n\
                  MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\ns\r\n.\r\n";
    let (out, tx) = run_with(p.clone(), input);
    assert!(out.contains("250-REQUIRETLS\r\n") || out.contains("250 REQUIRETLS\r\n"), "{out}");
    assert_eq!(tx.iter().map(|t| t.require_tls).collect::<Vec<_>>(), [true, false], "{out}");
    let (out, _) = run_with(p, b"EHLO c\r\nMAIL FROM:<a@b.test> REQUIRETLS=YES\r\n");
    assert!(out.contains("555 5.5.4"), "a value is refused: {out}");
}

#[test]
fn a_local_submission_qualifies_bare_names() {
    let p = SessionParams { qualify_bare_names: Some("example.test".into()), check_sender: true, ..params() };
    let mut s = Session::new(p);
    let mut input = b"HELO c\r\nMAIL FROM:<root>\r\n".to_vec();
    let mut sender = None;
    loop {
        match s.advance(&mut input) {
            Step::CheckSender(a) => {
                sender = Some(a.to_string());
                s.sender_verdict(postern_types::Verdict::Ok(()));
            }
            Step::CheckClient(_) => s.client_verdict(postern_types::Verdict::Ok(())),
            _ => break,
        }
    }
    let out = String::from_utf8(s.take_output()).unwrap();
    assert!(codes(&out).ends_with(&["250", "250"]), "{out}");
    assert_eq!(sender.as_deref(), Some("root@example.test"), "{out}");
    // Over the network a bare name stays a syntax error (RFC 5321 §4.1.2).
    let (out, _) = run(b"HELO c\r\nMAIL FROM:<root>\r\n");
    assert!(out.contains("501 5.1.7"), "{out}");
}
