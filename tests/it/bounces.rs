//! Delivery status notifications: a 550 from the next hop becomes a failure DSN in the sender's
//! mailbox (parsed and checked); the null sender is never bounced to; `warn_after` sends one
//! delay DSN and `max_age` gives up with 4.4.7.

use mail_parser::{MessageParser, MimeHeaders};

use crate::support::dns::DnsServer;
use crate::support::smtp::Client;
use crate::support::{Server, repo};

fn start(edit_queue: &str) -> (DnsServer, Server, Server) {
    let zone = repo().join("tests/fixtures/dns/relay.test.zone");
    let dns = DnsServer::start(&[("test.", &zone)]);
    let b = Server::start_with("relay-b", |t| t);
    let extra = edit_queue.to_owned();
    let a = Server::start_full("relay-a", &[("PEER", "9".into())], |t| {
        t.replace("{DNS}", &dns.addr.to_string()).replace("{PORT}", &b.port.to_string()) + &extra
    });
    (dns, a, b)
}

/// The parts of a DSN: (content types, delivery-status text, returned headers text).
fn parse_dsn(raw: &[u8]) -> (Vec<String>, String, String, String) {
    let msg = MessageParser::default().parse(raw).expect("DSN parses");
    let ct = msg.content_type().expect("content type");
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let mut types = Vec::new();
    let (mut status, mut headers) = (String::new(), String::new());
    for part in msg.parts.iter().skip(1) {
        let ct = part.content_type().unwrap();
        let t = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""));
        let body = String::from_utf8_lossy(part.contents()).into_owned();
        if t == "message/delivery-status" {
            status = body.clone();
        } else if t == "text/rfc822-headers" {
            headers = body.clone();
        }
        types.push(t);
    }
    (types, status, headers, msg.subject().unwrap_or("").to_owned())
}

#[test]
fn failure_dsn_and_null_sender() {
    let (_dns, a, _b) = start("");
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.test");
    // B refuses nobody@b.test at RCPT time with 550 5.1.1.
    let r = c.send_data(
        "alice@a.test",
        &["nobody@b.test"],
        b"Subject: doomed\r\nX-Tag: original\r\n\r\nsecret-body-text\r\n",
    );
    assert_eq!(r.code, 250);
    let files = a.wait_maildir("alice", 1);
    let raw = std::fs::read(&files[0]).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("Return-Path: <>\n"), "DSNs come from the null sender: {text}");
    let (types, status, headers, subject) = parse_dsn(&raw);
    assert_eq!(subject, "Undelivered Mail Returned to Sender");
    assert_eq!(types, ["text/plain", "message/delivery-status", "text/rfc822-headers"]);
    for want in [
        "Reporting-MTA: dns; a.example.test",
        "Final-Recipient: rfc822; nobody@b.test",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; mx.b.test",
        "Diagnostic-Code: smtp; 550 5.1.1",
    ] {
        assert!(status.contains(want), "missing {want:?} in {status}");
    }
    assert!(headers.contains("Subject: doomed") && headers.contains("X-Tag: original"), "{headers}");
    assert!(!headers.contains("secret-body-text"), "RET=HDRS returns headers only");
    a.wait_queue_empty();

    // The null sender is never bounced to.
    let r = c.send_data("", &["nobody@b.test"], b"Subject: from nobody\r\n\r\nx\r\n");
    assert_eq!(r.code, 250);
    a.wait_log("no DSN: the sender is the null reverse-path");
    a.wait_queue_empty();
    assert_eq!(a.maildir("alice").len(), 1);
}

#[test]
fn delay_dsn_then_expiry() {
    let (_dns, a, _b) = start("warn_after = \"1s\"\nmax_age = \"4s\"\n");
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.test");
    // deadonly.test's only MX refuses connections: every attempt is a temporary failure.
    let r = c.send_data("alice@a.test", &["bob@deadonly.test"], b"Subject: patience\r\n\r\nx\r\n");
    assert_eq!(r.code, 250);
    let files = a.wait_maildir("alice", 2);
    let mut subjects = Vec::new();
    for f in &files {
        let (_, status, _, subject) = parse_dsn(&std::fs::read(f).unwrap());
        if subject.starts_with("Delayed") {
            assert!(status.contains("Action: delayed") && status.contains("Status: 4.4.1"), "{status}");
        } else {
            assert!(status.contains("Action: failed") && status.contains("Status: 4.4.7"), "{status}");
        }
        subjects.push(subject);
    }
    subjects.sort();
    assert_eq!(subjects, ["Delayed Mail (still being retried)", "Undelivered Mail Returned to Sender"]);
    a.wait_queue_empty();
}

#[test]
fn dsn_extension_is_honoured() {
    use crate::support::peer::Peer;
    // Local delivery with NOTIFY=SUCCESS, RET=FULL, ENVID and ORCPT from a trusted client: a
    // "delivered" DSN.
    let server = Server::start();
    let (mut c, _) = Client::connect_from("127.0.0.2", server.port);
    c.cmd("EHLO client.test");
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test> RET=FULL ENVID=order+2B42").code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@example.test> NOTIFY=SUCCESS ORCPT=rfc822;robert@example.test").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: receipt please\r\n\r\nfull-body-returned\r\n.\r\n");
    assert_eq!(c.read_reply().unwrap().code, 250);
    server.wait_maildir("bob", 1);
    let files = server.wait_maildir("alice", 1);
    let raw = std::fs::read(&files[0]).unwrap();
    let (types, status, _, subject) = parse_dsn(&raw);
    assert_eq!(subject, "Successful Mail Delivery Report");
    assert_eq!(types[2], "message/rfc822", "RET=FULL returns the whole message");
    assert!(String::from_utf8_lossy(&raw).contains("full-body-returned"));
    for want in [
        "Original-Envelope-Id: order+42",
        "Original-Recipient: rfc822; robert@example.test",
        "Final-Recipient: rfc822; bob@example.test",
        "Action: delivered",
        "Status: 2.0.0",
    ] {
        assert!(status.contains(want), "missing {want:?} in {status}");
    }

    // An alias (team: alice, bob) with NOTIFY=SUCCESS: one "expanded" report for the alias,
    // naming neither target (RFC 3461 §6.2.7.3); the targets report nothing more.
    let (mut c, _) = Client::connect_from("127.0.0.2", server.port);
    c.cmd("EHLO client.test");
    assert_eq!(c.cmd("MAIL FROM:<carol@example.test> ENVID=list1").code, 250);
    assert_eq!(c.cmd("RCPT TO:<team@example.test> NOTIFY=SUCCESS,FAILURE").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: to the team\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.read_reply().unwrap().code, 250);
    server.wait_maildir("bob", 2);
    server.wait_maildir("alice", 2);
    let files = server.wait_maildir("carol", 1);
    let raw = std::fs::read(&files[0]).unwrap();
    let (_, status, _, _) = parse_dsn(&raw);
    assert!(status.contains("Final-Recipient: rfc822; team@example.test"), "{status}");
    assert!(status.contains("Action: expanded") && status.contains("Status: 2.0.0"), "{status}");
    assert!(!status.contains("alice") && !status.contains("bob"), "the targets stay private: {status}");
    server.wait_queue_empty();
    assert_eq!(server.maildir("carol").len(), 1, "one report, not one per target");

    // From a client that is not ours (issue 26, finding 7): NOTIFY=SUCCESS is not honoured and
    // RET=FULL becomes HDRS, so a forged reverse-path gets no copy of the message.
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO outsider.test");
    assert_eq!(c.cmd("MAIL FROM:<carol@example.test> RET=FULL").code, 250);
    assert_eq!(c.cmd("RCPT TO:<team@example.test> NOTIFY=SUCCESS").code, 250);
    assert_eq!(c.cmd("RCPT TO:<nobody-here@catch.test> NOTIFY=SUCCESS,FAILURE").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: reflected\r\n\r\nthe-whole-body\r\n.\r\n");
    assert_eq!(c.read_reply().unwrap().code, 250);
    server.wait_log("DSN: NOTIFY=SUCCESS and RET=FULL from [127.0.0.1] not honoured");
    server.wait_maildir("bob", 3);
    server.wait_maildir("catchall", 1);
    server.wait_queue_empty();
    assert_eq!(server.maildir("carol").len(), 1, "no success DSN to the outsider's reverse-path");

    // NOTIFY=NEVER: a permanent failure sends nothing.
    let (_dns, a, _b) = start("");
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.test");
    assert_eq!(c.cmd("MAIL FROM:<alice@a.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<nobody@b.test> NOTIFY=NEVER").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: silent\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.read_reply().unwrap().code, 250);
    let line = a.wait_log("to=<nobody@b.test>");
    assert!(line.contains("status=bounced"), "{line}");
    a.wait_queue_empty();
    assert!(a.maildir("alice").is_empty(), "NOTIFY=NEVER must not produce a DSN");

    // NOTIFY=SUCCESS to a peer without DSN: we report "relayed"; to a peer with DSN the
    // parameters are passed on and the peer reports.
    for (peer, expect_relayed) in [(Peer::start(&[]), true), (Peer::start_dsn(&[]), false)] {
        let a = Server::start_full("relay-a", &[("PEER", peer.port.to_string())], |t| {
            t.replace("{DNS}", "{NO_DNS}").replace("{PORT}", "9")
        });
        let (mut c, _) = Client::connect(a.port);
        c.cmd("EHLO client.test");
        assert_eq!(c.cmd("MAIL FROM:<alice@a.test> ENVID=e1").code, 250);
        assert_eq!(c.cmd("RCPT TO:<bob@flaky.test> NOTIFY=SUCCESS,FAILURE").code, 250);
        assert_eq!(c.cmd("DATA").code, 354);
        c.send(b"Subject: relay receipt\r\n\r\nx\r\n.\r\n");
        assert_eq!(c.read_reply().unwrap().code, 250);
        a.wait_log("to=<bob@flaky.test>");
        a.wait_queue_empty();
        let rcpt = peer.rcpts.lock().unwrap()[0].clone();
        if expect_relayed {
            assert_eq!(rcpt, "RCPT TO:<bob@flaky.test>");
            let files = a.wait_maildir("alice", 1);
            let (_, status, _, _) = parse_dsn(&std::fs::read(&files[0]).unwrap());
            assert!(status.contains("Action: relayed") && status.contains("Original-Envelope-Id: e1"), "{status}");
        } else {
            assert_eq!(rcpt, "RCPT TO:<bob@flaky.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@flaky.test");
            assert!(a.maildir("alice").is_empty(), "the DSN-capable peer reports, not us");
        }
    }
}

#[test]
fn a_loop_is_refused_before_the_250_and_no_dsn_is_made() {
    // A message that was already delivered to bob (Delivered-To) comes back for bob from an
    // untrusted client: refused at the end of DATA (554 5.4.6), nothing queued, no DSN to a
    // sender that may be forged (no backscatter).
    let server = Server::start();
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO client.test");
    let r = c.send_data(
        "alice@example.test",
        &["bob@example.test"],
        b"Delivered-To: bob@example.test\r\nSubject: round and round\r\n\r\nx\r\n",
    );
    assert_eq!((r.code, &r.text[4..9]), (554, "5.4.6"), "{}", r.text);
    assert!(r.text.contains("Mail forwarding loop for <bob@example.test>"), "{}", r.text);
    assert_eq!(server.queued_messages(), 0, "nothing was queued");
    // Too many hops: the same, whoever the recipient.
    let hops = "Received: from a by b; Tue, 1 Dec 2026 10:00:00 +0000\r\n".repeat(51) + "Subject: far\r\n\r\nx\r\n";
    let r = c.send_data("alice@example.test", &["carol@example.test"], hops.as_bytes());
    assert_eq!((r.code, &r.text[4..9]), (554, "5.4.6"), "{}", r.text);
    assert!(r.text.contains("Too many hops (51 Received headers"), "{}", r.text);
    // The session goes on: a clean message is accepted.
    let r = c.send_data("alice@example.test", &["bob@example.test"], b"Subject: fine\r\n\r\nx\r\n");
    assert_eq!(r.code, 250, "{}", r.text);
    server.wait_maildir("bob", 1);
    server.wait_queue_empty();
    assert!(server.maildir("alice").is_empty(), "no DSN was made");
    assert!(server.log_lines("notification").is_empty(), "no DSN was made");
    server.wait_log("NOQUEUE: reject: DATA from [127.0.0.1]: 554 5.4.6 Mail forwarding loop");
}
