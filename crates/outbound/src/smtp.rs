//! An SMTP session with one next hop, over a [`Link`]: the opening with the TLS policy of the
//! destination (STARTTLS required or opportunistic, the certificate checked against the trust
//! anchors or DANE's TLSA records, RFC 3207, RFC 7672, RFC 8461), and transactions whose
//! answers become delivery outcomes. The conversation itself is
//! [`postern_proto::client::session::Session`]'s.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use postern_config::Config;
use postern_config::schema::TlsLevel;
use postern_dns::dnssec::Tlsa;
use postern_proto::client::session::{Dialect, Event, RcptTo, Session as Conversation, Stage};
use postern_proto::client::{Capabilities, Outgoing};
use postern_types::EnhancedStatus;
use postern_types::tls_report::{PolicyKind, TlsFailure};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::link::Link;
use crate::tls::{TlsError, TlsInfo, handshake};
use crate::{Delays, LinkError, Message, Outcome, Rcpt, RecipientResult};

/// The connection to a next hop: clear text, or TLS after STARTTLS.
pub(crate) enum Stream {
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

/// A cached connection that no longer works (the peer closed it while idle).
pub(crate) struct Stale;

/// Why the opening (greeting, EHLO, STARTTLS) did not make the session ready.
pub(crate) enum HelloError {
    /// The outcome for every recipient (the next host may do better).
    Failed(Outcome),
    /// The TLS handshake failed under opportunistic TLS: a retry in clear text may work.
    Tls(String),
}

/// An SMTP session with a next hop and the TLS policy it is held to.
pub(crate) struct Session {
    link: Link<Stream>,
    config: Arc<Config>,
    /// The next hop's name, for the TLS server name.
    pub(crate) host: String,
    /// `host[ip]:port`, for the logs.
    pub(crate) relay: String,
    /// Whether to use STARTTLS when offered.
    pub(crate) starttls: bool,
    /// How much TLS this delivery requires (the `tls_policy` table, MTA-STS).
    level: TlsLevel,
    /// Where `level` comes from, for the logs (`tls_policy=verify`, `sts=enforce`).
    pub(crate) label: Option<String>,
    /// Set once TLS is up.
    tls: Option<TlsInfo>,
    /// The kind of the recipient domain's policy: under MTA-STS a certificate that does not
    /// verify is a reported failure even where delivery goes on (`testing`).
    pub(crate) policy_kind: PolicyKind,
    /// The TLSA records of a DANE-secured host: TLS is then required and the certificate
    /// checked against them.
    pub(crate) tlsa: Option<Arc<Vec<Tlsa>>>,
    /// How the last STARTTLS negotiation went, for TLS reporting: `Some(None)` success,
    /// `Some(Some(..))` the failure; `None` when none was attempted (level `none`).
    pub(crate) negotiation: Option<Option<(TlsFailure, String)>>,
}

impl Session {
    /// A session on `stream` to `hop` (the host's name, `host[ip]:port`) held to `level`;
    /// `starttls` false for the clear-text retry after a broken handshake.
    pub(crate) fn new(
        stream: TcpStream,
        config: Arc<Config>,
        hop: (String, String),
        level: TlsLevel,
        starttls: bool,
    ) -> Self {
        let (host, relay) = hop;
        let conversation = Conversation::new(Dialect::Smtp, &config.hostname);
        Self {
            link: Link::new(Stream::Plain(stream), conversation),
            config,
            host,
            relay,
            starttls: starttls && level != TlsLevel::None,
            level,
            label: None,
            tls: None,
            policy_kind: PolicyKind::NoPolicyFound,
            tlsa: None,
            negotiation: None,
        }
    }

    /// What the peer offered (after TLS, if any).
    pub(crate) fn capabilities(&self) -> &Capabilities {
        self.link.session.capabilities()
    }

    /// Whether the session may carry another transaction.
    pub(crate) fn reusable(&self) -> bool {
        self.link.reusable()
    }

    /// Ends the session politely (errors ignored).
    pub(crate) async fn quit(mut self) {
        self.link.quit(Duration::from_secs(5)).await;
    }

    /// The outcome of a connection that broke, naming the command it broke at.
    fn lost(&self, e: &LinkError) -> Outcome {
        match self.link.awaiting() {
            Some(Stage::Content) => e.outcome("lost connection during the message"),
            Some(stage) => e.outcome(&format!("lost connection during {stage}")),
            None => e.outcome("lost connection"),
        }
    }

    /// Greeting, EHLO (HELO when EHLO is refused), STARTTLS under the TLS policy and EHLO
    /// again: the session is then ready for MAIL.
    pub(crate) async fn open(&mut self) -> Result<(), HelloError> {
        let timeout = self.config.outbound.command_timeout.0;
        self.ready(timeout).await?;
        self.negotiate_tls(timeout).await
    }

    /// The opening's replies until the session is ready.
    async fn ready(&mut self, timeout: Duration) -> Result<(), HelloError> {
        let failed = |text: String| HelloError::Failed(Outcome::temp(EnhancedStatus(4, 4, 2), text));
        match self.link.next_event(timeout).await {
            Ok(Event::Ready) => Ok(()),
            Ok(Event::Refused { stage, reply }) => Err(failed(format!("{stage} refused: {reply}"))),
            Ok(other) => Err(failed(format!("unexpected {other:?} while opening"))),
            Err(e) => Err(HelloError::Failed(self.lost(&e))),
        }
    }

    /// Whether TLS is required of this host: by the level, or by DANE (RFC 7672 §2.2).
    fn must_tls(&self) -> bool {
        self.level.requires_tls() || self.tlsa.is_some()
    }

    /// The failure of a required TLS (4.7.5), naming where the requirement comes from.
    fn required(&self, why: &str) -> HelloError {
        let source = self.label.clone().unwrap_or_else(|| format!("tls_policy={}", self.level));
        HelloError::Failed(Outcome::temp(EnhancedStatus(4, 7, 5), format!("TLS is required ({source}) but {why}")))
    }

    /// STARTTLS when offered and wanted (RFC 3207), recorded for TLS reporting; a required TLS
    /// that is not offered or refused fails the opening, an opportunistic one goes on in clear
    /// text (RFC 3207 §4.1).
    async fn negotiate_tls(&mut self, timeout: Duration) -> Result<(), HelloError> {
        let offered = self.capabilities().starttls;
        if !offered && self.starttls {
            let why = format!("{} offers no STARTTLS", self.host);
            self.negotiation = Some(Some((TlsFailure::StarttlsNotSupported, why.clone())));
            if self.must_tls() {
                return Err(self.required(&why));
            }
        }
        if !(offered && self.starttls) {
            return Ok(());
        }
        self.link.session.starttls().map_err(|e| HelloError::Failed(LinkError::from(e).outcome("")))?;
        match self.link.next_event(timeout).await {
            Ok(Event::StartTls) => self.upgrade(timeout).await,
            Ok(Event::Refused { reply, .. }) => {
                let why = format!("STARTTLS was refused ({reply})");
                self.negotiation = Some(Some((TlsFailure::StarttlsNotSupported, why.clone())));
                if self.must_tls() {
                    return Err(self.required(&why));
                }
                tracing::info!("{}: STARTTLS refused ({reply}); continuing in clear text", self.host);
                Ok(())
            }
            Ok(other) => Err(HelloError::Failed(Outcome::temp(
                EnhancedStatus(4, 4, 2),
                format!("unexpected {other:?} after STARTTLS"),
            ))),
            Err(e) => Err(HelloError::Failed(self.lost(&e))),
        }
    }

    /// The TLS handshake after STARTTLS's 220, the certificate checked as the policy says,
    /// then EHLO again.
    async fn upgrade(&mut self, timeout: Duration) -> Result<(), HelloError> {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.link.stream, Stream::Gone) else {
            return Err(HelloError::Tls("STARTTLS twice".into()));
        };
        let ca_file = self.config.outbound.ca_file.clone();
        let shake = tokio::time::timeout(timeout, handshake(tcp, &self.host, ca_file.as_deref(), self.tlsa.clone()))
            .await
            .map_err(|_| TlsError::Timeout)
            .and_then(|r| r);
        let (tls, info) = match shake {
            Ok(done) => done,
            Err(e) => {
                let e = e.to_string();
                self.negotiation = Some(Some((TlsFailure::ValidationFailure, e.clone())));
                return Err(if self.must_tls() { self.required(&e) } else { HelloError::Tls(e) });
            }
        };
        self.link.stream = Stream::Tls(Box::new(tls));
        self.link.session.tls_started().map_err(|e| HelloError::Failed(LinkError::from(e).outcome("")))?;
        // RFC 8460: a certificate that does not verify fails the session where the policy asks
        // for one (MTA-STS, `verify`); opportunistic TLS without a policy succeeded.
        let checked = self.level == TlsLevel::Verify || self.tlsa.is_some();
        let must_verify = checked || self.policy_kind == PolicyKind::Sts;
        self.negotiation = Some(match (&info.verify_error, info.verify_failure) {
            (Some(e), Some(f)) if must_verify => Some((f, e.clone())),
            _ => None,
        });
        if let (true, Some(e)) = (checked, &info.verify_error) {
            return Err(self.required(&format!("the certificate of {} did not verify: {e}", self.host)));
        }
        self.tls = Some(info);
        self.ready(timeout).await
    }

    /// The per-recipient results of a transaction on this session.
    pub(crate) fn results(&self, recipients: &[Rcpt], outcomes: Vec<Outcome>, delays: Delays) -> Vec<RecipientResult> {
        recipients
            .iter()
            .zip(outcomes)
            .map(|(r, outcome)| RecipientResult {
                recipient: r.address.clone(),
                dsn_passed_on: self.capabilities().dsn,
                outcome,
                relay: self.relay.clone(),
                remote_host: Some(self.host.clone()),
                tls: self.tls.clone(),
                tls_label: self.label.clone(),
                delays,
            })
            .collect()
    }

    /// One transaction: MAIL, RCPTs, DATA, content; one outcome per recipient. On a reused
    /// session (`reset`), RSET goes first; if it fails the session was stale and nothing was
    /// sent ([`Stale`]).
    pub(crate) async fn transact(
        &mut self,
        recipients: &[Rcpt],
        message: &Message,
        reset: bool,
    ) -> Result<Vec<Outcome>, Stale> {
        let timeout = self.config.outbound.command_timeout.0;
        if reset {
            let ok =
                self.link.session.reset().is_ok() && matches!(self.link.next_event(timeout).await, Ok(Event::Reset));
            if !ok {
                return Err(Stale);
            }
        }
        let n = recipients.len();
        let outgoing = Outgoing {
            reverse_path: &message.reverse_path,
            size: message.data.len(),
            body_8bit: message.body_8bit,
            smtputf8: message.smtputf8,
            ret: message.ret,
            envid: message.envid.as_deref(),
            require_tls: message.require_tls,
        };
        let rcpts: Vec<RcptTo<'_>> = recipients
            .iter()
            .map(|r| RcptTo { address: &r.address, notify: r.notify, orcpt: r.orcpt.as_ref() })
            .collect();
        match self.link.session.transaction(&outgoing, &rcpts, false) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Ok(vec![Outcome::PermFail(why.reply()); n]),
            Err(e) => return Ok(vec![LinkError::from(e).outcome(""); n]),
        }
        let o = &self.config.outbound;
        let timeouts = (o.command_timeout.0, o.data_timeout.0);
        Ok(match self.link.complete_transaction(&message.data, timeouts).await {
            Ok(answers) => answers.iter().map(Outcome::from_answer).collect(),
            Err(e) => vec![self.lost(&e); n],
        })
    }
}
