//! Python's smtplib as the client (tests/python/smtplib_client.py).

use std::process::Command;

use crate::delivery::FANOUT;
use crate::support::{Server, repo};

#[test]
fn smtplib_client() {
    let server = Server::start();
    let out = Command::new("python3")
        .arg(repo().join("tests/python/smtplib_client.py"))
        .arg(server.port.to_string())
        .output()
        .expect("python3 must be installed (scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "smtplib script failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("smtplib: all checks passed"), "{stdout}");
    for (_, boxes) in FANOUT {
        for b in boxes {
            let files = server.wait_maildir(b, 1);
            let text = std::fs::read_to_string(&files[0]).unwrap();
            assert!(text.contains("Subject: from smtplib\n"), "{text}");
        }
    }
    server.wait_queue_empty();
}

#[test]
fn smtplib_over_tls() {
    use crate::support::certs::Pki;
    use crate::support::peer::Peer;
    let pki = Pki::new();
    let peer = Peer::start(&[]);
    let cert = pki.server_cert(&["mx.example.test"], false);
    let server = Server::start_prepared("tls", &[("PEER_PORT", peer.port.to_string())], |t| t, |d| cert.write(d));
    let ca = server.dir.0.join("root.pem");
    std::fs::write(&ca, pki.root_pem()).unwrap();
    let out = Command::new("python3")
        .arg(repo().join("tests/python/smtplib_tls.py"))
        .args(
            [server.port_of("mx"), server.port_of("submission"), server.port_of("submissions")].map(|p| p.to_string()),
        )
        .arg(&ca)
        .output()
        .expect("python3 must be installed (scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "smtplib script failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("smtplib-tls: all checks passed"), "{stdout}");
    let text = std::fs::read_to_string(&server.wait_maildir("bob", 1)[0]).unwrap();
    assert!(text.contains("with ESMTPS id") && text.contains("Subject: smtplib starttls"), "{text}");
    crate::support::poll("the relayed message", || (peer.received.lock().unwrap().len() == 1).then_some(()));
    let relayed = String::from_utf8(peer.received.lock().unwrap()[0].clone()).unwrap();
    assert!(relayed.contains("with ESMTPSA id") && relayed.contains("Subject: smtplib submissions"), "{relayed}");
}
