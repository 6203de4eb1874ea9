//! MTA-STS (RFC 8461, issue 14 item 2) against a local HTTPS server with certificates made at
//! test time: an MX not in the policy is never connected to and the delivery is deferred; an
//! MX certificate from another CA defers with 4.7.5; a valid one delivers, logged
//! `sts=enforce` and `verify=OK`; `testing` delivers and records the failure; the cached
//! policy is used across a restart without a fetch while the TXT id is unchanged; a message
//! with `TLS-Required: No` (RFC 8689) is delivered despite the policy.

use crate::support::certs::Pki;
use crate::support::dns::DnsServer;
use crate::support::https::HttpsServer;
use crate::support::peer::{Peer, Tls, self_signed_tls};
use crate::support::{Server, repo};
use crate::tls_policy::{line, send};

pub(crate) fn policy(mode: &str, mx: &str) -> String {
    format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n")
}

/// The policy host of `domain` on `ip`:443, with a certificate from `pki`.
pub(crate) fn policy_host(pki: &Pki, ip: &str, domain: &str, body: &str) -> HttpsServer {
    let cert = pki.server_cert(&[&format!("mta-sts.{domain}")], false);
    HttpsServer::start(ip, cert.server_config(), body)
}

/// A relaying through `dns` to `peer`'s port, trusting `pki`'s root (for the policy hosts and
/// the MX certificates).
fn sender(pki: &Pki, dns: &DnsServer, peer: &Peer) -> Server {
    sender_with(pki, dns, peer, "")
}

/// As [`sender`], with `extra` appended to the configuration (also used by tests/it/tls_rpt.rs).
/// The policy hosts are on loopback, which `mta_sts_allow_networks` lets a fetch reach.
pub(crate) fn sender_with(pki: &Pki, dns: &DnsServer, peer: &Peer, extra: &str) -> Server {
    sender_allowing(pki, dns, peer, "mta_sts_allow_networks = [\"127.0.0.0/8\"]\n", extra)
}

/// A relaying through `dns` to `peer`'s port, trusting `pki`'s root, with `allow` (the
/// `[outbound]` line that lets policy fetches reach loopback, or nothing) and `extra`.
fn sender_allowing(pki: &Pki, dns: &DnsServer, peer: &Peer, allow: &str, extra: &str) -> Server {
    let root = pki.root_pem();
    Server::start_prepared(
        "relay-a",
        &[("PEER", "9".into())],
        |t| {
            t.replace("{DNS}", &dns.addr.to_string())
                .replace("{PORT}", &peer.port.to_string())
                .replace("[outbound]", &format!("[outbound]\nca_file = \"ca.pem\"\n{allow}"))
                + extra
        },
        |dir| std::fs::write(dir.join("ca.pem"), &root).unwrap(),
    )
}

pub(crate) fn dns() -> DnsServer {
    DnsServer::start(&[("test.", &repo().join("tests/fixtures/dns/sts.test.zone"))])
}

#[test]
fn enforce_delivers_over_verified_tls_and_the_cache_survives_a_restart() {
    let (pki, dns) = (Pki::new(), dns());
    let https = policy_host(&pki, "127.0.0.71", "enforce.test", &policy("enforce", "mx.good.test"));
    let peer = Peer::start_tls(&[], Tls::Offer(pki.server_cert(&["mx.good.test"], false).server_config()));
    let mut a = sender(&pki, &dns, &peer);
    send(&a, "x@enforce.test");
    let sent = line(&a, "x@enforce.test", "sent");
    assert!(sent.contains("verify=OK sts=enforce"), "{sent}");
    assert_eq!(*peer.over_tls.lock().unwrap(), [true]);
    a.wait_log("MTA-STS: fetched the policy of enforce.test (id 1): mode enforce");
    assert_eq!(*https.requests.lock().unwrap(), 1);
    let cache = a.data().join("mta-sts/enforce.test.toml");
    assert!(std::fs::read_to_string(&cache).unwrap().contains("mode = \"enforce\""));
    // `postern route` shows the cached policy, without fetching.
    let (code, out) =
        crate::support::postern_cli(&["route", "x@enforce.test", "--client", "127.0.0.1"], &a.config_path());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("TLS: MTA-STS policy of enforce.test (id 1, cached"), "{out}");
    assert!(out.contains("mode enforce, mx mx.good.test: only those hosts"), "{out}");

    // After a restart, the policy comes from the disk cache: the id is unchanged, no fetch.
    a.restart();
    send(&a, "y@enforce.test");
    let sent = line(&a, "y@enforce.test", "sent");
    assert!(sent.contains("sts=enforce"), "{sent}");
    assert_eq!(*https.requests.lock().unwrap(), 1, "fetched again although the id is unchanged");
}

#[test]
fn an_mx_outside_the_policy_is_never_connected_to() {
    let (pki, dns) = (Pki::new(), dns());
    let _https = policy_host(&pki, "127.0.0.72", "outside.test", &policy("enforce", "mx.good.test"));
    let peer = Peer::start_tls(&[], Tls::Offer(pki.server_cert(&["mx.other.test"], false).server_config()));
    let a = sender(&pki, &dns, &peer);
    send(&a, "x@outside.test");
    let deferred = line(&a, "x@outside.test", "deferred");
    assert!(deferred.contains("dsn=4.7.5") && deferred.contains("no MX host of outside.test matches"), "{deferred}");
    a.wait_log("MX mx.other.test of outside.test is not in its MTA-STS policy (mx: mx.good.test): not used");
    assert_eq!(peer.connections.lock().unwrap().0, 0, "connected to an MX outside the policy");
}

#[test]
fn enforce_defers_a_certificate_from_another_ca_and_testing_delivers() {
    let (pki, dns) = (Pki::new(), dns());
    let _enforce = policy_host(&pki, "127.0.0.73", "badca.test", &policy("enforce", "mx.badca.test"));
    let _testing = policy_host(&pki, "127.0.0.74", "testing.test", &policy("testing", "mx.testing.test"));
    let peer = Peer::start_tls(&[], Tls::Offer(self_signed_tls()));
    let a = sender(&pki, &dns, &peer);
    send(&a, "x@badca.test");
    let deferred = line(&a, "x@badca.test", "deferred");
    assert!(deferred.contains("dsn=4.7.5") && deferred.contains("TLS is required (sts=enforce)"), "{deferred}");
    assert!(deferred.contains("did not verify"), "{deferred}");
    send(&a, "x@testing.test");
    let sent = line(&a, "x@testing.test", "sent");
    assert!(sent.contains("verify=FAIL") && sent.contains("sts=testing"), "the failure is recorded: {sent}");
    assert_eq!(peer.received.lock().unwrap().len(), 1, "only the testing delivery went through");
    // `TLS-Required: No` (RFC 8689 §4.2.2): the sender waives the policy; the same delivery
    // that was deferred goes out (still over STARTTLS when offered).
    let (mut c, _) = crate::support::smtp::Client::connect(a.port);
    c.cmd("EHLO client.test");
    let r = c.send_data("alice@a.test", &["y@badca.test"], b"TLS-Required: No\r\nSubject: s\r\n\r\nbody\r\n");
    assert_eq!(r.code, 250, "{}", r.text);
    let sent = line(&a, "y@badca.test", "sent");
    assert!(sent.contains("tls=TLS") && sent.contains("tls_required=no"), "{sent}");
    assert_eq!(*peer.over_tls.lock().unwrap(), [true, true]);
}

/// A policy host whose DNS points into our own network (loopback here; private or link-local
/// addresses alike) is never fetched from without `mta_sts_allow_networks` (issue 26, finding
/// 12: no server-side request forgery from DNS): the fetch fails, logged, no request reaches the
/// host, and the message goes out as it would without a policy.
#[test]
fn a_policy_host_on_a_private_address_is_not_fetched() {
    let (pki, dns) = (Pki::new(), dns());
    let https = policy_host(&pki, "127.0.0.76", "private.test", &policy("enforce", "mx.private.test"));
    let peer = Peer::start(&[]);
    let a = sender_allowing(&pki, &dns, &peer, "", "");
    send(&a, "x@private.test");
    let sent = line(&a, "x@private.test", "sent");
    assert!(!sent.contains("sts="), "{sent}");
    let refused = a.wait_log("MTA-STS: policy of private.test");
    assert!(refused.contains("mta-sts.private.test resolves to 127.0.0.76, not a public address"), "{refused}");
    assert_eq!(*https.requests.lock().unwrap(), 0, "the policy host was reached");
}
