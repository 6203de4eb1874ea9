//! Queue files written before the typed envelope results (`tests/fixtures/spool-v1`, written
//! by the previous version: a message deferred once for x@flaky.test, already delivered to
//! the local alice, with RET, ENVID, NOTIFY and ORCPT) are delivered after the upgrade.

use crate::support::peer::Peer;
use crate::support::{Server, poll, postern_cli, repo};

#[test]
fn a_spool_written_by_the_previous_version_is_delivered() {
    let peer = Peer::start(&[]);
    let server = Server::start_prepared(
        "relay-a",
        &[("PEER", peer.port.to_string())],
        // The fixture's arrival time is fixed (its queue ID encodes it too): pin the setting that
        // reads the clock, so that the message cannot expire however old the fixture grows.
        |t| {
            t.replace("{DNS}", "{NO_DNS}")
                .replace("{PORT}", "9")
                .replace("[queue]\n", "[queue]\nmax_age = \"36500d\"\n")
        },
        |dir| {
            let queue = dir.join("data/spool/queue");
            std::fs::create_dir_all(&queue).unwrap();
            for e in std::fs::read_dir(repo().join("tests/fixtures/spool-v1/queue")).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), queue.join(e.file_name())).unwrap();
            }
        },
    );
    server.wait_log("1 message(s) recovered from the spool");
    let (code, out) = postern_cli(&["queue", "flush"], &server.config_path());
    assert_eq!(code, Some(0), "{out}");
    poll("the upgraded message at the peer", || (peer.received.lock().unwrap().len() == 1).then_some(()));
    let sent = String::from_utf8(peer.received.lock().unwrap()[0].clone()).unwrap();
    assert!(sent.contains("Subject: queued by the previous version"), "{sent}");
    // alice had her copy before the upgrade; she now gets only the "relayed" notice that
    // NOTIFY=SUCCESS asked for (the peer has no DSN extension, RFC 3461 §5.2.2).
    let notice = std::fs::read_to_string(&server.wait_maildir("alice", 1)[0]).unwrap();
    assert!(notice.contains("Action: relayed") && notice.contains("x@flaky.test"), "{notice}");
    assert!(notice.contains("fixture+v1") || notice.contains("Original-Envelope-Id: fixture"), "ENVID kept: {notice}");
    server.wait_queue_empty();
}
