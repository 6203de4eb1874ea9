//! Every crash point proven (issue 13): the server is started with one crash point armed
//! (`FAILPOINTS=NAME=return`, built with the `failpoints` feature), dies there by SIGKILL, and
//! is restarted without it. After the restart: no acknowledged message is lost, no delivery is
//! partial, and a message is delivered twice only when its delivery was in flight at the kill
//! (docs/hardening.md lists each point with its outcome).

use postern_types::failpoint::CRASH_POINTS;

use crate::support::peer::Peer;
use crate::support::smtp::Client;
use crate::support::{Server, poll};

/// Arms `spec` (`NAME=return`, or `NAME=1*off->return` for the second hit) and restarts.
fn arm(server: &mut Server, spec: &str) {
    let name = spec.split('=').next().unwrap();
    assert!(CRASH_POINTS.contains(&name), "unknown crash point {name}");
    server.set_env("FAILPOINTS", Some(spec.to_owned()));
    server.restart();
}

/// Waits for the armed point to kill the server, then starts it again unarmed.
fn died_there_then_restart(server: &mut Server, name: &str) {
    server.wait_log(&format!("crash point {name}: SIGKILL"));
    assert_eq!(server.wait_exit(), None, "killed by a signal, not an exit");
    server.set_env("FAILPOINTS", None);
    server.restart();
}

/// Sends one message; returns its final reply, `None` when the connection died first.
fn send(server: &Server, from_ip: &str, rcpts: &[&str], subject: &str) -> Option<u16> {
    let (mut c, _) = Client::connect_from(from_ip, server.port);
    c.cmd("EHLO crash.test");
    assert_eq!(c.cmd("MAIL FROM:<s@remote.test>").code, 250);
    for r in rcpts {
        assert_eq!(c.cmd(&format!("RCPT TO:<{r}>")).code, 250, "{r}");
    }
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(format!("Subject: {subject}\r\n\r\nthe whole body\r\n.\r\n").as_bytes());
    c.read_reply().map(|r| r.code)
}

/// Every Maildir copy of `mailbox` holds the whole message.
fn copies(server: &Server, mailbox: &str, subject: &str) -> usize {
    let files = server.maildir(mailbox);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.contains(&format!("Subject: {subject}\n")) && text.ends_with("\nthe whole body\n"), "{text:?}");
    }
    files.len()
}

/// A crash while the message is received, before `250`: the client saw no `250`, and the
/// message is either gone (`delivered = 0`) or, once in the queue, delivered once.
fn during_commit(point: &str, delivered: usize) {
    let mut server = Server::start();
    arm(&mut server, &format!("{point}=return"));
    assert_eq!(send(&server, "127.0.0.1", &["bob@example.test"], point), None, "no 250 before the kill");
    died_there_then_restart(&mut server, point);
    server.wait_queue_empty();
    if delivered > 0 {
        server.wait_maildir("bob", delivered);
    }
    assert_eq!(copies(&server, "bob", point), delivered);
    let incoming = server.data().join("spool/incoming");
    assert_eq!(std::fs::read_dir(incoming).unwrap().count(), 0, "no staged file left");
}

#[test]
fn crash_after_the_staging_write_loses_nothing_acknowledged() {
    during_commit("spool::staged", 0);
}

#[test]
fn crash_after_the_data_sync_loses_nothing_acknowledged() {
    during_commit("spool::data-synced", 0);
}

#[test]
fn crash_after_the_rename_into_the_queue_delivers_once() {
    during_commit("spool::renamed", 1);
}

#[test]
fn crash_after_the_queue_folder_sync_delivers_once() {
    during_commit("spool::queue-synced", 1);
}

/// Three local recipients; the crash hits the second Maildir delivery (`1*off->return`). The
/// first was recorded before the second began, so only the one in flight may repeat.
fn during_local_delivery(point: &str, bob: usize) -> Server {
    let mut server = Server::start();
    arm(&mut server, &format!("{point}=1*off->return"));
    let rcpts = ["alice@example.test", "bob@example.test", "carol@example.test"];
    assert_eq!(send(&server, "127.0.0.1", &rcpts, point), Some(250));
    died_there_then_restart(&mut server, point);
    server.wait_queue_empty();
    poll("carol's copy", || (copies(&server, "carol", point) == 1).then_some(()));
    assert_eq!(copies(&server, "alice", point), 1, "delivered before the crash and recorded: not repeated");
    assert_eq!(copies(&server, "bob", point), bob, "the delivery in flight");
    let tmp = server.data().join("mail/bob/tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0, "the partial tmp/ file was cleaned at start");
    server
}

#[test]
fn crash_after_the_maildir_tmp_write_leaves_no_partial_file() {
    let server = during_local_delivery("maildir::tmp-written", 1);
    let line = server.wait_log("maildir: removed ");
    assert!(line.contains("/mail/bob/tmp/") && line.contains("a delivery cut short by a crash"), "{line}");
}

#[test]
fn crash_after_tmp_to_new_repeats_only_the_delivery_in_flight() {
    let _ = during_local_delivery("maildir::delivered", 2);
}

/// A local recipient delivered and a relayed one deferred (the peer answers 451 once): the
/// envelope update that records both is cut. Bob's copy was recorded before the remote
/// attempt, so it is not repeated; the remote recipient is delivered on the retry.
fn during_envelope_update(point: &str) {
    let peer = Peer::start(&["451 4.3.0 try again"]);
    let smarthost = format!("trusted_networks = [\"127.0.0.2/32\"]\nsmarthost = \"[127.0.0.1]:{}\"", peer.port);
    let mut server = Server::start_with("basic", |t| t.replace("trusted_networks = [\"127.0.0.2/32\"]", &smarthost));
    arm(&mut server, &format!("{point}=return"));
    assert_eq!(send(&server, "127.0.0.2", &["bob@example.test", "x@far.test"], point), Some(250));
    died_there_then_restart(&mut server, point);
    server.wait_queue_empty();
    assert_eq!(peer.received.lock().unwrap().len(), 1, "the deferred recipient delivered on the retry");
    assert_eq!(copies(&server, "bob", point), 1);
}

#[test]
fn crash_after_the_envelope_update_is_written() {
    during_envelope_update("spool::envelope-written");
}

#[test]
fn crash_after_the_envelope_update_is_renamed() {
    during_envelope_update("spool::envelope-renamed");
}

#[test]
fn crash_after_a_remote_250_repeats_only_that_transaction() {
    // Two domains, two transactions; the crash follows the second one's 250.
    let peer = Peer::start(&[]);
    let smarthost = format!("trusted_networks = [\"127.0.0.2/32\"]\nsmarthost = \"[127.0.0.1]:{}\"", peer.port);
    let mut server = Server::start_with("basic", |t| t.replace("trusted_networks = [\"127.0.0.2/32\"]", &smarthost));
    let point = "queue::remote-delivered";
    arm(&mut server, &format!("{point}=1*off->return"));
    assert_eq!(send(&server, "127.0.0.2", &["x@a.test", "y@b.test"], point), Some(250));
    died_there_then_restart(&mut server, point);
    server.wait_queue_empty();
    let rcpts = peer.rcpts.lock().unwrap().clone();
    let a = rcpts.iter().filter(|r| r.contains("x@a.test")).count();
    let b = rcpts.iter().filter(|r| r.contains("y@b.test")).count();
    assert_eq!((a, b), (1, 2), "the first transaction was recorded, the one in flight repeated: {rcpts:?}");
}

#[test]
fn crash_after_a_pipe_succeeds_repeats_only_that_pipe() {
    let mut server = Server::start_prepared(
        "basic",
        &[],
        |t| format!("{t}\n[delivery]\nallow_pipes = true\n"),
        |dir| {
            use std::os::unix::fs::PermissionsExt as _;
            let out = dir.join("out");
            std::fs::create_dir_all(&out).unwrap();
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
            let mut aliases = std::fs::read_to_string(dir.join("aliases")).unwrap();
            aliases.push_str(&format!("log: \"|cat >> {}/out/log\"\n", dir.display()));
            std::fs::write(dir.join("aliases"), aliases).unwrap();
        },
    );
    let point = "queue::pipe-delivered";
    arm(&mut server, &format!("{point}=return"));
    assert_eq!(send(&server, "127.0.0.1", &["alice@example.test", "log@example.test"], point), Some(250));
    died_there_then_restart(&mut server, point);
    server.wait_queue_empty();
    assert_eq!(copies(&server, "alice", point), 1, "delivered before the pipe and recorded");
    let log = std::fs::read_to_string(server.dir.0.join("out/log")).unwrap();
    assert_eq!(log.matches("the whole body").count(), 2, "the pipe in flight ran again: {log}");
}

#[test]
fn crash_after_lmtp_results_repeats_only_that_transaction() {
    let (_dovecot, dv, socket) = crate::lmtp::start_dovecot();
    let mut server = Server::start_with("basic", |t| {
        format!("{t}\n[delivery]\nlocal = \"lmtp\"\nlmtp = \"unix:{}\"\n", socket.display())
    });
    let point = "queue::lmtp-delivered";
    arm(&mut server, &format!("{point}=return"));
    assert_eq!(send(&server, "127.0.0.1", &["alice@example.test"], point), Some(250));
    died_there_then_restart(&mut server, point);
    server.wait_queue_empty();
    let new = dv.0.join("mail/alice/new");
    let n = poll("alice's copies in Dovecot", || {
        let n = std::fs::read_dir(&new).map(|d| d.count()).unwrap_or(0);
        (n == 2).then_some(n)
    });
    assert_eq!(n, 2, "the LMTP transaction in flight was repeated once");
}

#[test]
fn every_crash_point_has_a_test() {
    let source = include_str!("crash_points.rs");
    for name in CRASH_POINTS {
        assert!(source.matches(&format!("\"{name}")).count() >= 1, "crash point {name} has no test");
    }
}
