//! One SMTP transaction with a next hop (RFC 5321 §3.3), pipelined when the peer offers
//! PIPELINING (RFC 2920). Failures before MAIL (connect, greeting, EHLO) move on to the next
//! address and host; from MAIL on, each recipient gets the outcome its replies give.

use std::sync::Arc;
use std::time::Duration;

use postern_config::Config;
use postern_dns::Resolver;
use postern_proto::client::{Capabilities, Outgoing, ReplyParser, dot_stuff, mail_command};
use postern_types::{EnhancedStatus, Reply};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::nexthop::{Host, addresses};
use crate::tls::{TlsInfo, handshake};
use crate::{Outcome, Rcpt, RecipientResult, connect};

/// The connection to a next hop: clear text, or TLS after STARTTLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Transient state while upgrading.
    Gone,
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::Gone => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::Gone => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::Gone => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// A queued message as outbound delivery needs it.
#[derive(Debug, Clone)]
pub struct Message {
    /// Queue ID, for logs.
    pub id: String,
    /// Reverse-path without brackets; empty for the null sender.
    pub reverse_path: String,
    /// Received with BODY=8BITMIME.
    pub body_8bit: bool,
    /// Received with SMTPUTF8.
    pub smtputf8: bool,
    /// The message file (trace headers included), CRLF line endings.
    pub data: Arc<Vec<u8>>,
    /// `RET=` to pass on (`FULL`/`HDRS`).
    pub ret: Option<String>,
    /// `ENVID=` to pass on (xtext).
    pub envid: Option<String>,
}

/// Tries `hosts` in order until one takes the transaction; every recipient gets an outcome.
pub(crate) async fn deliver_via<R: Resolver>(
    resolver: &R,
    config: &Arc<Config>,
    hosts: &[Host],
    recipients: &[Rcpt],
    message: &Message,
) -> Vec<RecipientResult> {
    let mut temp: Option<(Outcome, String)> = None;
    let mut perm: Option<(Outcome, String)> = None;
    for host in hosts {
        let ips = match addresses(resolver, &host.name, config.outbound.ip_version).await {
            Ok(ips) => ips,
            Err(o @ Outcome::PermFail(_)) => {
                perm = Some((o, host.name.clone()));
                continue;
            }
            Err(o) => {
                temp = Some((o, host.name.clone()));
                continue;
            }
        };
        for ip in ips {
            let addr = std::net::SocketAddr::new(ip, host.port);
            let relay = format!("{}[{ip}]:{}", host.name, host.port);
            // A broken STARTTLS handshake is retried once on a new connection in clear text.
            let mut starttls = true;
            loop {
                let stream = match connect::connect(addr, config.outbound.connect_timeout.0).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::info!("{}: {e}; trying the next address", message.id);
                        temp = Some((Outcome::temp(EnhancedStatus(4, 4, 1), e), relay.clone()));
                        break;
                    }
                };
                let mut session = Session::new(stream, config, &host.name, starttls);
                let attempt = session.run(recipients, message).await;
                let tls = session.tls.as_ref().map_or_else(|| "tls=none".to_owned(), ToString::to_string);
                let dsn_passed_on = session.peer_dsn;
                match attempt {
                    Attempt::Done(outcomes) => {
                        return recipients
                            .iter()
                            .zip(outcomes)
                            .map(|(r, outcome)| RecipientResult {
                                recipient: r.address.clone(),
                                dsn_passed_on,
                                outcome,
                                relay: relay.clone(),
                                tls: tls.clone(),
                            })
                            .collect();
                    }
                    Attempt::TlsFailed(e) => {
                        tracing::warn!("{}: {relay}: {e}; retrying in clear text", message.id);
                        starttls = false;
                    }
                    Attempt::TryNext(o) => {
                        tracing::info!("{}: {relay}: {}; trying the next host", message.id, o.reply());
                        temp = Some((o, relay.clone()));
                        break;
                    }
                }
            }
        }
    }
    let (outcome, relay) = temp
        .or(perm)
        .unwrap_or_else(|| (Outcome::temp(EnhancedStatus(4, 4, 4), "no host to deliver to"), "none".to_owned()));
    recipients
        .iter()
        .map(|r| RecipientResult {
            recipient: r.address.clone(),
            dsn_passed_on: false,
            outcome: outcome.clone(),
            relay: relay.clone(),
            tls: "tls=none".into(),
        })
        .collect()
}

enum Attempt {
    /// Before MAIL: this host cannot take the message now, try the next one.
    TryNext(Outcome),
    /// The STARTTLS handshake broke: try this address again without TLS.
    TlsFailed(String),
    /// One outcome per recipient, in order.
    Done(Vec<Outcome>),
}

struct Session<'a> {
    stream: Stream,
    parser: ReplyParser,
    config: &'a Config,
    /// The next hop's name, for the TLS server name.
    host: &'a str,
    /// Whether to use STARTTLS when offered.
    starttls: bool,
    /// Set once TLS is up.
    tls: Option<TlsInfo>,
    /// The peer offered DSN (RFC 3461) and got our parameters.
    peer_dsn: bool,
}

/// Why the greeting/EHLO stage did not produce capabilities.
enum HelloError {
    Failed(Outcome),
    Tls(String),
}

impl<'a> Session<'a> {
    fn new(stream: TcpStream, config: &'a Config, host: &'a str, starttls: bool) -> Self {
        Self {
            stream: Stream::Plain(stream),
            parser: ReplyParser::default(),
            config,
            host,
            starttls,
            tls: None,
            peer_dsn: false,
        }
    }

    async fn read_reply(&mut self, timeout: Duration) -> Result<Reply, String> {
        let mut buf = [0u8; 8192];
        loop {
            match self.parser.next_reply() {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            match tokio::time::timeout(timeout, self.stream.read(&mut buf)).await {
                Err(_) => return Err(format!("timed out after {timeout:?} waiting for a reply")),
                Ok(Err(e)) => return Err(format!("read: {e}")),
                Ok(Ok(0)) => return Err("connection closed by the peer".into()),
                Ok(Ok(n)) => self.parser.feed(&buf[..n]),
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        tokio::time::timeout(self.config.outbound.command_timeout.0, self.stream.write_all(bytes))
            .await
            .map_err(|_| "timed out sending".to_owned())?
            .map_err(|e| format!("write: {e}"))
    }

    async fn run(&mut self, recipients: &[Rcpt], message: &Message) -> Attempt {
        let cmd_timeout = self.config.outbound.command_timeout.0;
        let lost =
            |stage: &str, e: String| Outcome::temp(EnhancedStatus(4, 4, 2), format!("lost connection {stage}: {e}"));
        // Greeting and EHLO: any failure here sends us to the next host.
        let caps = match self.hello(cmd_timeout).await {
            Ok(c) => c,
            Err(HelloError::Failed(o)) => return Attempt::TryNext(o),
            Err(HelloError::Tls(e)) => return Attempt::TlsFailed(e),
        };
        let outgoing = Outgoing {
            reverse_path: &message.reverse_path,
            size: message.data.len() as u64,
            body_8bit: message.body_8bit,
            smtputf8: message.smtputf8,
            ret: message.ret.as_deref(),
            envid: message.envid.as_deref(),
        };
        self.peer_dsn = caps.dsn;
        let mail = match mail_command(&outgoing, &caps) {
            Ok(m) => m,
            Err(why) => {
                let _ = self.send(b"QUIT\r\n").await;
                return Attempt::Done(vec![Outcome::PermFail(why.reply()); recipients.len()]);
            }
        };
        let rcpts: Vec<String> = recipients
            .iter()
            .map(|r| {
                let mut cmd = format!("RCPT TO:<{}>", r.address);
                if caps.dsn {
                    if let Some(n) = &r.notify {
                        cmd.push_str(&format!(" NOTIFY={n}"));
                    }
                    if let Some(o) = &r.orcpt {
                        cmd.push_str(&format!(" ORCPT={o}"));
                    }
                }
                cmd.push_str("\r\n");
                cmd
            })
            .collect();
        let result = if caps.pipelining {
            self.pipelined(&mail, &rcpts, cmd_timeout).await
        } else {
            self.lockstep(&mail, &rcpts, cmd_timeout).await
        };
        let (mail_reply, rcpt_replies, data_reply) = match result {
            Ok(r) => r,
            Err(e) => return Attempt::Done(vec![lost("during the envelope", e); recipients.len()]),
        };
        if mail_reply.code / 100 != 2 {
            let _ = self.send(b"QUIT\r\n").await;
            return Attempt::Done(vec![Outcome::from_reply(mail_reply); recipients.len()]);
        }
        let mut outcomes: Vec<Option<Outcome>> =
            rcpt_replies.into_iter().map(|r| (r.code / 100 != 2).then(|| Outcome::from_reply(r))).collect();
        let accepted = outcomes.iter().filter(|o| o.is_none()).count();
        let final_outcome = if accepted == 0 {
            None
        } else {
            Some(match data_reply {
                Some(r) if r.code == 354 => self.content(message).await,
                Some(r) if r.code / 100 == 2 => {
                    Outcome::temp(EnhancedStatus(4, 5, 0), format!("unexpected reply to DATA: {r}"))
                }
                Some(r) => Outcome::from_reply(r),
                None => Outcome::temp(EnhancedStatus(4, 5, 0), "no reply to DATA"),
            })
        };
        let _ = self.send(b"QUIT\r\n").await;
        Attempt::Done(
            outcomes.iter_mut().map(|o| o.take().or_else(|| final_outcome.clone()).expect("decided")).collect(),
        )
    }

    /// Greeting, EHLO (HELO when EHLO is refused with 5xx), STARTTLS when offered and then EHLO
    /// again (RFC 3207 §4.2: everything learnt before TLS is forgotten).
    async fn hello(&mut self, timeout: Duration) -> Result<Capabilities, HelloError> {
        let lost = |e: String| {
            HelloError::Failed(Outcome::temp(EnhancedStatus(4, 4, 2), format!("lost connection during greeting: {e}")))
        };
        let greeting = self.read_reply(timeout).await.map_err(lost)?;
        if greeting.code != 220 {
            let o = Outcome::temp(EnhancedStatus(4, 4, 2), format!("greeting refused: {greeting}"));
            return Err(HelloError::Failed(o));
        }
        let caps = self.ehlo(timeout).await.map_err(HelloError::Failed)?;
        if !(caps.starttls && self.starttls) {
            return Ok(caps);
        }
        self.send(b"STARTTLS\r\n").await.map_err(lost)?;
        let reply = self.read_reply(timeout).await.map_err(lost)?;
        if reply.code != 220 {
            // Refused: go on in clear text, as opportunistic TLS does (RFC 3207 §4.1).
            tracing::info!("{}: STARTTLS refused ({reply}); continuing in clear text", self.host);
            return Ok(caps);
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(HelloError::Tls("STARTTLS twice".into()));
        };
        let (tls, info) = tokio::time::timeout(timeout, handshake(tcp, self.host))
            .await
            .map_err(|_| HelloError::Tls("TLS handshake timed out".into()))?
            .map_err(HelloError::Tls)?;
        self.stream = Stream::Tls(Box::new(tls));
        self.parser = ReplyParser::default();
        self.tls = Some(info);
        self.ehlo(timeout).await.map_err(HelloError::Failed)
    }

    async fn ehlo(&mut self, timeout: Duration) -> Result<Capabilities, Outcome> {
        let lost = |e: String| Outcome::temp(EnhancedStatus(4, 4, 2), format!("lost connection during EHLO: {e}"));
        let ehlo = format!("EHLO {}\r\n", self.config.hostname);
        self.send(ehlo.as_bytes()).await.map_err(lost)?;
        let reply = self.read_reply(timeout).await.map_err(lost)?;
        if reply.code == 250 {
            return Ok(Capabilities::from_ehlo(&reply));
        }
        if reply.code / 100 == 5 {
            let helo = format!("HELO {}\r\n", self.config.hostname);
            self.send(helo.as_bytes()).await.map_err(lost)?;
            let reply = self.read_reply(timeout).await.map_err(lost)?;
            if reply.code == 250 {
                return Ok(Capabilities::default());
            }
            return Err(Outcome::temp(EnhancedStatus(4, 4, 2), format!("HELO refused: {reply}")));
        }
        Err(Outcome::temp(EnhancedStatus(4, 4, 2), format!("EHLO refused: {reply}")))
    }

    /// MAIL, every RCPT and DATA in one write, then the replies (RFC 2920 §3.1).
    async fn pipelined(
        &mut self,
        mail: &str,
        rcpts: &[String],
        timeout: Duration,
    ) -> Result<(Reply, Vec<Reply>, Option<Reply>), String> {
        let mut group = mail.to_owned();
        for r in rcpts {
            group.push_str(r);
        }
        group.push_str("DATA\r\n");
        self.send(group.as_bytes()).await?;
        let mail_reply = self.read_reply(timeout).await?;
        let mut replies = Vec::with_capacity(rcpts.len());
        for _ in rcpts {
            replies.push(self.read_reply(timeout).await?);
        }
        let data = self.read_reply(timeout).await?;
        Ok((mail_reply, replies, Some(data)))
    }

    /// One command at a time, for peers without PIPELINING.
    async fn lockstep(
        &mut self,
        mail: &str,
        rcpts: &[String],
        timeout: Duration,
    ) -> Result<(Reply, Vec<Reply>, Option<Reply>), String> {
        self.send(mail.as_bytes()).await?;
        let mail_reply = self.read_reply(timeout).await?;
        if mail_reply.code / 100 != 2 {
            return Ok((mail_reply, Vec::new(), None));
        }
        let mut replies = Vec::with_capacity(rcpts.len());
        for r in rcpts {
            self.send(r.as_bytes()).await?;
            replies.push(self.read_reply(timeout).await?);
        }
        if replies.iter().all(|r| r.code / 100 != 2) {
            return Ok((mail_reply, replies, None));
        }
        self.send(b"DATA\r\n").await?;
        let data = self.read_reply(timeout).await?;
        Ok((mail_reply, replies, Some(data)))
    }

    /// Sends the content after 354 and classifies the final reply.
    async fn content(&mut self, message: &Message) -> Outcome {
        let wire = dot_stuff(&message.data);
        if let Err(e) = self.send(&wire).await {
            return Outcome::temp(EnhancedStatus(4, 4, 2), format!("lost connection while sending the message: {e}"));
        }
        match self.read_reply(self.config.outbound.data_timeout.0).await {
            Ok(r) => Outcome::from_reply(r),
            // The peer may or may not have the message: retrying risks a duplicate, giving up
            // risks a loss; like every MTA we retry (RFC 5321 §6.1).
            Err(e) => Outcome::temp(EnhancedStatus(4, 4, 2), format!("lost connection after the message: {e}")),
        }
    }
}
