//! TLS, authenticated submission and the hardening around them (issue 4): STARTTLS on mx and
//! submission, implicit TLS on submissions, AUTH only under TLS, sender ownership, failed-AUTH
//! bans, the CVE-2011-0411 injection, certificate reload on SIGHUP, and check-config's
//! certificate report. Certificates are made with rcgen at test time (root → intermediate →
//! leaf, written as certbot writes them).

use std::process::Command;

use crate::support::certs::{Pki, ServerCert};
use crate::support::peer::Peer;
use crate::support::smtp::Client;
use crate::support::{Server, poll, repo};

const NAME: &str = "mx.example.test";

fn b64(bytes: &[u8]) -> String {
    crate::support::base64(bytes)
}

fn plain(user: &str, password: &str) -> String {
    format!("AUTH PLAIN {}", b64(format!("\0{user}\0{password}").as_bytes()))
}

/// The tls fixture with a fresh PKI, relaying to `peer`.
fn start(pki: &Pki, peer: &Peer) -> (Server, ServerCert) {
    let cert = pki.server_cert(&[NAME], false);
    let server = Server::start_prepared("tls", &[("PEER_PORT", peer.port.to_string())], |t| t, |dir| cert.write(dir));
    (server, cert)
}

#[test]
fn starttls_on_mx_presents_the_full_chain_and_received_says_esmtps() {
    let pki = Pki::new();
    let peer = Peer::start(&[]);
    let (server, cert) = start(&pki, &peer);
    let (mut c, _) = Client::connect(server.port_of("mx"));
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.text.contains("STARTTLS"), "{}", ehlo.text);
    assert!(!ehlo.text.contains("AUTH"), "port 25 offers no AUTH: {}", ehlo.text);
    c.starttls(pki.client_config(), NAME);
    let chain = c.peer_certificates();
    assert_eq!(chain.len(), 2, "leaf and intermediate presented");
    assert_eq!(chain[0], cert.leaf_der);
    let ehlo = c.cmd("EHLO client.test");
    assert!(!ehlo.text.contains("STARTTLS"), "{}", ehlo.text);
    let r = c.send_data("someone@far.test", &["bob@example.test"], b"Subject: over tls\r\n\r\nhello\r\n");
    assert_eq!(r.code, 250, "{}", r.text);
    let files = server.wait_maildir("bob", 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("with ESMTPS id"), "{text}");
    assert!(text.contains("(using TLSv1.3 with cipher TLS13_"), "{text}");
    let line = server.wait_log("STARTTLS=server from [127.0.0.1]: version=TLSv1.3 cipher=TLS13_");
    assert!(line.ends_with("client_cert=none"), "{line}");
}

#[test]
fn auth_only_under_tls_then_relay_with_sender_checks() {
    let pki = Pki::new();
    let peer = Peer::start(&[]);
    let (server, _) = start(&pki, &peer);
    let (mut c, _) = Client::connect(server.port_of("submission"));
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.text.contains("STARTTLS") && !ehlo.text.contains("AUTH"), "{}", ehlo.text);
    let r = c.cmd(&plain("alice", "alice-secret"));
    assert_eq!((r.code, &r.text[4..9]), (530, "5.7.0"), "{}", r.text);
    let r = c.cmd("MAIL FROM:<alice@example.test>");
    assert_eq!((r.code, &r.text[4..9]), (530, "5.7.0"), "{}", r.text);
    c.starttls(pki.client_config(), NAME);
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.text.contains("AUTH PLAIN LOGIN"), "{}", ehlo.text);
    let r = c.cmd("MAIL FROM:<alice@example.test>");
    assert_eq!(r.code, 530, "submission needs AUTH: {}", r.text);
    let r = c.cmd(&plain("alice", "wrong"));
    assert_eq!((r.code, &r.text[4..9]), (535, "5.7.8"), "{}", r.text);
    let r = c.cmd(&plain("alice", "alice-secret"));
    assert_eq!(r.code, 235, "{}", r.text);
    // Forging another user's envelope sender.
    let r = c.cmd("MAIL FROM:<bob@example.test>");
    assert_eq!((r.code, &r.text[4..9]), (553, "5.7.1"), "{}", r.text);
    // A shared address granted by the senders table, then her own with a foreign From.
    assert_eq!(c.cmd("MAIL FROM:<team@example.test>").code, 250);
    assert_eq!(c.cmd("RSET").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<alice+lists@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<friend@far.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"From: Bob <bob@example.test>\r\nSubject: forged\r\n\r\nx\r\n.\r\n");
    let r = c.read_reply().unwrap();
    assert_eq!((r.code, &r.text[4..9]), (550, "5.7.1"), "{}", r.text);
    // The real thing: relayed to the outside, Date and Message-ID completed.
    let r = c.send_data(
        "alice@example.test",
        &["friend@far.test"],
        b"From: alice@example.test\r\nSubject: hi\r\n\r\nbody\r\n",
    );
    assert_eq!(r.code, 250, "{}", r.text);
    poll("the relayed message at the peer", || (peer.received.lock().unwrap().len() == 1).then_some(()));
    let m = String::from_utf8(peer.received.lock().unwrap()[0].clone()).unwrap();
    assert!(m.contains("with ESMTPSA id"), "{m}");
    assert!(m.contains("\r\nDate: ") && m.contains("\r\nMessage-ID: <"), "{m}");
    assert!(m.ends_with("From: alice@example.test\r\nSubject: hi\r\n\r\nbody\r\n"), "client's part unchanged: {m}");
    assert_eq!(peer.rcpts.lock().unwrap().len(), 1);
    server.wait_log("sasl_username=alice");
}

#[test]
fn implicit_tls_submissions_with_sha512_crypt_and_auth_login() {
    let pki = Pki::new();
    let peer = Peer::start(&[]);
    let (server, _) = start(&pki, &peer);
    let (mut c, greeting) =
        Client::connect_tls_from("127.0.0.1", server.port_of("submissions"), pki.client_config(), NAME);
    assert_eq!(greeting.code, 220);
    assert_eq!(c.peer_certificates().len(), 2);
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.text.contains("AUTH PLAIN LOGIN") && !ehlo.text.contains("STARTTLS"), "{}", ehlo.text);
    assert_eq!(c.cmd("AUTH LOGIN").code, 334);
    assert_eq!(c.cmd(&b64(b"bob")).code, 334);
    let r = c.cmd(&b64(b"Hello world!"));
    assert_eq!(r.code, 235, "{}", r.text);
    let r = c.send_data("bob@example.test", &["x@far.test"], b"From: bob@example.test\r\nSubject: s\r\n\r\nb\r\n");
    assert_eq!(r.code, 250, "{}", r.text);
    poll("the relayed message", || (peer.received.lock().unwrap().len() == 1).then_some(()));
    server.wait_log("TLS=server implicit from [127.0.0.1]: version=TLSv1.3");
}

#[test]
fn failed_auth_bans_the_network_but_not_others() {
    let pki = Pki::new();
    let peer = Peer::start(&[]);
    let (server, _) = start(&pki, &peer);
    let port = server.port_of("submission");
    let (mut c, _) = Client::connect_from("127.0.0.7", port);
    c.cmd("EHLO bot.test");
    c.starttls(pki.client_config(), NAME);
    c.cmd("EHLO bot.test");
    for _ in 0..2 {
        assert_eq!(c.cmd(&plain("alice", "guess")).code, 535);
    }
    // The third failure (auth_failures_before_ban = 3) ends the session with 421.
    c.send(format!("{}\r\n", plain("alice", "guess")).as_bytes());
    assert_eq!(c.read_reply().unwrap().code, 535);
    let r = c.read_reply().unwrap();
    assert_eq!((r.code, &r.text[4..9]), (421, "4.7.0"), "{}", r.text);
    let (_, g) = Client::connect_from("127.0.0.7", port);
    assert_eq!((g.code, &g.text[4..9]), (421, "4.7.0"), "banned: {}", g.text);
    // The whole /24 is banned ([server] ban_prefix_ipv4 = 24): a neighbour address is no way
    // around it; other networks are unaffected.
    let (_, g) = Client::connect_from("127.0.0.8", port);
    assert_eq!((g.code, &g.text[4..9]), (421, "4.7.0"), "same /24: {}", g.text);
    assert!(g.text.contains("too many failures from 127.0.0.0/24"), "{}", g.text);
    let (_, g) = Client::connect_from("127.0.1.8", port);
    assert_eq!(g.code, 220);
    server.wait_log("ban: 127.0.0.0/24 (client [127.0.0.7]) after 3 failed AUTH attempts");
    // The postmaster lists the bans and lifts one; the client may connect again.
    let bans = |args: &[&str]| crate::support::postern_cli(&[&["bans"], args].concat(), &server.config_path());
    let (code, out) = bans(&["list"]);
    assert_eq!(code, Some(0), "{out}");
    let line = out.lines().find(|l| l.starts_with("127.0.0.0/24 ")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(" 3 ") && line.contains("banned for"), "{out}");
    assert_eq!(bans(&["lift", "127.0.0.9"]), (Some(0), "127.0.0.0/24: ban lifted\n".into()));
    let (_, g) = Client::connect_from("127.0.0.7", port);
    assert_eq!(g.code, 220, "after the lift: {}", g.text);
    assert_eq!(bans(&["lift", "127.0.0.7"]).0, Some(1), "nothing left to lift");
}

#[test]
fn plaintext_pipelined_after_starttls_is_discarded() {
    let pki = Pki::new();
    let peer = Peer::start(&[]);
    let (server, _) = start(&pki, &peer);
    let (mut c, _) = Client::connect(server.port_of("mx"));
    c.cmd("EHLO client.test");
    // CVE-2011-0411: a man in the middle appends a command to the STARTTLS packet.
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n");
    let r = c.read_reply().unwrap();
    assert_eq!(r.code, 220, "{}", r.text);
    c.handshake(pki.client_config(), NAME).unwrap();
    // Had the injected MAIL been kept, its reply (503: HELO is forgotten after TLS) would
    // come first.
    let r = c.cmd("EHLO client.test");
    assert!(r.text.starts_with("250-mx.example.test"), "{}", r.text);
    assert_eq!(c.cmd("MAIL FROM:<real@far.test>").code, 250, "no transaction left open by the injection");
}

/// A session on `port` under STARTTLS with a transaction open (MAIL accepted).
fn tls_transaction(pki: &Pki, port: u16) -> Client {
    let (mut a, _) = Client::connect(port);
    a.cmd("EHLO a.test");
    a.starttls(pki.client_config(), NAME);
    a.cmd("EHLO a.test");
    assert_eq!(a.cmd("MAIL FROM:<a@far.test>").code, 250);
    a
}

#[test]
fn reload_swaps_the_certificate_for_new_sessions_only() {
    let pki = Pki::new();
    let peer = Peer::start(&[]);
    let (server, old) = start(&pki, &peer);
    let port = server.port_of("mx");
    // A session opened before the reload...
    let mut a = tls_transaction(&pki, port);
    assert_eq!(a.cmd("RCPT TO:<bob@example.test>").code, 250);
    // ...then a renewed certificate and SIGHUP.
    let new = pki.server_cert(&[NAME], false);
    new.write(&server.dir.0);
    server.signal(libc::SIGHUP);
    poll("the reload", || server.log_lines("SIGHUP: reloaded").first().cloned());
    let (mut b, _) = Client::connect(port);
    b.cmd("EHLO b.test");
    b.starttls(pki.client_config(), NAME);
    assert_eq!(b.peer_certificates()[0], new.leaf_der, "a new session sees the new certificate");
    assert_ne!(new.leaf_der, old.leaf_der);
    // The old session completes its message on the old certificate.
    assert_eq!(a.peer_certificates()[0], old.leaf_der);
    assert_eq!(a.cmd("DATA").code, 354);
    a.send(b"Subject: across the reload\r\n\r\nx\r\n.\r\n");
    assert_eq!(a.read_reply().unwrap().code, 250);
    server.wait_maildir("bob", 1);
    // A broken configuration is refused by `postern reload`; the running one stays.
    let cfg = server.config_path();
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, good.replace("key = \"privkey.pem\"", "key = \"missing.pem\"")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_postern")).args(["reload", "--config"]).arg(&cfg).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "reload must fail");
    assert!(stderr.contains("missing.pem") && stderr.contains("previous one stays in force"), "{stderr}");
    let (mut c, _) = Client::connect(port);
    c.cmd("EHLO c.test");
    c.starttls(pki.client_config(), NAME);
    assert_eq!(c.peer_certificates()[0], new.leaf_der);
    c.cmd("EHLO c.test");
    let r = c.send_data("c@far.test", &["bob@example.test"], b"Subject: after a refused reload\r\n\r\nx\r\n");
    assert_eq!(r.code, 250);
    server.wait_maildir("bob", 2);
}

#[test]
fn user_add_then_auth_without_restart() {
    let pki = Pki::new();
    let peer = Peer::start(&[]);
    let (server, _) = start(&pki, &peer);
    // The table is 0640 root:nogroup as a postmaster sets it (root:postern on a real box): the
    // rewrite keeps owner, group and mode (issue 28: it came back root:root).
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let users_path = server.dir.0.join("users");
    std::os::unix::fs::chown(&users_path, Some(0), Some(65534)).unwrap();
    std::fs::set_permissions(&users_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["user", "add", "dave", "--config"])
        .arg(server.config_path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"dave's new password\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let users = std::fs::read_to_string(server.dir.0.join("users")).unwrap();
    assert!(users.contains("\ndave:{ARGON2ID}$argon2id$"), "{users}");
    assert!(!users.contains("new password"));
    let meta = std::fs::metadata(&users_path).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (0, 65534, 0o640));
    let (mut c, _) = Client::connect_tls_from("127.0.0.1", server.port_of("submissions"), pki.client_config(), NAME);
    c.cmd("EHLO client.test");
    let r = c.cmd(&plain("dave", "dave's new password"));
    assert_eq!(r.code, 235, "{}", r.text);
}

#[test]
fn check_config_reports_certificate_problems() {
    let pki = Pki::new();
    let dir = crate::support::TempDir::new("tls-check");
    for f in ["postern.toml", "users", "senders"] {
        let text = std::fs::read_to_string(repo().join("tests/fixtures/tls").join(f)).unwrap();
        std::fs::write(dir.0.join(f), crate::support::fill_no_dns(&text.replace("{PEER_PORT}", "25"))).unwrap();
    }
    let check = || {
        let out = Command::new(env!("CARGO_BIN_EXE_postern"))
            .args(["check-config", "--config"])
            .arg(dir.0.join("postern.toml"))
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    };
    let (code, text) = check();
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("fullchain.pem: cannot read the certificate chain"), "{text}");
    let good = pki.server_cert(&[NAME], false);
    good.write(&dir.0);
    let (code, text) = check();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("chain of 2") && text.contains("mx.example.test"), "{text}");
    assert!(text.contains("expires in 89 day(s)") || text.contains("expires in 90 day(s)"), "{text}");
    // The key of another certificate.
    std::fs::write(dir.0.join("privkey.pem"), pki.server_cert(&[NAME], false).privkey).unwrap();
    let (code, text) = check();
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("does not match the certificate"), "{text}");
    pki.server_cert(&[NAME], true).write(&dir.0);
    let (code, text) = check();
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("expired"), "{text}");
}

#[test]
fn drops_privileges_after_binding() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "dropping privileges needs a start as root: run the tests as root, as CI does"
    );
    let server = Server::start_with("basic", |t| format!("{t}\n[server]\nuser = \"nobody\"\n"));
    server.wait_log("running as user nobody");
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap().to_owned();
    assert_eq!(uid.split_whitespace().skip(1).collect::<Vec<_>>(), ["65534"; 4], "{uid}");
    // The unprivileged daemon still spools and delivers.
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO client.test");
    let r = c.send_data("a@far.test", &["bob@example.test"], b"Subject: as nobody\r\n\r\nx\r\n");
    assert_eq!(r.code, 250, "{}", r.text);
    server.wait_maildir("bob", 1);
}

#[test]
fn sni_selects_among_several_certificates() {
    let pki = Pki::new();
    let peer = Peer::start(&[]);
    let main = pki.server_cert(&[NAME], false);
    let other = pki.server_cert(&["mail.other.test", "*.other.test"], false);
    let server = Server::start_prepared(
        "tls",
        &[("PEER_PORT", peer.port.to_string())],
        |t| t + "\n[[tls.sni]]\ncert = \"other.pem\"\nkey = \"other.key\"\n",
        |dir| {
            main.write(dir);
            std::fs::write(dir.join("other.pem"), &other.fullchain).unwrap();
            std::fs::write(dir.join("other.key"), &other.privkey).unwrap();
        },
    );
    let leaf_for = |name: &str| {
        let (mut c, _) = Client::connect(server.port_of("mx"));
        c.cmd("EHLO client.test");
        c.starttls(pki.client_config(), name);
        c.peer_certificates()[0].clone()
    };
    assert_eq!(leaf_for("mail.other.test"), other.leaf_der);
    assert_eq!(leaf_for("smtp.other.test"), other.leaf_der, "wildcard");
    assert_eq!(leaf_for(NAME), main.leaf_der);
}

#[test]
fn tls12_clients_are_served_too() {
    let pki = Pki::new();
    let peer = Peer::start(&[]);
    let (server, _) = start(&pki, &peer);
    let (mut c, _) = Client::connect(server.port_of("mx"));
    c.cmd("EHLO old.client.test");
    c.starttls(pki.client_config_with(&[&rustls::version::TLS12]), NAME);
    assert_eq!(c.tls_version().as_deref(), Some("TLSv1_2"));
    c.cmd("EHLO old.client.test");
    let r = c.send_data("a@far.test", &["bob@example.test"], b"Subject: tls 1.2\r\n\r\nx\r\n");
    assert_eq!(r.code, 250, "{}", r.text);
    let text = std::fs::read_to_string(&server.wait_maildir("bob", 1)[0]).unwrap();
    assert!(text.contains("(using TLSv1.2 with cipher TLS_ECDHE_"), "{text}");
}

/// The server's order of cipher suites decides (testssl.sh's "server cipher order", issue 27):
/// a client that prefers ChaCha20 but also offers AES-256-GCM gets AES-256-GCM, in TLS 1.3
/// and in TLS 1.2.
#[test]
fn the_servers_cipher_order_decides() {
    use rustls::crypto::ring::cipher_suite as cs;
    let pki = Pki::new();
    let peer = Peer::start(&[]);
    let (server, _) = start(&pki, &peer);
    let cases = [
        (
            &rustls::version::TLS13,
            vec![cs::TLS13_CHACHA20_POLY1305_SHA256, cs::TLS13_AES_256_GCM_SHA384],
            "TLS13_AES_256_GCM_SHA384",
        ),
        (
            &rustls::version::TLS12,
            vec![cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384],
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ),
    ];
    for (version, suites, want) in cases {
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = suites;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(pki.root_der())).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (mut c, _) = Client::connect(server.port_of("mx"));
        c.cmd("EHLO client.test");
        c.starttls(std::sync::Arc::new(config), NAME);
        assert_eq!(c.tls_cipher().as_deref(), Some(want));
    }
}

/// The mode and owner of a file.
fn mode_and_uid(path: &std::path::Path) -> (u32, u32) {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let m = std::fs::metadata(path).unwrap();
    (m.permissions().mode() & 0o777, m.uid())
}

/// Makes `path` root-only (0600), as certbot keeps privkey.pem.
fn root_only(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(mode_and_uid(path), (0o600, 0), "{}", path.display());
}

/// A new DKIM key at `path` (mode 0600, owned by root: the tests run as root); returns the TXT
/// value to publish for it.
fn dkim_key(path: &std::path::Path) -> String {
    let _ = std::fs::remove_file(path);
    let out = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["dkim", "keygen", "--domain", "example.test", "--selector", "s1", "--algorithm", "ed25519", "--out"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    root_only(path);
    String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim_start_matches("; ").to_owned()
}

#[test]
fn reload_under_privilege_drop_reads_root_only_keys() {
    let pki = Pki::new();
    let peer = Peer::start(&[]);
    let old = pki.server_cert(&[NAME], false);
    let old_txt = std::cell::RefCell::new(String::new());
    let server = Server::start_prepared(
        "tls",
        &[("PEER_PORT", peer.port.to_string())],
        |t| {
            t.replace("[server]\n", "[server]\nuser = \"nobody\"\n")
                + "\n[[dkim.key]]\ndomain = \"example.test\"\nselector = \"s1\"\nprivate_key = \"dkim.key\"\n"
        },
        |dir| {
            old.write(dir);
            root_only(&dir.join("privkey.pem"));
            *old_txt.borrow_mut() = dkim_key(&dir.join("dkim.key"));
        },
    );
    let old_txt = old_txt.into_inner();
    server.wait_log("running as user nobody");
    server.wait_log("privileged helper started");
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid.split_whitespace().skip(1).all(|u| u == "65534"), "the daemon serves as nobody: {uid}");
    let port = server.port_of("mx");
    let mut a = tls_transaction(&pki, port);
    // certbot renews: a new root-only key and certificate; a new root-only DKIM key too.
    let new = pki.server_cert(&[NAME], false);
    new.write(&server.dir.0);
    root_only(&server.dir.0.join("privkey.pem"));
    let new_txt = dkim_key(&server.dir.0.join("dkim.key"));
    let out = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["reload", "--config"])
        .arg(server.config_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "reload refused: {text}");
    assert!(text.contains("certificate loaded"), "{text}");
    let (mut b, _) = Client::connect(port);
    b.cmd("EHLO b.test");
    b.starttls(pki.client_config(), NAME);
    assert_eq!(b.peer_certificates()[0], new.leaf_der, "the new certificate is served");
    // The session opened before the reload was not dropped.
    assert_eq!(a.cmd("RCPT TO:<bob@example.test>").code, 250);
    assert_eq!(a.cmd("DATA").code, 354);
    assert_eq!(a.cmd("Subject: across the reload\r\n\r\nx\r\n.").code, 250);
    server.wait_maildir("bob", 1);
    // What alice submits now is signed with the new key: dkimpy verifies it with the new
    // record and not with the old one.
    let (mut c, _) = Client::connect(server.port_of("submission"));
    c.cmd("EHLO client.test");
    c.starttls(pki.client_config(), NAME);
    c.cmd("EHLO client.test");
    assert_eq!(c.cmd(&plain("alice", "alice-secret")).code, 235);
    let r = c.send_data(
        "alice@example.test",
        &["friend@far.test"],
        b"From: Alice <alice@example.test>\r\nTo: friend@far.test\r\nSubject: signed after the reload\r\n\r\nHello.\r\n",
    );
    assert_eq!(r.code, 250, "{}", r.text);
    let signed = poll("the signed message at the peer", || peer.received.lock().unwrap().first().cloned());
    let text = String::from_utf8_lossy(&signed);
    assert!(text.contains("DKIM-Signature:") && text.contains("s=s1"), "{text}");
    assert!(crate::support::dkimpy_verifies(&signed, &new_txt), "the new key signs:\n{text}");
    assert!(!crate::support::dkimpy_verifies(&signed, &old_txt), "not the old key");
}

/// Every way around the submission From check (issue 26, finding 5) is refused with 550 5.7.1
/// at the end of DATA, nothing relayed: a forged From before the user's own, other spellings of
/// the field name, an empty group, no From at all, a foreign Sender. The user's own From passes.
#[test]
fn submission_from_check_has_no_way_around() {
    let pki = Pki::new();
    let peer = Peer::start(&[]);
    let (server, _) = start(&pki, &peer);
    let (mut c, _) = Client::connect(server.port_of("submission"));
    c.cmd("EHLO client.test");
    c.starttls(pki.client_config(), NAME);
    c.cmd("EHLO client.test");
    assert_eq!(c.cmd(&plain("alice", "alice-secret")).code, 235);
    for headers in [
        "From: CEO <ceo@example.test>\r\nFrom: alice@example.test\r\n",
        "from: ceo@example.test\r\n",
        "FROM: ceo@example.test\r\n",
        "From: ceo@example.test:;\r\n",
        "Subject: no author\r\n",
        "From: alice@example.test\r\nSender: ceo@example.test\r\n",
        "From: alice@example.test, ceo@example.test\r\n",
    ] {
        let body = format!("{headers}Subject: s\r\n\r\nx\r\n");
        let r = c.send_data("alice@example.test", &["friend@far.test"], body.as_bytes());
        assert_eq!((r.code, &r.text[4..9]), (550, "5.7.1"), "{headers:?}: {}", r.text);
    }
    let r = c.send_data("alice@example.test", &["friend@far.test"], b"From: Alice <alice@example.test>\r\n\r\nx\r\n");
    assert_eq!(r.code, 250, "{}", r.text);
    poll("the one relayed message", || (peer.received.lock().unwrap().len() == 1).then_some(()));
    assert_eq!(server.log_lines("NOQUEUE: reject: DATA from").len(), 7);
}
