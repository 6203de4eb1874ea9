//! Runs every `tests/dialogs/*.dialog` against one server with the basic fixture.

use crate::support::{Server, dialog, repo};

#[test]
fn dialogs() {
    let server = Server::start();
    let mut files: Vec<_> =
        std::fs::read_dir(repo().join("tests/dialogs")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 16, "dialog files missing");
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        dialog::run(&name, &std::fs::read_to_string(f).unwrap(), server.port);
    }
    // Nothing smuggled or rejected was delivered: bob got exactly the legitimate messages of
    // 01-basic-transaction and 09-pipelining, and the smuggled "forged" message never arrived.
    let bob = server.wait_maildir("bob", 2);
    for f in bob {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(!text.contains("forged") && !text.contains("innocent"), "{text}");
    }
    server.wait_maildir("carol", 1);
    // The relayed message was tried (DNS points at a closed loopback port) and stays queued.
    let line = server.wait_log("to=<someone@elsewhere.test>, relay=");
    assert!(line.contains("status=deferred") && line.contains("dsn=4.4.3"), "{line}");
}
