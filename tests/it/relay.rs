//! Outbound delivery between two Postern instances on loopback, with a real DNS server:
//! A relays to B via MX; a refusing primary MX falls over to the secondary; a primary MX that
//! never answers costs one connect timeout; a bracketed route skips the MX lookup; a null MX
//! fails at once with 5.1.10.

use crate::support::dns::DnsServer;
use crate::support::net::Blackhole;
use crate::support::smtp::Client;
use crate::support::{Server, repo};

#[test]
fn a_relays_to_b_through_mx() {
    let zone = repo().join("tests/fixtures/dns/relay.test.zone");
    let dns = DnsServer::start(&[("test.", &zone)]);
    let b = Server::start_with("relay-b", |t| t);
    let _hole = Blackhole::bind("127.0.0.9".parse().unwrap(), b.port);
    let a = Server::start_full("relay-a", &[("PEER", "9".into())], |t| {
        t.replace("{DNS}", &dns.addr.to_string()).replace("{PORT}", &b.port.to_string())
    });
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.test");
    let rcpts = ["bob@b.test", "bob@failover.test", "bob@slow.test", "bob@routed.test"];
    for rcpt in rcpts {
        let r = c.send_data("alice@a.test", &[rcpt], format!("Subject: to {rcpt}\r\n\r\nhello\r\n").as_bytes());
        assert_eq!(r.code, 250, "{rcpt}: {}", r.text);
    }
    // Each lands exactly once in B's Maildir.
    let files = b.wait_maildir("bob", rcpts.len());
    let texts: Vec<String> = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    for rcpt in rcpts {
        let n = texts.iter().filter(|t| t.contains(&format!("Subject: to {rcpt}\n"))).count();
        assert_eq!(n, 1, "{rcpt} delivered {n} times");
    }
    // B's trace shows A's name; A's message was not rewritten.
    assert!(texts.iter().all(|t| t.contains("Received: from a.example.test ([127.0.0.1])")));
    a.wait_queue_empty();

    let sent = |rcpt: &str| {
        a.log_lines(&format!("to=<{rcpt}>"))
            .into_iter()
            .find(|l| l.contains("status=sent"))
            .unwrap_or_else(|| panic!("no sent line for {rcpt}"))
    };
    let mx_b = format!("relay=mx.b.test[127.0.0.1]:{}", b.port);
    assert!(sent("bob@b.test").contains(&mx_b));
    // The refusing primary was tried, the secondary took it.
    assert!(!a.log_lines(&format!("connect to 127.0.0.5:{}", b.port)).is_empty());
    assert!(sent("bob@failover.test").contains(&mx_b));
    // Another destination with the same dead primary: skipped by the host status cache.
    let r = c.send_data("alice@a.test", &["bob@failover2.test"], b"Subject: again\r\n\r\nhello\r\n");
    assert_eq!(r.code, 250);
    a.wait_log("skipped by the host status cache");
    b.wait_maildir("bob", rcpts.len() + 1);
    let tries: Vec<String> = a
        .log_lines(&format!("connect to 127.0.0.5:{}: Connection refused", b.port))
        .into_iter()
        .filter(|l| !l.contains("skipped"))
        .collect();
    assert_eq!(tries.len(), 1, "the dead host was connected to again: {tries:#?}");
    // The silent primary cost one connect timeout (1 s), not more: it was tried once, and the
    // secondary took the message in that same attempt (no deferral, no retry).
    assert_eq!(a.log_lines(&format!("connect to 127.0.0.9:{}: timed out", b.port)).len(), 1);
    let slow = sent("bob@slow.test");
    assert!(slow.contains(&mx_b), "{slow}");
    assert_eq!(a.log_lines("to=<bob@slow.test>").len(), 1, "one attempt: {:#?}", a.log_lines("to=<bob@slow.test>"));
    // Brackets: no MX lookup, straight to the address.
    assert!(sent("bob@routed.test").contains(&format!("relay=127.0.0.1[127.0.0.1]:{}", b.port)));

    // Null MX: an immediate permanent failure, never retried.
    let r = c.send_data("alice@a.test", &["x@nullmx.test"], b"Subject: null\r\n\r\nx\r\n");
    assert_eq!(r.code, 250);
    let line = a.wait_log("to=<x@nullmx.test>");
    assert!(line.contains("status=bounced") && line.contains("dsn=5.1.10"), "{line}");
    a.wait_queue_empty();
}

#[test]
fn temporary_failure_then_success_is_delivered_once() {
    let peer = crate::support::peer::Peer::start(&["451 4.7.1 Greylisted, try again later"]);
    let a = Server::start_full("relay-a", &[("PEER", peer.port.to_string())], |t| {
        t.replace("{DNS}", "{NO_DNS}").replace("{PORT}", "9")
    });
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.test");
    let r = c.send_data("alice@a.test", &["bob@flaky.test"], b"Subject: greylisted\r\n\r\nhello\r\n");
    assert_eq!(r.code, 250);
    let deferred = a.wait_log("to=<bob@flaky.test>, relay=127.0.0.1[127.0.0.1]");
    assert!(deferred.contains("status=deferred") && deferred.contains("451 4.7.1"), "{deferred}");
    // Retried after min_backoff (1 s): accepted, then never sent again.
    a.wait_queue_empty();
    let sent = a.log_lines("status=sent");
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let received = peer.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "delivered exactly once");
    assert!(String::from_utf8_lossy(&received[0]).contains("Subject: greylisted\r\n\r\nhello\r\n"));
    assert_eq!(peer.rcpts.lock().unwrap().len(), 2, "one refused RCPT, one accepted");
}

#[test]
fn opportunistic_starttls_and_clear_text_fallback() {
    use crate::support::peer::{Peer, Tls, self_signed_tls};
    // A peer with a self-signed certificate: TLS is used, verification fails, delivery goes on.
    let peer = Peer::start_tls(&[], Tls::Offer(self_signed_tls()));
    let a = Server::start_full("relay-a", &[("PEER", peer.port.to_string())], |t| {
        t.replace("{DNS}", "{NO_DNS}").replace("{PORT}", "9")
    });
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.test");
    assert_eq!(c.send_data("alice@a.test", &["bob@flaky.test"], b"Subject: private\r\n\r\nx\r\n").code, 250);
    a.wait_queue_empty();
    assert_eq!(*peer.over_tls.lock().unwrap(), [true], "sent over TLS");
    let line = a.wait_log("status=sent");
    assert!(line.contains("tls=TLSv1.3 cipher=TLS13_") && line.contains("verify=FAIL"), "{line}");

    // A peer whose STARTTLS breaks: the message goes in clear text on a new connection.
    let broken = Peer::start_tls(&[], Tls::Broken);
    let b = Server::start_full("relay-a", &[("PEER", broken.port.to_string())], |t| {
        t.replace("{DNS}", "{NO_DNS}").replace("{PORT}", "9")
    });
    let (mut c, _) = Client::connect(b.port);
    c.cmd("EHLO client.test");
    assert_eq!(c.send_data("alice@a.test", &["bob@flaky.test"], b"Subject: anyway\r\n\r\nx\r\n").code, 250);
    b.wait_queue_empty();
    assert_eq!(*broken.over_tls.lock().unwrap(), [false]);
    assert!(!b.log_lines("retrying in clear text").is_empty());
    assert!(b.wait_log("status=sent").contains("tls=none"));
}

#[test]
fn connections_are_reused_and_limited_per_destination() {
    use crate::support::peer::Peer;
    // Two messages one after the other: the second reuses the first one's connection.
    let peer = Peer::start(&[]);
    let a = Server::start_full("relay-a", &[("PEER", peer.port.to_string())], |t| {
        t.replace("{DNS}", "{NO_DNS}")
            .replace("{PORT}", "9")
            .replace("connect_timeout", "connection_cache_time = \"30s\"\nconnect_timeout")
    });
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.test");
    for i in 0..2 {
        assert_eq!(
            c.send_data("alice@a.test", &["bob@flaky.test"], format!("Subject: {i}\r\n\r\nx\r\n").as_bytes()).code,
            250
        );
        a.wait_queue_empty();
    }
    assert_eq!(peer.received.lock().unwrap().len(), 2);
    assert_eq!(peer.connections.lock().unwrap().0, 1, "the second message must reuse the connection");

    // max_per_destination = 1: never more than one session to the destination at once.
    let peer = Peer::start(&[]);
    let a = Server::start_full("relay-a", &[("PEER", peer.port.to_string())], |t| {
        t.replace("{DNS}", "{NO_DNS}")
            .replace("{PORT}", "9")
            .replace("connect_timeout", "max_per_destination = 1\nconnection_cache_time = \"0s\"\nconnect_timeout")
    });
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.test");
    for i in 0..6 {
        assert_eq!(
            c.send_data("alice@a.test", &["bob@flaky.test"], format!("Subject: {i}\r\n\r\nx\r\n").as_bytes()).code,
            250
        );
    }
    a.wait_queue_empty();
    assert_eq!(peer.received.lock().unwrap().len(), 6);
    let (total, _, most) = *peer.connections.lock().unwrap();
    assert_eq!(most, 1, "at most one session at once");
    assert_eq!(total, 6, "connection_cache_time = 0s: one connection per message");
}

#[test]
fn sender_routes_take_precedence() {
    use crate::support::peer::Peer;
    // DNS points at a closed port: without the sender route, b.test's MX lookup would fail.
    let peer = Peer::start(&[]);
    let a = Server::start_full("relay-a", &[("PEER", peer.port.to_string())], |t| {
        t.replace("{DNS}", "{NO_DNS}").replace("{PORT}", "9")
    });
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.test");
    assert_eq!(c.send_data("sample@capture.test", &["bob@b.test"], b"Subject: captured\r\n\r\nx\r\n").code, 250);
    a.wait_queue_empty();
    assert_eq!(peer.received.lock().unwrap().len(), 1);
    assert!(a.wait_log("status=sent").contains(&format!("relay=127.0.0.1[127.0.0.1]:{}", peer.port)));
}
