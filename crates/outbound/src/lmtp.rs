//! LMTP (RFC 2033) to a mailbox server, Dovecot's `lmtp` above all: `LHLO` instead of `EHLO`,
//! and after the message one reply per accepted recipient, so that one mailbox over quota
//! (`452 4.2.2`) is retried while the others are delivered. The server is a Unix socket
//! (`unix:/run/dovecot/lmtp`) or TCP (`[127.0.0.1]:24`). One connection per delivery attempt,
//! commands in lockstep (LMTP servers are local and fast; RFC 2033 §4.2).

use std::time::Duration;

use postern_proto::client::{ReplyParser, dot_stuff};
use postern_types::{EnhancedStatus, Reply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{Message, Outcome, Rcpt, RecipientResult};

/// Where the LMTP server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// A Unix socket path.
    Unix(String),
    /// A TCP address, `host:port`.
    Tcp(String),
}

impl Server {
    /// Parses `unix:/path`, `[host]:port` or `host:port`.
    ///
    /// # Errors
    /// A message saying which forms are expected.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            return if path.starts_with('/') {
                Ok(Self::Unix(path.to_owned()))
            } else {
                Err(format!("{s:?}: unix: needs an absolute path"))
            };
        }
        let tcp = s.trim_start_matches("lmtp:").replace(['[', ']'], "");
        match tcp.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(Self::Tcp(tcp)),
            _ => Err(format!("{s:?}: expected unix:/path/to/socket or [host]:port")),
        }
    }
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{p}"),
            Self::Tcp(a) => f.write_str(a),
        }
    }
}

/// Delivers `message` to `recipients` over LMTP at `server`, as `hostname`; every recipient gets
/// an outcome (a connection failure is temporary for all).
pub async fn deliver(
    server: &Server,
    hostname: &str,
    timeout: Duration,
    recipients: &[Rcpt],
    message: &Message,
) -> Vec<RecipientResult> {
    let relay = format!("lmtp {server}");
    let outcomes = match server {
        Server::Unix(path) => match tokio::net::UnixStream::connect(path).await {
            Ok(s) => Client::new(s, timeout).run(hostname, recipients, message).await,
            Err(e) => {
                vec![Outcome::temp(EnhancedStatus(4, 4, 1), format!("connect to {relay}: {e}")); recipients.len()]
            }
        },
        Server::Tcp(addr) => match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr.as_str())).await {
            Ok(Ok(s)) => Client::new(s, timeout).run(hostname, recipients, message).await,
            Ok(Err(e)) => {
                vec![Outcome::temp(EnhancedStatus(4, 4, 1), format!("connect to {relay}: {e}")); recipients.len()]
            }
            Err(_) => {
                vec![Outcome::temp(EnhancedStatus(4, 4, 1), format!("connect to {relay}: timed out")); recipients.len()]
            }
        },
    };
    recipients
        .iter()
        .zip(outcomes)
        .map(|(r, outcome)| RecipientResult {
            recipient: r.address.clone(),
            outcome,
            relay: relay.clone(),
            remote_host: Some(server.to_string()),
            tls: "tls=none".into(),
            dsn_passed_on: false,
        })
        .collect()
}

struct Client<S> {
    stream: S,
    parser: ReplyParser,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(stream: S, timeout: Duration) -> Self {
        Self { stream, parser: ReplyParser::default(), timeout }
    }

    async fn reply(&mut self) -> Result<Reply, String> {
        let mut buf = vec![0; 8192];
        loop {
            if let Some(r) = self.parser.next_reply().map_err(|e| e.to_string())? {
                return Ok(r);
            }
            match tokio::time::timeout(self.timeout, self.stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.parser.feed(&buf[..n]),
                Ok(Ok(_)) => return Err("connection closed by the LMTP server".into()),
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err(format!("timed out after {}s", self.timeout.as_secs())),
            }
        }
    }

    async fn command(&mut self, line: &str) -> Result<Reply, String> {
        self.stream.write_all(line.as_bytes()).await.map_err(|e| e.to_string())?;
        self.reply().await
    }

    /// The whole exchange; one outcome per recipient.
    async fn run(mut self, hostname: &str, recipients: &[Rcpt], message: &Message) -> Vec<Outcome> {
        let n = recipients.len();
        let lost =
            |stage: &str, e: String| vec![Outcome::temp(EnhancedStatus(4, 4, 2), format!("LMTP {stage}: {e}")); n];
        let envelope = async {
            for (stage, line) in [("greeting", None), ("LHLO", Some(format!("LHLO {hostname}\r\n")))] {
                let r = match line {
                    Some(l) => self.command(&l).await,
                    None => self.reply().await,
                }
                .map_err(|e| (stage, e))?;
                if r.code / 100 != 2 {
                    return Ok(Err(Outcome::from_reply(r)));
                }
            }
            let body = if message.body_8bit { " BODY=8BITMIME" } else { "" };
            let mail = self
                .command(&format!("MAIL FROM:<{}>{body}\r\n", message.reverse_path))
                .await
                .map_err(|e| ("MAIL", e))?;
            if mail.code / 100 != 2 {
                return Ok(Err(Outcome::from_reply(mail)));
            }
            let mut per: Vec<Option<Outcome>> = Vec::with_capacity(n);
            for r in recipients {
                let reply = self.command(&format!("RCPT TO:<{}>\r\n", r.address)).await.map_err(|e| ("RCPT", e))?;
                per.push((reply.code / 100 != 2).then(|| Outcome::from_reply(reply)));
            }
            Ok(Ok(per))
        };
        let mut per = match envelope.await {
            Err((stage, e)) => return lost(stage, e),
            Ok(Err(o)) => return vec![o; n],
            Ok(Ok(per)) => per,
        };
        let accepted = per.iter().filter(|o| o.is_none()).count();
        if accepted > 0 {
            match self.command("DATA\r\n").await {
                Ok(r) if r.code == 354 => {}
                Ok(r) => return per.into_iter().map(|o| o.unwrap_or_else(|| Outcome::from_reply(r.clone()))).collect(),
                Err(e) => return lost("DATA", e),
            }
            if let Err(e) = self.stream.write_all(&dot_stuff(&message.data)).await {
                return lost("sending the message", e.to_string());
            }
            // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
            for slot in per.iter_mut().filter(|o| o.is_none()) {
                *slot = Some(match self.reply().await {
                    Ok(r) => Outcome::from_reply(r),
                    Err(e) => Outcome::temp(EnhancedStatus(4, 4, 2), format!("LMTP after the message: {e}")),
                });
            }
        }
        let _ = self.stream.write_all(b"QUIT\r\n").await;
        per.into_iter().map(|o| o.expect("every recipient decided")).collect()
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
    }
}
