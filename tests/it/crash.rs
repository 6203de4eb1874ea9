//! Crash safety: SIGKILL after `250` loses nothing and delivers exactly once; SIGKILL in the
//! middle of DATA (or of a spool commit) delivers nothing half-written.

use crate::support::Server;
use crate::support::smtp::Client;

fn send_one(server: &Server, subject: &str) -> String {
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO crash.test");
    let r =
        c.send_data("s@remote.test", &["bob@example.test"], format!("Subject: {subject}\r\n\r\nbody\r\n").as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
    r.text
}

#[test]
fn sigkill_after_250_delivers_exactly_once() {
    // Deterministic variant: delivery cannot happen before the kill (bob's Maildir is blocked),
    // so the message can only come from the spool after restart.
    let mut server = Server::start();
    let mail = server.data().join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    std::fs::write(mail.join("bob"), b"blocker").unwrap();
    send_one(&server, "blocked");
    server.kill9();
    assert_eq!(server.queued_messages(), 1, "the queue file must be on disk after 250");
    std::fs::remove_file(mail.join("bob")).unwrap();
    server.restart();
    server.wait_maildir("bob", 1);
    server.wait_queue_empty();

    // Racy variant: kill as soon as the 250 arrives, wherever delivery is.
    for i in 0..5 {
        send_one(&server, &format!("race {i}"));
        server.restart();
        server.wait_queue_empty();
        server.wait_maildir("bob", 2 + i);
    }
    let files = server.maildir("bob");
    assert_eq!(files.len(), 6, "each message exactly once");
}

#[test]
fn sigkill_mid_data_delivers_nothing() {
    let mut server = Server::start();
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO crash.test");
    assert_eq!(c.cmd("MAIL FROM:<s@remote.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: half\r\n\r\nfirst half of the message\r\n");
    // A staged file as an interrupted commit would leave it.
    std::fs::write(server.data().join("spool/incoming/0006610000000001.msg"), b"Subject: staged\r\n\r\nx\r\n").unwrap();
    server.kill9();
    server.restart();
    server.wait_log("removing unacknowledged staged file");
    // A later message is delivered; the half one and the staged one never are.
    send_one(&server, "after");
    let files = server.wait_maildir("bob", 1);
    server.wait_queue_empty();
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("Subject: after"), "{text}");
    assert_eq!(std::fs::read_dir(server.data().join("spool/incoming")).unwrap().count(), 0);
}

#[test]
fn sigkill_during_outbound_transaction_delivers_after_restart() {
    use crate::support::peer::Peer;
    let peer = Peer::start(&[]);
    *peer.hang_first.lock().unwrap() = 1;
    let mut a = Server::start_full("relay-a", &[("PEER", peer.port.to_string())], |t| {
        t.replace("{DNS}", "{NO_DNS}").replace("{PORT}", "9")
    });
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO crash.test");
    let r = c.send_data("alice@a.test", &["bob@flaky.test"], b"Subject: in flight\r\n\r\nbody\r\n");
    assert_eq!(r.code, 250);
    // The peer has the whole message and withholds its final reply: kill A right there.
    crate::support::poll("the peer to hold the message", || (*peer.withheld.lock().unwrap() == 1).then_some(()));
    a.kill9();
    assert_eq!(a.queued_messages(), 1, "still queued after the kill");
    a.restart();
    a.wait_log("1 message(s) recovered from the spool");
    a.wait_queue_empty();
    let received = peer.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "delivered after restart");
    assert!(String::from_utf8_lossy(&received[0]).contains("Subject: in flight"));
}
