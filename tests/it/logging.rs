//! The log a postmaster greps: one session followed by its ID from connect to the delivery of
//! its queue ID, values as text (no Rust debug output), and the syslog target.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};

use crate::support::smtp::Client;
use crate::support::{Server, TempDir, poll};

#[test]
fn one_session_followed_by_its_id_to_the_delivery() {
    let server = Server::start();
    let (mut c, greeting) = Client::connect(server.port);
    assert_eq!(greeting.code, 220);
    assert_eq!(c.cmd("EHLO client.example.test").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<nobody@example.test>").code, 550);
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    let queued = c.cmd("Subject: follow me\r\n\r\nhello\r\n.");
    assert_eq!(queued.code, 250, "{}", queued.text);
    let queue_id = queued.text.trim_end().rsplit(' ').next().unwrap().to_owned();
    assert_eq!(c.cmd("QUIT").code, 221);
    server.wait_maildir("bob", 1);

    // The session's ID, from its connect line.
    let connect = server.wait_log("connect from unknown[127.0.0.1]:");
    let id = connect.split("session{id=").nth(1).and_then(|r| r.split('}').next()).unwrap().to_owned();
    assert_eq!(id.len(), 12, "{connect}");
    server.wait_log(&format!("{id}}}: disconnect from unknown[127.0.0.1]:"));
    let story = server.log_lines(&id);
    let want = [
        "connect from unknown[127.0.0.1]:".to_owned(),
        "NOQUEUE: reject: RCPT from [127.0.0.1]: 550 5.1.1 <nobody@example.test>".to_owned(),
        format!("{queue_id}: client=unknown[127.0.0.1]:"),
        "disconnect from unknown[127.0.0.1]:".to_owned(),
    ];
    for w in &want {
        assert!(story.iter().any(|l| l.contains(w.as_str())), "no {w:?} in the session's lines:\n{}", story.join("\n"));
    }
    // From the queue ID of the session's commit line to its delivery.
    let delivered = server.wait_log(&format!("{queue_id}: to=<bob@example.test>"));
    assert!(delivered.contains("status=sent"), "{delivered}");
    // Values are text, not Rust debug output.
    for line in server.log_lines("") {
        for debug in ["Some(", "None)", "[Pass(", "Mailbox(", "TempFail("] {
            assert!(!line.contains(debug), "debug output in the log: {line}");
        }
    }
}

#[test]
fn syslog_target_sends_mail_facility_datagrams() {
    let dir = TempDir::new("syslog");
    let socket_path = dir.0.join("log.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(crate::support::wait_bound())).unwrap();
    crate::support::copy_fixture("basic", &["postern.toml", "users", "aliases", "virtual"], &dir.0);
    let cfg = dir.0.join("postern.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{text}\n[log]\ntarget = \"syslog\"\nsyslog_socket = \"{}\"\n", socket_path.display()),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let started = poll("the started line over syslog", || {
        let mut buf = vec![0; 4096];
        let n = socket.recv(&mut buf).expect("a datagram within 20 s");
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(line.clone());
        line.contains("postern started").then_some(line)
    });
    // Facility mail (2), severity info (6): PRI 22.
    assert!(started.starts_with(&format!("<22>postern[{}]: ", child.id())), "{started}");
    assert!(seen.iter().any(|l| l.contains("listening on 127.0.0.1:")), "{seen:?}");
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).trim().is_empty(), "nothing on stderr: {:?}", out.stderr);
}
