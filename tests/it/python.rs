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
