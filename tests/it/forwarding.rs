//! Forwarding that big receivers accept (issue 11): three instances and the loopback DNS.
//! A (a.test: SPF -all, DMARC p=reject, DKIM-signed) → B (an alias forwarding to C, SRS and ARC
//! sealing on) → C. Each sends from its own loopback address (`[outbound] source_address`), so
//! SPF tells them apart.

use std::process::Command;

use hickory_server::proto::rr::RData;
use hickory_server::proto::rr::rdata::TXT;

use crate::support::dns::DnsServer;
use crate::support::peer::Peer;
use crate::support::smtp::Client;
use crate::support::{Server, TempDir, postern_cli, repo};

/// A DKIM key for `domain` made by `postern dkim keygen` into `dir`: the config lines and the
/// TXT value to publish.
fn key(dir: &std::path::Path, domain: &str, selector: &str) -> (String, String) {
    let path = dir.join(format!("{domain}.{selector}.key"));
    let out = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["dkim", "keygen", "--domain", domain, "--selector", selector, "--out"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    let value = text.lines().last().unwrap().trim_start_matches("; ").to_owned();
    let config = format!(
        "[[dkim.key]]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nprivate_key = \"{}\"\n",
        path.display()
    );
    (config, value)
}

fn publish(dns: &DnsServer, name: &str, value: &str) {
    let strings = value.as_bytes().chunks(255).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    dns.upsert("test.", name, 300, RData::TXT(TXT::new(strings)));
}

/// An instance from `config` and `files` in a new folder.
fn instance(name: &str, config: &str, files: &[(&str, String)]) -> Server {
    let dir = TempDir::new(name);
    std::fs::write(dir.0.join("postern.toml"), config).unwrap();
    for (f, text) in files {
        std::fs::write(dir.0.join(f), text).unwrap();
    }
    Server::start_in(dir, &[])
}

const COMMON: &str =
    "data_dir = \"data\"\n[policy]\nenabled = false\n[queue]\nmin_backoff = \"1s\"\nmax_backoff = \"2s\"\n";

fn common(dns: &DnsServer, port: u16, hostname: &str) -> String {
    format!(
        "hostname = \"{hostname}\"\n{COMMON}[[listener]]\naddress = \"127.0.0.1:{port}\"\nrole = \"mx\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"2s\"\nattempts = 1\n",
        dns.addr
    )
}

fn header_block(text: &str) -> &str {
    text.split("\n\n").next().unwrap()
}

/// The unfolded value of the first `name:` header in `text` that starts with `prefix`.
fn header(text: &str, name: &str, prefix: &str) -> String {
    let unfolded = header_block(text).replace("\n\t", " ").replace("\n ", " ");
    unfolded
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}: ")))
        .find(|v| v.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {name}: {prefix}... in\n{text}"))
        .to_owned()
}

#[test]
fn forwarded_mail_passes_spf_dmarc_and_arc_and_bounces_come_back() {
    let dns = DnsServer::start(&[("test.", &repo().join("tests/fixtures/dns/forwarding.zone"))]);
    let keys = TempDir::new("forwarding-keys");
    let (a_key, a_txt) = key(&keys.0, "a.test", "a");
    let (b_key, b_txt) = key(&keys.0, "b.test", "arc");
    publish(&dns, "a._domainkey.a.test.", &a_txt);
    publish(&dns, "arc._domainkey.b.test.", &b_txt);
    // Each instance names the others' ports: held for them until they bind (see DeadPort).
    let held = [(); 3].map(|()| crate::support::net::DeadPort::new());
    let [pa, pb, pc] = [held[0].port, held[1].port, held[2].port];
    let peer = Peer::start(&["550 5.1.1 <x@dead.test>: no such user"]);

    let a = instance(
        "fwd-a",
        &format!(
            "{}[domains]\nlocal = [\"a.test\"]\n[tables]\nusers = \"users\"\n[relay]\ntrusted_networks = [\"127.0.0.1/32\"]\n[authentication]\nverify = false\n[outbound]\nport = {pb}\nsource_address = \"127.0.0.1\"\n{a_key}",
            common(&dns, pa, "mx.a.test")
        ),
        &[("users", "alice\n".into())],
    );
    let b = instance(
        "fwd-b",
        &format!(
            "{}[domains]\nlocal = [\"b.test\"]\n[tables]\naliases = \"aliases\"\nroutes = \"routes\"\n[relay]\ntrusted_networks = []\n[forwarding]\nsrs_domain = \"srs.b.test\"\nsrs_secret_file = \"srs-secrets\"\n[outbound]\nport = {pc}\nsource_address = \"127.0.0.2\"\n{b_key}",
            common(&dns, pb, "mx.b.test")
        ),
        &[
            ("aliases", "fwd: carol@c.test\nfwd2: carol2@c.test\nfwd3: nobody@c.test\n".into()),
            ("routes", format!("a.test relay:[127.0.0.1]:{pa}\n")),
            ("srs-secrets", "a secret for the test\n".into()),
        ],
    );
    let c = instance(
        "fwd-c",
        &format!(
            "{}[domains]\nlocal = [\"c.test\"]\n[tables]\nusers = \"users\"\naliases = \"aliases\"\nroutes = \"routes\"\n[relay]\ntrusted_networks = []\n[authentication]\narc_trusted_sealers = [\"b.test\"]\n[outbound]\nport = {pb}\nsource_address = \"127.0.0.3\"\n",
            common(&dns, pc, "mx.c.test")
        ),
        &[
            ("users", "carol\n".into()),
            ("aliases", "carol2: x@dead.test\n".into()),
            ("routes", format!("dead.test relay:[127.0.0.1]:{}\n", peer.port)),
        ],
    );

    // 1. A → B → C, unchanged: SPF passes for B's SRS address, DMARC through A's DKIM, ARC.
    let (mut client, _) = Client::connect(a.port);
    client.cmd("EHLO client.a.test");
    let msg = b"From: Alice <alice@a.test>\r\nTo: fwd@b.test\r\nSubject: forwarded\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <fwd1@a.test>\r\n\r\nHello Carol.\r\n";
    assert_eq!(client.send_data("alice@a.test", &["fwd@b.test"], msg).code, 250);
    let text = std::fs::read_to_string(&c.wait_maildir("carol", 1)[0]).unwrap();
    let return_path = text.lines().next().unwrap();
    assert!(
        return_path.starts_with("Return-Path: <SRS0=") && return_path.ends_with("=a.test=alice@srs.b.test>"),
        "{text}"
    );
    let ar = header(&text, "Authentication-Results", "mx.c.test;");
    for want in ["spf=pass", "smtp.mailfrom=\"SRS0=", "dkim=pass", "header.d=a.test", "dmarc=pass", "arc=pass"] {
        assert!(ar.contains(want), "{want} missing from C's results: {ar}");
    }
    let seal = header(&text, "ARC-Seal", "i=1;");
    assert!(seal.contains("cv=none") && seal.contains("d=b.test") && seal.contains("s=arc"), "{seal}");
    let aar = header(&text, "ARC-Authentication-Results", "i=1;");
    assert!(aar.contains("mx.b.test") && aar.contains("spf=pass") && aar.contains("dkim=pass"), "{aar}");
    b.wait_log("forwarded to c.test from <SRS0=");

    // 2. The message changed on the way (a byte of the body, as a footer would): DKIM fails
    // at C, SPF passes only for the SRS domain (not aligned), so DMARC fails, and C's
    // trusted-sealer rule accepts it on B's ARC seal.
    let signed = text.replace('\n', "\r\n");
    let start = signed.find("\r\nDKIM-Signature:").unwrap() + 2;
    let altered = signed[start..].replace("Hello Carol.", "Hello Carol!");
    let (mut r, _) = Client::connect(b.port);
    r.cmd("EHLO relay.a.test");
    assert_eq!(r.send_data("alice@a.test", &["fwd@b.test"], altered.as_bytes()).code, 250);
    let text = std::fs::read_to_string(&c.wait_maildir("carol", 2)[1]).unwrap();
    let ar = header(&text, "Authentication-Results", "mx.c.test;");
    for want in ["dkim=fail", "dmarc=fail", "arc=pass", "spf=pass"] {
        assert!(ar.contains(want), "{want} missing from C's results: {ar}");
    }
    assert!(!text.contains("X-Postern-Quarantine"), "accepted on the trusted seal: {text}");

    // 3. C accepts for carol2, whose alias target refuses after C's 250: C's bounce goes to
    // the SRS address, which B verifies and sends on to alice at A.
    assert_eq!(client.send_data("alice@a.test", &["fwd2@b.test"], b"Subject: will bounce\r\n\r\nx\r\n").code, 250);
    let dsn = std::fs::read_to_string(&a.wait_maildir("alice", 1)[0]).unwrap();
    assert!(dsn.starts_with("Return-Path: <>"), "{dsn}");
    assert!(dsn.contains("x@dead.test") && dsn.contains("5.1.1"), "{dsn}");
    b.wait_log("SRS");

    // 3b. C refuses B's forwarded copy at RCPT, after B's 250 (issue 28): B's own DSN goes to
    // the SRS address the copy left with, as C's bounce would have, and from there, its hash
    // and age verified, back to alice at A.
    assert_eq!(client.send_data("alice@a.test", &["fwd3@b.test"], b"Subject: refused later\r\n\r\nx\r\n").code, 250);
    let dsn = std::fs::read_to_string(&a.wait_maildir("alice", 2)[1]).unwrap();
    assert!(dsn.contains("nobody@c.test") && dsn.contains("5.1.1"), "{dsn}");
    let to = header(&dsn, "To", "");
    assert!(to.starts_with("<SRS0=") && to.ends_with("=a.test=alice@srs.b.test>"), "{dsn}");
    b.wait_log("to=<SRS0=");

    // 4. Forged and expired SRS addresses are refused at RCPT.
    let (mut o, _) = Client::connect_from("127.0.0.3", b.port);
    o.cmd("EHLO mx.c.test");
    assert_eq!(o.cmd("MAIL FROM:<>").code, 250);
    let forged = o.cmd("RCPT TO:<SRS0=AAAA=AA=a.test=alice@srs.b.test>");
    assert!(forged.text.starts_with("550 5.1.1") && forged.text.contains("bad SRS hash"), "{}", forged.text);
    let today = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86400;
    let (code, old) =
        postern_cli(&["srs", "forward", "alice@a.test", "--day", &(today - 30).to_string()], &b.config_path());
    assert_eq!(code, Some(0), "{old}");
    let expired = o.cmd(&format!("RCPT TO:<{}>", old.trim()));
    assert!(expired.text.starts_with("550 5.1.1") && expired.text.contains("expired"), "{}", expired.text);
    let (code, fresh) = postern_cli(&["srs", "forward", "alice@a.test"], &b.config_path());
    assert_eq!(code, Some(0));
    assert_eq!(postern_cli(&["srs", "reverse", fresh.trim()], &b.config_path()), (Some(0), "alice@a.test\n".into()));

    // 5. An SRS address is no relay (issue 26, finding 3): its hash is 8 characters long, and
    // even a valid address takes mail only from the null sender.
    let hash = fresh.trim().split('=').nth(1).unwrap();
    assert_eq!(hash.len(), 8, "{fresh}");
    let (mut o, _) = Client::connect_from("127.0.0.3", b.port);
    o.cmd("EHLO spammer.test");
    assert_eq!(o.cmd("MAIL FROM:<spam@spammer.test>").code, 250);
    let relayed = o.cmd(&format!("RCPT TO:<{}>", fresh.trim()));
    assert!(relayed.text.starts_with("550 5.7.1") && relayed.text.contains("bounces only"), "{}", relayed.text);
    b.wait_log("NOQUEUE: reject: RCPT from [127.0.0.3]: 550 5.7.1");
    assert_eq!(o.cmd("RSET").code, 250);
    assert_eq!(o.cmd("MAIL FROM:<>").code, 250);
    assert_eq!(o.cmd(&format!("RCPT TO:<{}>", fresh.trim())).code, 250, "a bounce is still taken");

    // 6. Guessing hashes costs the guesser: each forged SRS address refused to the null sender
    // is a strike against the client's /24, and the fifth ([server] auth_failures_before_ban)
    // bans it, so that a brute force gets five tries per ban_time instead of unlimited.
    let (mut g, _) = Client::connect_from("127.0.2.3", b.port);
    g.cmd("EHLO guesser.test");
    assert_eq!(g.cmd("MAIL FROM:<>").code, 250);
    for n in 0..4 {
        let r = g.cmd(&format!("RCPT TO:<SRS0=AAA{n}AAAA=AA=a.test=alice@srs.b.test>"));
        assert!(r.text.starts_with("550 5.1.1"), "{}", r.text);
    }
    g.send(b"RCPT TO:<SRS0=BBBBBBBB=AA=a.test=alice@srs.b.test>\r\n");
    assert!(g.read_reply().unwrap().text.starts_with("550 5.1.1"));
    let closed = g.read_reply().unwrap();
    assert!(closed.text.starts_with("421 4.7.0") && closed.text.contains("127.0.2.0/24"), "{}", closed.text);
    b.wait_log("ban: 127.0.2.0/24 (client [127.0.2.3]) after 5 failures");
    let (_, refused) = Client::connect_from("127.0.2.99", b.port);
    assert!(refused.text.starts_with("421 4.7.0"), "the network is banned: {}", refused.text);

    // 7. A chain broken before B (issue 27): sealed by dkimpy for a.test, then changed. B's
    // result is arc=fail, and the set it adds as it forwards says i=2 cv=fail, which dkimpy's
    // arc_verify reads as the failed chain it is.
    let list = "Authentication-Results: mx.a.test; spf=pass smtp.mailfrom=lists.test\r\nFrom: list@lists.test\r\nTo: fwd@b.test\r\nSubject: broken chain\r\n\r\nHello Carol.\r\n";
    let sealed = crate::arc::dkimpy_sealed(list, &keys.0.join("a.test.a.key"), "a", "a.test");
    assert!(sealed.starts_with("ARC-Seal: i=1;"), "dkimpy sealed nothing: {sealed}");
    let broken = sealed.replace("Hello Carol.", "Hello Carol, changed.");
    let (mut o, _) = Client::connect_from("127.0.3.4", b.port);
    o.cmd("EHLO lists.test");
    assert_eq!(o.send_data("list@lists.test", &["fwd@b.test"], broken.as_bytes()).code, 250);
    let text = std::fs::read_to_string(&c.wait_maildir("carol", 3)[2]).unwrap();
    let seal = header(&text, "ARC-Seal", "i=2;");
    assert!(seal.contains("cv=fail"), "{seal}");
    let cv = crate::arc::dkimpy_arc_cv(&text, &[("a._domainkey.a.test.", &a_txt), ("arc._domainkey.b.test.", &b_txt)]);
    // dkimpy ends its walk at a seal that reports a failure, and says so.
    assert!(cv.contains("ARC-Seal[2] reported failure"), "dkimpy: {cv}");
}
