//! Alerts by mail (issue 15 item 2): a domain stuck longer than the rule's threshold gives
//! exactly one alert mail in postmaster's mailbox, none more before `repeat`, and one
//! "resolved" mail once the message is delivered; with outbound mail broken (the stuck
//! domain and the alert's remote recipient both refuse connections) the alert still arrives,
//! because the local postmaster gets it first.

use crate::support::peer::Peer;
use crate::support::smtp::Client;
use crate::support::{Server, poll, postern_cli};

/// The checks counted so far of the rule whose `postern alerts` block starts with `name`.
fn checks(server: &Server, name: &str) -> (u64, String) {
    let (code, out) = postern_cli(&["alerts"], &server.config_path());
    assert_eq!(code, Some(0), "{out}");
    let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {out}"));
    let n = line.split('(').nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    (n, out)
}

fn subjects(server: &Server) -> Vec<String> {
    let mut files = server.maildir("postmaster");
    files.sort();
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or_default().to_owned()
        })
        .collect()
}

#[test]
fn a_stuck_domain_gives_one_alert_no_repeat_and_one_resolved_mail() {
    // Ports nothing listens on: every connection to them is refused.
    let (stuck, remote) = (crate::support::net::DeadPort::new(), crate::support::net::DeadPort::new());
    let routes =
        format!("stuck.test relay:[127.0.0.1]:{}\nremote.test relay:[127.0.0.1]:{}\n", stuck.port, remote.port);
    let a = Server::relay_a_routed(
        &routes,
        "\n[alerts]\nto = [\"ops@remote.test\"]\ninterval = \"1s\"\n\n\
                   [[alert]]\nkind = \"queue_age\"\ndomain = \"stuck.test\"\nolder_than = \"2s\"\nrepeat = \"1h\"\n",
    );
    let name = "queue_age stuck.test";
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.test");
    assert_eq!(c.send_data("alice@a.test", &["bob@stuck.test"], b"Subject: s\r\n\r\nx\r\n").code, 250);

    // One alert, in the local postmaster's mailbox although every remote destination is down.
    a.wait_maildir("postmaster", 1);
    let first = std::fs::read_to_string(&a.maildir("postmaster")[0]).unwrap();
    for needle in ["Subject: [a.example.test] FIRING: queue_age stuck.test", "is firing since ", "postern queue stats"]
    {
        assert!(first.contains(needle), "{needle:?} in\n{first}");
    }
    assert!(first.contains("the oldest message to stuck.test has waited"), "{first}");
    a.wait_log("alert: \"queue_age stuck.test\" firing");

    // Three more checks while it fires: no second mail before `repeat`.
    let (seen, _) = checks(&a, name);
    let out = poll("three more checks", || {
        let (n, out) = checks(&a, name);
        (n >= seen + 3).then_some(out)
    });
    assert!(out.contains("FIRING for"), "{out}");
    assert_eq!(subjects(&a).len(), 1, "{:?}", subjects(&a));

    // The destination comes back; the message is delivered; one "resolved" mail.
    let peer = Peer::start_on(stuck);
    let (code, out) = postern_cli(&["queue", "flush", "--recipient-domain", "stuck.test"], &a.config_path());
    assert_eq!(code, Some(0), "{out}");
    poll("the stuck message to be delivered", || (!peer.received.lock().unwrap().is_empty()).then_some(()));
    a.wait_maildir("postmaster", 2);
    let (seen, _) = checks(&a, name);
    let out = poll("three more checks", || {
        let (n, out) = checks(&a, name);
        (n >= seen + 3).then_some(out)
    });
    assert!(out.contains(&format!("{name}: ok")), "{out}");
    let subjects = subjects(&a);
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert!(subjects.iter().any(|s| s == "[a.example.test] RESOLVED: queue_age stuck.test"), "{subjects:?}");
    // The alert's remote copies wait in the queue for remote.test, as any mail would.
    let (_, list) = postern_cli(&["queue", "list"], &a.config_path());
    assert!(list.contains("ops@remote.test"), "{list}");
}

/// Every other kind of rule measures what it says: a certificate expiring within the window,
/// a deferred message, a share of failed attempts, a DKIM key not published, our address on a DNSBL and
/// a spool below its free-space threshold each fire, with one mail each, and `postern alerts`
/// shows their figures.
#[test]
fn each_kind_of_rule_fires_on_what_it_measures() {
    use crate::support::certs::Pki;
    use crate::support::dns::DnsServer;
    let dead = crate::support::net::DeadPort::new();
    let zones = crate::support::repo().join("tests/fixtures/dns");
    // relay.test.zone has no DKIM record for a.test: the key is not published.
    let dns = DnsServer::start(&[("test.", &zones.join("relay.test.zone")), ("bl.test.", &zones.join("bl.test.zone"))]);
    let keys = crate::support::TempDir::new("alert-keys");
    let (key, _unpublished) = crate::authentication::keygen(&keys.0, "s1", "ed25519");
    let cert = Pki::new().server_cert(&["a.example.test"], false);
    let rules = [
        ("cert_expiry", "within = \"365d\""),
        ("deferred", "messages = 0"),
        // The alert mails' own local deliveries count too: at most 6 of 7 attempts succeed.
        ("failure_rate", "percent = 10.0\nmin_attempts = 1"),
        ("dkim", "domain = \"a.test\""),
        ("dnsbl", "zones = [\"bl.test\"]"),
        ("spool_free", "below = \"100%\""),
    ];
    let mut extra = format!(
        "\n[tls]\ncert = \"fullchain.pem\"\nkey = \"privkey.pem\"\n\n{key}\n[alerts]\ninterval = \"1s\"\nip = \"127.0.0.14\"\n"
    );
    for (kind, keys) in rules {
        extra.push_str(&format!("\n[[alert]]\nkind = \"{kind}\"\n{keys}\n"));
    }
    let a = Server::start_prepared(
        "relay-a",
        &[("PEER", "9".into())],
        |t| {
            t.replace("{DNS}", &dns.addr.to_string())
                .replace("{PORT}", "9")
                .replace("min_backoff = \"1s\"", "min_backoff = \"1h\"")
                .replace("max_backoff = \"2s\"", "max_backoff = \"1h\"")
                + &extra
        },
        |dir| {
            cert.write(dir);
            std::fs::write(dir.join("routes"), format!("dead.test relay:[127.0.0.1]:{}\n", dead.port)).unwrap();
        },
    );
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.test");
    assert_eq!(c.send_data("alice@a.test", &["bob@dead.test"], b"Subject: s\r\n\r\nx\r\n").code, 250);
    poll("every rule to fire", || {
        let (_, out) = postern_cli(&["alerts"], &a.config_path());
        (out.matches("FIRING").count() == rules.len()).then_some(())
    });
    a.wait_maildir("postmaster", rules.len());
    let mut subjects = subjects(&a);
    subjects.sort();
    let mut want: Vec<String> = rules
        .iter()
        .map(|(kind, _)| {
            let name = if *kind == "dkim" { "dkim a.test".to_owned() } else { (*kind).to_owned() };
            format!("[a.example.test] FIRING: {name}")
        })
        .collect();
    want.sort();
    assert_eq!(subjects, want);
    let (code, out) = postern_cli(&["alerts"], &a.config_path());
    assert_eq!(code, Some(0), "{out}");
    for needle in [
        "cert_expiry: FIRING",
        "(CN=a.example.test) expires in ",
        "1 message(s) deferred, of 1 queued (threshold 0)",
        "delivery attempt(s) failed in the last 1h 0m",
        "FAIL s1._domainkey.a.test: no record",
        "127.0.0.14 is listed on bl.test (127.0.0.2)",
        "free of",
    ] {
        assert!(out.contains(needle), "{needle:?} in\n{out}");
    }
}
