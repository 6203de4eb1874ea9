//! LMTP (RFC 2033) to a mailbox server, Dovecot's `lmtp` above all: `LHLO` instead of `EHLO`,
//! and after the message one reply per accepted recipient, so that one mailbox over quota
//! (`452 4.2.2`) is retried while the others are delivered. The server is a Unix socket
//! (`unix:/run/dovecot/lmtp`) or TCP (`[127.0.0.1]:24`). The conversation is the same
//! sans-I/O client as SMTP's ([`postern_proto::client::session`], dialect LMTP), pipelined when
//! the server offers PIPELINING as Dovecot does. A connection that ended its transaction cleanly is kept
//! idle for `[outbound] connection_cache_time` and reused for the next message to the same
//! server, starting with RSET, as SMTP connections are (Postfix's connection cache); the log
//! says `conn_use=N` on a reused one.

use std::time::Duration;

use postern_proto::client::Outgoing;
use postern_proto::client::session::{Dialect, Event, RcptTo, Session as Conversation, Stage};
use postern_types::EnhancedStatus;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::link::Link;
use crate::{LinkError, Message, Outcome, Rcpt, RecipientResult};

/// Where the LMTP server listens: the configuration's type, parsed when it was read.
pub use postern_config::LmtpServer as Server;

/// Anything a connection to an LMTP server can be (Unix socket, TCP).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection past LHLO, ready for a transaction, and how many it carried.
struct Conn {
    link: Link<Box<dyn Io>>,
    uses: u32,
}

/// Idle LMTP connections by server (`unix:/path`, `host:port`), with when each became idle.
#[derive(Default)]
pub struct Idle(std::sync::Mutex<std::collections::HashMap<String, Vec<(Conn, std::time::Instant)>>>);

impl Idle {
    /// The most recently idle connection to `server` younger than `max_idle`; older ones close.
    fn take(&self, server: &str, max_idle: Duration) -> Option<Conn> {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(server)?;
        list.retain(|(_, since)| since.elapsed() < max_idle);
        list.pop().map(|(c, _)| c)
    }

    /// Keeps `conn` for reuse when it is clean and caching is on; else ends it with QUIT.
    async fn put_or_quit(&self, server: &str, mut conn: Conn, max_idle: Duration) {
        if conn.link.reusable() && !max_idle.is_zero() {
            let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
            for list in idle.values_mut() {
                list.retain(|(_, since)| since.elapsed() < max_idle);
            }
            idle.entry(server.to_owned()).or_default().push((conn, std::time::Instant::now()));
        } else {
            conn.link.quit(QUIT_WAIT).await;
        }
    }
}

/// How long QUIT's reply is waited for.
const QUIT_WAIT: Duration = Duration::from_secs(2);

/// Delivers `message` to `recipients` over LMTP at `server`, as `hostname`, `timeout` per
/// command, reusing an idle connection from `idle` (kept for `cache_time`; zero: no reuse);
/// every recipient gets an outcome (a connection failure is temporary for all).
pub async fn deliver(
    server: &Server,
    hostname: &str,
    timeout: Duration,
    (idle, cache_time): (&Idle, Duration),
    recipients: &[Rcpt],
    message: &Message,
) -> Vec<RecipientResult> {
    let key = server.to_string();
    let mut relay = format!("lmtp {server}");
    let outcomes = 'outcomes: {
        if let Some(mut conn) = idle.take(&key, cache_time) {
            // A reused connection starts with RSET; one the server closed while idle is stale.
            let reset = conn.link.session.reset().is_ok();
            if reset && matches!(conn.link.next_event(timeout).await, Ok(Event::Reset)) {
                conn.uses += 1;
                relay = format!("{relay}, conn_use={}", conn.uses);
                let outcomes = transact(&mut conn.link, timeout, recipients, message).await;
                idle.put_or_quit(&key, conn, cache_time).await;
                break 'outcomes outcomes;
            }
            tracing::debug!("{}: idle LMTP connection to {server} was stale", message.id);
        }
        match connect(server, &relay, timeout).await {
            Ok(stream) => {
                let mut link = Link::new(stream, Conversation::new(Dialect::Lmtp, hostname));
                match greet(&mut link, timeout).await {
                    Ok(()) => {
                        let outcomes = transact(&mut link, timeout, recipients, message).await;
                        idle.put_or_quit(&key, Conn { link, uses: 1 }, cache_time).await;
                        outcomes
                    }
                    Err(o) => vec![o; recipients.len()],
                }
            }
            Err(e) => vec![e.outcome(""); recipients.len()],
        }
    };
    recipients
        .iter()
        .zip(outcomes)
        .map(|(r, outcome)| RecipientResult {
            recipient: r.address.clone(),
            outcome,
            relay: relay.clone(),
            remote_host: Some(key.clone()),
            tls: None,
            tls_label: None,
            dsn_passed_on: false,
            delays: crate::Delays::default(),
        })
        .collect()
}

/// A new connection to `server` (`relay` names it in the error).
async fn connect(server: &Server, relay: &str, timeout: Duration) -> Result<Box<dyn Io>, LinkError> {
    let failed = |source| LinkError::ConnectServer { server: relay.to_owned(), source };
    match server {
        Server::Unix(path) => match tokio::net::UnixStream::connect(path).await {
            Ok(s) => Ok(Box::new(s)),
            Err(e) => Err(failed(e)),
        },
        Server::Tcp(_) => match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(tcp_target(server))).await
        {
            Ok(Ok(s)) => Ok(Box::new(s)),
            Ok(Err(e)) => Err(failed(e)),
            Err(_) => Err(failed(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))),
        },
    }
}

/// The `host:port` of a TCP LMTP server.
fn tcp_target(server: &Server) -> String {
    server.tcp_target().unwrap_or_default()
}

/// The outcome of a conversation that broke, naming the command it broke at.
fn lost<S: AsyncRead + AsyncWrite + Unpin>(link: &Link<S>, e: &LinkError) -> Outcome {
    match link.awaiting() {
        Some(Stage::Content) => Outcome::temp(EnhancedStatus(4, 4, 2), format!("LMTP after the message: {e}")),
        Some(stage) => e.outcome(&format!("LMTP {stage}")),
        None => e.outcome("LMTP"),
    }
}

/// The greeting and LHLO.
///
/// # Errors
/// The outcome for every recipient when the server refuses or cannot be talked to.
async fn greet<S: AsyncRead + AsyncWrite + Unpin>(link: &mut Link<S>, timeout: Duration) -> Result<(), Outcome> {
    match link.next_event(timeout).await {
        Ok(Event::Ready) => Ok(()),
        Ok(Event::Refused { reply, .. }) => Err(Outcome::from_reply(reply)),
        Ok(other) => Err(Outcome::temp(EnhancedStatus(4, 4, 2), format!("LMTP: unexpected {other:?}"))),
        Err(e) => Err(lost(link, &e)),
    }
}

/// One transaction (MAIL, RCPTs, DATA, a reply per accepted recipient, RFC 2033 §4.2); one
/// outcome per recipient. No DSN parameters go to the mailbox server: delivery ends here, and
/// Postern sends the `delivered` DSN itself (RFC 3461 §4.2).
async fn transact<S: AsyncRead + AsyncWrite + Unpin>(
    link: &mut Link<S>,
    timeout: Duration,
    recipients: &[Rcpt],
    message: &Message,
) -> Vec<Outcome> {
    let n = recipients.len();
    let outgoing = Outgoing {
        reverse_path: &message.reverse_path,
        size: message.data.len(),
        body_8bit: message.body_8bit,
        smtputf8: false,
        ret: None,
        envid: None,
        require_tls: false,
    };
    let rcpts: Vec<RcptTo<'_>> =
        recipients.iter().map(|r| RcptTo { address: &r.address, notify: None, orcpt: None }).collect();
    match link.session.transaction(&outgoing, &rcpts, false) {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return vec![Outcome::PermFail(why.reply()); n],
        Err(e) => return vec![LinkError::from(e).outcome("LMTP"); n],
    }
    match link.complete_transaction(&message.data, (timeout, timeout)).await {
        Ok(answers) => answers.iter().map(Outcome::from_answer).collect(),
        Err(e) => vec![lost(link, &e); n],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted LMTP server on a Unix socket: answers every command, and closes connection
    /// number `close_after` right after its first transaction (as a server restarted while
    /// the connection was idle). Returns how many connections it took.
    fn scripted_server(
        path: std::path::PathBuf,
        connections: usize,
        close_after: usize,
    ) -> std::thread::JoinHandle<usize> {
        use std::io::{BufRead as _, Write as _};
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for n in 0..connections {
                let (stream, _) = listener.accept().unwrap();
                let mut out = stream.try_clone().unwrap();
                let mut lines = std::io::BufReader::new(stream);
                out.write_all(b"220 lmtp.test LMTP\r\n").unwrap();
                let mut line = String::new();
                while lines.read_line(&mut line).unwrap_or(0) > 0 {
                    let reply: &[u8] = if line.starts_with("DATA") {
                        out.write_all(b"354 go\r\n").unwrap();
                        while lines.read_line(&mut line).unwrap_or(0) > 0 && !line.ends_with("\n.\r\n") {}
                        b"250 2.0.0 saved\r\n"
                    } else if line.starts_with("QUIT") {
                        b"221 bye\r\n"
                    } else {
                        b"250 ok\r\n"
                    };
                    out.write_all(reply).unwrap();
                    if reply.starts_with(b"250 2.0.0") && n == close_after {
                        break;
                    }
                    line.clear();
                }
            }
            connections
        })
    }

    /// An idle connection the server closed is stale: the next message goes on a new one.
    #[test]
    fn a_stale_idle_connection_is_replaced() {
        let dir = std::env::temp_dir().join(format!("postern-lmtp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("lmtp");
        let server_thread = scripted_server(socket.clone(), 2, 0);
        let server = Server::Unix(socket.clone());
        let idle = Idle::default();
        let rcpts = [Rcpt { address: postern_types::Address::new("bob", "example.test"), notify: None, orcpt: None }];
        let message = Message {
            id: "TEST".into(),
            reverse_path: postern_types::ReversePath::Mailbox(postern_types::Address::new("alice", "example.test")),
            body_8bit: false,
            smtputf8: false,
            data: crate::Body::Bytes(std::sync::Arc::new(b"Subject: x\r\n\r\nx\r\n".to_vec())),
            ret: None,
            envid: None,
            require_tls: false,
            tls_optional: false,
            forced: false,
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let timeout = Duration::from_secs(5);
        for attempt in 0..2 {
            let results =
                rt.block_on(deliver(&server, "mx.test", timeout, (&idle, Duration::from_secs(60)), &rcpts, &message));
            assert!(matches!(results[0].outcome, Outcome::Delivered(_)), "attempt {attempt}: {:?}", results[0].outcome);
            assert!(
                !results[0].relay.contains("conn_use"),
                "attempt {attempt} was on a new connection: {}",
                results[0].relay
            );
        }
        drop(idle);
        assert_eq!(server_thread.join().unwrap(), 2, "two connections");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
