//! Connection racing (Happy Eyeballs, RFC 8305, issue 14): an MX whose IPv6 address is a black
//! hole is reached over IPv4 within the head start plus a second, not after the connect
//! timeout; the next message to it tries IPv4 first; an IPv6-only MX still works.

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

/// The `delay=` of the delivery line for `rcpt` with `subject`'s queue ID.
fn delay_of(a: &Server, rcpt: &str, nth: usize) -> (f64, String) {
    let lines: Vec<String> =
        a.log_lines(&format!("to=<{rcpt}>")).into_iter().filter(|l| l.contains("status=sent")).collect();
    let line = lines.get(nth).cloned().unwrap_or_else(|| panic!("no sent line {nth} for {rcpt}: {lines:#?}"));
    let delay = line.split("delay=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    (delay, line)
}

#[test]
fn a_black_holed_ipv6_address_costs_the_head_start_then_ipv4_goes_first() {
    let dns = DnsServer::start(&[("test.", &repo().join("tests/fixtures/dns/relay.test.zone"))]);
    let b = Server::start_with("relay-b", |t| t.replace("local = [\"b.test\",", "local = [\"race.test\", \"b.test\","));
    let _hole = Blackhole::bind("::1".parse().unwrap(), b.port);
    let a = sender(&dns, b.port);

    send(&a, "bob@race.test", "first");
    b.wait_maildir("bob", 1);
    let (delay, line) = delay_of(&a, "bob@race.test", 0);
    assert!(line.contains(&format!("relay=mx.race.test[127.0.0.1]:{}", b.port)), "{line}");
    assert!(delay < 0.25 + 1.0, "delivered after {delay}s, not within the head start + 1 s: {line}");
    let race = a.wait_log("first of a race");
    assert!(race.contains(&format!("[::1]:{} pending after", b.port)), "the loser and its time: {race}");

    // The next message tries IPv4 first: no new attempt at the black hole.
    send(&a, "bob@race.test", "second");
    b.wait_maildir("bob", 2);
    a.wait_log("mx.race.test: IPv4 first: IPv6 lost a race within [outbound] family_memory");
    assert_eq!(a.log_lines("first of a race").len(), 1, "IPv6 was raced again");
    let (delay, _) = delay_of(&a, "bob@race.test", 1);
    assert!(delay < 1.0, "{delay}");
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
    let (_, line) = delay_of(&a, "bob@v6only.test", 0);
    assert!(line.contains(&format!("relay=mx.v6only.test[::1]:{}", b.port)), "{line}");
}
