//! Several MX hosts, one state (issue 17): two `postern serve` sharing a real `redis-server`
//! (on a unix socket in a temporary folder, stopped by PID) share greylisting, bans, rate
//! limits and the DMARC aggregates; the store stopped mid-run costs no mail and no 5xx. The
//! tests that apply to one host run on both backends (embedded and Redis): one suite, two
//! backends.

use std::process::Command;

use crate::support::dns::DnsServer;
use crate::support::redis::Redis;
use crate::support::smtp::{Client, Reply};
use crate::support::{Server, TempDir, poll, repo};

/// Greylisting on, with a delay of one second; the client checks that need DNS off.
const GREY: &str = "greylist = \"defer\"\ngreylist_delay = \"1s\"\ngreylist_skip_fcrdns = false\nptr = \"off\"\nfcrdns = \"off\"\nhelo_resolves = \"off\"\nsender_domain = \"off\"\n";
/// Client screening on (the session is "screened") but greylisting off.
const NO_GREY: &str = "ptr = \"off\"\nfcrdns = \"off\"\nhelo_resolves = \"off\"\nsender_domain = \"off\"\n";

/// Where a host keeps its state.
#[derive(Clone, Copy)]
enum Backend<'a> {
    Embedded,
    Redis(&'a Redis),
}

impl Backend<'_> {
    /// The `[store]` section, with `extra` keys.
    fn config(self, extra: &str) -> String {
        match self {
            Self::Embedded => format!("\n[store]\n{extra}\n"),
            Self::Redis(r) => r.store_config(extra),
        }
    }
}

fn dns() -> DnsServer {
    let z = |f: &str| repo().join("tests/fixtures/dns").join(f);
    DnsServer::start(&[("policy.test.", &z("policy.test.zone")), ("0.0.127.in-addr.arpa.", &z("reverse-127.zone"))])
}

/// An MX host (the basic fixture) with `[policy]` on plus `policy`, its store, and `more`.
fn mx(dns: &DnsServer, policy: &str, store: &str, more: &str) -> Server {
    Server::start_with("basic", |t| {
        t.replace("enabled = false", &format!("enabled = true\n{policy}")).replace("{NO_DNS}", &dns.addr.to_string())
            + store
            + more
    })
}

/// MAIL and RCPT from `ip` (HELO good.policy.test); the MAIL reply if it failed, else RCPT's.
fn rcpt(port: u16, ip: &str, from: &str, to: &str) -> Reply {
    let (mut c, _) = Client::connect_from(ip, port);
    assert_eq!(c.cmd("EHLO good.policy.test").code, 250);
    let m = c.cmd(&format!("MAIL FROM:<{from}>"));
    if m.code != 250 {
        return m;
    }
    c.cmd(&format!("RCPT TO:<{to}>"))
}

/// MAIL from `ip` (HELO good.policy.test): its reply.
fn mail(port: u16, ip: &str, from: &str) -> Reply {
    let (mut c, _) = Client::connect_from(ip, port);
    assert_eq!(c.cmd("EHLO good.policy.test").code, 250);
    c.cmd(&format!("MAIL FROM:<{from}>"))
}

fn greylisting_defers_then_passes(backend: Backend<'_>) {
    let dns = dns();
    let s = mx(&dns, GREY, &backend.config(""), "");
    let first = rcpt(s.port, "127.0.0.10", "news@policy.test", "bob@example.test");
    assert!(first.text.starts_with("451 4.7.1 <bob@example.test>: Greylisted, please try again in"), "{}", first.text);
    poll("the greylisting delay to pass", || {
        (rcpt(s.port, "127.0.0.10", "news@policy.test", "bob@example.test").code == 250).then_some(())
    });
}

#[test]
fn greylisting_on_either_backend() {
    greylisting_defers_then_passes(Backend::Embedded);
    let redis = Redis::start();
    greylisting_defers_then_passes(Backend::Redis(&redis));
}

const RATE_RULES: &str = "\n[[rate_limits.rule]]\nper = \"client\"\ncount = \"messages\"\nlimit = 3\n\n[[rate_limits.rule]]\nper = \"sender_domain\"\ncount = \"recipients\"\nlimit = 2\nwindow = \"10m\"\n";

fn rate_limits_refuse_past_the_limit(backend: Backend<'_>) {
    let dns = dns();
    let s = mx(&dns, NO_GREY, &backend.config(""), RATE_RULES);
    // Recipients per sender domain: two, then 450 with the time to wait (10 min / 2 = 300 s).
    let (mut c, _) = Client::connect_from("127.0.0.10", s.port);
    c.cmd("EHLO good.policy.test");
    assert_eq!(c.cmd("MAIL FROM:<a@policy.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").code, 250);
    let r = c.cmd("RCPT TO:<carol@example.test>");
    assert!(
        r.text.starts_with("450 4.7.1 <carol@example.test>: Rate limit exceeded for policy.test (sender_domain-recipients: 2 recipients per 600s), try again in "),
        "{}",
        r.text
    );
    // Messages per client network: the first MAIL above and two more, then 450 at MAIL with
    // the wait (3 per hour: one every 1200 s).
    for _ in 0..2 {
        assert_eq!(rcpt(s.port, "127.0.0.10", "x@other.test", "bob@example.test").code, 250);
    }
    let r = rcpt(s.port, "127.0.0.10", "y@third.test", "bob@example.test");
    let prefix =
        "450 4.7.1 Rate limit exceeded for 127.0.0.0/24 (client-messages: 3 messages per 3600s), try again in ";
    let wait: u64 = r.text.strip_prefix(prefix).and_then(|t| t.split(' ').next()?.parse().ok()).unwrap_or(0);
    assert!((1100..=1200).contains(&wait), "{}", r.text);
    s.wait_log("NOQUEUE: reject: MAIL from [127.0.0.10]: 450 4.7.1 Rate limit exceeded");
    s.wait_log("NOQUEUE: reject: RCPT from [127.0.0.10]: 450 4.7.1 <carol@example.test>: Rate limit exceeded");
}

#[test]
fn rate_limits_on_either_backend() {
    rate_limits_refuse_past_the_limit(Backend::Embedded);
    let redis = Redis::start();
    rate_limits_refuse_past_the_limit(Backend::Redis(&redis));
}

/// Messages per authenticated user: alice may send two, the third is refused at MAIL with the
/// wait; bob, on the same client address, is counted apart; on either backend.
fn per_user_limits(backend: Backend<'_>) {
    let pki = crate::support::certs::Pki::new();
    let cert = pki.server_cert(&["mx.example.test"], false);
    let rule = "\n[rate_limits]\nexempt_trusted = false\n\n[[rate_limits.rule]]\nper = \"user\"\ncount = \"messages\"\nlimit = 2\nwindow = \"1h\"\n";
    let host = Server::start_prepared(
        "tls",
        &[("PEER_PORT", "9".into())],
        |t| t + &backend.config("") + rule,
        |dir| cert.write(dir),
    );
    let session = |user: &str, password: &str| {
        let (mut c, _) = Client::connect(host.port_of("submission"));
        c.cmd("EHLO client.test");
        c.starttls(pki.client_config(), "mx.example.test");
        c.cmd("EHLO client.test");
        let plain = format!("AUTH PLAIN {}", crate::support::base64(format!("\0{user}\0{password}").as_bytes()));
        assert_eq!(c.cmd(&plain).code, 235);
        c
    };
    let mut alice = session("alice", "alice-secret");
    for _ in 0..2 {
        assert_eq!(alice.cmd("MAIL FROM:<alice@example.test>").code, 250);
        assert_eq!(alice.cmd("RSET").code, 250);
    }
    let r = alice.cmd("MAIL FROM:<alice@example.test>");
    assert!(
        r.text.starts_with(
            "450 4.7.1 Rate limit exceeded for alice (user-messages: 2 messages per 3600s), try again in "
        ),
        "{}",
        r.text
    );
    let mut bob = session("bob", "Hello world!");
    assert_eq!(bob.cmd("MAIL FROM:<bob@example.test>").code, 250, "bob is counted apart");
    host.wait_log("450 4.7.1 Rate limit exceeded for alice");
}

#[test]
fn per_user_rate_limits_on_either_backend() {
    per_user_limits(Backend::Embedded);
    let redis = Redis::start();
    per_user_limits(Backend::Redis(&redis));
}

/// The tls fixture (submission with AUTH, three failures ban for an hour) on `backend`.
fn submission_host(pki: &crate::support::certs::Pki, backend: Backend<'_>) -> Server {
    let cert = pki.server_cert(&["mx.example.test"], false);
    Server::start_prepared("tls", &[("PEER_PORT", "9".into())], |t| t + &backend.config(""), |dir| cert.write(dir))
}

/// Three wrong passwords from 127.0.0.7 on `host`: the third gets 421 4.7.0.
fn earn_a_ban(pki: &crate::support::certs::Pki, host: &Server) {
    let (mut c, _) = Client::connect_from("127.0.0.7", host.port_of("submission"));
    c.cmd("EHLO bot.test");
    c.starttls(pki.client_config(), "mx.example.test");
    c.cmd("EHLO bot.test");
    let plain = format!("AUTH PLAIN {}", crate::support::base64(b"\0alice\0guess"));
    for _ in 0..2 {
        assert_eq!(c.cmd(&plain).code, 535);
    }
    c.send(format!("{plain}\r\n").as_bytes());
    assert_eq!(c.read_reply().unwrap().code, 535);
    assert_eq!(c.read_reply().unwrap().code, 421);
}

fn greeting(port: u16, ip: &str) -> Reply {
    Client::connect_from(ip, port).1
}

#[test]
fn a_ban_holds_on_either_backend() {
    let pki = crate::support::certs::Pki::new();
    let redis = Redis::start();
    for backend in [Backend::Embedded, Backend::Redis(&redis)] {
        let host = submission_host(&pki, backend);
        earn_a_ban(&pki, &host);
        let g = greeting(host.port_of("submission"), "127.0.0.7");
        assert_eq!((g.code, &g.text[4..9]), (421, "4.7.0"), "banned: {}", g.text);
        assert_eq!(greeting(host.port_of("submission"), "127.0.1.8").code, 220);
        let (code, out) = crate::support::postern_cli(&["bans", "lift", "127.0.0.7"], &host.config_path());
        assert_eq!((code, out.as_str()), (Some(0), "127.0.0.0/24: ban lifted\n"));
    }
}

#[test]
fn two_hosts_share_greylisting_bans_and_rate_limits() {
    let redis = Redis::start();
    let dns = dns();
    let shared = Backend::Redis(&redis).config("");
    let rule = "\n[rate_limits]\nexempt_domains = [\"policy.test\"]\n\n[[rate_limits.rule]]\nper = \"sender_domain\"\ncount = \"messages\"\nlimit = 4\n";
    let a = mx(&dns, GREY, &shared, rule);
    let b = mx(&dns, GREY, &shared, rule);
    // Greylisted on A; the retry after the delay is accepted on B, which never saw it (on its
    // own store, B would defer this first sight).
    let first = rcpt(a.port, "127.0.0.10", "news@policy.test", "bob@example.test");
    let t0 = std::time::Instant::now();
    assert_eq!(first.code, 451, "{}", first.text);
    // The delay is what is tested: wait for it to have passed (1 s, with a margin).
    poll("the greylisting delay", || (t0.elapsed() >= std::time::Duration::from_millis(1200)).then_some(()));
    let retried = rcpt(b.port, "127.0.0.10", "news@policy.test", "bob@example.test");
    assert_eq!(retried.code, 250, "the retry on B: {}", retried.text);
    assert!(b.log_lines("greylist: [127.0.0.10]").is_empty(), "B never deferred it: {:?}", b.log_lines("greylist"));
    // The rate limit (messages per sender domain, counted at MAIL) counts through both: two
    // on A, two on B, then refused on both.
    for port in [a.port, b.port, a.port, b.port] {
        let r = mail(port, "127.0.0.10", "list@bulk.test");
        assert_eq!(r.code, 250, "MAIL accepted: {}", r.text);
    }
    for port in [a.port, b.port] {
        let r = mail(port, "127.0.0.10", "list@bulk.test");
        assert!(r.text.starts_with("450 4.7.1 Rate limit exceeded for bulk.test"), "{}", r.text);
    }

    // A ban earned on one submission host refuses on the other.
    let pki = crate::support::certs::Pki::new();
    let (sa, sb) = (submission_host(&pki, Backend::Redis(&redis)), submission_host(&pki, Backend::Redis(&redis)));
    earn_a_ban(&pki, &sa);
    let g = greeting(sb.port_of("submission"), "127.0.0.7");
    assert_eq!((g.code, &g.text[4..9]), (421, "4.7.0"), "banned on B too: {}", g.text);
    sb.wait_log("reject: connect from [127.0.0.7]");
    let (code, out) = crate::support::postern_cli(&["bans", "list"], &sb.config_path());
    assert!(
        code == Some(0) && out.lines().any(|l| l.starts_with("127.0.0.0/24 ") && l.contains("banned for")),
        "{out}"
    );
}

#[test]
fn one_dmarc_report_for_the_cluster_counts_both_hosts_once() {
    let redis = Redis::start();
    let dns = DnsServer::start(&[("test.", &repo().join("tests/fixtures/dns/relay.test.zone"))]);
    let host = || {
        Server::start_with("relay-b", |t| {
            t.replace("verify = false", "verify = true").replace("{NO_DNS}", &dns.addr.to_string())
                + "\n[dmarc_reports]\nenabled = true\nemail = \"postmaster@b.test\"\n"
                + &redis.store_config("")
        })
    };
    let (b1, b2) = (host(), host());
    // Forgeries of a.test (p=reject) from one outsider: two through B1, one through B2.
    for (port, n) in [(b1.port, 2), (b2.port, 1)] {
        let (mut o, _) = Client::connect_from("127.0.0.3", port);
        o.cmd("EHLO outsider.test");
        for _ in 0..n {
            let r = o.send_data("x@soft.test", &["bob@b.test"], b"From: ceo@a.test\r\nSubject: f\r\n\r\nx\r\n");
            assert_eq!(r.code, 550, "{}", r.text);
        }
    }
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let report = |host: &Server, send: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_postern"));
        cmd.args(["dmarc", "report", "--day", &day, "--config"]).arg(host.config_path());
        if send {
            cmd.arg("--send");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    // Either host sees the cluster's day.
    let xml = report(&b2, false);
    assert!(xml.contains("<source_ip>127.0.0.3</source_ip>\n      <count>3</count>"), "{xml}");
    // One host sends it; the other is told so, and sends nothing.
    let sent = report(&b1, true);
    assert!(sent.contains("a.test: report") && sent.contains("to bob@b.test"), "{sent}");
    assert_eq!(report(&b2, true), format!("DMARC reports for {day}: another host of the cluster is sending them\n"));
    let files = b1.wait_maildir("bob", 1);
    let raw = std::fs::read(&files[0]).unwrap();
    let msg = mail_parser::MessageParser::default().parse(&raw).unwrap();
    let tmp = TempDir::new("cluster-dmarc");
    let gz = tmp.0.join("report.xml.gz");
    std::fs::write(&gz, msg.attachment(0).expect("the gzip attachment").contents()).unwrap();
    let attached = String::from_utf8(Command::new("gzip").arg("-dc").arg(&gz).output().unwrap().stdout).unwrap();
    assert_eq!(attached, xml, "the report counts both hosts' messages exactly once");
    // The day is forgotten cluster-wide once sent.
    assert!(!report(&b2, false).contains("<count>"), "nothing left for {day}");
    assert!(b2.maildir("bob").is_empty());
}

#[test]
fn the_store_stopped_mid_run_costs_no_mail_and_no_5xx() {
    let mut redis = Redis::start();
    let dns = dns();
    let rule = "\n[[rate_limits.rule]]\nper = \"client\"\ncount = \"recipients\"\nlimit = 100\n";
    let open = mx(&dns, GREY, &Backend::Redis(&redis).config(""), rule);
    let closed = mx(
        &dns,
        GREY,
        &Backend::Redis(&redis).config("greylist_fail = \"closed\"\nrate_limit_fail = \"closed\""),
        rule,
    );
    let rates_closed = mx(&dns, NO_GREY, &Backend::Redis(&redis).config("rate_limit_fail = \"closed\""), rule);
    let rates_open = mx(&dns, NO_GREY, &Backend::Redis(&redis).config(""), rule);
    assert_eq!(rcpt(open.port, "127.0.0.10", "a@policy.test", "bob@example.test").code, 451, "greylisting works");
    assert_eq!(rcpt(rates_closed.port, "127.0.0.10", "a@policy.test", "bob@example.test").code, 250, "counted");
    redis.stop();
    // Fail open: new triplets are accepted and the mail delivered, again and again.
    for i in 0..3 {
        let (mut c, _) = Client::connect_from("127.0.0.10", open.port);
        c.cmd("EHLO good.policy.test");
        let m = format!("From: n{i}@policy.test\r\nSubject: {i}\r\n\r\nx\r\n");
        let r = c.send_data(&format!("n{i}@policy.test"), &["bob@example.test"], m.as_bytes());
        assert_eq!(r.code, 250, "{}", r.text);
    }
    open.wait_maildir("bob", 3);
    // Fail closed: 451 4.7.1, never a 5xx; greylisting answers first (at RCPT)...
    let r = rcpt(closed.port, "127.0.0.10", "c@policy.test", "bob@example.test");
    assert!(r.text.starts_with("451 4.7.1 <bob@example.test>: Greylisting unavailable"), "{}", r.text);
    // ...and where greylisting is off, the rate limit's own fail mode is reached.
    let r = rcpt(rates_closed.port, "127.0.0.10", "c@policy.test", "bob@example.test");
    assert!(r.text.starts_with("451 4.7.1 <bob@example.test>: Rate limits cannot be checked now"), "{}", r.text);
    let r = rcpt(rates_open.port, "127.0.0.10", "c@policy.test", "bob@example.test");
    assert_eq!(r.code, 250, "rate limits fail open by default: {}", r.text);
    // The outage is logged once however many calls failed.
    let outage = open.log_lines("store: redis+unix://");
    assert_eq!(outage.iter().filter(|l| l.contains("unreachable")).count(), 1, "{outage:?}");
    // The store returns: sharing resumes without a restart (a new triplet is greylisted again).
    redis.start_again();
    poll("greylisting through the store again", || {
        let r = rcpt(open.port, "127.0.0.10", "back@policy.test", "bob@example.test");
        assert!(r.code == 250 || r.code == 451, "{}", r.text);
        (r.code == 451).then_some(())
    });
    open.wait_log("store: answering again after");
    assert_eq!(open.log_lines("store: answering again").len(), 1);
}

#[test]
fn the_second_host_takes_the_mta_sts_policy_the_first_fetched() {
    use crate::mta_sts::{dns, policy, policy_host, sender_with};
    use crate::support::certs::Pki;
    use crate::support::peer::{Peer, Tls};
    use crate::tls_policy::{line, send};
    let (redis, pki, dns) = (Redis::start(), Pki::new(), dns());
    let https = policy_host(&pki, "127.0.0.77", "shared.test", &policy("enforce", "mx.good.test"));
    let peer = Peer::start_tls(&[], Tls::Offer(pki.server_cert(&["mx.good.test"], false).server_config()));
    let a = sender_with(&pki, &dns, &peer, &redis.store_config(""));
    let b = sender_with(&pki, &dns, &peer, &redis.store_config(""));
    send(&a, "x@shared.test");
    assert!(line(&a, "x@shared.test", "sent").contains("sts=enforce"));
    a.wait_log("MTA-STS: fetched the policy of shared.test (id 1): mode enforce");
    send(&b, "y@shared.test");
    assert!(line(&b, "y@shared.test", "sent").contains("sts=enforce"));
    b.wait_log("MTA-STS: the policy of shared.test (id 1) from the shared store: mode enforce");
    assert_eq!(*https.requests.lock().unwrap(), 1, "B fetched it again");
}
