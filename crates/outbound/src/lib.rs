//! Outbound delivery. This crate owns the way from "this message for these recipients of one
//! domain" to one outcome per recipient: choosing the next hop ([`nexthop`]: routes table,
//! smarthost, MX, addresses), connecting without letting one dead address stall the others
//! ([`connect`]), running the SMTP transaction ([`transaction`]), and the single mapping from
//! every kind of error to temporary or permanent ([`Outcome`]).

pub mod connect;
pub mod lmtp;
pub mod nexthop;
pub mod tls;
pub mod transaction;

use std::sync::Arc;

use postern_config::schema::TlsLevel;
use postern_config::{Config, Tables};
use postern_dns::Resolver;
use postern_types::{EnhancedStatus, Reply};

pub use transaction::{Message, Pool};

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
    pub address: String,
    /// `NOTIFY=` value, when the sender gave one.
    pub notify: Option<String>,
    /// `ORCPT=` value (`rfc822;xtext`).
    pub orcpt: Option<String>,
}

/// One recipient's result and the host that gave it (`host[ip]:port`, or `none`).
#[derive(Debug, Clone)]
pub struct RecipientResult {
    /// The recipient address.
    pub recipient: String,
    /// Its outcome.
    pub outcome: Outcome,
    /// The relay that answered, for the log's `relay=`: `host[ip]:port`, or `none`.
    pub relay: String,
    /// The host name of that relay, when one answered (the DSN's Remote-MTA, RFC 3464 §2.3.5).
    pub remote_host: Option<String>,
    /// How the connection was protected, for the log: `tls=TLSv1.3 cipher=... verify=OK` or
    /// `tls=none`.
    pub tls: String,
    /// The next hop offered DSN and received the NOTIFY/ORCPT parameters, so it is now
    /// responsible for success notifications (RFC 3461 §5.2.2).
    pub dsn_passed_on: bool,
}

impl RecipientResult {
    /// The same outcome for every recipient (a failure before any recipient was tried).
    pub(crate) fn all(recipients: &[Rcpt], outcome: &Outcome, relay: &str, remote_host: Option<&str>) -> Vec<Self> {
        recipients
            .iter()
            .map(|r| Self {
                recipient: r.address.clone(),
                outcome: outcome.clone(),
                relay: relay.to_owned(),
                remote_host: remote_host.map(str::to_owned),
                tls: "tls=none".to_owned(),
                dsn_passed_on: false,
            })
            .collect()
    }
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
    let level = tables.tls_policy_entry(&domain.to_lowercase()).map_or_else(TlsLevel::default, |(_, l)| l);
    // A cached connection serves only deliveries of the same TLS level.
    let key = format!("{}{}:{} tls={level}", if target.mx_lookup { "" } else { "=" }, target.name, target.port);
    let _slot = pool.permit(&key, config.outbound.max_per_destination).await;
    let hosts = match nexthop::hosts(resolver, &target).await {
        Ok(h) => h,
        Err(outcome) => return RecipientResult::all(recipients, &outcome, "none", None),
    };
    let dest = transaction::Destination { key: &key, level, hosts: &hosts };
    transaction::deliver_via(resolver, config, pool, dest, recipients, message).await
}
