//! LMTP (RFC 2033) to a mailbox server, Dovecot's `lmtp` above all: `LHLO` instead of `EHLO`,
//! and after the message one reply per accepted recipient, so that one mailbox over quota
//! (`452 4.2.2`) is retried while the others are delivered. The server is a Unix socket
//! (`unix:/run/dovecot/lmtp`) or TCP (`[127.0.0.1]:24`). Commands go in lockstep (LMTP servers
//! are local and fast; RFC 2033 §4.2). A connection that ended its transaction cleanly is kept
//! idle for `[outbound] connection_cache_time` and reused for the next message to the same
//! server, starting with RSET, as SMTP connections are (Postfix's connection cache); the log
//! says `conn_use=N` on a reused one.

use std::time::Duration;

use postern_proto::client::{DotStuffed, ReplyParser};
use postern_types::{EnhancedStatus, Reply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{LinkError, Message, Outcome, Rcpt, RecipientResult};

/// Where the LMTP server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// A Unix socket path.
    Unix(String),
    /// A TCP address, `host:port`.
    Tcp(String),
}

impl Server {
    /// Parses `unix:/path`, `[host]:port` or `host:port` (the forms
    /// [`postern_config::tables::is_lmtp_server`] accepts, which check-config enforces).
    ///
    /// # Errors
    /// [`BadServer`], which says the forms expected.
    pub fn parse(s: &str) -> Result<Self, BadServer> {
        if !postern_config::tables::is_lmtp_server(s) {
            return Err(BadServer(s.to_owned()));
        }
        Ok(match s.strip_prefix("unix:") {
            Some(path) => Self::Unix(path.to_owned()),
            // Postfix writes `lmtp:[host]:port`; the prefix is allowed.
            None => Self::Tcp(s.trim_start_matches("lmtp:").replace(['[', ']'], "")),
        })
    }
}

/// An LMTP server setting of neither form [`Server::parse`] takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected unix:/path/to/socket or [host]:port")]
pub struct BadServer(pub String);

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{p}"),
            Self::Tcp(a) => f.write_str(a),
        }
    }
}

/// Anything a connection to an LMTP server can be (Unix socket, TCP).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection past LHLO, ready for a transaction.
type Conn = Client<Box<dyn Io>>;

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
        if conn.reusable && !max_idle.is_zero() {
            let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
            for list in idle.values_mut() {
                list.retain(|(_, since)| since.elapsed() < max_idle);
            }
            idle.entry(server.to_owned()).or_default().push((conn, std::time::Instant::now()));
        } else {
            let _ = conn.stream.write_all(b"QUIT\r\n").await;
        }
    }
}

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
            if conn.command("RSET\r\n").await.is_ok_and(|r| r.code == 250) {
                conn.uses += 1;
                relay = format!("{relay}, conn_use={}", conn.uses);
                let outcomes = conn.transact(recipients, message).await;
                idle.put_or_quit(&key, conn, cache_time).await;
                break 'outcomes outcomes;
            }
            tracing::debug!("{}: idle LMTP connection to {server} was stale", message.id);
        }
        match connect(server, &relay, timeout).await {
            Ok(stream) => {
                let mut conn = Client::new(stream, timeout);
                match conn.greet(hostname).await {
                    Ok(()) => {
                        let outcomes = conn.transact(recipients, message).await;
                        idle.put_or_quit(&key, conn, cache_time).await;
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
        Server::Tcp(addr) => match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr.as_str())).await {
            Ok(Ok(s)) => Ok(Box::new(s)),
            Ok(Err(e)) => Err(failed(e)),
            Err(_) => Err(failed(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))),
        },
    }
}

struct Client<S> {
    stream: S,
    parser: ReplyParser,
    timeout: Duration,
    /// False after an I/O error, a 421 or a transaction that did not end cleanly.
    reusable: bool,
    /// Transactions on this connection.
    uses: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(stream: S, timeout: Duration) -> Self {
        Self { stream, parser: ReplyParser::default(), timeout, reusable: true, uses: 1 }
    }

    async fn reply(&mut self) -> Result<Reply, LinkError> {
        let mut buf = vec![0; 8192];
        loop {
            if let Some(r) = self.parser.next_reply().map_err(|e| LinkError::BadReply(e.to_string()))? {
                if r.code == 421 {
                    self.reusable = false;
                }
                return Ok(r);
            }
            let read = tokio::time::timeout(self.timeout, self.stream.read(&mut buf)).await;
            let e = match read {
                Ok(Ok(n)) if n > 0 => {
                    self.parser.feed(&buf[..n]);
                    continue;
                }
                Ok(Ok(_)) => LinkError::Closed,
                Ok(Err(e)) => LinkError::Read(e),
                Err(_) => LinkError::ReplyTimeout(self.timeout),
            };
            self.reusable = false;
            return Err(e);
        }
    }

    async fn command(&mut self, line: &str) -> Result<Reply, LinkError> {
        if let Err(e) = self.stream.write_all(line.as_bytes()).await {
            self.reusable = false;
            return Err(LinkError::Write(e));
        }
        self.reply().await
    }

    /// The greeting and LHLO.
    ///
    /// # Errors
    /// The outcome for every recipient when the server refuses or cannot be talked to.
    async fn greet(&mut self, hostname: &str) -> Result<(), Outcome> {
        for (stage, line) in [("greeting", None), ("LHLO", Some(format!("LHLO {hostname}\r\n")))] {
            let r = match line {
                Some(l) => self.command(&l).await,
                None => self.reply().await,
            }
            .map_err(|e| e.outcome(&format!("LMTP {stage}")))?;
            if r.code / 100 != 2 {
                self.reusable = false;
                return Err(Outcome::from_reply(r));
            }
        }
        Ok(())
    }

    /// One transaction (MAIL, RCPTs, DATA, a reply per accepted recipient); one outcome per
    /// recipient. A transaction that did not end cleanly leaves the connection not reusable.
    async fn transact(&mut self, recipients: &[Rcpt], message: &Message) -> Vec<Outcome> {
        let n = recipients.len();
        let outcomes = self.exchange(recipients, message).await;
        if outcomes.is_err() {
            self.reusable = false;
        }
        outcomes.unwrap_or_else(|(stage, e)| vec![e.outcome(&format!("LMTP {stage}")); n])
    }

    async fn exchange(
        &mut self,
        recipients: &[Rcpt],
        message: &Message,
    ) -> Result<Vec<Outcome>, (&'static str, LinkError)> {
        let n = recipients.len();
        let body = if message.body_8bit { " BODY=8BITMIME" } else { "" };
        let mail =
            self.command(&format!("MAIL FROM:{}{body}\r\n", message.reverse_path)).await.map_err(|e| ("MAIL", e))?;
        if mail.code / 100 != 2 {
            self.reusable = false;
            return Ok(vec![Outcome::from_reply(mail); n]);
        }
        let mut per: Vec<Option<Outcome>> = Vec::with_capacity(n);
        for r in recipients {
            let reply = self.command(&format!("RCPT TO:<{}>\r\n", r.address)).await.map_err(|e| ("RCPT", e))?;
            per.push((reply.code / 100 != 2).then(|| Outcome::from_reply(reply)));
        }
        if per.iter().all(Option::is_some) {
            // No recipient accepted: the transaction is still open; RSET ends it.
            let rset = self.command("RSET\r\n").await.map_err(|e| ("RSET", e))?;
            self.reusable &= rset.code == 250;
        } else {
            let data = self.command("DATA\r\n").await.map_err(|e| ("DATA", e))?;
            if data.code != 354 {
                self.reusable = false;
                return Ok(per.into_iter().map(|o| o.unwrap_or_else(|| Outcome::from_reply(data.clone()))).collect());
            }
            for piece in DotStuffed::new(&message.data, crate::transaction::DATA_PIECE) {
                if let Err(e) = self.stream.write_all(&piece).await {
                    return Err(("sending the message", LinkError::Write(e)));
                }
            }
            // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
            for slot in per.iter_mut().filter(|o| o.is_none()) {
                *slot = Some(match self.reply().await {
                    Ok(r) => Outcome::from_reply(r),
                    Err(e) => Outcome::temp(EnhancedStatus(4, 4, 2), format!("LMTP after the message: {e}")),
                });
            }
        }
        Ok(per.into_iter().map(|o| o.expect("every recipient decided")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_forms() {
        assert_eq!(Server::parse("unix:/run/dovecot/lmtp"), Ok(Server::Unix("/run/dovecot/lmtp".into())));
        assert_eq!(Server::parse("[127.0.0.1]:24"), Ok(Server::Tcp("127.0.0.1:24".into())));
        assert!(Server::parse("unix:relative").is_err());
        assert!(Server::parse("nowhere").is_err());
        assert_eq!(Server::parse("lmtp:[127.0.0.1]:24"), Ok(Server::Tcp("127.0.0.1:24".into())));
    }

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
        let server = Server::Unix(socket.display().to_string());
        let idle = Idle::default();
        let rcpts = [Rcpt { address: postern_types::Address::new("bob", "example.test"), notify: None, orcpt: None }];
        let message = Message {
            id: "TEST".into(),
            reverse_path: postern_types::ReversePath::Mailbox(postern_types::Address::new("alice", "example.test")),
            body_8bit: false,
            smtputf8: false,
            data: std::sync::Arc::new(b"Subject: x\r\n\r\nx\r\n".to_vec()),
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
