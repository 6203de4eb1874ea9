//! DANE (RFC 7672, issue 14 item 3) with zones signed at test time by the loopback DNS server
//! and their DNSKEYs as `[dns] trust_anchor`: a matching TLSA 3 1 1 record delivers over TLS
//! checked against it (`verify=DANE`); a mismatching one defers with 4.7.5; a zone whose
//! signatures do not validate (bogus) defers and nothing is sent, in clear text or otherwise;
//! an unsigned zone is delivered with opportunistic TLS.

use crate::support::certs::Pki;
use crate::support::dns::{DnsServer, Signing};
use crate::support::peer::{Peer, Tls};
use crate::support::{Server, TempDir};
use crate::tls_policy::{line, send};

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A zone for `domain` whose MX `mx.DOMAIN` is 127.0.0.1, with `tlsa` (presentation form) at
/// `_PORT._tcp.mx.DOMAIN` when given.
fn zone(dir: &TempDir, domain: &str, port: u16, tlsa: Option<&str>) -> std::path::PathBuf {
    let mut text = format!(
        "$ORIGIN {domain}.\n$TTL 300\n@ IN SOA ns.{domain}. hostmaster.{domain}. ( 1 3600 600 86400 2 )\n\
         @ IN NS ns.{domain}.\nns IN A 127.0.0.1\n@ IN MX 10 mx.{domain}.\nmx IN A 127.0.0.1\n"
    );
    if let Some(t) = tlsa {
        text.push_str(&format!("_{port}._tcp.mx IN TLSA {t}\n"));
    }
    let path = dir.0.join(format!("{domain}.zone"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn tlsa_decides_and_bogus_never_goes_out() {
    let pki = Pki::new();
    let cert = pki.server_cert(&["mx.dane.test", "mx.danetaa.test"], false);
    let matching = format!("3 1 1 {}", sha256_hex(&cert.spki_der));
    let other = format!("3 1 1 {}", sha256_hex(b"another key"));
    let trust_anchor = format!("2 0 1 {}", sha256_hex(&pki.intermediate_der()));
    let peer = Peer::start_tls(&[], Tls::Offer(cert.server_config()));
    let dir = TempDir::new("dane-zones");
    let p = peer.port;
    let zones = [
        ("dane.test.", zone(&dir, "dane.test", p, Some(&matching)), Signing::Signed),
        ("danebad.test.", zone(&dir, "danebad.test", p, Some(&other)), Signing::Signed),
        ("danetaa.test.", zone(&dir, "danetaa.test", p, Some(&trust_anchor)), Signing::Signed),
        ("bogus.test.", zone(&dir, "bogus.test", p, Some(&matching)), Signing::Bogus),
        ("plain.test.", zone(&dir, "plain.test", p, Some(&matching)), Signing::Unsigned),
    ];
    let zones: Vec<(&str, &std::path::Path, Signing)> = zones.iter().map(|(o, z, s)| (*o, z.as_path(), *s)).collect();
    let (dns, anchors) = DnsServer::start_signed(&zones);
    let a = Server::start_prepared(
        "relay-a",
        &[("PEER", "9".into())],
        |t| {
            t.replace("{DNS}", &dns.addr.to_string())
                .replace("{PORT}", &p.to_string())
                .replace("attempts = 1", "attempts = 1\ntrust_anchor = \"anchors\"")
                .replace("[outbound]", "[outbound]\ndane = true")
                + "\n[tls_reports]\nenabled = true\n"
        },
        |d| std::fs::write(d.join("anchors"), &anchors).unwrap(),
    );
    for rcpt in ["x@dane.test", "x@danebad.test", "x@danetaa.test", "x@bogus.test", "x@plain.test"] {
        send(&a, rcpt);
    }
    // Signed, TLSA 3 1 1 of the peer's key: TLS checked against the record, no PKIX needed.
    let sent = line(&a, "x@dane.test", "sent");
    assert!(sent.contains("verify=DANE dane"), "{sent}");
    // DANE-TA: the chain presented leads to the intermediate the record names, and the
    // certificate names the MX host.
    let sent = line(&a, "x@danetaa.test", "sent");
    assert!(sent.contains("verify=DANE dane"), "{sent}");
    // Signed, a TLSA record of another key: deferred, never delivered without it.
    let deferred = line(&a, "x@danebad.test", "deferred");
    assert!(deferred.contains("dsn=4.7.5") && deferred.contains("no TLSA record matches"), "{deferred}");
    // Bogus signatures: deferred before any connection; never sent in clear text.
    let deferred = line(&a, "x@bogus.test", "deferred");
    assert!(deferred.contains("dsn=4.7.5") && deferred.contains("do not validate with DNSSEC"), "{deferred}");
    // Unsigned: the TLSA record is not trusted; opportunistic TLS as without DANE.
    let sent = line(&a, "x@plain.test", "sent");
    assert!(sent.contains("tls=TLS") && !sent.contains("dane"), "{sent}");
    let received = peer.received.lock().unwrap();
    assert_eq!(received.len(), 3, "only dane.test, danetaa.test and plain.test were delivered");
    assert!(received.iter().all(|m| !String::from_utf8_lossy(m).contains("to x@bogus.test")));
    assert_eq!(*peer.over_tls.lock().unwrap(), [true, true, true]);
    drop(received);

    // TLS reports (RFC 8460): policy type tlsa, the failures typed.
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["tls-rpt", "report", "--day", &day, "--config"])
        .arg(a.config_path())
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&out.stdout);
    for needle in ["\"policy-type\":\"tlsa\"", "\"result-type\":\"tlsa-invalid\"", "\"result-type\":\"dnssec-invalid\""]
    {
        assert!(json.contains(needle), "{needle} in {json}");
    }
    assert!(json.contains(&format!("\"policy-string\":[\"{matching}\"]")), "{json}");

    // `postern dns records` prints our own 3 1 1 record, from the certificate in force.
    let home = a.config_path().parent().unwrap().to_path_buf();
    cert.write(&home);
    let cfg = home.join("with-tls.toml");
    let text = std::fs::read_to_string(a.config_path()).unwrap();
    std::fs::write(&cfg, format!("{text}\n[tls]\ncert = \"fullchain.pem\"\nkey = \"privkey.pem\"\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["dns", "records", "a.test", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains(&format!("_25._tcp.a.example.test. IN TLSA {matching}")), "{text}");
    assert!(text.contains("--reuse-key"), "{text}");
}
