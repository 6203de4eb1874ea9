//! Email authentication (issue: authentication): A signs with keys made by `postern dkim keygen`
//! (RSA and Ed25519), whose TXT records go into the loopback DNS server; B checks SPF, DKIM and
//! DMARC and acts per policy. A test relay alters one byte; outsiders forge SPF, DMARC and
//! Authentication-Results; a silent DNS gives 451.

use std::process::Command;

use mail_parser::MimeHeaders as _;

use hickory_server::proto::rr::RData;
use hickory_server::proto::rr::rdata::TXT;

use crate::support::dns::{DnsServer, ServfailDns, SilentDns};
use crate::support::peer::Peer;
use crate::support::smtp::Client;
use crate::support::{Server, TempDir, assert_contains_all, poll, postern_cli, repo};

/// `postern dkim keygen` into `dir`; returns the config lines and the TXT value (the zone
/// strings joined), checking that every string is at most 255 bytes.
pub(crate) fn keygen(dir: &std::path::Path, selector: &str, algorithm: &str) -> (String, String) {
    keygen_for(dir, "a.test", selector, algorithm)
}

/// As [`keygen`], for `domain`.
pub(crate) fn keygen_for(dir: &std::path::Path, domain: &str, selector: &str, algorithm: &str) -> (String, String) {
    let key = dir.join(format!("{selector}.key"));
    let out = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["dkim", "keygen", "--domain", domain, "--selector", selector, "--algorithm", algorithm, "--out"])
        .arg(&key)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let strings: Vec<&str> =
        text.lines().filter(|l| l.trim_start().starts_with('"')).map(|l| l.trim().trim_matches('"')).collect();
    assert!(!strings.is_empty(), "{text}");
    assert!(strings.iter().all(|s| s.len() <= 255), "{text}");
    let one_line = text.lines().last().unwrap().trim_start_matches("; ").to_owned();
    assert_eq!(strings.concat(), one_line, "zone strings and one-line form differ");
    let config = format!(
        "[[dkim.key]]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nprivate_key = \"{}\"\n",
        key.display()
    );
    (config, one_line)
}

pub(crate) fn txt(value: &str) -> RData {
    RData::TXT(TXT::new(value.as_bytes().chunks(255).map(|c| String::from_utf8_lossy(c).into_owned()).collect()))
}

/// DNS with the fixture zone and A's two keys; returns the DNS server, A's extra configuration.
fn dns_with_keys(keys: &TempDir) -> (DnsServer, String) {
    let dns = DnsServer::start(&[("test.", &repo().join("tests/fixtures/dns/relay.test.zone"))]);
    let (rsa_cfg, rsa_txt) = keygen(&keys.0, "rsa", "rsa");
    let (ed_cfg, ed_txt) = keygen(&keys.0, "ed", "ed25519");
    dns.upsert("test.", "rsa._domainkey.a.test.", 300, txt(&rsa_txt));
    dns.upsert("test.", "ed._domainkey.a.test.", 300, txt(&ed_txt));
    (dns, format!("{rsa_cfg}{ed_cfg}"))
}

fn b_checking(dns: &str) -> Server {
    Server::start_with("relay-b", |t| t.replace("verify = false", "verify = true").replace("{NO_DNS}", dns))
}

#[test]
fn signed_by_a_passes_at_b_and_forgeries_fail() {
    let keys = TempDir::new("dkim-keys");
    let (dns, dkim) = dns_with_keys(&keys);
    let b = b_checking(&dns.addr.to_string());
    let a = Server::start_full("relay-a", &[("PEER", "9".into())], |t| {
        let t = t.replace("{DNS}", &dns.addr.to_string()).replace("{PORT}", &b.port.to_string());
        t.replace("[authentication]", &format!("{dkim}\n[authentication]"))
    });
    // A signs for its trusted client; B verifies both signatures, SPF and DMARC.
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.a.test");
    let msg = b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: signed\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@a.test>\r\n\r\nHello Bob.\r\n";
    assert_eq!(c.send_data("alice@a.test", &["bob@b.test"], msg).code, 250);
    let files = b.wait_maildir("bob", 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let ar = header(&text, "Authentication-Results");
    assert!(ar.starts_with("mx.b.test;"), "{ar}");
    assert_eq!(ar.matches("dkim=pass").count(), 2, "{ar}");
    assert!(ar.contains("header.s=rsa") && ar.contains("header.s=ed"), "{ar}");
    assert!(ar.contains("spf=pass") && ar.contains("dmarc=pass"), "{ar}");
    assert!(text.contains("Received-SPF: pass"), "{text}");
    assert_eq!(text.matches("DKIM-Signature:").count(), 2);
    a.wait_log("DKIM: signed for [127.0.0.1] with d=a.test s=rsa, d=a.test s=ed");

    // A test relay changes one byte of the body: DKIM fails, SPF (from 127.0.0.1) still
    // aligns, so DMARC passes and the message is accepted with dkim=fail.
    let signed = std::fs::read_to_string(&files[0]).unwrap().replace('\n', "\r\n");
    let start = signed.find("DKIM-Signature:").unwrap();
    let altered = signed[start..].replace("Hello Bob.", "Hello Bob!");
    let (mut r, _) = Client::connect(b.port);
    r.cmd("EHLO relay.a.test");
    assert_eq!(r.send_data("alice@a.test", &["bob@b.test"], altered.as_bytes()).code, 250);
    let text = std::fs::read_to_string(&b.wait_maildir("bob", 2)[1]).unwrap();
    let ar = header(&text, "Authentication-Results");
    assert_eq!(ar.matches("dkim=fail").count(), 2, "{ar}");

    // SPF -all from an address a.test does not list: refused, 550 5.7.23.
    let (mut o, _) = Client::connect_from("127.0.0.3", b.port);
    o.cmd("EHLO outsider.test");
    let r = o.send_data("ceo@a.test", &["bob@b.test"], b"From: ceo@a.test\r\nSubject: pay\r\n\r\nx\r\n");
    assert_eq!((r.code, &r.text[4..10]), (550, "5.7.23"), "{}", r.text);
    assert!(r.text.contains("a.test does not designate 127.0.0.3"), "{}", r.text);

    // Not so for a message that passes DMARC through its aligned DKIM signature, as forwarded
    // mail does (RFC 7489 §10.1, issue 27): SPF fails, the author's signature holds.
    let r = o.send_data("alice@a.test", &["bob@b.test"], &signed.as_bytes()[start..]);
    assert_eq!(r.code, 250, "DMARC pass, SPF fail: {}", r.text);
    let text = std::fs::read_to_string(&b.wait_maildir("bob", 3)[2]).unwrap();
    let ar = header(&text, "Authentication-Results");
    assert!(ar.contains("spf=fail") && ar.contains("dkim=pass") && ar.contains("dmarc=pass"), "{ar}");

    // Softfail is accepted (no DMARC for soft.test); a forged result with our authserv-id is
    // removed; one from another server stays.
    let forged = b"Authentication-Results: mx.b.test; dkim=pass header.d=bank.test\r\nAuthentication-Results: other.test; spf=pass\r\nFrom: x@soft.test\r\nSubject: soft\r\n\r\nx\r\n";
    assert_eq!(o.send_data("x@soft.test", &["bob@b.test"], forged).code, 250);
    let text = std::fs::read_to_string(&b.wait_maildir("bob", 4)[3]).unwrap();
    assert!(!text.contains("header.d=bank.test"), "forged result kept:\n{text}");
    assert!(text.contains("Authentication-Results: other.test; spf=pass"), "{text}");
    assert!(header(&text, "Authentication-Results").contains("spf=softfail"), "{text}");

    // DMARC p=reject: From a.test, envelope from soft.test, no signature.
    let r = o.send_data("x@soft.test", &["bob@b.test"], b"From: ceo@a.test\r\nSubject: dmarc\r\n\r\nx\r\n");
    assert_eq!((r.code, &r.text[4..9]), (550, "5.7.1"), "{}", r.text);
    assert!(r.text.contains("DMARC policy of a.test"), "{}", r.text);

    // DMARC p=quarantine: accepted, marked, into .Junk.
    assert_eq!(o.send_data("x@soft.test", &["bob@b.test"], b"From: news@q.test\r\nSubject: q\r\n\r\nx\r\n").code, 250);
    let junk = b.data().join("mail/bob/.Junk/new");
    let files = poll("a quarantined message", || {
        let v: Vec<_> = std::fs::read_dir(&junk).ok()?.map(|e| e.unwrap().path()).collect();
        (v.len() == 1).then_some(v)
    });
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("X-Postern-Quarantine: DMARC policy of q.test"), "{text}");
    assert_eq!(b.maildir("bob").len(), 4, "not in the inbox");
    // The decision is logged with the queue ID (a refusal, which has none, with NOQUEUE).
    let line = b.wait_log("auth: [127.0.0.3] from=<x@soft.test> header.from=q.test");
    let msg = line.split(" INFO ").nth(1).unwrap();
    // Inside the session's span: `session{id=…}: QUEUEID: auth: ...`.
    let msg =
        msg.split_once("}: ").map_or(msg, |(span, rest)| if span.starts_with("session{id=") { rest } else { msg });
    assert!(
        msg.len() > 17 && msg[..16].bytes().all(|c| c.is_ascii_hexdigit()) && msg[16..].starts_with(": auth:"),
        "{line}"
    );
    b.wait_log("NOQUEUE: auth: [127.0.0.3] from=<x@soft.test> header.from=a.test");
}

#[test]
fn dns_timeouts_and_servfail_give_451_never_550() {
    let silent = SilentDns::start();
    let servfail = ServfailDns::start();
    for dns in [silent.addr, servfail.addr] {
        let b = b_checking(&dns.to_string());
        let (mut c, _) = Client::connect_from("127.0.0.3", b.port);
        c.cmd("EHLO outsider.test");
        let r = c.send_data("ceo@a.test", &["bob@b.test"], b"From: ceo@a.test\r\nSubject: x\r\n\r\nx\r\n");
        assert_eq!((r.code, &r.text[4..9]), (451, "4.4.3"), "DNS at {dns}: {}", r.text);
    }
}

#[test]
fn spf_at_mail_refuses_before_the_message() {
    let dns = DnsServer::start(&[("test.", &repo().join("tests/fixtures/dns/relay.test.zone"))]);
    let silent = SilentDns::start();
    let start = |dns: &str| {
        Server::start_with("relay-b", |t| {
            t.replace("verify = false", "verify = true\nspf_at = \"mail\"\nexempt_domains = [\"q.test\"]")
                .replace("{NO_DNS}", dns)
        })
    };
    let b = start(&dns.addr.to_string());
    let (mut o, _) = Client::connect_from("127.0.0.3", b.port);
    o.cmd("EHLO outsider.test");
    // a.test's -all does not list 127.0.0.3: refused at MAIL, no message sent.
    let r = o.cmd("MAIL FROM:<ceo@a.test>");
    assert_eq!((r.code, &r.text[4..10]), (550, "5.7.23"), "{}", r.text);
    assert!(r.text.contains("a.test does not designate 127.0.0.3"), "{}", r.text);
    b.wait_log("NOQUEUE: reject: MAIL from [127.0.0.3]: 550 5.7.23");
    // Softfail is accepted (the default action), and so is an exempt domain's -all.
    assert_eq!(o.cmd("MAIL FROM:<x@soft.test>").code, 250);
    o.cmd("RSET");
    assert_eq!(o.cmd("MAIL FROM:<x@q.test>").code, 250);
    o.cmd("RSET");
    // The null sender has no MAIL FROM identity to check here (its HELO is checked after DATA).
    assert_eq!(o.cmd("MAIL FROM:<>").code, 250);
    // A name server that does not answer: 451 4.4.3 at MAIL, never 550.
    let b = start(&silent.addr.to_string());
    let (mut o, _) = Client::connect_from("127.0.0.3", b.port);
    o.cmd("EHLO outsider.test");
    let r = o.cmd("MAIL FROM:<ceo@a.test>");
    assert_eq!((r.code, &r.text[4..9]), (451, "4.4.3"), "{}", r.text);
}

/// The first value of header `name` in a Maildir file (LF endings), unfolded.
fn header(text: &str, name: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if inside && line.starts_with([' ', '\t']) {
            out.push(' ');
            out.push_str(line.trim());
            continue;
        }
        if inside {
            break;
        }
        if let Some(v) = line.strip_prefix(&format!("{name}: ")) {
            inside = true;
            out.push_str(v.trim());
        }
    }
    out
}

/// Signing is only for what our users relay: not local delivery, not a From without a key.
#[test]
fn nothing_is_signed_for_outsiders_or_local_delivery() {
    let keys = TempDir::new("dkim-keys-2");
    let (dns, dkim) = dns_with_keys(&keys);
    let peer = Peer::start(&[]);
    let a = Server::start_full("relay-a", &[("PEER", peer.port.to_string())], |t| {
        let t = t.replace("{DNS}", &dns.addr.to_string()).replace("{PORT}", "9");
        t.replace("[authentication]", &format!("{dkim}\n[authentication]"))
    });
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.a.test");
    // Local delivery only: not signed.
    assert_eq!(
        c.send_data("alice@a.test", &["alice@a.test"], b"From: alice@a.test\r\nSubject: local\r\n\r\nx\r\n").code,
        250
    );
    let text = std::fs::read_to_string(&a.wait_maildir("alice", 1)[0]).unwrap();
    assert!(!text.contains("DKIM-Signature"), "{text}");
    // A From without a key (another domain): not signed.
    assert_eq!(
        c.send_data("x@other.test", &["bob@flaky.test"], b"From: x@other.test\r\nSubject: other\r\n\r\nx\r\n").code,
        250
    );
    poll("the relayed message", || (peer.received.lock().unwrap().len() == 1).then_some(()));
    assert!(!String::from_utf8_lossy(&peer.received.lock().unwrap()[0]).contains("DKIM-Signature"));
}

#[test]
fn dns_records_and_check_config_know_the_keys() {
    let dir = TempDir::new("dns-records");
    let (dkim, value) = keygen(&dir.0, "s2026", "rsa");
    let cfg = dir.0.join("postern.toml");
    std::fs::write(
        &cfg,
        format!(
            "hostname = \"mx.a.test\"\ndata_dir = \"data\"\n[[listener]]\naddress = \"192.0.2.25:25\"\nrole = \"mx\"\n[domains]\nlocal = [\"a.test\"]\n{dkim}"
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_postern")).args(args).arg("--config").arg(&cfg).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, out) = run(&["dns", "records", "--domain", "a.test"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("a.test. IN MX 10 mx.a.test."), "{out}");
    assert!(out.contains("a.test. IN TXT \"v=spf1 mx -all\""), "{out}");
    assert!(out.contains("mx.a.test. IN TXT \"v=spf1 a -all\""), "{out}");
    assert!(out.contains("_dmarc.a.test. IN TXT \"v=DMARC1; p=none; rua=mailto:postmaster@a.test\""), "{out}");
    assert!(out.contains("25.2.0.192.in-addr.arpa. IN PTR mx.a.test."), "{out}");
    // MTA-STS: the record and the policy file, which the policy parser accepts.
    assert!(out.contains("_mta-sts.a.test. IN TXT \"v=STSv1; id=20"), "{out}");
    let file: String = out.lines().filter_map(|l| l.strip_prefix(";   ")).map(|l| format!("{l}\r\n")).collect();
    let policy = postern_outbound::sts::Policy::parse(&file).unwrap_or_else(|e| panic!("{e}: {file}"));
    assert!(policy.matches("mx.a.test"), "{file}");
    assert!(out.contains("_smtp._tls.a.test. IN TXT \"v=TLSRPTv1; rua=mailto:postmaster@a.test\""), "{out}");
    // The DKIM record printed from the key file is the one keygen printed.
    let strings: String = out
        .lines()
        .skip_while(|l| !l.starts_with("s2026._domainkey.a.test. IN TXT ("))
        .skip(1)
        .take_while(|l| l.trim_start().starts_with('"'))
        .map(|l| l.trim().trim_matches('"'))
        .collect();
    assert_eq!(strings, value);
    let (code, out) = run(&["check-config"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("DKIM key d=a.test s=s2026"), "{out}");
    std::fs::write(dir.0.join("s2026.key"), "not a key").unwrap();
    let (code, out) = run(&["check-config"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("s2026.key: not a PEM private key"), "{out}");
    assert!(!out.contains("configuration OK"), "no OK before an error: {out}");
    // The domain as a plain argument; when the host name is the domain, one SPF record only
    // (RFC 7208 §4.5: two v=spf1 records at one name are a permerror).
    let text = std::fs::read_to_string(&cfg).unwrap().replace("hostname = \"mx.a.test\"", "hostname = \"a.test\"");
    std::fs::write(&cfg, text).unwrap();
    std::fs::write(dir.0.join("s2026.key"), "").unwrap();
    let (code, out) = run(&["dns", "records", "a.test"]);
    assert!(code == Some(0) || out.contains("cannot read the key"), "{out}");
    let spf: Vec<&str> = out.lines().filter(|l| l.contains("v=spf1")).collect();
    assert_eq!(spf, ["a.test. IN TXT \"v=spf1 mx a -all\""], "{out}");
}

/// Validates `xml` against the RFC 7489 Appendix C schema with xmllint (scripts/test installs
/// libxml2-utils).
fn validate(xml: &str, dir: &std::path::Path) {
    let file = dir.join("report.xml");
    std::fs::write(&file, xml).unwrap();
    let out = Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(repo().join("tests/fixtures/dmarc/rfc7489-aggregate.xsd"))
        .arg(&file)
        .output()
        .expect("xmllint must be installed (scripts/test installs libxml2-utils)");
    assert!(out.status.success(), "report does not validate:\n{}\n{xml}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn dmarc_aggregate_report_of_a_day_validates_and_is_delivered() {
    let keys = TempDir::new("dkim-keys-3");
    let (dns, dkim) = dns_with_keys(&keys);
    let b = Server::start_with("relay-b", |t| {
        t.replace("verify = false", "verify = true").replace("{NO_DNS}", &dns.addr.to_string())
            + "\n[dmarc_reports]\nenabled = true\norg_name = \"B Test\"\nemail = \"postmaster@b.test\"\n"
    });
    let a = Server::start_full("relay-a", &[("PEER", "9".into())], |t| {
        let t = t.replace("{DNS}", &dns.addr.to_string()).replace("{PORT}", &b.port.to_string());
        t.replace("[authentication]", &format!("{dkim}\n[authentication]"))
    });
    // A day of traffic: three signed messages from A, one forgery from an outsider (refused),
    // and one from a domain without DMARC (not reported).
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.a.test");
    for i in 0..3 {
        let m = format!("From: alice@a.test\r\nSubject: day {i}\r\n\r\nx\r\n");
        assert_eq!(c.send_data("alice@a.test", &["bob@b.test"], m.as_bytes()).code, 250);
    }
    b.wait_maildir("bob", 3);
    let (mut o, _) = Client::connect_from("127.0.0.3", b.port);
    o.cmd("EHLO outsider.test");
    assert_eq!(o.send_data("x@soft.test", &["bob@b.test"], b"From: ceo@a.test\r\nSubject: f\r\n\r\nx\r\n").code, 550);
    assert_eq!(o.send_data("x@soft.test", &["bob@b.test"], b"From: x@soft.test\r\nSubject: s\r\n\r\nx\r\n").code, 250);
    b.wait_maildir("bob", 4);

    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let report = |send: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_postern"));
        cmd.args(["dmarc", "report", "--day", &day, "--config"]).arg(b.config_path());
        if send {
            cmd.arg("--send");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let xml = report(false);
    validate(&xml, &keys.0);
    assert!(xml.contains("<domain>a.test</domain>") && xml.contains("<p>reject</p>"), "{xml}");
    assert!(xml.contains("<source_ip>127.0.0.1</source_ip>\n      <count>3</count>"), "{xml}");
    assert!(xml.contains("<source_ip>127.0.0.3</source_ip>\n      <count>1</count>"), "{xml}");
    assert!(xml.contains("<disposition>reject</disposition>"), "{xml}");
    assert!(xml.contains("<selector>rsa</selector>") && xml.contains("<selector>ed</selector>"), "{xml}");
    assert!(!xml.contains("soft.test</header_from>"), "no DMARC record, no report: {xml}");

    // --send queues it to a.test's rua (bob@b.test, allowed by a.test._report._dmarc.b.test).
    let sent = report(true);
    assert!(sent.contains("a.test: report") && sent.contains("to bob@b.test"), "{sent}");
    let files = b.wait_maildir("bob", 5);
    let raw = std::fs::read(&files[4]).unwrap();
    let msg = mail_parser::MessageParser::default().parse(&raw).unwrap();
    assert!(msg.subject().unwrap().starts_with("Report Domain: a.test Submitter: mx.b.test Report-ID: <"));
    let gz = msg.attachment(0).expect("the gzip attachment");
    assert!(gz.attachment_name().unwrap().ends_with(".xml.gz"));
    let gz_path = keys.0.join("report.xml.gz");
    std::fs::write(&gz_path, gz.contents()).unwrap();
    let unzipped = Command::new("gzip").arg("-dc").arg(&gz_path).output().unwrap();
    let attached = String::from_utf8(unzipped.stdout).unwrap();
    assert_eq!(attached, xml);
    validate(&attached, &keys.0);
    // The day is forgotten once sent.
    assert!(report(true).contains("no DMARC results recorded"));
}

/// `postern dns check` names the record that is wrong: each check against the loopback DNS.
#[test]
fn dns_check_tells_which_record_is_wrong() {
    use hickory_server::proto::rr::Name;
    use hickory_server::proto::rr::rdata::{A, MX, PTR};
    let dir = TempDir::new("dns-check");
    let (published, value) = keygen(&dir.0, "s1", "rsa");
    let (unpublished, _) = keygen(&dir.0, "s2", "ed25519");
    let dns = DnsServer::start(&[
        ("test.", &repo().join("tests/fixtures/dns/relay.test.zone")),
        ("0.0.127.in-addr.arpa.", &repo().join("tests/fixtures/dns/reverse-127.zone")),
    ]);
    let name = |n: &str| Name::from_ascii(n).unwrap();
    dns.upsert("test.", "a.test.", 300, RData::MX(MX::new(10, name("mx.a.test."))));
    dns.upsert("test.", "mx.a.test.", 300, RData::A(A("127.0.0.1".parse().unwrap())));
    dns.upsert("test.", "mx.a.test.", 300, txt("v=spf1 a -all"));
    dns.upsert("test.", "s1._domainkey.a.test.", 300, txt(&value));
    dns.upsert("0.0.127.in-addr.arpa.", "1.0.0.127.in-addr.arpa.", 300, RData::PTR(PTR(name("mx.a.test."))));
    let cfg = dir.0.join("postern.toml");
    std::fs::write(
        &cfg,
        format!(
            "hostname = \"mx.a.test\"\ndata_dir = \"data\"\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n[domains]\nlocal = [\"a.test\"]\n{published}{unpublished}[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
            dns.addr
        ),
    )
    .unwrap();
    let run = |domain: &str, ip: &str| postern_cli(&["dns", "check", "--domain", domain, "--ip", ip], &cfg);
    // Everything right but the second key, which is not published.
    let (code, out) = run("a.test", "127.0.0.1");
    assert_eq!(code, Some(1), "{out}");
    assert_contains_all(
        &out,
        &[
            "ok    MX     a.test -> mx.a.test (this host)",
            "ok    PTR    127.0.0.1 -> mx.a.test, which resolves back (FCrDNS)",
            "ok    SPF    a.test allows 127.0.0.1 (pass)",
            "ok    SPF    HELO mx.a.test allows 127.0.0.1 (pass)",
            "ok    DKIM   s1._domainkey.a.test matches",
            "FAIL  DKIM   s2._domainkey.a.test: no record",
            "ok    DMARC  _dmarc.a.test: p=reject",
            "result: 1 problem(s)",
        ],
    );
    // From another address: no PTR, and neither SPF record lists it.
    let (_, out) = run("a.test", "127.0.0.3");
    assert_contains_all(
        &out,
        &[
            "FAIL  PTR    127.0.0.3 has no PTR record",
            "FAIL  SPF    a.test does not list 127.0.0.3",
            "FAIL  SPF    HELO mx.a.test does not list 127.0.0.3",
        ],
    );
    // A domain with neither MX nor DMARC nor key.
    let (_, out) = run("soft.test", "127.0.0.1");
    assert_contains_all(
        &out,
        &[
            "FAIL  MX     soft.test has no MX record",
            "FAIL  DKIM   no [[dkim.key]] for soft.test",
            "FAIL  DMARC  _dmarc.soft.test: no record",
        ],
    );
}

#[test]
fn keygen_writes_the_key_where_the_configuration_reads_it() {
    let dir = crate::support::TempDir::new("keygen-config");
    let cfg = dir.0.join("postern.toml");
    std::fs::write(
        &cfg,
        "hostname = \"mx.a.test\"\ndata_dir = \"data\"\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n[domains]\nlocal = [\"a.test\"]\n[[dkim.key]]\ndomain = \"a.test\"\nselector = \"s9\"\nprivate_key = \"keys/a.test.s9.pem\"\n",
    )
    .unwrap();
    let keygen = |selector: &str| {
        Command::new(env!("CARGO_BIN_EXE_postern"))
            .args(["dkim", "keygen", "--domain", "a.test", "--selector", selector, "--config"])
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let out = keygen("s9");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = dir.0.join("keys/a.test.s9.pem");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let out =
        Command::new(env!("CARGO_BIN_EXE_postern")).arg("check-config").arg("--config").arg(&cfg).output().unwrap();
    assert!(out.status.success(), "the configuration loads the key it named: {}", String::from_utf8_lossy(&out.stderr));
    // A selector the configuration does not name yet goes beside it, in dkim/.
    assert!(keygen("s10").status.success());
    assert!(dir.0.join("dkim/a.test.s10.key").exists());
}

/// Forged results claiming our authserv-id, in every spelling RFC 8601 allows (a comment before
/// the id, a quoted id, a fold), are removed from a message from outside even with
/// `[authentication] verify = false` (issue 26, finding 8); another server's results stay.
#[test]
fn forged_results_are_removed_whatever_verify_says() {
    let server = Server::start(); // basic: hostname mx.example.test, verify = false
    let (mut c, _) = Client::connect_from("127.0.0.3", server.port);
    c.cmd("EHLO outsider.test");
    let forged = "Authentication-Results: (trust me) mx.example.test; dkim=pass header.d=bank.test\r\n\
        Authentication-Results: \"mx.example.test\"; dmarc=pass header.from=bank.test\r\n\
        Authentication-Results:\r\n mx.example.test;\r\n\tspf=pass smtp.mailfrom=bank.test\r\n\
        Authentication-Results: other.test; spf=pass\r\nFrom: ceo@bank.test\r\nSubject: wire the money\r\n\r\nx\r\n";
    assert_eq!(c.send_data("ceo@bank.test", &["bob@example.test"], forged.as_bytes()).code, 250);
    let text = std::fs::read_to_string(&server.wait_maildir("bob", 1)[0]).unwrap();
    assert!(!text.contains("bank.test;") && !text.contains("=bank.test"), "a forged result was kept:\n{text}");
    assert!(text.contains("Authentication-Results: other.test; spf=pass"), "{text}");
    assert!(text.contains("Subject: wire the money"), "{text}");
}
