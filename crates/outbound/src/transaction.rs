//! One SMTP transaction with a next hop (RFC 5321 §3.3), pipelined when the peer offers
//! PIPELINING (RFC 2920). Failures before MAIL (connect, greeting, EHLO) move on to the next
//! address and host; from MAIL on, each recipient gets the outcome its replies give.

use std::sync::Arc;
use std::time::Duration;

use postern_config::Config;
use postern_config::schema::TlsLevel;
use postern_dns::Resolver;
use postern_proto::client::{Capabilities, DotStuffed, Outgoing, ReplyParser, mail_command};
use postern_types::dsn::Ret;
use postern_types::{EnhancedStatus, Reply, ReversePath};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::LinkError;
use crate::nexthop::{Host, addresses};
use crate::pool::Pool;
use crate::tls::{TlsError, TlsInfo, handshake};
use crate::tls_results::{self, TlsResults};
use crate::{Delays, Outcome, Rcpt, RecipientResult, connect};
use postern_dns::dnssec::Tlsa;
use postern_types::tls_report::{AppliedPolicy, Negotiation, PolicyKind, TlsFailure};
use std::time::Instant;

use crate::dane::HostDane;

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
    /// The reverse-path (the null sender included).
    pub reverse_path: ReversePath,
    /// Received with BODY=8BITMIME.
    pub body_8bit: bool,
    /// Received with SMTPUTF8.
    pub smtputf8: bool,
    /// The message file (trace headers included), CRLF line endings.
    pub data: Arc<Vec<u8>>,
    /// `RET=` to pass on.
    pub ret: Option<Ret>,
    /// `ENVID=` to pass on (xtext).
    pub envid: Option<String>,
    /// Received with REQUIRETLS (RFC 8689): only a validated TLS path to a peer offering
    /// REQUIRETLS will do; otherwise 5.7.30.
    pub require_tls: bool,
    /// The message says `TLS-Required: No` (RFC 8689 §4.2.2): MTA-STS does not stop it.
    pub tls_optional: bool,
    /// The postmaster asked for this attempt (`postern queue flush`, `sendmail -q`): try every
    /// address even if the host status cache says it is down, as Postfix's `postqueue -f`.
    pub forced: bool,
}

/// The size of the pieces the message is sent in after DATA, in bytes.
pub(crate) const DATA_PIECE: usize = 32 * 1024;

/// Tries `hosts` in order until one takes the transaction; every recipient gets an outcome. A
/// session is taken from `pool` when one is idle for `key` (the destination), and put back
/// after a clean transaction.
pub(crate) async fn deliver_via<R: Resolver>(
    resolver: &R,
    config: &Arc<Config>,
    pool: &Pool,
    dest: Destination<'_>,
    recipients: &[Rcpt],
    message: &Message,
) -> Vec<RecipientResult> {
    let Destination { key, level, label, applied, hosts, started } = dest;
    let base = TlsSetup { level, label, applied, results: &pool.tls_results, tlsa: None };
    let cache_time = config.outbound.connection_cache_time.0;
    if let Some(mut session) = pool.take(key, cache_time) {
        let sending = Instant::now();
        match session.transact(recipients, message, true).await {
            Ok(outcomes) => {
                tracing::debug!("{}: reused the connection to {}", message.id, session.relay);
                let delays = Delays { transmission: sending.elapsed().as_secs_f64(), ..Delays::default() };
                let results = session.results(recipients, outcomes, delays);
                pool.put_or_quit(key, session, cache_time).await;
                return results;
            }
            Err(Stale) => tracing::debug!("{}: cached connection to {} was stale", message.id, session.relay),
        }
    }
    // The last failure: its outcome, the relay for the log, and the host that gave it.
    let mut temp: Option<(Outcome, String, Option<String>)> = None;
    let mut perm: Option<(Outcome, String, Option<String>)> = None;
    for host in hosts {
        let Some(tls) = host_tls(&base, host, &message.id, &mut temp) else { continue };
        let ips = match addresses(resolver, &host.name, config.outbound.ip_version).await {
            Ok(ips) => ips,
            Err(o @ Outcome::PermFail(_)) => {
                perm = Some((o, host.name.clone(), None));
                continue;
            }
            Err(o) => {
                temp = Some((o, host.name.clone(), None));
                continue;
            }
        };
        let mut addrs = pool.family_order(&host.name, ips, host.port);
        addrs.retain(|&addr| match pool.dead(addr).filter(|_| !message.forced) {
            Some(why) => {
                let e = format!("{why} (recently; skipped by the host status cache)");
                tracing::info!("{}: {e}; trying the next address", message.id);
                let relay = format!("{}[{}]:{}", host.name, addr.ip(), host.port);
                temp = Some((Outcome::temp(EnhancedStatus(4, 4, 1), e), relay, Some(host.name.clone())));
                false
            }
            None => true,
        });
        while !addrs.is_empty() {
            let Some(won) = race_to(config, pool, &host.name, &addrs, message, &mut temp).await else { break };
            addrs.retain(|a| *a != won.addr);
            let relay = format!("{}[{}]:{}", host.name, won.addr.ip(), host.port);
            let connected = Instant::now();
            let opened = open(config, &tls, won, &host.name, &relay, message, &mut temp).await;
            let Some(mut session) = opened else { continue };
            let sending = Instant::now();
            // RFC 8689 §4.2.1: a host without REQUIRETLS cannot take the message; another MX
            // may.
            if message.require_tls && !session.caps.requiretls {
                let why = postern_proto::client::Unsendable::NeedsRequireTls;
                tracing::info!("{}: {relay} does not offer REQUIRETLS; trying the next host", message.id);
                session.quit().await;
                perm = Some((Outcome::PermFail(why.reply()), relay, Some(host.name.clone())));
                break;
            }
            let outcomes = match session.transact(recipients, message, false).await {
                Ok(o) => o,
                Err(Stale) => vec![Outcome::temp(EnhancedStatus(4, 4, 2), "lost connection"); recipients.len()],
            };
            let delays = Delays {
                connect: (connected - started).as_secs_f64(),
                tls: (sending - connected).as_secs_f64(),
                transmission: sending.elapsed().as_secs_f64(),
            };
            let results = session.results(recipients, outcomes, delays);
            pool.put_or_quit(key, session, cache_time).await;
            return results;
        }
    }
    let (outcome, relay, remote_host) = temp
        .or(perm)
        .unwrap_or_else(|| (Outcome::temp(EnhancedStatus(4, 4, 4), "no host to deliver to"), "none".to_owned(), None));
    let mut results = RecipientResult::all(recipients, &outcome, &relay, remote_host.as_deref());
    let delays = Delays { connect: started.elapsed().as_secs_f64(), ..Delays::default() };
    results.iter_mut().for_each(|r| r.delays = delays);
    results
}

/// The last failure of a destination: its outcome, the relay for the log, the host that gave it.
type LastFailure = Option<(Outcome, String, Option<String>)>;

/// Races connections to `addrs` of `host` ([`connect::race`]); logs the winner and the losers,
/// marks failed addresses in the host status cache and remembers a broken IPv6. `None` when
/// every attempt failed (`temp` then holds the last failure).
async fn race_to(
    config: &Config,
    pool: &Pool,
    host: &str,
    addrs: &[std::net::SocketAddr],
    message: &Message,
    temp: &mut LastFailure,
) -> Option<connect::Won> {
    let o = &config.outbound;
    let how = connect::Racing { delay: o.attempt_delay.0, timeout: o.connect_timeout.0, source: o.source_address };
    let result = connect::race(addrs, how).await;
    let lost = match &result {
        Ok(won) => &won.lost,
        Err(lost) => lost,
    };
    for l in lost {
        if let Some(e) = &l.error {
            tracing::info!("{}: {e}; trying the next address", message.id);
            pool.mark_dead(l.addr, e, o.dead_host_time.0);
            let relay = format!("{host}[{}]:{}", l.addr.ip(), l.addr.port());
            *temp = Some((Outcome::temp(EnhancedStatus(4, 4, 1), e.clone()), relay, Some(host.to_owned())));
        }
    }
    let won = result.ok()?;
    if won.addr.is_ipv4() && won.lost.iter().any(|l| l.addr.is_ipv6()) {
        pool.ipv6_lost(host, o.family_memory.0);
    }
    if !won.lost.is_empty() {
        tracing::info!(
            "{}: connected to {host}[{}]:{} in {}ms, first of a race ({})",
            message.id,
            won.addr.ip(),
            won.addr.port(),
            won.took.as_millis(),
            connect::describe_losers(&won.lost)
        );
    }
    Some(won)
}

/// The TLS side of a delivery to one host: the level required, its label for the logs, the
/// policy as TLS reports name it, where negotiations are recorded, and the host's TLSA records
/// when it is DANE-secured.
#[derive(Clone)]
struct TlsSetup<'a> {
    level: TlsLevel,
    label: Option<String>,
    applied: AppliedPolicy,
    results: &'a TlsResults,
    tlsa: Option<Arc<Vec<Tlsa>>>,
}

/// The TLS setup for `host` of a destination set up as `base` (RFC 7672 §2.2): a DANE-secured
/// host requires TLS checked against its TLSA records (policy type `tlsa` in the reports); a
/// host whose DNSSEC lookups were bogus or failed is not used (`temp` then says why, 4.7.5),
/// nor is a host without DANE under `dane-only`.
fn host_tls<'a>(base: &TlsSetup<'a>, host: &Host, id: &str, temp: &mut LastFailure) -> Option<TlsSetup<'a>> {
    let skip = |why: String, temp: &mut LastFailure| {
        tracing::warn!("{id}: {}: {why}; trying the next host", host.name);
        *temp = Some((Outcome::temp(EnhancedStatus(4, 7, 5), why), host.name.clone(), Some(host.name.clone())));
        None
    };
    match &host.dane {
        HostDane::Unusable { why, bogus } => {
            if *bogus {
                let applied = AppliedPolicy { kind: PolicyKind::Tlsa, ..base.applied.clone() };
                base.results.record(tls_results::failed(
                    &applied,
                    TlsFailure::DnssecInvalid,
                    Some(&host.name),
                    (None, None),
                    why.clone(),
                ));
            }
            let kind = if *bogus { "did not validate" } else { "failed" };
            skip(format!("DANE: the DNSSEC lookups of {} {kind} ({why}); never sent in clear text", host.name), temp)
        }
        HostDane::Tlsa(records) => {
            let applied = AppliedPolicy {
                kind: PolicyKind::Tlsa,
                strings: records.iter().map(ToString::to_string).collect(),
                mx_patterns: Vec::new(),
                ..base.applied.clone()
            };
            Some(TlsSetup { label: Some("dane".into()), applied, tlsa: Some(records.clone()), ..base.clone() })
        }
        HostDane::None if base.level == TlsLevel::DaneOnly => {
            skip(format!("TLS is required (tls_policy=dane-only) but {} is not DANE-secured", host.name), temp)
        }
        HostDane::None => Some(base.clone()),
    }
}

/// Opens an SMTP session on a raced connection: greeting, EHLO, STARTTLS (its outcome recorded
/// for TLS reporting). A broken STARTTLS handshake is retried once on a new connection to the
/// same address in clear text. `None` when the next address should be tried (`temp` then holds
/// why).
async fn open(
    config: &Arc<Config>,
    tls: &TlsSetup<'_>,
    won: connect::Won,
    host: &str,
    relay: &str,
    message: &Message,
    temp: &mut LastFailure,
) -> Option<Session> {
    let TlsSetup { level, label, applied, results, tlsa } = tls;
    let hop = || (host.to_owned(), relay.to_owned());
    let ips = (Some(won.addr.ip()), won.stream.local_addr().ok().map(|a| a.ip()));
    let mut session = Session::new(won.stream, config.clone(), hop(), *level, true);
    session.label.clone_from(label);
    session.policy_kind = applied.kind;
    session.tlsa.clone_from(tlsa);
    loop {
        let opened = session.open().await;
        match session.negotiation.take() {
            Some(None) => results.record(Negotiation { policy: applied.clone(), failure: None }),
            Some(Some((result, detail))) => {
                results.record(tls_results::failed(applied, result, Some(host), ips, detail));
            }
            None => {}
        }
        match opened {
            Ok(()) => return Some(session),
            // Only opportunistic TLS falls back to clear text (a required one defers instead).
            Err(HelloError::Tls(e)) if session.starttls => {
                tracing::warn!("{}: {relay}: {e}; retrying in clear text", message.id);
                let o = &config.outbound;
                match connect::connect(won.addr, o.connect_timeout.0, o.source_address).await {
                    Ok(stream) => {
                        session = Session::new(stream, config.clone(), hop(), *level, false);
                        session.label.clone_from(label);
                    }
                    Err(e) => {
                        tracing::info!("{}: {e}; trying the next address", message.id);
                        *temp = Some((e.outcome(""), relay.to_owned(), Some(host.into())));
                        return None;
                    }
                }
            }
            Err(HelloError::Tls(e)) => {
                *temp = Some((Outcome::temp(EnhancedStatus(4, 7, 0), e), relay.to_owned(), Some(host.into())));
                return None;
            }
            Err(HelloError::Failed(o)) => {
                tracing::info!("{}: {relay}: {}; trying the next host", message.id, o.reply());
                session.quit().await;
                *temp = Some((o, relay.to_owned(), Some(host.to_owned())));
                return None;
            }
        }
    }
}

/// Where a delivery goes: the destination's key (connection cache and concurrency), the TLS
/// level it requires, and its hosts in order.
pub(crate) struct Destination<'a> {
    pub(crate) key: &'a str,
    pub(crate) level: TlsLevel,
    /// Where the level comes from, for the logs: `tls_policy=verify`, `sts=enforce`.
    pub(crate) label: Option<String>,
    /// The policy as TLS reports name it (RFC 8460 §4.4).
    pub(crate) applied: AppliedPolicy,
    /// When the attempt started (before the MX lookup), for the delays of the log.
    pub(crate) started: Instant,
    pub(crate) hosts: &'a [Host],
}

/// A cached connection that no longer works (the peer closed it while idle).
pub(crate) struct Stale;

pub(crate) struct Session {
    stream: Stream,
    parser: ReplyParser,
    config: Arc<Config>,
    /// The next hop's name, for the TLS server name.
    host: String,
    /// `host[ip]:port`, for the logs.
    relay: String,
    /// Whether to use STARTTLS when offered.
    starttls: bool,
    /// How much TLS this delivery requires (the `tls_policy` table, MTA-STS).
    level: TlsLevel,
    /// Where `level` comes from, for the logs (`tls_policy=verify`, `sts=enforce`).
    label: Option<String>,
    /// Set once TLS is up.
    tls: Option<TlsInfo>,
    /// The kind of the recipient domain's policy: under MTA-STS a certificate that does not
    /// verify is a reported failure even where delivery goes on (`testing`).
    policy_kind: PolicyKind,
    /// The TLSA records of a DANE-secured host: TLS is then required and the certificate
    /// checked against them.
    tlsa: Option<Arc<Vec<Tlsa>>>,
    /// How the last STARTTLS negotiation went, for TLS reporting: `Some(None)` success,
    /// `Some(Some(..))` the failure; `None` when none was attempted (level `none`).
    negotiation: Option<Option<(TlsFailure, String)>>,
    /// What the peer offered (after TLS, if any).
    caps: Capabilities,
    /// False after an I/O error or a 421: the session must not be reused.
    pub(crate) reusable: bool,
    /// Read buffer, reused.
    rbuf: Vec<u8>,
}

/// Why the greeting/EHLO stage did not produce capabilities.
enum HelloError {
    Failed(Outcome),
    Tls(String),
}

impl Session {
    fn new(stream: TcpStream, config: Arc<Config>, hop: (String, String), level: TlsLevel, starttls: bool) -> Self {
        let (host, relay) = hop;
        Self {
            stream: Stream::Plain(stream),
            parser: ReplyParser::default(),
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
            caps: Capabilities::default(),
            reusable: true,
            rbuf: Vec::with_capacity(8192),
        }
    }

    async fn read_reply(&mut self, timeout: Duration) -> Result<Reply, LinkError> {
        loop {
            match self.parser.next_reply() {
                Ok(Some(r)) => {
                    if r.code == 421 {
                        self.reusable = false;
                    }
                    return Ok(r);
                }
                Ok(None) => {}
                Err(e) => {
                    self.reusable = false;
                    return Err(LinkError::BadReply(e.to_string()));
                }
            }
            // A heap buffer reused across reads: no zero-filling per read, and the future stays
            // small (an array here would be copied with every spawned delivery).
            self.rbuf.clear();
            self.rbuf.reserve(8192);
            let read = tokio::time::timeout(timeout, self.stream.read_buf(&mut self.rbuf)).await;
            match read {
                Ok(Ok(n)) if n > 0 => self.parser.feed(&self.rbuf),
                other => {
                    self.reusable = false;
                    return Err(match other {
                        Err(_) => LinkError::ReplyTimeout(timeout),
                        Ok(Err(e)) => LinkError::Read(e),
                        Ok(Ok(_)) => LinkError::Closed,
                    });
                }
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        let sent = tokio::time::timeout(self.config.outbound.command_timeout.0, self.stream.write_all(bytes)).await;
        let result = match sent {
            Err(_) => Err(LinkError::SendTimeout),
            Ok(r) => r.map_err(LinkError::Write),
        };
        if result.is_err() {
            self.reusable = false;
        }
        result
    }

    /// Ends the session politely (errors ignored).
    pub(crate) async fn quit(mut self) {
        if self.send(b"QUIT\r\n").await.is_ok() {
            let _ = self.read_reply(Duration::from_secs(5)).await;
        }
    }

    /// Greeting, EHLO and STARTTLS: the session is then ready for MAIL.
    async fn open(&mut self) -> Result<(), HelloError> {
        let timeout = self.config.outbound.command_timeout.0;
        self.caps = self.hello(timeout).await?;
        Ok(())
    }

    /// The per-recipient results of a transaction on this session.
    fn results(&self, recipients: &[Rcpt], outcomes: Vec<Outcome>, delays: Delays) -> Vec<RecipientResult> {
        recipients
            .iter()
            .zip(outcomes)
            .map(|(r, outcome)| RecipientResult {
                recipient: r.address.clone(),
                dsn_passed_on: self.caps.dsn,
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
    async fn transact(&mut self, recipients: &[Rcpt], message: &Message, reset: bool) -> Result<Vec<Outcome>, Stale> {
        let cmd_timeout = self.config.outbound.command_timeout.0;
        if reset {
            let ok =
                self.send(b"RSET\r\n").await.is_ok() && self.read_reply(cmd_timeout).await.is_ok_and(|r| r.code == 250);
            if !ok {
                return Err(Stale);
            }
        }
        let lost = |stage: &str, e: LinkError| e.outcome(&format!("lost connection {stage}"));
        let caps = self.caps.clone();
        let outgoing = Outgoing {
            reverse_path: &message.reverse_path,
            size: message.data.len() as u64,
            body_8bit: message.body_8bit,
            smtputf8: message.smtputf8,
            ret: message.ret,
            envid: message.envid.as_deref(),
            require_tls: message.require_tls,
        };
        let mail = match mail_command(&outgoing, &caps) {
            Ok(m) => m,
            Err(why) => return Ok(vec![Outcome::PermFail(why.reply()); recipients.len()]),
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
            Err(e) => return Ok(vec![lost("during the envelope", e); recipients.len()]),
        };
        if mail_reply.code / 100 != 2 {
            return Ok(vec![Outcome::from_reply(mail_reply); recipients.len()]);
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
        Ok(outcomes.iter_mut().map(|o| o.take().or_else(|| final_outcome.clone()).expect("decided")).collect())
    }

    /// Greeting, EHLO (HELO when EHLO is refused with 5xx), STARTTLS when offered and then EHLO
    /// again (RFC 3207 §4.2: everything learnt before TLS is forgotten).
    async fn hello(&mut self, timeout: Duration) -> Result<Capabilities, HelloError> {
        let lost = |e: LinkError| HelloError::Failed(e.outcome("lost connection during greeting"));
        let greeting = self.read_reply(timeout).await.map_err(lost)?;
        if greeting.code != 220 {
            let o = Outcome::temp(EnhancedStatus(4, 4, 2), format!("greeting refused: {greeting}"));
            return Err(HelloError::Failed(o));
        }
        let caps = self.ehlo(timeout).await.map_err(HelloError::Failed)?;
        let level = self.level;
        // A DANE-secured host requires TLS whatever the level (RFC 7672 §2.2).
        let must_tls = level.requires_tls() || self.tlsa.is_some();
        let source = self.label.clone().unwrap_or_else(|| format!("tls_policy={level}"));
        let required = |why: String| {
            let text = format!("TLS is required ({source}) but {why}");
            HelloError::Failed(Outcome::temp(EnhancedStatus(4, 7, 5), text))
        };
        if !caps.starttls && self.starttls {
            let why = format!("{} offers no STARTTLS", self.host);
            self.negotiation = Some(Some((TlsFailure::StarttlsNotSupported, why.clone())));
            if must_tls {
                return Err(required(why));
            }
        }
        if !(caps.starttls && self.starttls) {
            return Ok(caps);
        }
        self.send(b"STARTTLS\r\n").await.map_err(lost)?;
        let reply = self.read_reply(timeout).await.map_err(lost)?;
        if reply.code != 220 {
            let why = format!("STARTTLS was refused ({reply})");
            self.negotiation = Some(Some((TlsFailure::StarttlsNotSupported, why.clone())));
            if must_tls {
                return Err(required(why));
            }
        }
        if reply.code != 220 {
            // Refused: go on in clear text, as opportunistic TLS does (RFC 3207 §4.1).
            tracing::info!("{}: STARTTLS refused ({reply}); continuing in clear text", self.host);
            return Ok(caps);
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
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
                return Err(if must_tls { required(e) } else { HelloError::Tls(e) });
            }
        };
        self.stream = Stream::Tls(Box::new(tls));
        self.parser = ReplyParser::default();
        // RFC 8460: a certificate that does not verify fails the session where the policy asks
        // for one (MTA-STS, `verify`); opportunistic TLS without a policy succeeded.
        let must_verify = level == TlsLevel::Verify || self.tlsa.is_some() || self.policy_kind == PolicyKind::Sts;
        self.negotiation = Some(match (&info.verify_error, info.verify_failure) {
            (Some(e), Some(f)) if must_verify => Some((f, e.clone())),
            _ => None,
        });
        if let (true, Some(e)) = (level == TlsLevel::Verify || self.tlsa.is_some(), &info.verify_error) {
            self.reusable = false;
            return Err(required(format!("the certificate of {} did not verify: {e}", self.host)));
        }
        self.tls = Some(info);
        self.ehlo(timeout).await.map_err(HelloError::Failed)
    }

    async fn ehlo(&mut self, timeout: Duration) -> Result<Capabilities, Outcome> {
        let lost = |e: LinkError| e.outcome("lost connection during EHLO");
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
    ) -> Result<(Reply, Vec<Reply>, Option<Reply>), LinkError> {
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
    ) -> Result<(Reply, Vec<Reply>, Option<Reply>), LinkError> {
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
        // In pieces: a delivery holds one piece of the stuffed message, not a whole copy.
        for piece in DotStuffed::new(&message.data, DATA_PIECE) {
            if let Err(e) = self.send(&piece).await {
                return e.outcome("lost connection while sending the message");
            }
        }
        match self.read_reply(self.config.outbound.data_timeout.0).await {
            Ok(r) => Outcome::from_reply(r),
            // The peer may or may not have the message: retrying risks a duplicate, giving up
            // risks a loss; like every MTA we retry (RFC 5321 §6.1).
            Err(e) => e.outcome("lost connection after the message"),
        }
    }
}
