//! `[[milter]]` filters before the 250, against a test milter of our own
//! (`support/milter.rs`): every end-of-message action, a reply code, discard, quarantine (held),
//! the macros (the queue ID `i` is the one the message is queued under), and a filter that is down with `default_action` tempfail and accept.

use crate::support::milter::TestMilter;
use crate::support::smtp::Client;
use crate::support::{Server, poll};

fn with_milter(address: &str, default_action: &str) -> Server {
    Server::start_with("basic", |t| {
        format!(
            "{t}\n[[milter]]\nname = \"test\"\naddress = \"{address}\"\ndefault_action = \"{default_action}\"\ncommand_timeout = \"5s\"\n"
        )
    })
}

#[test]
fn every_end_of_message_action_reject_discard_and_quarantine() {
    let milter = TestMilter::start();
    let server = with_milter(&format!("inet:127.0.0.1:{}", milter.port), "tempfail");
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO client.test");
    let send = |c: &mut Client, subject: &str| {
        let body = format!("From: alice@example.test\r\nSubject: {subject}\r\n\r\noriginal body\r\n");
        c.send_data("alice@example.test", &["bob@example.test", "dave@example.test"], body.as_bytes())
    };

    // Every action: headers added, inserted at the top and changed, the sender changed, a
    // recipient added and one deleted, the body replaced.
    let edited = send(&mut c, "edit me");
    assert_eq!(edited.code, 250, "{}", edited.text);
    let edited_id = edited.text.trim().rsplit(' ').next().unwrap().to_owned();
    let carol = std::fs::read_to_string(&server.wait_maildir("carol", 1)[0]).unwrap();
    let dave = std::fs::read_to_string(&server.wait_maildir("dave", 1)[0]).unwrap();
    for text in [&carol, &dave] {
        assert!(text.starts_with("Return-Path: <changed@example.test>"), "{text}");
        // Index 0 is the top of the message the filter saw; our Received header is prepended
        // after the filters, as every trace header is.
        assert!(text.contains("\nX-Top: first\nFrom: alice@example.test\n"), "inserted at the top: {text}");
        assert!(text.contains("\nSubject: edited\n") && text.contains("\nX-Milter: added\n"), "{text}");
        assert!(text.ends_with("\n\nreplaced body\n") && !text.contains("original body"), "{text}");
        assert!(text.contains(&format!(" id {edited_id}")), "queued under the ID the filter saw: {text}");
    }
    assert!(server.maildir("bob").is_empty(), "bob was deleted by the filter");
    // The decision is logged with the queue ID.
    server.wait_log(&format!("{edited_id}: milter test: accept, 7 action(s)"));

    // A reply code: that is the reply to DATA, nothing queued.
    let r = send(&mut c, "reject me");
    assert_eq!((r.code, r.text.trim()), (554, "554 5.7.1 no thanks"), "{}", r.text);
    server.wait_queue_empty();

    // Discard: 250, and nothing is delivered or queued.
    let r = send(&mut c, "discard me");
    assert_eq!(r.code, 250, "{}", r.text);
    server.wait_log("discarded by milter test");
    assert_eq!(server.queued_messages(), 0);

    // Quarantine: accepted and held.
    assert_eq!(send(&mut c, "quarantine me").code, 250);
    server.wait_log("milter: quarantine (suspicious): the message is held");
    poll("the held message in the queue", || (server.queued_messages() == 1).then_some(()));
    assert_eq!(server.maildir("dave").len(), 1, "the held message is not delivered");

    // The macros a filter expects.
    let macros = milter.macros();
    for (k, v) in [
        ("j", "mx.example.test"),
        ("{client_addr}", "127.0.0.1"),
        ("{mail_addr}", "alice@example.test"),
        ("{rcpt_addr}", "bob@example.test"),
        ("{if_addr}", "127.0.0.1"),
        ("{daemon_port}", &server.port.to_string()),
        // The queue ID, the same one the 250 gave.
        ("i", &edited_id),
    ] {
        assert!(macros.iter().any(|(mk, mv)| mk == k && mv == v), "macro {k}={v} missing: {macros:?}");
    }
    let seen: Vec<u8> = milter.seen.lock().unwrap().iter().map(|(c, _)| *c).collect();
    for step in [b'O', b'C', b'H', b'M', b'R', b'T', b'L', b'N', b'B', b'E'] {
        assert!(seen.contains(&step), "step {:?} not sent", step as char);
    }
}

/// A filter is the postmaster's, but what it sends is checked like anything from outside
/// (issue 26, finding 10): its body and headers are bounded by `max_message_size`, its header
/// values cannot start a field or end the header block, and its reply text makes one reply.
#[test]
fn a_filters_output_is_bounded_and_encoded() {
    let milter = TestMilter::start();
    let server = with_milter(&format!("inet:127.0.0.1:{}", milter.port), "tempfail");
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO client.test");
    let send = |c: &mut Client, subject: &str| {
        let body = format!("From: alice@example.test\r\nSubject: {subject}\r\n\r\noriginal body\r\n");
        c.send_data("alice@example.test", &["bob@example.test"], body.as_bytes())
    };
    // 40 chunks of 65 000 bytes against a 1 MiB limit: refused once past it.
    let r = send(&mut c, "grow me");
    assert!(r.text.starts_with("552 5.3.4"), "{}", r.text);
    // One packet of 2 MiB: the conversation breaks before it is buffered (default tempfail).
    let r = send(&mut c, "one huge packet");
    assert!(r.text.starts_with("451 4.7.1"), "{}", r.text);
    server.wait_log("milter test: bad packet length");
    assert_eq!(server.queued_messages(), 0);
    // CR LF in a reply text: one reply, and the session stays in step.
    let r = send(&mut c, "split my reply");
    assert!(r.text.starts_with("550-5.7.1 first\r\n550 5.7.1 250 2.0.0 Ok: fake"), "{:?}", r.text);
    assert_eq!(c.cmd("NOOP").code, 250, "the next reply is the NOOP's");
    // Folded values: CRLF out, and every line a continuation.
    assert_eq!(send(&mut c, "fold me").code, 250);
    let text = std::fs::read_to_string(&server.wait_maildir("bob", 1)[0]).unwrap();
    assert!(text.contains("\nX-Folded: one\n\ttwo\n"), "{text}");
    assert!(text.contains("\nX-Sneaky: a\n\tBcc: hidden@evil.test\n\tfake body\n"), "{text}");
    assert!(!text.contains("\nBcc:") && !text.contains('\r'), "{text}");
}

#[test]
fn a_filter_that_is_down_gets_its_default_action() {
    let closed = crate::support::net::DeadPort::new();
    let address = format!("inet:127.0.0.1:{}", closed.port);
    let tempfail = with_milter(&address, "tempfail");
    let (mut c, _) = Client::connect(tempfail.port);
    c.cmd("EHLO client.test");
    let r = c.send_data("alice@example.test", &["bob@example.test"], b"Subject: x\r\n\r\nx\r\n");
    assert_eq!((r.code, &r.text[4..9]), (451, "4.7.1"), "{}", r.text);
    assert_eq!(tempfail.queued_messages(), 0);
    tempfail.wait_log("milter test: connect: ");

    let accept = with_milter(&address, "accept");
    let (mut c, _) = Client::connect(accept.port);
    c.cmd("EHLO client.test");
    assert_eq!(c.send_data("alice@example.test", &["bob@example.test"], b"Subject: x\r\n\r\nx\r\n").code, 250);
    accept.wait_maildir("bob", 1);
}

/// opendkim (Debian's) as a signing milter: its DKIM-Signature on the delivered message
/// verifies with dkimpy (python3-dkim), with the key `postern dkim keygen` made.
#[test]
fn opendkim_signs_as_a_milter_and_dkimpy_verifies() {
    use std::process::{Command, Stdio};
    assert!(
        std::path::Path::new("/usr/sbin/opendkim").exists(),
        "opendkim is missing: `bash scripts/test` installs it"
    );
    let dir = crate::support::TempDir::new("opendkim");
    let key = dir.0.join("od.key");
    let out = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["dkim", "keygen", "--domain", "example.test", "--selector", "od", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    let record = String::from_utf8(out.stdout).unwrap();
    let txt = record.lines().last().unwrap().trim_start_matches("; ").to_owned();
    let (mut opendkim, port) = crate::support::daemon_on_free_port(
        "opendkim",
        |port| {
            let conf = format!(
                "Syslog no\nMode s\nDomain example.test\nSelector od\nKeyFile {}\nSocket inet:{port}@127.0.0.1\nPidFile {}\nUserID root\nCanonicalization relaxed/relaxed\nRequireSafeKeys false\n",
                key.display(),
                dir.0.join("opendkim.pid").display()
            );
            std::fs::write(dir.0.join("opendkim.conf"), conf).unwrap();
            Command::new("/usr/sbin/opendkim")
                .args(["-f", "-x"])
                .arg(dir.0.join("opendkim.conf"))
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        },
        |port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    let server = with_milter(&format!("inet:127.0.0.1:{port}"), "tempfail");
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO client.test");
    let body =
        b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: signed by opendkim\r\n\r\nHello.\r\n";
    assert_eq!(c.send_data("alice@example.test", &["bob@example.test"], body).code, 250);
    let text = std::fs::read_to_string(&server.wait_maildir("bob", 1)[0]).unwrap();
    let _ = opendkim.kill();
    let _ = opendkim.wait();
    assert!(text.contains("DKIM-Signature: v=1;") && text.contains("s=od"), "{text}");
    assert!(crate::support::dkimpy_verifies(text.as_bytes(), &txt), "dkimpy refused opendkim's signature:\n{text}");
}

/// rspamd (Debian's), its proxy worker in milter mode with a private configuration: GTUBE is
/// refused before the 250 with rspamd's reply and nothing is queued; a clean message arrives
/// with the headers rspamd adds.
#[test]
fn rspamd_refuses_gtube_and_adds_its_headers() {
    use std::process::{Command, Stdio};
    assert!(std::path::Path::new("/usr/bin/rspamd").exists(), "rspamd is missing: `bash scripts/test` installs it");
    let dir = crate::support::TempDir::new("rspamd");
    for d in ["db", "run", "local/local.d"] {
        std::fs::create_dir_all(dir.0.join(d)).unwrap();
    }
    let fixture = crate::support::repo().join("tests/fixtures/rspamd");
    for e in std::fs::read_dir(fixture.join("local.d")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.0.join("local/local.d").join(e.file_name())).unwrap();
    }
    let conf = std::fs::read_to_string(fixture.join("rspamd.conf")).unwrap();
    let d = dir.0.display().to_string();
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            // SIGTERM: the main process stops its workers too.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
    // The port opens before the proxy worker is ready (rspamd compiles its rules first, slowly
    // on a loaded machine): ready is when a milter option negotiation gets its answer.
    let (rspamd, port) = crate::support::daemon_on_free_port(
        "rspamd",
        |port| {
            std::fs::write(dir.0.join("rspamd.conf"), conf.replace("{DIR}", &d).replace("{PORT}", &port.to_string()))
                .unwrap();
            Command::new("/usr/bin/rspamd")
                .args(["-f", "-u", "root", "-g", "root", "-c"])
                .arg(dir.0.join("rspamd.conf"))
                .arg(format!("--var=DBDIR={d}/db"))
                .arg(format!("--var=RUNDIR={d}/run"))
                .arg(format!("--var=LOGDIR={d}"))
                .arg(format!("--var=LOCAL_CONFDIR={d}/local"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        },
        milter_answers,
    );
    let _rspamd = Stop(rspamd);
    let log = std::fs::read_to_string(dir.0.join("rspamd.log")).unwrap_or_default();
    assert!(
        !log.contains("from resolv.conf") && !log.contains("address resolution for"),
        "rspamd must not use the system resolver:\n{log}"
    );
    let server = Server::start_with("basic", |t| {
        format!("{t}\n[[milter]]\nname = \"rspamd\"\naddress = \"inet:127.0.0.1:{port}\"\neom_timeout = \"60s\"\n")
    });
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO client.test");
    let gtube = b"From: alice@example.test\r\nSubject: gtube\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n";
    let r = c.send_data("alice@example.test", &["bob@example.test"], gtube);
    assert!(r.text.starts_with("554 5.7.1 Gtube pattern"), "{}", r.text);
    assert_eq!(server.queued_messages(), 0, "nothing queued");
    let clean = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hello\r\nMessage-ID: <1@example.test>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\nJust a normal message.\r\n";
    assert_eq!(c.send_data("alice@example.test", &["bob@example.test"], clean).code, 250);
    let text = std::fs::read_to_string(&server.wait_maildir("bob", 1)[0]).unwrap();
    assert!(text.contains("\nX-Spamd-Result: default: False") && text.contains("\nX-Spam-Status: No"), "{text}");
}

/// A message submitted under TLS with AUTH LOGIN: the filter is told the mechanism, the login
/// and the TLS version (the macros rspamd and opendkim read to tell submissions apart).
#[test]
fn submission_macros_name_the_sasl_mechanism_and_tls() {
    use crate::support::certs::Pki;
    use crate::support::peer::Peer;
    let milter = TestMilter::start();
    let (pki, peer) = (Pki::new(), Peer::start(&[]));
    let cert = pki.server_cert(&["mx.example.test"], false);
    let extra = format!("\n[[milter]]\nname = \"test\"\naddress = \"inet:127.0.0.1:{}\"\n", milter.port);
    let server = Server::start_prepared(
        "tls",
        &[("PEER_PORT", peer.port.to_string())],
        |t| format!("{t}{extra}"),
        |dir| cert.write(dir),
    );
    let (mut c, _) =
        Client::connect_tls_from("127.0.0.1", server.port_of("submissions"), pki.client_config(), "mx.example.test");
    c.cmd("EHLO client.test");
    assert_eq!(c.cmd("AUTH LOGIN").code, 334);
    assert_eq!(c.cmd(&crate::support::base64(b"bob")).code, 334);
    assert_eq!(c.cmd(&crate::support::base64(b"Hello world!")).code, 235);
    let r = c.send_data("bob@example.test", &["x@far.test"], b"From: bob@example.test\r\nSubject: s\r\n\r\nb\r\n");
    assert_eq!(r.code, 250, "{}", r.text);
    let macros = milter.macros();
    for (k, v) in [("{auth_type}", "LOGIN"), ("{auth_authen}", "bob"), ("{tls_version}", "TLSv1.3")] {
        assert!(macros.iter().any(|(mk, mv)| mk == k && mv == v), "macro {k}={v} missing: {macros:?}");
    }
}

/// Whether a milter listening on `port` answers an option negotiation (protocol v6, no
/// actions, no steps skipped) within 5 s.
fn milter_answers(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let optneg = [0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut reply = [0u8; 5];
    s.write_all(&optneg).is_ok() && s.read_exact(&mut reply).is_ok() && reply[4] == b'O'
}
