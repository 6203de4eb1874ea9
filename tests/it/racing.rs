//! Connection racing (Happy Eyeballs, RFC 8305, issue 14): an MX whose IPv6 address is a black
//! hole is reached over IPv4 while the IPv6 attempt is still pending, not after its connect
//! timeout; the next message to it tries IPv4 first; an IPv6-only MX still works. The tests read
//! the order of events from the log (which attempt started, which won, which was still
//! pending), never a wall-clock duration.

use crate::support::dns::DnsServer;
use crate::support::net::Blackhole;
use crate::support::smtp::Client;
use crate::support::{Server, repo};

/// A, relaying through the fixture's DNS to B's port with a 10 s connect timeout, so that a
/// delivery waiting for the black hole's timeout could not pass the test, and no connection
/// cache, so that each message connects anew.
fn sender(dns: &DnsServer, port: u16) -> Server {
    Server::start_full("relay-a", &[("PEER", "9".into())], |t| {
        t.replace("{DNS}", &dns.addr.to_string())
            .replace("{PORT}", &port.to_string())
            .replace("connect_timeout = \"1s\"", "connect_timeout = \"10s\"\nconnection_cache_time = \"0s\"")
    })
}

fn send(a: &Server, rcpt: &str, subject: &str) {
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.test");
    let r = c.send_data("alice@a.test", &[rcpt], format!("Subject: {subject}\r\n\r\nhello\r\n").as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
}

/// The `nth` (from 0) delivery line of `rcpt` with `status=sent`, once A has logged it (A logs
/// it after B's reply, so B's mailbox can have the message a moment before).
fn sent_line(a: &Server, rcpt: &str, nth: usize) -> String {
    crate::support::poll(&format!("sent line {nth} for {rcpt}"), || {
        let lines: Vec<String> =
            a.log_lines(&format!("to=<{rcpt}>")).into_iter().filter(|l| l.contains("status=sent")).collect();
        lines.get(nth).cloned()
    })
}

#[test]
fn a_black_holed_ipv6_address_costs_the_head_start_then_ipv4_goes_first() {
    let dns = DnsServer::start(&[("test.", &repo().join("tests/fixtures/dns/relay.test.zone"))]);
    let b = Server::start_with("relay-b", |t| t.replace("local = [\"b.test\",", "local = [\"race.test\", \"b.test\","));
    let _hole = Blackhole::bind("::1".parse().unwrap(), b.port);
    let a = sender(&dns, b.port);

    send(&a, "bob@race.test", "first");
    b.wait_maildir("bob", 1);
    let line = sent_line(&a, "bob@race.test", 0);
    assert!(line.contains(&format!("relay=mx.race.test[127.0.0.1]:{}", b.port)), "{line}");
    // IPv6 went first (the MX's preferred family), IPv4 started after the head start, and won
    // while the IPv6 attempt was still pending: nothing waited for the black hole's timeout.
    let race = a.wait_log("first of a race");
    assert!(race.contains(&format!("connected to mx.race.test[127.0.0.1]:{}", b.port)), "the winner: {race}");
    assert!(race.contains(&format!("[::1]:{} pending after", b.port)), "the loser, still pending: {race}");
    assert!(a.log_lines(&format!("[::1]:{}: timed out", b.port)).is_empty(), "the black hole's timeout was awaited");
    assert!(a.log_lines("to=<bob@race.test>").iter().all(|l| !l.contains("status=deferred")), "one attempt");

    // The next message tries IPv4 first: no new attempt at the black hole.
    send(&a, "bob@race.test", "second");
    b.wait_maildir("bob", 2);
    a.wait_log("mx.race.test: IPv4 first: IPv6 lost a race within [outbound] family_memory");
    assert_eq!(a.log_lines("first of a race").len(), 1, "IPv6 was raced again");
    let line = sent_line(&a, "bob@race.test", 1);
    assert!(line.contains(&format!("relay=mx.race.test[127.0.0.1]:{}", b.port)), "{line}");
}

#[test]
fn an_ipv6_only_mx_still_works() {
    let dns = DnsServer::start(&[("test.", &repo().join("tests/fixtures/dns/relay.test.zone"))]);
    let b = Server::start_with("relay-b", |t| {
        t.replace("address = \"127.0.0.1:0\"", "address = \"[::1]:0\"")
            .replace("local = [\"b.test\",", "local = [\"v6only.test\", \"b.test\",")
    });
    let a = sender(&dns, b.port);
    send(&a, "bob@v6only.test", "six");
    b.wait_maildir("bob", 1);
    let line = sent_line(&a, "bob@v6only.test", 0);
    assert!(line.contains(&format!("relay=mx.v6only.test[::1]:{}", b.port)), "{line}");
}
