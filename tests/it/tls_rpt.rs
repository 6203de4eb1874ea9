//! SMTP TLS Reporting (RFC 8460, issue 14 item 6): a day of deliveries to one domain whose
//! sessions succeed and one whose sessions fail (the MX certificate names another host) gives
//! one report per domain, with every field RFC 8460 §4.4 requires, queued DKIM-signed to the
//! `rua` of each domain's `_smtp._tls` record and delivered to that mailbox.

use std::process::Command;

use mail_parser::MimeHeaders as _;
use serde_json::Value;

use crate::authentication::keygen;
use crate::mta_sts::{dns, policy, policy_host, sender_with};
use crate::support::TempDir;
use crate::support::certs::Pki;
use crate::support::peer::{Peer, Tls};
use crate::tls_policy::{line, send};

fn report(config: &std::path::Path, day: &str, send: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_postern"));
    cmd.args(["tls-rpt", "report", "--day", day, "--config"]).arg(config);
    if send {
        cmd.arg("--send");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Every field of RFC 8460 §4.4 that a report must have, and the one policy of `domain`.
fn check_report<'a>(r: &'a Value, domain: &str) -> &'a Value {
    for field in ["organization-name", "contact-info", "report-id"] {
        assert!(r[field].as_str().is_some_and(|s| !s.is_empty()), "{field} in {r}");
    }
    for field in ["start-datetime", "end-datetime"] {
        assert!(r["date-range"][field].as_str().is_some_and(|s| s.ends_with('Z')), "{field} in {r}");
    }
    let policies = r["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "{r}");
    let p = &policies[0];
    assert_eq!(p["policy"]["policy-type"], "sts", "{r}");
    assert_eq!(p["policy"]["policy-domain"], domain, "{r}");
    assert!(p["policy"]["policy-string"].as_array().unwrap().iter().any(|s| s == "mode: enforce"), "{r}");
    assert_eq!(p["policy"]["mx-host"][0], format!("mx.{domain}"), "{r}");
    for field in ["total-successful-session-count", "total-failure-session-count"] {
        assert!(p["summary"][field].is_u64(), "{field} in {r}");
    }
    p
}

#[test]
fn a_day_of_sessions_gives_one_signed_report_per_domain_in_the_rua_mailbox() {
    let (pki, dns) = (Pki::new(), dns());
    let _ok = policy_host(&pki, "127.0.0.75", "rptok.test", &policy("enforce", "mx.rptok.test"));
    let _bad = policy_host(&pki, "127.0.0.76", "rptbad.test", &policy("enforce", "mx.rptbad.test"));
    let peer = Peer::start_tls(&[], Tls::Offer(pki.server_cert(&["mx.rptok.test"], false).server_config()));
    let keys = TempDir::new("tlsrpt-keys");
    let (dkim, _) = keygen(&keys.0, "s1", "ed25519");
    let extra =
        format!("\n[tls_reports]\nenabled = true\norg_name = \"A Test\"\nemail = \"postmaster@a.test\"\n{dkim}");
    let a = sender_with(&pki, &dns, &peer, &extra);
    send(&a, "x@rptok.test");
    send(&a, "y@rptok.test");
    send(&a, "x@rptbad.test");
    assert!(line(&a, "x@rptok.test", "sent").contains("verify=OK sts=enforce"));
    line(&a, "y@rptok.test", "sent");
    let deferred = line(&a, "x@rptbad.test", "deferred");
    assert!(deferred.contains("dsn=4.7.5"), "{deferred}");

    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let printed = report(&a.config_path(), &day, false);
    let reports: Vec<Value> = printed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(reports.len(), 2, "{printed}");
    let ok = reports.iter().find(|r| r["policies"][0]["policy"]["policy-domain"] == "rptok.test").unwrap();
    let p = check_report(ok, "rptok.test");
    assert_eq!(p["summary"]["total-successful-session-count"], 2, "{ok}");
    assert_eq!(p["summary"]["total-failure-session-count"], 0, "{ok}");
    let bad = reports.iter().find(|r| r["policies"][0]["policy"]["policy-domain"] == "rptbad.test").unwrap();
    let p = check_report(bad, "rptbad.test");
    let failures = p["summary"]["total-failure-session-count"].as_u64().unwrap();
    assert!(failures >= 1 && p["summary"]["total-successful-session-count"] == 0, "{bad}");
    let detail = &p["failure-details"][0];
    assert_eq!(detail["result-type"], "certificate-host-mismatch", "{bad}");
    assert_eq!(detail["receiving-mx-hostname"], "mx.rptbad.test", "{bad}");
    assert_eq!(detail["receiving-ip"], "127.0.0.1", "{bad}");
    // Our end of the failed session (issue 27), and no null anywhere (RFC 8460 §4.4).
    assert_eq!(detail["sending-mta-ip"], "127.0.0.1", "{bad}");
    assert!(!printed.contains("null"), "{printed}");
    assert_eq!(detail["failed-session-count"].as_u64(), Some(failures), "{bad}");

    // --send queues both, signed, to alice@a.test (the rua of both records); the day is gone.
    let sent = report(&a.config_path(), &day, true);
    assert!(sent.contains("rptok.test: report") && sent.contains("rptbad.test: report"), "{sent}");
    let files = a.wait_maildir("alice", 2);
    let mut domains = Vec::new();
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        let msg = mail_parser::MessageParser::default().parse(&raw).unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("report-type=\"tlsrpt\"") || text.contains("report-type=tlsrpt"), "{text}");
        assert!(text.contains("DKIM-Signature:") && text.contains("d=a.test"), "not signed: {text}");
        let gz = msg.attachment(0).expect("the gzip attachment");
        assert!(gz.is_content_type("application", "tlsrpt+gzip"), "{text}");
        let path = keys.0.join("report.json.gz");
        std::fs::write(&path, gz.contents()).unwrap();
        let json = Command::new("gzip").arg("-dc").arg(&path).output().unwrap().stdout;
        assert!(!String::from_utf8_lossy(&json).contains("null"), "the report sent has no null");
        let r: Value = serde_json::from_slice(&json).unwrap();
        let domain = r["policies"][0]["policy"]["policy-domain"].as_str().unwrap().to_owned();
        check_report(&r, &domain);
        assert!(msg.subject().unwrap().starts_with(&format!("Report Domain: {domain} Submitter: a.example.test")));
        domains.push(domain);
    }
    domains.sort();
    assert_eq!(domains, ["rptbad.test", "rptok.test"]);
    // (rptbad.test's retries go on failing, so only rptok.test is surely gone. Their failure
    // details name mx.rptok.test's certificate: compare policy domains, not text.)
    let again = report(&a.config_path(), &day, false);
    let left: Vec<Value> = again.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).collect();
    assert!(left.iter().all(|r| r["policies"][0]["policy"]["policy-domain"] != "rptok.test"), "{again}");
}
