//! The RFC 7208 SPF test suite (openspf.org's `rfc7208-tests.yml`, release 2014.04, as pyspf
//! 2.0.14's source distribution ships it; `scripts/spf-suite-fetch` downloads it and checks its
//! SHA-256) through the real server: each scenario's zone data is served by a DNS server on
//! loopback (a query the suite marks `TIMEOUT` is never answered), and each case is an SMTP
//! transaction from the case's client address, inside a network namespace this test makes
//! (every address of the suite is put on its loopback interface). The SPF result is read from
//! the `Received-SPF` field of the delivered message: `[authentication]` only tags here.
//!
//! The figures (cases passed, and the list of those that fail) are printed; the test fails
//! when fewer than [`FLOOR`] pass. docs/testing.md has the figures and the cases that do not
//! reach SPF, and why.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;

use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, TXT};
use hickory_server::proto::rr::{Name, RData, RecordType};
use serde_json::Value;

use crate::support::dns::DnsServer;
use crate::support::smtp::Client;
use crate::support::{Server, TempDir, poll, repo};

/// Cases that must pass: every judged one (mail-auth 0.13.3's SPF passed 146; Postern's own
/// evaluation, `postern_auth::spf`, passes them all).
const FLOOR: usize = 199;

/// Queries never answered: (name, type), or (name, `None`) for every type.
type Timeouts = Vec<(Name, Option<RecordType>)>;

/// One test case of the suite.
struct Case {
    name: String,
    helo: String,
    host: IpAddr,
    mail_from: String,
    results: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

fn cases(section: &Value) -> Vec<Case> {
    let Some(tests) = section["tests"].as_object() else { return Vec::new() };
    tests
        .iter()
        .map(|(name, t)| Case {
            name: name.clone(),
            helo: t["helo"].as_str().unwrap_or("").to_owned(),
            // An IPv4-mapped IPv6 address (`::FFFF:1.2.3.4`) is the IPv4 client it maps
            // (RFC 7208 §5 says to treat it so): it connects over IPv4.
            host: t["host"].as_str().unwrap().parse::<IpAddr>().unwrap().to_canonical(),
            mail_from: t["mailfrom"].as_str().unwrap_or("").to_owned(),
            results: strings(&t["result"]),
        })
        .collect()
}

/// The name `s` with its labels as written (the suite has names with spaces and `%`).
fn name(s: &str) -> Option<Name> {
    let labels: Vec<&[u8]> = s.trim_end_matches('.').split('.').map(str::as_bytes).collect();
    let mut n = Name::from_labels(labels).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// One scenario's zone data as records and never-answered queries, the way the suite's own
/// driver (pyspf's testspf.py) serves them: an `SPF` record is also served as `TXT` when the
/// name has no `TXT` record of its own; `TXT: NONE` only suppresses that.
fn zone(section: &Value) -> (Vec<(Name, RData)>, Timeouts) {
    let (mut records, mut timeouts) = (Vec::new(), Vec::new());
    let Some(zonedata) = section["zonedata"].as_object() else { return (records, timeouts) };
    for (owner, entries) in zonedata {
        let Some(owner_name) = name(owner) else { continue };
        let entries = entries.as_array().cloned().unwrap_or_default();
        let has_txt = entries.iter().any(|e| e.get("TXT").is_some());
        // pyspf's driver: a `TIMEOUT` entry times out the query types of no record before it.
        let mut seen: Vec<RecordType> = Vec::new();
        for e in &entries {
            if e.as_str() == Some("TIMEOUT") {
                for t in [RecordType::A, RecordType::AAAA, RecordType::MX, RecordType::PTR, RecordType::TXT] {
                    if !seen.contains(&t) {
                        timeouts.push((owner_name.clone(), Some(t)));
                    }
                }
                continue;
            }
            // (A `TXT: NONE` placeholder is no record; an `SPF` record is of type SPF.)
            if let Some((kind, value)) = e.as_object().and_then(|o| o.iter().next())
                && value.as_str() != Some("NONE")
            {
                seen.push(match kind.as_str() {
                    "A" => RecordType::A,
                    "AAAA" => RecordType::AAAA,
                    "MX" => RecordType::MX,
                    "PTR" => RecordType::PTR,
                    "CNAME" => RecordType::CNAME,
                    "TXT" => RecordType::TXT,
                    _ => RecordType::Unknown(99),
                });
            }
            let Some((kind, value)) = e.as_object().and_then(|o| o.iter().next()) else { continue };
            if value.as_str() == Some("TIMEOUT") {
                let t = match kind.as_str() {
                    "A" => RecordType::A,
                    "AAAA" => RecordType::AAAA,
                    "MX" => RecordType::MX,
                    "PTR" => RecordType::PTR,
                    _ => RecordType::TXT,
                };
                timeouts.push((owner_name.clone(), Some(t)));
                continue;
            }
            // A TXT record has at least one string on the wire (RFC 1035 §3.3.14): the suite's
            // empty list is served as one empty string, the same empty record.
            let txt = |v: &Value| {
                let s = strings(v);
                RData::TXT(TXT::new(if s.is_empty() { vec![String::new()] } else { s }))
            };
            let data = match kind.as_str() {
                "TXT" if value.as_str() == Some("NONE") => None,
                "TXT" => Some(txt(value)),
                "SPF" if !has_txt => Some(txt(value)),
                "A" => value.as_str().and_then(|v| v.parse().ok()).map(|ip| RData::A(A(ip))),
                "AAAA" => value.as_str().and_then(|v| v.parse().ok()).map(|ip| RData::AAAA(AAAA(ip))),
                "PTR" => value.as_str().and_then(name).map(|n| RData::PTR(PTR(n))),
                "CNAME" => value.as_str().and_then(name).map(|n| RData::CNAME(CNAME(n))),
                "MX" => {
                    let pref = value[0].as_u64().and_then(|p| u16::try_from(p).ok());
                    pref.zip(value[1].as_str().and_then(name)).map(|(p, n)| RData::MX(MX::new(p, n)))
                }
                _ => None,
            };
            if let Some(d) = data {
                records.push((owner_name.clone(), d));
            }
        }
    }
    (records, timeouts)
}

/// Makes this thread's network namespace a new one (the processes and threads it starts
/// follow), with loopback up and every address of the suite on it.
fn enter_namespace(hosts: &BTreeSet<IpAddr>) {
    // SAFETY: unshare(2) with a constant flag; it changes this thread's namespace only.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare: {}", std::io::Error::last_os_error());
    let ip = |args: &[&str]| {
        let out = std::process::Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ip(&["link", "set", "lo", "up"]);
    for h in hosts {
        match h {
            IpAddr::V4(_) => ip(&["addr", "add", &format!("{h}/32"), "dev", "lo"]),
            IpAddr::V6(_) => ip(&["-6", "addr", "add", &format!("{h}/128"), "dev", "lo", "nodad"]),
        }
    }
}

fn config(dns: &DnsServer) -> String {
    format!(
        r#"hostname = "mx.spf-suite.test"
data_dir = "data"
[[listener]]
address = "127.0.0.1:0"
role = "mx"
[[listener]]
address = "[::1]:0"
role = "mx"
[domains]
local = ["spf-suite.test"]
[tables]
users = "users"
[relay]
trusted_networks = ["127.0.0.1/32"]
[authentication]
verify = true
spf_fail = "tag"
spf_softfail = "accept"
temperror = "accept"
dmarc_reject = "accept"
dmarc_quarantine = "accept"
[policy]
enabled = false
[dns]
nameservers = ["{}"]
timeout = "1s"
attempts = 1
"#,
        dns.addr
    )
}

/// Runs one case: the SPF result the server wrote, or why the transaction did not reach SPF.
fn run(server: &Server, case: &Case, n: usize) -> Result<String, String> {
    let port = if case.host.is_ipv4() { server.ports[0].1 } else { server.ports[1].1 };
    let (mut c, greeting) = Client::connect_from_addr(case.host, port);
    if greeting.code != 220 {
        return Err(greeting.text);
    }
    let ehlo = c.cmd(&format!("EHLO {}", case.helo));
    if ehlo.code != 250 {
        return Err(format!("EHLO {}: {}", case.helo, ehlo.text.trim()));
    }
    let subject = format!("case {n}");
    let body = format!("From: user@spf-suite.test\r\nSubject: {subject}\r\n\r\nx\r\n");
    for (command, want) in [
        (format!("MAIL FROM:<{}>", case.mail_from), 250),
        ("RCPT TO:<user@spf-suite.test>".to_owned(), 250),
        ("DATA".to_owned(), 354),
    ] {
        let r = c.cmd(&command);
        if r.code != want {
            return Err(format!("{command}: {}", r.text.trim()));
        }
    }
    c.send(&crate::support::smtp::dot_stuff(body.as_bytes()));
    c.send(b".\r\n");
    let r = c.read_reply().unwrap();
    if r.code != 250 {
        return Err(format!("end of data: {}", r.text.trim()));
    }
    let text = poll("the delivered case", || {
        server.maildir("user").iter().find_map(|f| {
            let t = std::fs::read_to_string(f).ok()?;
            t.contains(&format!("\nSubject: {subject}\n")).then_some(t)
        })
    });
    let field = text.lines().find_map(|l| l.strip_prefix("Received-SPF: ")).unwrap_or("none");
    Ok(field.split_whitespace().next().unwrap_or("").to_lowercase())
}

#[test]
fn rfc7208_suite_through_the_server() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "a network namespace needs root: run the tests as root, as CI does");
    let path = repo().join("target/spf-suite/rfc7208-tests.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/spf-suite-fetch (scripts/test does)", path.display()));
    let suite: Vec<Value> = serde_json::from_str(&text).unwrap();
    let hosts: BTreeSet<IpAddr> = suite.iter().flat_map(cases).map(|c| c.host).collect();
    enter_namespace(&hosts);
    let (mut passed, mut failed, mut unreached, mut n) = (0, Vec::new(), Vec::new(), 0);
    for section in &suite {
        let dir = TempDir::new("spf-suite");
        let zone_file = dir.0.join("root.zone");
        std::fs::write(&zone_file, "@ 3600 IN SOA ns.spf-suite.test. hostmaster.spf-suite.test. 1 3600 600 86400 0\n")
            .unwrap();
        let (records, timeouts) = zone(section);
        let dns = DnsServer::start_with_timeouts(".", &zone_file, timeouts);
        for (owner, data) in records {
            dns.upsert_record(".", owner, 300, data);
        }
        std::fs::write(dir.0.join("postern.toml"), config(&dns)).unwrap();
        std::fs::write(dir.0.join("users"), "user\npostmaster\n").unwrap();
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        let server = Server::start_in(dir, &[]);
        for case in cases(section) {
            n += 1;
            match run(&server, &case, n) {
                Ok(got) if case.results.contains(&got) => passed += 1,
                Ok(got) => failed.push(format!("{}: {got}, expected {}", case.name, case.results.join(" or "))),
                Err(why) => unreached.push(format!("{}: {why}", case.name)),
            }
        }
    }
    let judged = passed + failed.len();
    println!("RFC 7208 suite: {passed} of {judged} judged cases pass ({} did not reach SPF)", unreached.len());
    for f in &failed {
        println!("  fails: {f}");
    }
    for u in &unreached {
        println!("  not judged: {u}");
    }
    assert!(passed >= FLOOR, "{passed} of {judged} cases pass, fewer than {FLOOR}:\n{}", failed.join("\n"));
}
