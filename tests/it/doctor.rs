//! `postern doctor` (issue 15 item 3) against the loopback DNS, HTTPS policy hosts and our own
//! listener: a clean setup is reported clean (exit 0); a setup with five planted faults (PTR ≠
//! HELO, a certificate that does not cover the MX name, no TLS-RPT record, an MTA-STS policy
//! whose `mx` does not match, our address on a DNSBL) gets each of them, with its fix line,
//! and exit 1.

use crate::authentication::keygen_for;
use crate::support::certs::{Pki, ServerCert};
use crate::support::dns::{DnsServer, Signing};
use crate::support::{Server, TempDir, assert_contains_all, postern_cli, repo};

/// One setup: `mx.DOMAIN` on `ip`, its folder with a DKIM key and `cert`.
struct Setup {
    domain: &'static str,
    ip: &'static str,
    dir: TempDir,
    /// The `[[dkim.key]]` table.
    key: String,
    /// The zone lines of its DKIM record.
    record: String,
}

impl Setup {
    fn new(domain: &'static str, ip: &'static str, cert: &ServerCert, pki: &Pki) -> Self {
        let dir = TempDir::new(&format!("doctor-{domain}"));
        let (key, value) = keygen_for(&dir.0, domain, "s1", "ed25519");
        cert.write(&dir.0);
        std::fs::write(dir.0.join("ca.pem"), pki.root_pem()).unwrap();
        let record = format!("s1._domainkey.{domain}. IN TXT \"{value}\"\n");
        Self { domain, ip, dir, key, record }
    }

    /// Starts its server on `dns`, trusting the test PKI (`[outbound] ca_file`) and the zone's
    /// key (`[dns] trust_anchor`); no trusted network, so the relay test applies to us too.
    fn start(self, dns: &DnsServer, anchors: &str) -> Server {
        let (domain, ip, key) = (self.domain, self.ip, &self.key);
        std::fs::write(self.dir.0.join("anchors"), anchors).unwrap();
        std::fs::write(
            self.dir.0.join("postern.toml"),
            format!(
                "hostname = \"mx.{domain}\"\ndata_dir = \"data\"\n[[listener]]\naddress = \"{ip}:0\"\nrole = \"mx\"\n\
                 [domains]\nlocal = [\"{domain}\"]\n[tls]\ncert = \"fullchain.pem\"\nkey = \"privkey.pem\"\n{key}\
                 [relay]\ntrusted_networks = []\n[policy]\nenabled = false\n[authentication]\nverify = false\n\
                 [outbound]\nca_file = \"ca.pem\"\nmta_sts_allow_networks = [\"127.0.0.0/8\"]\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"2s\"\nattempts = 1\n\
                 trust_anchor = \"anchors\"\n",
                dns.addr
            ),
        )
        .unwrap();
        Server::start_in(self.dir, &[])
    }
}

fn doctor(s: &Server, domain: &str, ip: &str) -> (Option<i32>, String) {
    let port = s.port.to_string();
    postern_cli(&["doctor", "--domain", domain, "--ip", ip, "--port", &port, "--dnsbl", "bl.test"], &s.config_path())
}

#[test]
fn doctor_finds_five_planted_faults_each_with_its_fix_and_a_clean_setup_clean() {
    let pki = Pki::new();
    let clean_cert = pki.server_cert(&["mx.clean.test"], false);
    // Fault 2: the certificate is for another name.
    let faulty_cert = pki.server_cert(&["other.test"], false);
    let clean = Setup::new("clean.test", "127.0.0.80", &clean_cert, &pki);
    let faulty = Setup::new("faulty.test", "127.0.0.81", &faulty_cert, &pki);
    // The fixture zone (fault 3: no TLS-RPT record for faulty.test; fault 5: its address on
    // bl.test), the DKIM records, and a DANE-EE record for clean.test's certificate.
    let fixtures = repo().join("tests/fixtures/dns");
    let spki = ring::digest::digest(&ring::digest::SHA256, &clean_cert.spki_der);
    let hex: String = spki.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let zone = clean.dir.0.join("test.zone");
    let text = std::fs::read_to_string(fixtures.join("doctor.test.zone")).unwrap();
    let records = format!("{}{}_25._tcp.mx.clean.test. IN TLSA 3 1 1 {hex}\n", clean.record, faulty.record);
    std::fs::write(&zone, text + &records).unwrap();
    let (dns, anchors) = DnsServer::start_signed(&[
        ("test.", &zone, Signing::Signed),
        ("0.0.127.in-addr.arpa.", &fixtures.join("doctor-reverse-127.zone"), Signing::Unsigned),
    ]);
    let policy = |mx: &str| format!("version: STSv1\r\nmode: enforce\r\nmx: {mx}\r\nmax_age: 86400\r\n");
    let _clean_sts = crate::mta_sts::policy_host(&pki, "127.0.0.82", "clean.test", &policy("mx.clean.test"));
    // Fault 4: the policy names an MX that is not published.
    let _faulty_sts = crate::mta_sts::policy_host(&pki, "127.0.0.83", "faulty.test", &policy("mx.elsewhere.test"));

    let clean = clean.start(&dns, &anchors);
    let (code, out) = doctor(&clean, "clean.test", "127.0.0.80");
    assert_eq!(code, Some(0), "{out}");
    assert_contains_all(
        &out,
        &[
            "ok    PTR    127.0.0.80 -> mx.clean.test",
            "ok    STS    id 1, mode enforce, mx mx.clean.test: every MX matches",
            "ok    TLSRPT _smtp._tls.clean.test: reports to postmaster@clean.test",
            "ok    SMTP   127.0.0.80:",
            "greets as mx.clean.test = PTR = HELO",
            "ok    CERT   the certificate (CN=mx.clean.test) covers mx.clean.test",
            "ok    CERT   the chain verifies",
            "ok    DANE   _25._tcp.mx.clean.test: the served certificate matches",
            "ok    RELAY  a RCPT for example.net is refused (550)",
            "ok    DNSBL  127.0.0.80 is not on bl.test",
            "result: all ok",
        ],
    );
    assert!(!out.contains("FAIL") && !out.contains("TEMP"), "{out}");

    let faulty = faulty.start(&dns, &anchors);
    let (code, out) = doctor(&faulty, "faulty.test", "127.0.0.81");
    assert_eq!(code, Some(1), "{out}");
    assert_contains_all(
        &out,
        &[
            "FAIL  PTR    127.0.0.81 -> other.faulty.test, not mx.faulty.test",
            "fix: ask the provider of 127.0.0.81 to set its PTR to mx.faulty.test",
            "greets as \"mx.faulty.test\", its PTR is other.faulty.test, our HELO is mx.faulty.test",
            "fix: set the PTR of 127.0.0.81 to mx.faulty.test",
            "FAIL  CERT   the certificate covers other.test, not the MX name mx.faulty.test",
            "fix: get a certificate for mx.faulty.test (certbot certonly -d mx.faulty.test)",
            "FAIL  TLSRPT _smtp._tls.faulty.test: no record",
            "fix: publish `_smtp._tls.faulty.test. IN TXT \"v=TLSRPTv1; rua=mailto:postmaster@faulty.test\"`",
            "FAIL  STS    the policy's mx (mx.elsewhere.test) does not match the MX mx.faulty.test",
            "fix: add `mx: mx.faulty.test` to https://mta-sts.faulty.test/.well-known/mta-sts.txt, then change the id of _mta-sts.faulty.test",
            "FAIL  DNSBL  127.0.0.81 is listed on bl.test (127.0.0.2)",
            "fix: find why",
            "ok    RELAY  a RCPT for example.net is refused",
            "ok    DANE   not used: no TLSA record (optional: publish `_25._tcp.mx.faulty.test. IN TLSA 3 1 1 ",
            "result: 6 problem(s)",
        ],
    );
    // Every problem line is followed by its fix.
    let lines: Vec<&str> = out.lines().collect();
    for (i, l) in lines.iter().enumerate().filter(|(_, l)| l.trim_start().starts_with("FAIL")) {
        assert!(lines.get(i + 1).is_some_and(|n| n.trim_start().starts_with("fix: ")), "{l} has no fix:\n{out}");
    }
}
