//! Delivery: one message to many kinds of recipients with a real Rust SMTP client (lettre),
//! temporary failures and retries, reload of tables, limits and timeouts.

use lettre::address::Envelope;
use lettre::{Address, SmtpTransport, Transport};

use crate::support::smtp::Client;
use crate::support::{Server, poll};

fn lettre(port: u16) -> SmtpTransport {
    SmtpTransport::builder_dangerous("127.0.0.1").port(port).timeout(Some(crate::support::wait_bound())).build()
}

/// The recipients of the acceptance criterion and the mailbox each must land in.
pub const FANOUT: [(&str, &[&str]); 5] = [
    ("dave@example.test", &["dave"]),             // plain user
    ("team@example.test", &["alice", "bob"]),     // alias fanning out to two users
    ("sales@example.test", &["carol"]),           // virtual entry
    ("whoever@catch.test", &["catchall"]),        // catch-all
    ("erin+newsletters@example.test", &["erin"]), // user+tag
];

#[test]
fn lettre_one_message_many_recipients() {
    let server = Server::start();
    let rcpts: Vec<Address> = FANOUT.iter().map(|(a, _)| a.parse().unwrap()).collect();
    let env = Envelope::new(Some("sender@remote.test".parse().unwrap()), rcpts).unwrap();
    // lettre appends CRLF.CRLF itself, so the message is given without its final CRLF.
    let msg = b"From: sender@remote.test\r\nTo: team@example.test\r\nSubject: fan-out\r\n\r\nHello all.";
    let resp = lettre(server.port).send_raw(&env, msg).unwrap();
    assert_eq!(resp.code().to_string(), "250");
    for (rcpt, boxes) in FANOUT {
        for b in boxes {
            let files = server.wait_maildir(b, 1);
            let text = std::fs::read_to_string(&files[0]).unwrap();
            assert!(text.starts_with("Return-Path: <sender@remote.test>\nDelivered-To: "), "{text}");
            assert!(text.ends_with("Subject: fan-out\n\nHello all.\n"), "{b} for {rcpt}: {text}");
            assert!(text.contains("by mx.example.test (Postern) with ESMTP id "), "{text}");
        }
    }
    server.wait_queue_empty();
    // One log line per delivery, keyed by the queue ID, with delay, dsn and status.
    let sent = server.log_lines("status=sent");
    assert_eq!(sent.len(), 6, "{sent:#?}");
    assert!(sent.iter().all(|l| l.contains("relay=local") && l.contains("dsn=2.0.0") && l.contains("delay=")));
    assert!(sent.iter().any(|l| l.contains("to=<bob@example.test>, orig_to=<team@example.test>")));
    // Nothing else was created: exactly the six mailboxes.
    let boxes = std::fs::read_dir(server.data().join("mail")).unwrap().count();
    assert_eq!(boxes, 6);
}

#[test]
fn lettre_errors_are_reported_at_rcpt() {
    let server = Server::start();
    let t = lettre(server.port);
    let send = |to: &str| {
        let env = Envelope::new(Some("s@remote.test".parse().unwrap()), vec![to.parse().unwrap()]).unwrap();
        t.send_raw(&env, b"Subject: x\r\n\r\nx\r\n").unwrap_err().to_string()
    };
    assert!(send("nobody@example.test").contains("5.1.1"));
    assert!(send("x@elsewhere.test").contains("5.7.1"));
    let big = vec![b'a'; 1_100_000];
    let env = Envelope::new(Some("s@remote.test".parse().unwrap()), vec!["bob@example.test".parse().unwrap()]).unwrap();
    let err = t.send_raw(&env, &big).unwrap_err().to_string();
    assert!(err.contains("5.3.4"), "{err}");
}

#[test]
fn temporary_failure_is_retried_not_dropped() {
    let server = Server::start();
    // A regular file where bob's Maildir should be: delivery fails (temporarily).
    let mail = server.data().join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    std::fs::write(mail.join("bob"), b"in the way").unwrap();
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO client.test");
    let r = c.send_data("s@remote.test", &["bob@example.test", "alice@example.test"], b"Subject: retry\r\n\r\nx\r\n");
    assert_eq!(r.code, 250);
    server.wait_maildir("alice", 1);
    let line = server.wait_log("to=<bob@example.test>");
    assert!(line.contains("status=deferred") && line.contains("dsn=4.3.0"), "{line}");
    assert_eq!(server.queued_messages(), 1, "message must stay queued");
    std::fs::remove_file(mail.join("bob")).unwrap();
    // Retried after min_backoff (1s): delivered once, alice not again.
    server.wait_maildir("bob", 1);
    server.wait_queue_empty();
    assert_eq!(server.maildir("alice").len(), 1);
}

#[test]
fn sighup_reloads_tables_and_keeps_old_on_error() {
    let server = Server::start();
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<s@remote.test>");
    assert_eq!(c.cmd("RCPT TO:<frank@example.test>").code, 550);
    let users = server.dir.0.join("users");
    let mut text = std::fs::read_to_string(&users).unwrap();
    text.push_str("frank\n");
    std::fs::write(&users, &text).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log("SIGHUP: reloaded");
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<s@remote.test>");
    assert_eq!(c.cmd("RCPT TO:<frank@example.test>").code, 250);
    // A broken table is refused; frank stays valid.
    std::fs::write(&users, "frank\nbad name\n").unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log("SIGHUP: new configuration refused");
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<s@remote.test>");
    assert_eq!(c.cmd("RCPT TO:<frank@example.test>").code, 250);
}

#[test]
fn connection_limit_per_ip_and_timeout() {
    let server =
        Server::start_with("basic", |t| t + "\n[server]\nmax_connections_per_ip = 2\n\n[timeouts]\nhelo = \"1s\"\n");
    let (_a, g1) = Client::connect(server.port);
    let (_b, g2) = Client::connect(server.port);
    assert_eq!((g1.code, g2.code), (220, 220));
    let (mut c, g3) = Client::connect(server.port);
    assert!(g3.text.starts_with("421 4.7.0"), "{}", g3.text);
    assert!(c.read_reply().is_none(), "connection over the limit must be closed");
    // Another client IP is still served.
    let (_d, g4) = Client::connect_from("127.0.0.3", server.port);
    assert_eq!(g4.code, 220);
    // The idle sessions time out in the HELO stage with 421 4.4.2.
    let (mut e, _) = Client::connect_from("127.0.0.4", server.port);
    let r = e.read_reply().unwrap();
    assert!(r.text.starts_with("421 4.4.2"), "{}", r.text);
}

#[test]
fn graceful_shutdown_keeps_the_queue() {
    let mut server = Server::start();
    let (mut c, _) = Client::connect_from("127.0.0.2", server.port);
    c.cmd("EHLO client.test");
    let r = c.send_data("s@example.test", &["x@elsewhere.test"], b"Subject: keep\r\n\r\nx\r\n");
    assert_eq!(r.code, 250);
    // An idle session is told we are going away.
    server.signal(libc::SIGTERM);
    let bye = c.read_reply().unwrap();
    assert!(bye.text.starts_with("421 4.3.2"), "{}", bye.text);
    assert_eq!(server.wait_exit(), Some(0));
    assert_eq!(server.queued_messages(), 1);
    server.restart();
    server.wait_log("1 message(s) recovered from the spool");
    poll("the queue to still hold the message", || (server.queued_messages() == 1).then_some(()));
}

#[test]
fn mbox_delivery_appends_locked_and_quoted() {
    let server = Server::start_with("basic", |t| {
        format!("{t}\n[delivery]\nlocal = \"mbox\"\nmbox = \"{{data_dir}}/mbox/{{mailbox}}\"\n")
    });
    let (mut c, _) = crate::support::smtp::Client::connect(server.port);
    c.cmd("EHLO client.test");
    for n in 1..=2 {
        let body = format!("Subject: mbox {n}\r\n\r\nFrom the start of a line\r\nline {n}\r\n");
        assert_eq!(c.send_data("alice@example.test", &["bob@example.test"], body.as_bytes()).code, 250);
    }
    let mbox = server.data().join("mbox/bob");
    let text = crate::support::poll("two messages in bob's mbox", || {
        let t = std::fs::read_to_string(&mbox).ok()?;
        (t.matches("\nSubject: mbox ").count() == 2).then_some(t)
    });
    assert!(text.starts_with("From alice@example.test "), "{text}");
    assert!(text.contains("\nReturn-Path: <alice@example.test>\nDelivered-To: bob@example.test\n"), "{text}");
    assert!(text.contains("\n>From the start of a line\nline 1\n\nFrom alice@example.test "), "{text}");
    server.wait_log("status=sent (250 2.0.0 delivered to mbox");
    assert!(server.maildir("bob").is_empty(), "no Maildir copy");
}

/// A reader (mutt, mail(1)) holding the mailbox's dotlock, then its fcntl lock: the delivery
/// waits `mbox_lock_timeout`, writes nothing, is deferred naming the lock, and is delivered
/// once the lock is gone.
#[test]
fn an_mbox_locked_by_a_reader_defers_the_delivery_and_loses_nothing() {
    use std::os::fd::AsRawFd as _;
    let server = Server::start_with("basic", |t| {
        format!(
            "{t}\n[delivery]\nlocal = \"mbox\"\nmbox = \"{{data_dir}}/mbox/{{mailbox}}\"\nmbox_lock_timeout = \"1s\"\n"
        )
    });
    let mbox = server.data().join("mbox/bob");
    std::fs::create_dir_all(mbox.parent().unwrap()).unwrap();
    std::fs::write(&mbox, "").unwrap();
    let send = |n: u32| {
        let (mut c, _) = crate::support::smtp::Client::connect(server.port);
        c.cmd("EHLO client.test");
        let body = format!("Subject: locked {n}\r\n\r\nx\r\n");
        assert_eq!(c.send_data("alice@example.test", &["bob@example.test"], body.as_bytes()).code, 250);
    };
    let flush_until_sent = |n: usize| {
        let (code, out) = crate::support::postern_cli(&["queue", "flush"], &server.config_path());
        assert_eq!(code, Some(0), "{out}");
        poll("the delivery after the lock was released", || {
            (server.log_lines("delivered to mbox").len() == n).then_some(())
        });
    };

    // The dotlock, as mail.local and procmail take it.
    let dotlock = mbox.with_file_name("bob.lock");
    std::fs::write(&dotlock, "").unwrap();
    send(1);
    let deferred = server.wait_log("status=deferred");
    assert!(deferred.contains("dotlock") && deferred.contains("bob.lock"), "{deferred}");
    assert_eq!(std::fs::read_to_string(&mbox).unwrap(), "", "nothing written under the reader's lock");
    std::fs::remove_file(&dotlock).unwrap();
    flush_until_sent(1);

    // An fcntl write lock on the whole file, as mutt holds it while it rewrites the mailbox.
    let reader = std::fs::OpenOptions::new().write(true).open(&mbox).unwrap();
    // SAFETY: a zeroed flock is a valid argument; the fd is open for the call.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    assert_eq!(unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_OFD_SETLK, &raw const fl) }, 0);
    let before = std::fs::read_to_string(&mbox).unwrap();
    send(2);
    poll("the second deferral", || (server.log_lines("status=deferred").len() == 2).then_some(()));
    let deferred = server.log_lines("status=deferred").pop().unwrap();
    assert!(deferred.contains("lock") && !deferred.contains("dotlock"), "{deferred}");
    assert_eq!(std::fs::read_to_string(&mbox).unwrap(), before, "nothing written under the reader's lock");
    drop(reader);
    flush_until_sent(2);
    let text = std::fs::read_to_string(&mbox).unwrap();
    assert_eq!(
        (text.matches("Subject: locked 1").count(), text.matches("Subject: locked 2").count()),
        (1, 1),
        "{text}"
    );
    server.wait_queue_empty();
}
