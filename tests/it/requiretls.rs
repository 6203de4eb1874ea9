//! REQUIRETLS (RFC 8689, issue 14 item 5) between two Postern instances: A takes a message
//! with `MAIL FROM ... REQUIRETLS` under TLS and relays it to B over verified TLS with
//! REQUIRETLS again, and B keeps the flag; toward a peer that does not offer REQUIRETLS, or a
//! domain without a validated TLS path, A bounces with 5.7.30 and returns only the header.

use crate::support::certs::Pki;
use crate::support::peer::{Peer, Tls};
use crate::support::smtp::Client;
use crate::support::{Server, poll};
use crate::tls_policy::{line, relaying};

/// B: the final destination of b.test, with STARTTLS on a certificate from `pki` for 127.0.0.1.
fn receiver(pki: &Pki) -> Server {
    let cert = pki.server_cert(&["127.0.0.1"], false);
    Server::start_prepared(
        "relay-b",
        &[],
        |t| t + "\n[tls]\ncert = \"fullchain.pem\"\nkey = \"privkey.pem\"\n",
        |dir| cert.write(dir),
    )
}

/// A: relays for its loopback clients with STARTTLS inbound; each `(domain, port, level)` is
/// routed to `[127.0.0.1]:port` with that `tls_policy` level (none: no entry).
fn sender(pki: &Pki, cases: &[(&str, u16, Option<&str>)]) -> Server {
    let routes: String = cases.iter().map(|(d, p, _)| format!("{d} relay:[127.0.0.1]:{p}\n")).collect();
    let policy: String = cases.iter().filter_map(|(d, _, l)| l.map(|l| format!("{d} {l}\n"))).collect();
    relaying(pki, &routes, &policy, Some(pki.server_cert(&["127.0.0.1"], false)))
}

/// Sends one message from alice@a.test to `rcpt` through A under TLS with REQUIRETLS.
fn send_requiretls(pki: &Pki, a: &Server, rcpt: &str) {
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.test");
    c.starttls(pki.client_config(), "127.0.0.1");
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.text.contains("REQUIRETLS"), "offered under TLS: {}", ehlo.text);
    assert_eq!(c.cmd("MAIL FROM:<alice@a.test> REQUIRETLS").code, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")).code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(format!("Subject: secret for {rcpt}\r\n\r\nthe private body\r\n.\r\n").as_bytes());
    let r = c.read_reply().unwrap();
    assert_eq!(r.code, 250, "{}", r.text);
}

#[test]
fn requiretls_is_kept_across_two_posterns_and_bounces_5_7_30_otherwise() {
    let pki = Pki::new();
    let b = receiver(&pki);
    let without = Peer::start_tls(&[], Tls::Offer(pki.server_cert(&["127.0.0.1"], false).server_config()));
    let a = sender(
        &pki,
        &[
            ("b.test", b.port, Some("verify")),
            ("plain.test", without.port, Some("verify")),
            ("open.test", b.port, None),
        ],
    );
    // In clear text REQUIRETLS is neither offered nor taken.
    let (mut c, _) = Client::connect(a.port);
    assert!(!c.cmd("EHLO client.test").text.contains("REQUIRETLS"));
    assert_eq!(c.cmd("MAIL FROM:<alice@a.test> REQUIRETLS").code, 555);

    // A to B: verified TLS, REQUIRETLS passed on, and B keeps the flag in its envelope.
    send_requiretls(&pki, &a, "bob@b.test");
    let sent = line(&a, "bob@b.test", "sent");
    assert!(sent.contains("verify=OK tls_policy=verify requiretls"), "{sent}");
    b.wait_maildir("bob", 1);
    let arrival = b.wait_log("from=<alice@a.test>");
    assert!(arrival.contains("requiretls"), "B did not keep the flag: {arrival}");

    // A peer that verifies but does not offer REQUIRETLS: 5.7.30, nothing sent to it.
    send_requiretls(&pki, &a, "x@plain.test");
    let bounced = line(&a, "x@plain.test", "bounced");
    assert!(bounced.contains("dsn=5.7.30") && bounced.contains("does not offer REQUIRETLS"), "{bounced}");
    assert!(without.received.lock().unwrap().is_empty(), "the message reached a peer without REQUIRETLS");

    // A domain without MTA-STS or a `verify` entry: no validated path, 5.7.30 at once.
    send_requiretls(&pki, &a, "x@open.test");
    let bounced = line(&a, "x@open.test", "bounced");
    assert!(bounced.contains("dsn=5.7.30") && bounced.contains("no validated TLS path to open.test"), "{bounced}");

    // The bounces come back with the header only (RFC 8689 §5), flagged REQUIRETLS themselves.
    let dsns = a.wait_maildir("alice", 2);
    for dsn in &dsns {
        let text = std::fs::read_to_string(dsn).unwrap();
        assert!(text.contains("5.7.30") && text.contains("Subject: secret for"), "{text}");
        assert!(!text.contains("the private body"), "the body went back in the DSN: {text}");
    }
    let dsn_arrivals = poll("two DSN arrivals", || {
        let l = a.log_lines("failure DSN of");
        (l.len() >= 2).then_some(l)
    });
    assert!(dsn_arrivals.iter().all(|l| l.contains("requiretls")), "{dsn_arrivals:?}");
}
