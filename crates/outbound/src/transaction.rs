//! One SMTP transaction with a next hop (RFC 5321 §3.3), pipelined when the peer offers
//! PIPELINING (RFC 2920). Failures before MAIL (connect, greeting, EHLO) move on to the next
//! address and host; from MAIL on, each recipient gets the outcome its replies give.

use std::sync::Arc;
use std::time::Instant;

use postern_config::Config;
use postern_config::schema::TlsLevel;
use postern_dns::Resolver;
use postern_dns::dnssec::Tlsa;
use postern_types::dsn::Ret;
use postern_types::tls_report::{AppliedPolicy, Negotiation, PolicyKind, TlsFailure};
use postern_types::{EnhancedStatus, ReversePath};

use crate::dane::HostDane;
use crate::nexthop::{Host, addresses};
use crate::pool::Pool;
use crate::smtp::{HelloError, Session, Stale};
use crate::tls_results::{self, TlsResults};
use crate::{Delays, Outcome, Rcpt, RecipientResult, connect};

/// The bytes of a message to send: kept in memory, or read from its queue file while they are
/// sent, so that a delivery holds one piece of a large message, not all of it.
#[derive(Debug, Clone)]
pub enum Body {
    /// In memory (the bytes kept from the commit for the first attempt).
    Bytes(Arc<Vec<u8>>),
    /// In a file: `len` bytes from byte `offset` of `path` (a queue file, which never
    /// changes after its commit).
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Where the message starts, bytes.
        offset: u64,
        /// Its length, bytes.
        len: u64,
    },
}

impl Body {
    /// The message's length, bytes (`SIZE=`, RFC 1870).
    #[must_use]
    pub fn len(&self) -> u64 {
        match self {
            Self::Bytes(b) => b.len() as u64,
            Self::File { len, .. } => *len,
        }
    }

    /// Whether the message is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    /// The message (trace headers included), CRLF line endings.
    pub data: Body,
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
            if message.require_tls && !session.capabilities().requiretls {
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
