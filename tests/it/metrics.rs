//! Prometheus metrics (issue 15 item 1): after N deliveries and M deferrals to a dead domain
//! the counters say N and M, the oldest-age gauge of that domain is at least the time since
//! its first message, and `/metrics` passes `promtool check metrics` (Debian's prometheus
//! package; `scripts/test` installs it). The delivery line splits its delay (item 4).

use std::io::{Read, Write};
use std::time::Instant;

use crate::support::peer::Peer;
use crate::support::smtp::Client;
use crate::support::{Server, poll};

/// The body of `GET /metrics` on `port`.
fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(crate::support::wait_bound())).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// The value of the sample `series` (name and labels as written) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn counters_and_the_oldest_age_of_a_dead_domain_pass_promtool() {
    let peer = Peer::start(&[]);
    // A port nothing listens on: every connection is refused.
    let dead = crate::support::net::DeadPort::new();
    let routes = format!("ok.test relay:[127.0.0.1]:{}\ndead.test relay:[127.0.0.1]:{}\n", peer.port, dead.port);
    let a = Server::relay_a_routed(&routes, "\n[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let line = a.wait_log("metrics on http://127.0.0.1:");
    let port: u16 = line.split("127.0.0.1:").nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
    let (n, m) = (3, 2);
    let t0 = Instant::now();
    let (mut c, _) = Client::connect(a.port);
    c.cmd("EHLO client.test");
    // A refused recipient (no such user): counted as refused, nothing queued.
    assert_eq!(c.cmd("MAIL FROM:<alice@a.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<nobody@a.test>").code, 550);
    assert_eq!(c.cmd("RSET").code, 250);
    for i in 0..m {
        assert_eq!(c.send_data("alice@a.test", &[&format!("d{i}@dead.test")], b"Subject: d\r\n\r\nx\r\n").code, 250);
    }
    for i in 0..n {
        assert_eq!(c.send_data("alice@a.test", &[&format!("o{i}@ok.test")], b"Subject: o\r\n\r\nx\r\n").code, 250);
    }
    // A delivery is counted when its outcome is recorded, a moment before the delivered
    // message leaves the queue: both are waited for.
    let text = poll("N deliveries and M deferrals counted, the delivered ones gone", || {
        let text = scrape(port);
        let delivered = value(&text, "postern_messages_delivered_total{transport=\"smtp\"}");
        let deferred = value(&text, "postern_messages_deferred_total{transport=\"smtp\",class=\"connect\"}");
        let queued = value(&text, "postern_queue_messages");
        let done = delivered == Some(f64::from(n)) && deferred == Some(f64::from(m)) && queued == Some(f64::from(m));
        done.then_some(text)
    });
    assert_eq!(value(&text, "postern_messages_received_total{origin=\"smtp\"}"), Some(f64::from(n + m)), "{text}");
    assert_eq!(value(&text, "postern_queue_recipients{domain=\"dead.test\"}"), Some(f64::from(m)), "{text}");
    let per_domain = value(&text, "postern_deferrals_total{domain=\"dead.test\",class=\"connect\"}");
    assert_eq!(per_domain, Some(f64::from(m)), "{text}");
    let refused =
        value(&text, "postern_messages_refused_total{stage=\"rcpt\",reason=\"recipient\",class=\"permanent\"}");
    assert_eq!(refused, Some(1.0), "{text}");
    // The oldest-age gauge of the dead domain keeps up with the clock (polled, not slept).
    let (age, elapsed) = poll("the dead domain's oldest age to reach 2 s", || {
        let elapsed = t0.elapsed().as_secs();
        let age = value(&scrape(port), "postern_queue_oldest_age_seconds{domain=\"dead.test\"}")?;
        (age >= 2.0).then_some((age, elapsed))
    });
    assert!(age >= elapsed as f64, "oldest age {age} s < {elapsed} s since the first message");
    assert!(value(&text, "postern_process_resident_memory_bytes").is_some_and(|b| b > 1e6), "{text}");
    assert!(text.contains("postern_delivery_latency_seconds_count 3"), "{text}");
    // Every queued message waited for a shared spool sync (group commit).
    let syncs = value(&text, "postern_spool_sync_batch_size_count{op=\"syncfs\"}").unwrap_or(0.0);
    let batched = value(&text, "postern_spool_sync_batch_size_sum{op=\"syncfs\"}").unwrap_or(0.0);
    assert!(syncs >= 1.0 && batched >= f64::from(n + m), "{text}");

    // The delivery line splits its delay (Postfix's delays=a/b/c/d): the parts add up.
    let sent = a.log_lines("to=<o0@ok.test>").into_iter().find(|l| l.contains("status=sent")).unwrap();
    let field = |name: &str| sent.split(name).nth(1).unwrap().split(',').next().unwrap().to_owned();
    let delay: f64 = field("delay=").parse().unwrap();
    let parts: Vec<f64> = field("delays=").split('/').map(|p| p.parse().unwrap()).collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert!((parts.iter().sum::<f64>() - delay).abs() < 0.03, "{sent}");
    // The peer offers no STARTTLS: each new connection (reused ones are not negotiations) counts.
    let no_tls =
        value(&text, "postern_outbound_tls_total{policy=\"no-policy-found\",result=\"starttls-not-supported\"}");
    assert!(no_tls.is_some_and(|n| (1.0..=3.0).contains(&n)), "{text}");

    // Every metric the example Grafana dashboard queries is documented in docs/metrics.md, and
    // every one documented that has samples here is exported under that name.
    let repo = crate::support::repo();
    let dashboard = std::fs::read_to_string(repo.join("docs/grafana-dashboard.json")).unwrap();
    let documented = std::fs::read_to_string(repo.join("docs/metrics.md")).unwrap();
    for name in
        dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("postern_"))
    {
        let base = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(
            documented.contains(&format!("`{base}`")),
            "{base} of docs/grafana-dashboard.json is not in docs/metrics.md"
        );
    }
    for name in
        ["postern_messages_delivered_total", "postern_queue_oldest_age_seconds", "postern_spool_sync_batch_size"]
    {
        assert!(documented.contains(&format!("`{name}`")) && text.contains(&format!("# TYPE {name} ")), "{name}");
    }

    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool must be installed (scripts/test installs Debian's prometheus)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
