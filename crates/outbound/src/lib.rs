//! Outbound delivery. This crate owns the way from "this message for these recipients of one
//! domain" to one outcome per recipient: choosing the next hop ([`nexthop`]: routes table,
//! smarthost, MX, addresses), connecting without letting one dead address stall the others
//! ([`connect`]), running the SMTP transaction ([`transaction`]), what is kept between messages
//! ([`pool`]: idle connections, host status, policy caches), and the single mapping from every
//! kind of error to temporary or permanent ([`Outcome`]).

pub mod connect;
pub mod dane;
pub mod error;
pub mod link;
pub mod lmtp;
pub mod nexthop;
pub mod pool;
mod smtp;
pub mod sts;
pub mod tls;
pub mod tls_results;
pub mod transaction;

use std::sync::Arc;

use postern_config::schema::TlsLevel;
use postern_config::{Config, Tables};
use postern_dns::Resolver;
use postern_proto::client::session::{Answer, Stage};
use postern_types::dsn::Notify;
use postern_types::tls_report::{AppliedPolicy, PolicyKind, TlsFailure};
use postern_types::{Address, EnhancedStatus, Reply};

pub use error::LinkError;
pub use pool::Pool;
pub use tls::TlsInfo;
pub use transaction::{Body, Message};

/// The outcome for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The next hop accepted responsibility: its final reply.
    Delivered(Reply),
    /// Retry later: the reply, or a 4xx describing the local error.
    TempFail(Reply),
    /// Give up and bounce: the reply, or a 5xx describing why.
    PermFail(Reply),
}

impl Outcome {
    /// Classifies a reply from the peer (RFC 5321 §4.2.1: 2yz, 4yz, 5yz).
    pub fn from_reply(reply: Reply) -> Self {
        match reply.code {
            200..=299 => Self::Delivered(reply),
            500..=599 => Self::PermFail(reply),
            _ => Self::TempFail(reply),
        }
    }

    /// Classifies the answer a recipient got in a transaction: its reply ([`Self::from_reply`]),
    /// except that DATA answered with anything but 354 or a refusal is out of step (a 2xx
    /// there would take a message never sent for delivered): 4.5.0, temporary.
    pub fn from_answer(answer: &Answer) -> Self {
        let reply = &answer.reply;
        if answer.stage == Stage::Data && reply.code / 100 < 4 {
            return Self::temp(EnhancedStatus(4, 5, 0), format!("unexpected reply to DATA: {reply}"));
        }
        Self::from_reply(reply.clone())
    }

    /// A local, temporary problem (network, timeout, DNS) as a 4xx outcome with `status`.
    pub fn temp(status: EnhancedStatus, text: impl Into<String>) -> Self {
        Self::TempFail(Reply::new(451, status, text))
    }

    /// The reply behind the outcome.
    pub fn reply(&self) -> &Reply {
        match self {
            Self::Delivered(r) | Self::TempFail(r) | Self::PermFail(r) => r,
        }
    }
}

/// A recipient to deliver, with the DSN parameters to pass on (RFC 3461).
#[derive(Debug, Clone)]
pub struct Rcpt {
    /// The address.
    pub address: Address,
    /// `NOTIFY=`, when the sender gave one.
    pub notify: Option<Notify>,
    /// `ORCPT=` (RFC 3461 §4.2).
    pub orcpt: Option<postern_types::dsn::Orcpt>,
}

/// One recipient's result and the host that gave it (`host[ip]:port`, or `none`).
#[derive(Debug, Clone)]
pub struct RecipientResult {
    /// The recipient address.
    pub recipient: Address,
    /// Its outcome.
    pub outcome: Outcome,
    /// The relay that answered, for the log's `relay=`: `host[ip]:port`, or `none`.
    pub relay: String,
    /// The host name of that relay, when one answered (the DSN's Remote-MTA, RFC 3464 §2.3.5).
    pub remote_host: Option<String>,
    /// How the connection was protected; `None` without TLS.
    pub tls: Option<TlsInfo>,
    /// What required TLS of this host, for the log (`dane`, `mta-sts`), when something did.
    pub tls_label: Option<String>,
    /// The next hop offered DSN and received the NOTIFY/ORCPT parameters, so it is now
    /// responsible for success notifications (RFC 3461 §5.2.2).
    pub dsn_passed_on: bool,
    /// Where the attempt's time went.
    pub delays: Delays,
}

/// Where the time of one delivery attempt went, in seconds: Postfix's `delays=a/b/c/d`
/// without `a` (the queue's part, which the scheduler knows).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Delays {
    /// DNS lookups and the TCP connection (zero on a reused connection).
    pub connect: f64,
    /// Greeting, EHLO, STARTTLS and the TLS handshake.
    pub tls: f64,
    /// MAIL, RCPT, DATA and the message, until the final reply.
    pub transmission: f64,
}

impl RecipientResult {
    /// The log's TLS part: `tls=TLSv1.3 cipher=... verify=OK`, or `tls=none`, then the label.
    pub fn tls_text(&self) -> String {
        let tls = self.tls.as_ref().map_or_else(|| "tls=none".to_owned(), ToString::to_string);
        match &self.tls_label {
            Some(label) => format!("{tls} {label}"),
            None => tls,
        }
    }

    /// The same outcome for every recipient (a failure before any recipient was tried).
    pub(crate) fn all(recipients: &[Rcpt], outcome: &Outcome, relay: &str, remote_host: Option<&str>) -> Vec<Self> {
        recipients
            .iter()
            .map(|r| Self {
                recipient: r.address.clone(),
                outcome: outcome.clone(),
                relay: relay.to_owned(),
                remote_host: remote_host.map(str::to_owned),
                tls: None,
                tls_label: None,
                dsn_passed_on: false,
                delays: Delays::default(),
            })
            .collect()
    }
}

/// The TLS policy of one delivery: the level it requires, the MTA-STS policy applied (if any),
/// the label for the logs (`tls_policy=LEVEL`, `sts=MODE`) and the policy as TLS reports name
/// it (RFC 8460 §4.4).
struct TlsChoice {
    level: TlsLevel,
    sts: Option<sts::Policy>,
    label: Option<String>,
    applied: AppliedPolicy,
}

/// The TLS a delivery to `domain` requires: the `tls_policy` table's level, else (for delivery
/// to the domain's MX, `to_mx`) its MTA-STS policy (`enforce`: `verify`; `testing`: `may`),
/// else `may`. A policy fetch that failed is recorded for TLS reporting.
///
/// For a message with `TLS-Required: No` (RFC 8689 §4.2.2) MTA-STS is not consulted (the
/// table, the postmaster's own policy, still is); for a REQUIRETLS message a `testing` policy
/// is applied as `enforce` (RFC 8689 §4.2.1).
async fn tls_for<R: Resolver>(
    resolver: &R,
    pool: &Pool,
    (config, tables): (&Config, &Tables),
    (domain, to_mx): (&str, bool),
    message: &Message,
) -> TlsChoice {
    let domain = domain.to_lowercase();
    let plain = |level: TlsLevel, label: Option<String>| TlsChoice {
        level,
        sts: None,
        label,
        applied: tls_results::no_policy(&domain),
    };
    if let Some((_, level)) = tables.tls_policy_entry(&domain) {
        return plain(level, (level != TlsLevel::May).then(|| format!("tls_policy={level}")));
    }
    if message.tls_optional && !message.require_tls {
        return plain(TlsLevel::May, Some("tls_required=no".into()));
    }
    if !(to_mx && config.outbound.mta_sts) {
        return plain(TlsLevel::May, None);
    }
    let cache_dir = config.data_dir.join("mta-sts");
    let how = sts::Fetching {
        cache_dir: &cache_dir,
        ca_file: config.outbound.ca_file.as_deref(),
        allow: &config.outbound.mta_sts_allow_networks,
        timeout: config.outbound.mta_sts_timeout.0,
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (policy, failure) = pool.sts.policy_for(resolver, &domain, how, now).await;
    if let Some((result, detail)) = failure {
        let applied = AppliedPolicy { kind: PolicyKind::Sts, ..tls_results::no_policy(&domain) };
        pool.tls_results.record(tls_results::failed(&applied, result, None, (None, None), detail));
    }
    match policy {
        Some(mut p) if p.mode != sts::Mode::None => {
            let label = Some(format!("sts={}", p.mode));
            let applied = AppliedPolicy {
                domain: domain.clone(),
                kind: PolicyKind::Sts,
                strings: p.lines(),
                mx_patterns: p.mx.clone(),
            };
            if message.require_tls {
                p.mode = sts::Mode::Enforce;
            }
            let level = if p.mode == sts::Mode::Enforce { TlsLevel::Verify } else { TlsLevel::May };
            TlsChoice { level, sts: Some(p), label, applied }
        }
        _ => plain(TlsLevel::May, None),
    }
}

/// RFC 8689 §4.2.1: a REQUIRETLS message needs a validated TLS path to `domain` (DANE for
/// every MX host, or a certificate that must verify for the MX host, from MTA-STS or a
/// `tls_policy` `verify`); without one it bounces with 5.7.30 at once, since retrying would
/// not give it one.
fn requiretls_path(domain: &str, level: TlsLevel, all_dane: bool) -> Result<(), Outcome> {
    if level == TlsLevel::Verify || all_dane {
        return Ok(());
    }
    let text = format!(
        "REQUIRETLS support required: no validated TLS path to {domain} (no DANE, no MTA-STS policy \
         and no tls_policy verify entry)"
    );
    Err(Outcome::PermFail(Reply::new(550, EnhancedStatus(5, 7, 30), text)))
}

/// Looks up DANE for the MX `hosts` of `domain` (RFC 7672 §2.2) and fills in each host's
/// [`dane::HostDane`]; `Ok(true)` when at least one host is DANE-secured.
///
/// # Errors
/// The MX records did not validate (`4.7.5`, recorded as `dnssec-invalid` for TLS reports) or
/// could not be looked up (`4.4.3`): deferred, never delivered in clear text.
async fn dane_hosts(
    dnssec: &postern_dns::dnssec::DnssecResolver,
    domain: &str,
    hosts: &mut [nexthop::Host],
    applied: &AppliedPolicy,
    results: &tls_results::TlsResults,
) -> Result<bool, Outcome> {
    match dane::secure_mx(dnssec, domain).await {
        Ok(false) => return Ok(false),
        Ok(true) => {}
        Err((true, why)) => {
            let tlsa = AppliedPolicy { kind: PolicyKind::Tlsa, ..applied.clone() };
            results.record(tls_results::failed(&tlsa, TlsFailure::DnssecInvalid, None, (None, None), why.clone()));
            let text = format!("DANE: the MX records of {domain} do not validate with DNSSEC ({why})");
            return Err(Outcome::temp(EnhancedStatus(4, 7, 5), text));
        }
        Err((false, why)) => {
            return Err(Outcome::temp(
                EnhancedStatus(4, 4, 3),
                format!("DNSSEC lookup of MX for {domain} failed: {why}"),
            ));
        }
    }
    for h in hosts.iter_mut() {
        h.dane = dane::host(dnssec, &h.name, h.port).await;
    }
    Ok(hosts.iter().any(|h| matches!(h.dane, dane::HostDane::Tlsa(_))))
}

/// Applies an MTA-STS policy to the MX hosts of `domain` (RFC 8461 §4.1, §5): `enforce` keeps
/// only the hosts its `mx` patterns match; `testing` keeps all and logs the others.
///
/// Each host outside the policy is recorded for TLS reporting (`validation-failure`).
///
/// # Errors
/// Under `enforce`, no host matches: `4.7.5` for every recipient (deferred, bounced at the
/// message's `max_age`).
fn sts_hosts(
    (id, domain): (&str, &str),
    (policy, applied): (&sts::Policy, &AppliedPolicy),
    results: &tls_results::TlsResults,
    hosts: &mut Vec<nexthop::Host>,
) -> Result<(), Outcome> {
    let patterns = policy.mx.join(", ");
    for h in hosts.iter().filter(|h| !policy.matches(&h.name)) {
        let fate = if policy.mode == sts::Mode::Enforce { "not used" } else { "used anyway (testing)" };
        let what = format!("MX {} of {domain} is not in its MTA-STS policy (mx: {patterns})", h.name);
        tracing::warn!("{id}: {what}: {fate}");
        results.record(tls_results::failed(applied, TlsFailure::ValidationFailure, Some(&h.name), (None, None), what));
    }
    if policy.mode != sts::Mode::Enforce {
        return Ok(());
    }
    hosts.retain(|h| policy.matches(&h.name));
    if hosts.is_empty() {
        let text = format!("no MX host of {domain} matches its MTA-STS policy (mx: {patterns})");
        return Err(Outcome::temp(EnhancedStatus(4, 7, 5), text));
    }
    Ok(())
}

/// Delivers `message` to `recipients` (all in `domain`) using the configuration and tables in
/// force, reusing an idle connection from `pool` to the same destination when there is one and
/// keeping at most `[outbound] max_per_destination` deliveries to it at once. Never fails as a
/// whole: every error becomes an outcome per recipient.
pub async fn deliver<R: Resolver>(
    resolver: &R,
    pool: &Pool,
    config: &Arc<Config>,
    tables: &Tables,
    domain: &str,
    recipients: &[Rcpt],
    message: &Message,
) -> Vec<RecipientResult> {
    let target = nexthop::target_for(
        domain,
        &message.reverse_path,
        tables,
        config.relay.smarthost.as_deref(),
        config.outbound.port,
    );
    let started = std::time::Instant::now();
    let to_mx = target.mx_lookup && target.name.eq_ignore_ascii_case(domain);
    let TlsChoice { mut level, mut sts, mut label, mut applied } =
        tls_for(resolver, pool, (config, tables), (domain, to_mx), message).await;
    let mut hosts = match nexthop::hosts(resolver, &target).await {
        Ok(h) => h,
        Err(outcome) => return RecipientResult::all(recipients, &outcome, "none", None),
    };
    let entry = tables.tls_policy_entry(&domain.to_lowercase()).map(|(_, l)| l);
    let waived = message.tls_optional && !message.require_tls;
    let wants_dane = to_mx && entry.map_or(config.outbound.dane && !waived, TlsLevel::wants_dane);
    if wants_dane && let Some(dnssec) = pool.dnssec.get() {
        match dane_hosts(dnssec, domain, &mut hosts, &applied, &pool.tls_results).await {
            Err(outcome) => return RecipientResult::all(recipients, &outcome, "none", None),
            // RFC 8461 §2: DANE wins over MTA-STS.
            Ok(true) if sts.is_some() => {
                tracing::info!("{}: {domain} is DANE-secured: its MTA-STS policy is not applied", message.id);
                (level, sts, label, applied) = (TlsLevel::May, None, None, tls_results::no_policy(domain));
            }
            Ok(_) => {}
        }
    }
    let all_dane = !hosts.is_empty() && hosts.iter().all(|h| matches!(h.dane, dane::HostDane::Tlsa(_)));
    if message.require_tls {
        if let Err(outcome) = requiretls_path(domain, level, all_dane) {
            return RecipientResult::all(recipients, &outcome, "none", None);
        }
        label = Some(label.map_or_else(|| "requiretls".to_owned(), |l| format!("{l} requiretls")));
    }
    // A cached connection serves only deliveries under the same TLS policy.
    let label_key = label.as_deref().unwrap_or("may");
    let key = format!("{}{}:{} {label_key}", if target.mx_lookup { "" } else { "=" }, target.name, target.port);
    let _slot = pool.permit(&key, config.outbound.max_per_destination).await;
    if let Some(policy) = &sts
        && let Err(outcome) = sts_hosts((&message.id, domain), (policy, &applied), &pool.tls_results, &mut hosts)
    {
        return RecipientResult::all(recipients, &outcome, "none", None);
    }
    let dest = transaction::Destination { key: &key, level, label, applied, hosts: &hosts, started };
    transaction::deliver_via(resolver, config, pool, dest, recipients, message).await
}
