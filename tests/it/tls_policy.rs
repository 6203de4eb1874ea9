//! The outbound TLS policy table (`[tables] tls_policy`, issue 14 item 4): `verify` delivers
//! only over TLS with a certificate that chains to `[outbound] ca_file` and names the host,
//! `encrypt` only over TLS, `none` never uses STARTTLS; a required TLS that fails defers with
//! 4.7.5 and never falls back to clear text.

use crate::support::certs::{Pki, ServerCert};
use crate::support::peer::{Peer, Tls, self_signed_tls};
use crate::support::smtp::Client;
use crate::support::{Server, poll};

/// A relaying for its trusted client, with each `(domain, level, peer)` routed to its peer.
fn sender(pki: &Pki, cases: &[(&str, &str, &Peer)]) -> Server {
    let routes: String = cases.iter().map(|(d, _, p)| format!("{d} relay:[127.0.0.1]:{}\n", p.port)).collect();
    let policy: String = cases.iter().map(|(d, l, _)| format!("{d} {l}\n")).collect();
    relaying(pki, &routes, &policy, None)
}

/// A relaying for its trusted client by the `routes` and `tls-policy` tables given, trusting
/// `pki`'s root for next hops; with `inbound`, it offers STARTTLS on that certificate (also
/// used by tests/it/requiretls.rs).
pub(crate) fn relaying(pki: &Pki, routes: &str, policy: &str, inbound: Option<ServerCert>) -> Server {
    let root = pki.root_pem();
    let tls = if inbound.is_some() { "\n[tls]\ncert = \"fullchain.pem\"\nkey = \"privkey.pem\"\n" } else { "" };
    Server::start_prepared(
        "relay-a",
        &[("PEER", "9".into())],
        |t| {
            t.replace("{DNS}", "{NO_DNS}")
                .replace("{PORT}", "9")
                .replace(
                    "sender_routes = \"sender-routes\"",
                    "sender_routes = \"sender-routes\"\ntls_policy = \"tls-policy\"",
                )
                .replace("[outbound]", "[outbound]\nca_file = \"ca.pem\"")
                + tls
        },
        |dir| {
            std::fs::write(dir.join("routes"), routes).unwrap();
            std::fs::write(dir.join("tls-policy"), policy).unwrap();
            std::fs::write(dir.join("ca.pem"), &root).unwrap();
            if let Some(cert) = inbound {
                cert.write(dir);
            }
        },
    )
}

/// Sends one message from A's trusted client to `rcpt` (also used by tests/it/mta_sts.rs).
pub(crate) fn send(a: &Server, rcpt: &str) {
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.test");
    let r = c.send_data("alice@a.test", &[rcpt], format!("Subject: to {rcpt}\r\n\r\nprivate\r\n").as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
}

/// The first delivery line of `rcpt` that says `status`.
pub(crate) fn line(a: &Server, rcpt: &str, status: &str) -> String {
    poll(&format!("{status} line of {rcpt}"), || {
        a.log_lines(&format!("to=<{rcpt}>")).into_iter().find(|l| l.contains(&format!("status={status}")))
    })
}

#[test]
fn verify_and_encrypt_deliver_only_over_tls_and_none_never_uses_it() {
    let pki = Pki::new();
    let trusted = Peer::start_tls(&[], Tls::Offer(pki.server_cert(&["127.0.0.1"], false).server_config()));
    let stranger = Peer::start_tls(&[], Tls::Offer(self_signed_tls()));
    let clear = Peer::start(&[]);
    let offering = Peer::start_tls(&[], Tls::Offer(self_signed_tls()));
    let a = sender(
        &pki,
        &[
            ("secure.test", "verify", &trusted),
            ("strict.test", "verify", &stranger),
            ("enc.test", "encrypt", &stranger),
            ("noenc.test", "encrypt", &clear),
            ("plain.test", "none", &offering),
        ],
    );
    for rcpt in ["x@secure.test", "x@strict.test", "x@enc.test", "x@noenc.test", "x@plain.test"] {
        send(&a, rcpt);
    }

    // verify, a certificate from the configured CA that names the host: delivered.
    let sent = line(&a, "x@secure.test", "sent");
    assert!(sent.contains("verify=OK tls_policy=verify"), "{sent}");
    assert_eq!(*trusted.over_tls.lock().unwrap(), [true]);
    // verify, a certificate from elsewhere: deferred 4.7.5, nothing sent.
    let deferred = line(&a, "x@strict.test", "deferred");
    assert!(deferred.contains("dsn=4.7.5") && deferred.contains("did not verify"), "{deferred}");
    // encrypt: the same certificate is enough.
    let sent = line(&a, "x@enc.test", "sent");
    assert!(sent.contains("verify=FAIL") && sent.contains("tls_policy=encrypt"), "{sent}");
    assert_eq!(stranger.received.lock().unwrap().len(), 1, "only the encrypt delivery reached it");
    // encrypt to a peer without STARTTLS: deferred, never sent in clear text.
    let deferred = line(&a, "x@noenc.test", "deferred");
    assert!(deferred.contains("dsn=4.7.5") && deferred.contains("offers no STARTTLS"), "{deferred}");
    assert!(clear.received.lock().unwrap().is_empty());
    // none: clear text although STARTTLS is offered.
    let sent = line(&a, "x@plain.test", "sent");
    assert!(sent.contains("tls=none tls_policy=none"), "{sent}");
    assert_eq!(*offering.over_tls.lock().unwrap(), [false]);
}

#[test]
fn a_broken_handshake_under_encrypt_defers_instead_of_falling_back() {
    let pki = Pki::new();
    let broken = Peer::start_tls(&[], Tls::Broken);
    let a = sender(&pki, &[("enc.test", "encrypt", &broken)]);
    send(&a, "x@enc.test");
    let deferred = line(&a, "x@enc.test", "deferred");
    assert!(deferred.contains("dsn=4.7.5") && deferred.contains("TLS is required (tls_policy=encrypt)"), "{deferred}");
    assert!(a.log_lines("retrying in clear text").is_empty());
    assert!(broken.received.lock().unwrap().is_empty(), "nothing in clear text");
}

#[test]
fn an_unknown_level_is_refused_with_its_line_and_dane_levels_are_taken() {
    let dir = crate::support::TempDir::new("tls-policy-dane");
    let cfg = dir.0.join("postern.toml");
    let text = crate::support::fill_no_dns(
        &std::fs::read_to_string(crate::support::repo().join("tests/fixtures/basic/postern.toml")).unwrap(),
    );
    std::fs::write(&cfg, text.replace("virtual = \"virtual\"", "virtual = \"virtual\"\ntls_policy = \"tls-policy\""))
        .unwrap();
    for f in ["users", "aliases", "virtual"] {
        std::fs::copy(crate::support::repo().join("tests/fixtures/basic").join(f), dir.0.join(f)).unwrap();
    }
    std::fs::write(dir.0.join("tls-policy"), "ok.test verify\nbank.test dane-only\nnet.test dane\nodd.test secure\n")
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let (code, out) =
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout));
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("tls-policy:4: odd.test") && out.contains("use none, may, encrypt, verify, dane or dane-only"),
        "{out}"
    );
    assert!(!out.contains("tls-policy:2") && !out.contains("tls-policy:3"), "dane levels are valid: {out}");
}
