//! The scheduler apart from storage (issue 16): a queue with more messages than
//! `[queue] active_limit` is delivered completely, destinations taking turns; a restart while
//! the spool is still being recovered (the listeners accept mail meanwhile) neither loses nor
//! duplicates a delivery.

use crate::support::peer::Peer;
use crate::support::smtp::Client;
use crate::support::{Server, poll, postern_cli};

/// Queues one message per recipient, subject `n`.
fn send(server: &Server, rcpts: &[String]) {
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO client.test");
    for (n, r) in rcpts.iter().enumerate() {
        let msg = format!("Subject: {r} {n}\r\n\r\nx\r\n");
        assert_eq!(c.send_data("alice@a.test", &[r.as_str()], msg.as_bytes()).code, 250);
    }
}

fn subjects(peer: &Peer) -> Vec<String> {
    let received = peer.received.lock().unwrap();
    received
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(m);
            text.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or_default().to_owned()
        })
        .collect()
}

#[test]
fn more_messages_than_the_active_limit_are_all_delivered_destinations_in_turn() {
    let peer = Peer::start(&[]);
    let routes = format!("big.test relay:[127.0.0.1]:{p}\nsmall.test relay:[127.0.0.1]:{p}\n", p = peer.port);
    // One delivery at a time, one envelope in memory: every other one is read from the spool.
    let a = Server::relay_a_routed(&routes, "mode = \"queue-only\"\nmax_concurrency = 1\nactive_limit = 1\n");
    let big: Vec<String> = (0..12).map(|i| format!("b{i}@big.test")).collect();
    let small: Vec<String> = (0..4).map(|i| format!("s{i}@small.test")).collect();
    send(&a, &big);
    send(&a, &small);
    let (code, out) = postern_cli(&["queue", "flush"], &a.config_path());
    assert_eq!((code, out.trim()), (Some(0), "16 message(s) scheduled for delivery now"));
    poll("16 deliveries", || (peer.received.lock().unwrap().len() == 16).then_some(()));
    a.wait_queue_empty();
    // Queued all big.test first, but delivered in turn: the small destination is not starved.
    let order: Vec<String> =
        peer.rcpts.lock().unwrap().iter().map(|r| r.rsplit('@').next().unwrap().to_owned()).collect();
    let first: Vec<&str> = order.iter().take(8).map(String::as_str).collect();
    assert_eq!(first, ["big.test>", "small.test>"].repeat(4), "{order:?}");
    let mut got = subjects(&peer);
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 16, "{got:?}");
}

#[test]
fn a_restart_during_recovery_neither_loses_nor_duplicates_a_delivery() {
    let peer = Peer::start(&[]);
    let routes = format!("many.test relay:[127.0.0.1]:{}\n", peer.port);
    let mut a = Server::relay_a_routed(&routes, "mode = \"queue-only\"\n");
    let rcpts: Vec<String> = (0..60).map(|i| format!("r{i}@many.test")).collect();
    send(&a, &rcpts);
    assert_eq!(a.queued_messages(), 60);

    // Delivering now, the recovery held after its fifth message until the test releases it.
    // Each of the five first waits 60 ms, past the 50 ms after which the recovery hands what it
    // read to the scheduler, so that all five are indexed (and delivered) before the hold.
    let cfg = a.config_path();
    let text = std::fs::read_to_string(&cfg).unwrap().replace("mode = \"queue-only\"\n", "");
    std::fs::write(&cfg, text).unwrap();
    let release = a.dir.0.join("release-recovery");
    a.set_env("FAILPOINTS", Some(format!("spool::recovered-one=5*sleep(60)->return({})", release.display())));
    let recovered = |a: &Server| a.log_lines("queue recovered:").len();
    let before = recovered(&a);
    a.restart_gracefully();
    a.wait_log("delay point spool::recovered-one: held");
    // The listener accepts mail while the spool is being read; that message is delivered too,
    // and so are the five messages recovered before the hold.
    send(&a, &["late@many.test".to_owned()]);
    poll("deliveries while recovering", || (peer.received.lock().unwrap().len() >= 6).then_some(()));
    assert_eq!(recovered(&a), before, "the recovery must still be running");
    // Restart in the middle of it: the shutdown has begun when the hold is released.
    a.signal(libc::SIGTERM);
    a.wait_log("SIGTERM: shutting down");
    std::fs::write(&release, "").unwrap();
    assert_eq!(a.wait_exit(), Some(0), "a clean exit on SIGTERM");
    a.set_env("FAILPOINTS", None);
    a.respawn();
    assert_eq!(a.log_lines("queue recovery stopped by the shutdown").len(), 1);
    poll("the recovery after the second restart", || (recovered(&a) > before).then_some(()));
    a.wait_queue_empty();
    poll("every delivery", || (peer.received.lock().unwrap().len() >= 61).then_some(()));
    let mut got = subjects(&peer);
    got.sort();
    let n = got.len();
    got.dedup();
    assert_eq!((n, got.len()), (61, 61), "every message once: {got:?}");
}
