//! Client screening after EHLO (issue: anti-spam), against a DNS server on loopback with a
//! zone per case; each client connects from its own 127.0.0.x address with its own PTR.

use crate::support::dns::{DnsServer, SilentDns};
use crate::support::smtp::Client;
use crate::support::{Server, assert_contains_all, postern_cli, repo};

fn dns() -> DnsServer {
    let z = |f: &str| repo().join("tests/fixtures/dns").join(f);
    DnsServer::start(&[
        ("policy.test.", &z("policy.test.zone")),
        ("0.0.127.in-addr.arpa.", &z("reverse-127.zone")),
        ("bl.test.", &z("bl.test.zone")),
    ])
}

/// The basic fixture with `[policy]` on, `settings` added to it, and `dns` as name server.
fn server(dns: &str, settings: &str) -> Server {
    Server::start_with("basic", |t| {
        t.replace("enabled = false", &format!("enabled = true\n{settings}")).replace("{NO_DNS}", dns)
    })
}

const STRICT: &str = "ptr = \"reject\"\nfcrdns = \"reject\"\ngeneric_ptr = \"reject\"\nhelo_resolves = \"reject\"\nhelo_matches = \"reject\"\ndnsbl_zones = [\"bl.test=127.0.0.2\"]\n";

/// Each EHLO check's case: client address, HELO name, and the start of the reply (`STRICT`).
const CASES: &[(&str, &str, &str)] = &[
    (
        "127.0.0.11",
        "nofwd.policy.test",
        "550 5.7.25 Reverse DNS of 127.0.0.11 (nofwd.policy.test) does not resolve back to it (FCrDNS)",
    ),
    (
        "127.0.0.12",
        "127-0-0-12.dynamic.policy.test",
        "550 5.7.25 Reverse DNS of 127.0.0.12 (127-0-0-12.dynamic.policy.test) looks like a dynamic or generic address",
    ),
    ("127.0.0.13", "good.policy.test", "550 5.7.25 Client [127.0.0.13] has no reverse DNS (PTR record)"),
    ("127.0.0.10", "localhost", "550 5.5.2 HELO/EHLO localhost rejected"),
    ("127.0.0.10", "bare", "550 5.5.2 HELO/EHLO bare rejected"),
    ("127.0.0.10", "mx.example.test", "550 5.7.1 HELO/EHLO mx.example.test rejected: that is our name"),
    ("127.0.0.10", "nx.policy.test", "550 5.7.1 HELO/EHLO nx.policy.test rejected: the name does not resolve"),
    (
        "127.0.0.10",
        "elsewhere.bl.test",
        "550 5.7.1 HELO/EHLO elsewhere.bl.test rejected: the name does not point to 127.0.0.10",
    ),
    (
        "127.0.0.14",
        "listed.policy.test",
        "550 5.7.1 Service unavailable; client [127.0.0.14] blocked using bl.test (127.0.0.2)",
    ),
];

/// The greeting's code for a client from `from`.
fn greeting(port: u16, from: &str) -> u16 {
    Client::connect_from(from, port).1.code
}

fn ehlo(port: u16, from: &str, helo: &str) -> crate::support::smtp::Reply {
    let (mut c, g) = Client::connect_from(from, port);
    assert_eq!(g.code, 220, "the greeting never waits for DNS: {}", g.text);
    c.cmd(&format!("EHLO {helo}"))
}

#[test]
fn each_check_catches_its_case_after_ehlo() {
    let dns = dns();
    let s = server(&dns.addr.to_string(), STRICT);
    let ok = ehlo(s.port, "127.0.0.10", "good.policy.test");
    assert_eq!(ok.code, 250, "{}", ok.text);
    // Another name in the same registered domain as the forward-confirmed PTR passes
    // helo_matches even though it points elsewhere.
    assert_eq!(ehlo(s.port, "127.0.0.10", "other.policy.test").code, 250);
    for &(ip, helo, want) in CASES {
        let r = ehlo(s.port, ip, helo);
        assert!(r.text.starts_with(want), "{ip} {helo}: got {}", r.text);
    }
    // Trusted networks (127.0.0.2 in the fixture) are not screened at all.
    assert_eq!(ehlo(s.port, "127.0.0.2", "bare").code, 250, "a trusted client was screened");
    // A refused EHLO leaves the session without HELO: MAIL is refused too; a better EHLO passes.
    let (mut c, _) = Client::connect_from("127.0.0.10", s.port);
    assert_eq!(c.cmd("EHLO bare").code, 550);
    assert_eq!(c.cmd("MAIL FROM:<a@policy.test>").code, 503);
    assert_eq!(c.cmd("EHLO good.policy.test").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@policy.test>").code, 250);
    let line = s.wait_log("policy: [127.0.0.11] helo=<nofwd.policy.test>");
    assert!(line.contains("fcrdns: fail (PTR nofwd.policy.test does not resolve back) -> reject"), "{line}");
    s.wait_log("NOQUEUE: reject: EHLO from [127.0.0.14]");
}

#[test]
fn tag_instead_of_reject_and_lists() {
    let dns = dns();
    let s = server(
        &dns.addr.to_string(),
        "fcrdns = \"tag\"\nblock_networks = [\"127.0.0.15/32\"]\nallow_networks = [\"127.0.0.13/32\"]\nptr = \"reject\"\n",
    );
    // Tagged: accepted, and the message says why.
    let (mut c, _) = Client::connect_from("127.0.0.11", s.port);
    assert_eq!(c.cmd("EHLO nofwd.policy.test").code, 250);
    assert_eq!(c.send_data("x@policy.test", &["bob@example.test"], b"Subject: tagged\r\n\r\nx\r\n").code, 250);
    let text = std::fs::read_to_string(&s.wait_maildir("bob", 1)[0]).unwrap();
    assert!(text.contains("X-Postern-Policy: fcrdns=fail (PTR nofwd.policy.test does not resolve back)"), "{text}");
    // The block list refuses at connect, before any DNS (RFC 5321 3.1: 554, then only QUIT);
    // the allow list skips every check (13 has no PTR).
    let (mut c, g) = Client::connect_from("127.0.0.15", s.port);
    assert!(g.text.starts_with("554 5.7.1 Client host [127.0.0.15] blocked by local policy"), "{}", g.text);
    assert_eq!(c.cmd("EHLO good.policy.test").code, 503);
    assert_eq!(c.cmd("QUIT").code, 221);
    s.wait_log("NOQUEUE: reject: CONNECT from [127.0.0.15]: 554 5.7.1");
    assert_eq!(ehlo(s.port, "127.0.0.13", "good.policy.test").code, 250);
}

#[test]
fn block_list_file_is_reread_on_reload() {
    let dns = dns();
    let dir = crate::support::TempDir::new("blocklist");
    let list = dir.0.join("block.txt");
    std::fs::write(&list, "# attackers\n127.0.0.15\n").unwrap();
    let s = server(
        &dns.addr.to_string(),
        &format!(
            "block_networks_file = \"{}\"\nptr = \"off\"\nfcrdns = \"off\"\nhelo_resolves = \"off\"\n",
            list.display()
        ),
    );
    assert_eq!(greeting(s.port, "127.0.0.15"), 554);
    assert_eq!(ehlo(s.port, "127.0.0.16", "good.policy.test").code, 250);
    std::fs::write(&list, "127.0.0.16/32\n").unwrap();
    s.signal(libc::SIGHUP);
    s.wait_log("SIGHUP: reloaded");
    assert_eq!(ehlo(s.port, "127.0.0.15", "good.policy.test").code, 250);
    assert_eq!(greeting(s.port, "127.0.0.16"), 554);
    // A broken list is refused with its file and line; the list in force stays.
    std::fs::write(&list, "127.0.0.16/32\nnot-a-network\n").unwrap();
    s.signal(libc::SIGHUP);
    let line = s.wait_log("block.txt:2:");
    assert!(line.contains("\"not-a-network\" is not a network"), "{line}");
    assert_eq!(greeting(s.port, "127.0.0.16"), 554);
}

#[test]
fn dns_timeouts_defer_never_reject() {
    let silent = SilentDns::start();
    let s = server(&silent.addr.to_string(), "fcrdns = \"reject\"\n");
    let r = ehlo(s.port, "127.0.0.10", "good.policy.test");
    // ptr is only tagged (temporary failure skipped); fcrdns would reject: 451, never 550.
    assert!(r.text.starts_with("451 4.4.3 Temporary DNS failure while checking fcrdns"), "{}", r.text);
}

#[test]
fn policy_test_prints_every_verdict() {
    let dns = dns();
    // The daemon's own configuration: `policy test` must answer as that daemon would.
    let daemon = server(&dns.addr.to_string(), STRICT);
    let cfg = daemon.config_path();
    let run_from = |ip: &str, helo: &str, from: &str| {
        let (code, out) = postern_cli(&["policy", "test", "--ip", ip, "--helo", helo, "--from", from], &cfg);
        assert_eq!(code, Some(0), "{out}");
        out
    };
    let run = |ip: &str, helo: &str| run_from(ip, helo, "a@policy.test");
    let good = run("127.0.0.10", "good.policy.test");
    assert_contains_all(
        &good,
        &[
            "helo_fqdn: pass",
            "helo_not_ours: pass",
            "ptr: pass",
            "fcrdns: pass",
            "generic_ptr: pass",
            "helo_resolves: pass",
            "helo_matches: pass",
            "dnsbl: pass",
        ],
    );
    assert!(good.ends_with("verdict: accept\n"), "{good}");
    let listed = run("127.0.0.14", "listed.policy.test");
    assert!(listed.contains("dnsbl: fail (listed in bl.test (127.0.0.2)) -> reject"), "{listed}");
    assert!(listed.contains("verdict: 550 5.7.1 Service unavailable"), "{listed}");
    let spammer = run_from("127.0.0.10", "good.policy.test", "x@nullmx.policy.test");
    assert!(
        spammer.contains(
            "(MAIL FROM <x@nullmx.policy.test>) sender_domain: fail (nullmx.policy.test has a null MX) -> reject"
        ),
        "{spammer}"
    );
    assert!(spammer.contains("verdict: 550 5.7.27"), "{spammer}");
    // Every case the daemon refuses after EHLO gets the same reply from `policy test`.
    for &(ip, helo, want) in CASES {
        let out = run(ip, helo);
        assert!(out.contains(&format!("verdict: {want}")), "{ip} {helo}: want {want}:\n{out}");
    }
    let generic = run("127.0.0.12", "127-0-0-12.dynamic.policy.test");
    assert!(generic.contains("generic_ptr: fail") && generic.contains("verdict: 550 5.7.25"), "{generic}");
}

#[test]
fn greylisting_defers_then_accepts_and_survives_a_restart() {
    let dns = dns();
    let mut s = server(
        &dns.addr.to_string(),
        "greylist = \"defer\"\ngreylist_delay = \"1s\"\ngreylist_skip_fcrdns = false\nptr = \"off\"\nfcrdns = \"off\"\nhelo_resolves = \"off\"\n",
    );
    let rcpt = |port: u16| {
        let (mut c, _) = Client::connect_from("127.0.0.10", port);
        assert_eq!(c.cmd("EHLO good.policy.test").code, 250);
        assert_eq!(c.cmd("MAIL FROM:<news@policy.test>").code, 250);
        c.cmd("RCPT TO:<bob@example.test>")
    };
    let first = rcpt(s.port);
    assert!(first.text.starts_with("451 4.7.1 <bob@example.test>: Greylisted, please try again in"), "{}", first.text);
    // The retry is accepted once the delay has passed (polled, bounded).
    crate::support::poll("the greylisting delay to pass", || (rcpt(s.port).code == 250).then_some(()));
    s.wait_log("greylist: [127.0.0.10] from=<news@policy.test> to=<bob@example.test>: deferred");
    // The triplet is remembered across a restart; another sender starts over.
    s.restart();
    assert_eq!(rcpt(s.port).code, 250);
    let (mut c, _) = Client::connect_from("127.0.0.10", s.port);
    c.cmd("EHLO good.policy.test");
    c.cmd("MAIL FROM:<other@policy.test>");
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").code, 451);
}

#[test]
fn sender_domain_checks_at_mail() {
    let dns = dns();
    let s = server(
        &dns.addr.to_string(),
        "sender_mx = \"reject\"\nrhsbl_zones = [\"bl.test\"]\nptr = \"off\"\nfcrdns = \"off\"\nhelo_resolves = \"off\"\n",
    );
    let mail = |from: &str| {
        let (mut c, _) = Client::connect_from("127.0.0.10", s.port);
        assert_eq!(c.cmd("EHLO good.policy.test").code, 250);
        c.cmd(&format!("MAIL FROM:<{from}>"))
    };
    let cases = [
        (
            "x@nomail.policy.test",
            "550 5.1.8 <x@nomail.policy.test>: Sender address rejected: domain nomail.policy.test has no mail server",
        ),
        (
            "x@nullmx.policy.test",
            "550 5.7.27 <x@nullmx.policy.test>: Sender address rejected: nullmx.policy.test accepts no mail (null MX",
        ),
        (
            "x@cnamemx.policy.test",
            "550 5.7.1 <x@cnamemx.policy.test>: Sender address rejected: the MX host alias.policy.test of cnamemx.policy.test is an alias (CNAME)",
        ),
        (
            "x@privmx.policy.test",
            "550 5.7.1 <x@privmx.policy.test>: Sender address rejected: the MX host priv.policy.test of privmx.policy.test has the non-public address 10.0.0.1",
        ),
    ];
    for (from, want) in cases {
        let r = mail(from);
        assert!(r.text.starts_with(want), "{from}: got {}", r.text);
    }
    // RHSBL: the domain itself is fine, but listed.
    let s2 = server(
        &dns.addr.to_string(),
        "rhsbl_zones = [\"bl.test\"]\nptr = \"off\"\nfcrdns = \"off\"\nhelo_resolves = \"off\"\n",
    );
    let (mut c, _) = Client::connect_from("127.0.0.10", s2.port);
    c.cmd("EHLO good.policy.test");
    let r = c.cmd("MAIL FROM:<x@spammer.policy.test>");
    assert!(r.text.starts_with("550 5.7.1 <x@spammer.policy.test>: Sender address rejected: spammer.policy.test is listed in bl.test (127.0.0.2)"), "{}", r.text);
    assert_eq!(c.cmd("MAIL FROM:<x@policy.test>").code, 250);
    s2.wait_log("NOQUEUE: reject: MAIL from [127.0.0.10]");
}

#[test]
fn exceptions_by_network_client_name_sender_domain_and_recipient() {
    let dns = dns();
    let s = server(
        &dns.addr.to_string(),
        concat!(
            "fcrdns = \"reject\"\nsender_domain = \"reject\"\ngreylist = \"defer\"\ngreylist_skip_fcrdns = false\n",
            "dnsbl_zones = [\"bl.test=127.0.0.2\"]\n",
            "[[policy.exception]]\nnetworks = [\"127.0.0.11/32\"]\nchecks = [\"fcrdns\"]\n",
            "[[policy.exception]]\nclient_names = [\"listed.policy.test\"]\nchecks = [\"dnsbl\"]\n",
            "[[policy.exception]]\nsender_domains = [\"nullmx.policy.test\"]\nchecks = [\"sender_domain\"]\n",
            "[[policy.exception]]\nrecipients = [\"Postmaster@example.test\", \"@other.test\"]\nchecks = [\"greylist\"]\n",
        ),
    );
    // Network: 127.0.0.11's PTR does not resolve back, but fcrdns is waived for it alone.
    assert_eq!(ehlo(s.port, "127.0.0.11", "nofwd.policy.test").code, 250);
    let line = s.wait_log("policy: [127.0.0.11] helo=<nofwd.policy.test>");
    assert!(line.contains("fcrdns: exempt ([[policy.exception]])"), "{line}");
    // Client name: the forward-confirmed listed.policy.test skips the DNSBL.
    assert_eq!(ehlo(s.port, "127.0.0.14", "listed.policy.test").code, 250);
    // Sender domain: the null MX domain is waived; another domain without mail server is not.
    let (mut c, _) = Client::connect_from("127.0.0.10", s.port);
    assert_eq!(c.cmd("EHLO good.policy.test").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<x@nullmx.policy.test>").code, 250);
    // Recipient: postmaster is not greylisted (addresses compare case-insensitively); bob is.
    assert_eq!(c.cmd("RCPT TO:<postmaster@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").code, 451);
    c.cmd("RSET");
    let r = c.cmd("MAIL FROM:<x@nomail.policy.test>");
    assert!(r.text.starts_with("550 5.1.8"), "{}", r.text);
    s.wait_log("greylist: [127.0.0.10] from=<x@nullmx.policy.test> to=<postmaster@example.test>: exempt");
}

/// `(client, HELO, MAIL FROM, RCPT TO)`: the first refusal a live session gets, or `accept`.
const AGREEMENT: &[(&str, &str, &str, &str)] = &[
    ("127.0.0.10", "good.policy.test", "a@policy.test", "bob@example.test"),
    ("127.0.0.10", "good.policy.test", "a@policy.test", "nobody@example.test"),
    ("127.0.0.10", "good.policy.test", "a@policy.test", "x@elsewhere.test"),
    ("127.0.0.10", "good.policy.test", "x@nullmx.policy.test", "bob@example.test"),
    ("127.0.0.14", "listed.policy.test", "a@policy.test", "bob@example.test"),
    ("127.0.0.13", "good.policy.test", "a@policy.test", "bob@example.test"),
    ("127.0.0.10", "bare", "a@policy.test", "bob@example.test"),
    // The trusted client (the fixture's 127.0.0.2) is neither screened nor refused relaying.
    ("127.0.0.2", "bare", "a@policy.test", "x@elsewhere.test"),
    ("127.0.0.2", "bare", "a@policy.test", "nobody@example.test"),
    ("127.0.0.2", "bare", "a@policy.test", "gone@example.test"),
];

/// The live daemon's answer to one case: the first reply that is not 2xx, or `accept`.
fn live_verdict(port: u16, ip: &str, helo: &str, from: &str, to: &str) -> String {
    let (mut c, g) = Client::connect_from(ip, port);
    if g.code != 220 {
        return g.text;
    }
    for cmd in [format!("EHLO {helo}"), format!("MAIL FROM:<{from}>"), format!("RCPT TO:<{to}>")] {
        let r = c.cmd(&cmd);
        if r.code >= 400 {
            return r.text.lines().last().unwrap_or("").to_owned();
        }
    }
    "accept".into()
}

#[test]
fn policy_test_agrees_with_a_live_session() {
    let dns = dns();
    let daemon = server(&dns.addr.to_string(), STRICT);
    for &(ip, helo, from, to) in AGREEMENT {
        let live = live_verdict(daemon.port, ip, helo, from, to);
        let (code, out) = postern_cli(
            &["policy", "test", "--ip", ip, "--helo", helo, "--from", from, "--to", to],
            &daemon.config_path(),
        );
        assert_eq!(code, Some(0), "{out}");
        let verdict = out.lines().last().unwrap_or("").trim_start_matches("verdict: ");
        assert_eq!(verdict, live.trim(), "{ip} {helo} {from} {to}: policy test said\n{out}");
    }
}
