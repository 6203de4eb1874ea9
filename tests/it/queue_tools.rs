//! Queue tools against a live daemon: list (mailq), show, stats, flush by domain, hold, release,
//! delete; queue-only mode; the answer when the daemon is down.

use std::process::Command;

use crate::support::peer::Peer;
use crate::support::smtp::Client;
use crate::support::{Server, TempDir, poll};

fn queue(server: &Server, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["queue", "--config"])
        .arg(server.config_path())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn send(server: &Server, rcpt: &str) -> String {
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO client.test");
    let r = c.send_data("alice@a.test", &[rcpt], format!("Subject: for {rcpt}\r\n\r\nx\r\n").as_bytes());
    assert_eq!(r.code, 250);
    r.text.trim_end().rsplit(' ').next().unwrap().to_owned()
}

/// Instance A with DNS on a closed port (every MX lookup defers), `flaky.test` routed to
/// 127.0.0.1:`peer`, and retries an hour apart (at most `max_backoff`).
fn deferring_server(peer: &str, max_backoff: &str) -> Server {
    Server::start_full("relay-a", &[("PEER", peer.into())], |t| {
        t.replace("{DNS}", "{NO_DNS}")
            .replace("{PORT}", "9")
            .replace("min_backoff = \"1s\"", "min_backoff = \"1h\"")
            .replace("max_backoff = \"2s\"", &format!("max_backoff = \"{max_backoff}\""))
    })
}

#[test]
fn list_stats_flush_hold_release_delete() {
    // DNS points at a closed port: every remote attempt is deferred (4.4.3) and retried in 1 h.
    let server = deferring_server("9", "1h");
    let m1 = send(&server, "x@one.test");
    let m2 = send(&server, "y@two.test");
    let m3 = send(&server, "z@one.test");
    poll("three deferred attempts", || (server.log_lines("status=deferred").len() == 3).then_some(()));

    let (code, list, _) = queue(&server, &["list"]);
    assert_eq!(code, 0);
    for id in [&m1, &m2, &m3] {
        assert!(list.contains(id.as_str()), "{id} missing from\n{list}");
    }
    assert!(list.contains("(451 4.4.3 DNS lookup of MX for one.test failed"), "{list}");
    assert!(
        list.contains("alice@a.test") && list.contains("x@one.test") && list.contains("-- 1 KiB in 3 messages."),
        "{list}"
    );

    let (code, out, _) = queue(&server, &["hold", &m2]);
    assert_eq!((code, out.as_str()), (0, "held\n"));
    let (_, list, _) = queue(&server, &["list"]);
    assert!(list.contains(&format!("{m2}!")), "{list}");

    // Stats: the oldest deferred message per domain, and since when.
    let (code, stats, _) = queue(&server, &["stats"]);
    assert_eq!(code, 0);
    assert!(stats.starts_with("3 message(s), 3 pending recipient(s), 1 held"), "{stats}");
    let one = stats.lines().find(|l| l.starts_with("one.test")).unwrap_or_else(|| panic!("{stats}"));
    let cols: Vec<&str> = one.split_whitespace().collect();
    assert_eq!((cols[1], cols[2]), ("2", "2"), "{one}");
    assert!(one.contains("451 4.4.3"), "{one}");
    assert!(stats.lines().any(|l| l.starts_with("two.test")), "{stats}");

    // Flush by recipient domain: only one.test's messages are tried again.
    let (code, out, _) = queue(&server, &["flush", "--recipient-domain", "one.test"]);
    assert_eq!((code, out.trim()), (0, "2 message(s) scheduled for delivery now"));
    poll("two more deferred attempts", || (server.log_lines("status=deferred").len() == 5).then_some(()));
    assert_eq!(server.log_lines("to=<y@two.test>").len(), 1, "held message must not be tried");

    // The log line comes just before the envelope is saved: poll until `show` has the attempt.
    let show = poll("show to report the second attempt", || {
        let (code, show, _) = queue(&server, &["show", &m1]);
        (code == 0 && show.contains("attempts = 2")).then_some(show)
    });
    assert!(show.contains("reverse_path = \"alice@a.test\"") && show.contains("Subject: for x@one.test"), "{show}");

    assert_eq!(queue(&server, &["release", &m2]).1, "released\n");
    let (code, out, _) = queue(&server, &["delete", &m2]);
    assert_eq!((code, out.as_str()), (0, "deleted\n"));
    let (code, _, err) = queue(&server, &["delete", &m2]);
    assert_eq!(code, 1);
    assert!(err.contains("no such message"), "{err}");
    assert_eq!(server.queued_messages(), 2, "two messages left");

    // Invoked as `mailq`, the binary lists the queue.
    let dir = TempDir::new("mailq");
    let mailq = dir.0.join("mailq");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_postern"), &mailq).unwrap();
    let out = Command::new(&mailq).env("POSTERN_CONFIG", server.config_path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(&m1) && !text.contains(&m2), "{text}");
}

#[test]
fn queue_only_mode_and_daemon_down() {
    let peer = Peer::start(&[]);
    let mut server = Server::start_full("relay-a", &[("PEER", peer.port.to_string())], |t| {
        t.replace("{DNS}", "{NO_DNS}").replace("{PORT}", "9") + "mode = \"queue-only\"\n"
    });
    let id = send(&server, "bob@flaky.test");
    // The arrival line says that the message waits (issue 28: it said "queue active").
    server.wait_log(&format!("{id}: client="));
    let arrival = server.log_lines(&format!("{id}: client=")).join("\n");
    assert!(arrival.contains("(queue only: waits for postern queue flush)"), "{arrival}");
    let (_, list, _) = queue(&server, &["list"]);
    assert!(list.contains(&id), "{list}");
    let (_, stats, _) = queue(&server, &["stats"]);
    assert!(stats.contains("(not tried yet)"), "{stats}");
    assert!(peer.received.lock().unwrap().is_empty(), "queue-only must hold the message");
    let (code, _, _) = queue(&server, &["flush", "--id", &id]);
    assert_eq!(code, 0);
    server.wait_queue_empty();
    assert_eq!(peer.received.lock().unwrap().len(), 1);

    // The daemon is down: reading still works from the spool, changing the queue does not.
    let id2 = send(&server, "carol@flaky.test");
    server.kill9();
    let (code, list, err) = queue(&server, &["list"]);
    assert_eq!(code, 0, "{err}");
    assert!(list.contains(&id2) && err.contains("reading the spool directly"), "{list}\n{err}");
    let (code, _, err) = queue(&server, &["flush"]);
    assert_eq!(code, 3);
    assert!(err.contains("cannot reach the daemon") && err.contains("control.sock"), "{err}");
}

#[test]
fn flush_delivers_now_through_a_host_marked_dead() {
    // A port nothing listens on yet: the first attempts are refused and the host status cache
    // marks it dead for `dead_host_time` (60 s by default).
    let dead = crate::support::net::DeadPort::new();
    let server = deferring_server(&dead.port.to_string(), "8h");
    let m1 = send(&server, "x@flaky.test");
    server.wait_log(&format!("{m1}: to=<x@flaky.test>"));
    let m2 = send(&server, "y@flaky.test");
    let skipped = server.wait_log(&format!("{m2}: to=<y@flaky.test>"));
    assert!(skipped.contains("skipped by the host status cache"), "{skipped}");
    // The host comes back; the cache still says dead, and the next retry is an hour away.
    let dead_port = dead.port;
    let peer = Peer::start_on(dead);
    let (code, out, _) = queue(&server, &["flush"]);
    assert_eq!((code, out.trim()), (0, "2 message(s) scheduled for delivery now"));
    server.wait_queue_empty();
    assert_eq!(peer.received.lock().unwrap().len(), 2, "both delivered at the flush");
    // Each message: deferred first (refused, or skipped by the cache), then sent at the flush.
    for id in [&m1, &m2] {
        let lines = server.log_lines(&format!("{id}: to=<"));
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(lines[0].contains("status=deferred"), "{}", lines[0]);
        assert!(lines[1].contains("status=sent") && lines[1].contains(&format!(":{}", dead_port)), "{}", lines[1]);
    }
}

#[test]
fn a_failed_flush_does_not_lengthen_the_backoff() {
    let server = deferring_server("9", "8h");
    let m1 = send(&server, "x@one.test");
    let first = server.wait_log(&format!("{m1}: to=<x@one.test>"));
    assert!(first.contains("retry in 3600s"), "{first}");
    for n in 2..=3 {
        queue(&server, &["flush", "--id", &m1]);
        // An attempt takes about 8 s here (the MX lookups time out against the closed DNS
        // port), so a loaded machine needs more than the usual 20 s.
        let lines = poll("the flushed attempt", || {
            let l = server.log_lines(&format!("{m1}: to=<x@one.test>"));
            (l.len() == n).then_some(l)
        });
        assert!(lines[n - 1].contains("retry in 3600s"), "flush {n}: {}", lines[n - 1]);
    }
    let show = poll("show to report the flushed attempts", || {
        let (code, show, _) = queue(&server, &["show", &m1]);
        (code == 0 && show.contains("attempts = 3")).then_some(show)
    });
    assert!(show.contains("flushed = 2"), "{show}");
}
