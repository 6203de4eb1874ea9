//! `[store]` (where state shared between hosts lives) and `[rate_limits]` with its
//! `[[rate_limits.rule]]` entries (docs/scaling.md).

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::{Config, yes};
use crate::error::{ConfigError, line_of_key, nth_line_of_key};
use crate::units::Seconds;

/// `[store] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// redb files in `data_dir` and memory: one host.
    #[default]
    Embedded,
    /// Redis or Valkey ≥ 7 at `url`, shared by every host of a cluster.
    Redis,
}

/// What a feature does while the `[store]` cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Accept, as if the check passed (mail keeps flowing).
    #[default]
    Open,
    /// Defer with `451 4.7.1` (the sender retries; nothing unchecked gets in).
    Closed,
}

/// `[store]`: greylisting triplets, failed-AUTH bans, rate-limit counters, DMARC and TLS
/// report aggregates and the lease that lets one host send a day's reports. The queue is never
/// in it: each host's spool is its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    /// `"embedded"` (default: redb files in `data_dir` and memory, one host) or `"redis"`
    /// (Redis or Valkey ≥ 7 at `url`, shared by every host that names it).
    #[serde(default)]
    pub backend: StoreBackend,
    /// The Redis server: `redis://[:PASSWORD@]HOST[:PORT][/DB]`, `rediss://` for TLS,
    /// `redis+unix:///PATH` for a socket. Default `"redis://127.0.0.1:6379/0"`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Prefix of every key, so that clusters or programs can share a server. Default
    /// `"postern:"`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// How long one call may take, connecting included; past it the call counts as failed.
    /// Default `"500ms"`.
    #[serde(default = "default_timeout")]
    pub timeout: Seconds,
    /// For `rediss://`: a PEM file of the CA certificates the server's certificate must chain
    /// to, instead of Mozilla's roots (a private CA). Read at start. Default: Mozilla's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Greylisting while the store cannot be reached: `"open"` (default: accept) or `"closed"`
    /// (`451 4.7.1`).
    #[serde(default)]
    pub greylist_fail: FailMode,
    /// Rate limits while the store cannot be reached: `"open"` (default: accept) or
    /// `"closed"` (`451 4.7.1`).
    #[serde(default)]
    pub rate_limit_fail: FailMode,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            backend: StoreBackend::default(),
            url: default_url(),
            prefix: default_prefix(),
            timeout: default_timeout(),
            ca_file: None,
            greylist_fail: FailMode::default(),
            rate_limit_fail: FailMode::default(),
        }
    }
}

fn default_url() -> String {
    "redis://127.0.0.1:6379/0".to_owned()
}

fn default_prefix() -> String {
    "postern:".to_owned()
}

fn default_timeout() -> Seconds {
    Seconds(Duration::from_millis(500))
}

/// `[[rate_limits.rule]] per`: whose mail a rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateSubject {
    /// The client's network (`ipv4_prefix`, `ipv6_prefix`).
    Client,
    /// The authenticated user (submission); sessions without AUTH are not counted.
    User,
    /// The domain of the reverse-path (MAIL FROM); the null sender is not counted.
    SenderDomain,
}

impl RateSubject {
    /// The name in keys and logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::User => "user",
            Self::SenderDomain => "sender_domain",
        }
    }
}

/// `[[rate_limits.rule]] count`: what a rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateCount {
    /// Transactions, counted at MAIL FROM (Postfix's `smtpd_client_message_rate_limit`).
    Messages,
    /// Accepted recipients, counted at RCPT TO.
    Recipients,
}

impl RateCount {
    /// The name in keys and logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Messages => "messages",
            Self::Recipients => "recipients",
        }
    }
}

/// One `[[rate_limits.rule]]`: at most `limit` of `count` per `window` for each `per`
/// subject, a burst of the whole `limit` allowed (the generic cell rate algorithm). Over it:
/// `450 4.7.1` with the seconds to wait.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateRule {
    /// Whose mail: `"client"`, `"user"` or `"sender_domain"`.
    pub per: RateSubject,
    /// What: `"messages"` or `"recipients"`.
    pub count: RateCount,
    /// How many per `window` (at least 1).
    pub limit: u32,
    /// The window. Default `"1h"`.
    #[serde(default = "default_window")]
    pub window: Seconds,
    /// A name for logs and store keys. Default: `PER-COUNT` (`user-messages`).
    #[serde(default)]
    pub name: Option<String>,
}

impl RateRule {
    /// The rule's name: `name`, or `PER-COUNT`.
    #[must_use]
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| format!("{}-{}", self.per.as_str(), self.count.as_str()))
    }
}

fn default_window() -> Seconds {
    Seconds(Duration::from_secs(3600))
}

/// `[rate_limits]`: messages and recipients per window per client network, authenticated user
/// and sender domain, counted in the `[store]` so that a limit holds across hosts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// The rules; none by default.
    #[serde(default)]
    pub rule: Vec<RateRule>,
    /// The network an IPv4 client is counted in. Default 24.
    #[serde(default = "default_v4")]
    pub ipv4_prefix: u8,
    /// The network an IPv6 client is counted in. Default 64.
    #[serde(default = "default_v6")]
    pub ipv6_prefix: u8,
    /// Clients of `[relay] trusted_networks` are not counted (as Postfix's
    /// `smtpd_client_event_limit_exceptions = $mynetworks`). Default `true`.
    #[serde(default = "yes")]
    pub exempt_trusted: bool,
    /// Further clients that are not counted.
    #[serde(default)]
    pub exempt_networks: Vec<IpNet>,
    /// Authenticated users that are not counted (e.g. a mailing-list account).
    #[serde(default)]
    pub exempt_users: Vec<String>,
    /// Sender domains that are not counted.
    #[serde(default)]
    pub exempt_domains: Vec<String>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            rule: Vec::new(),
            ipv4_prefix: default_v4(),
            ipv6_prefix: default_v6(),
            exempt_trusted: true,
            exempt_networks: Vec::new(),
            exempt_users: Vec::new(),
            exempt_domains: Vec::new(),
        }
    }
}

fn default_v4() -> u8 {
    24
}

fn default_v6() -> u8 {
    64
}

/// `[store]` and `[rate_limits]`: a usable Redis URL, a positive timeout, rules that can
/// allow something, prefixes within the address lengths.
pub(super) fn validate(config: &Config, text: &str) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut err = |line: Option<usize>, key: &str, msg: &str| {
        errors.push(ConfigError::new(&config.source, line, key, msg));
    };
    let st = &config.store;
    let schemes = ["redis://", "rediss://", "redis+unix://", "unix://"];
    if st.backend == StoreBackend::Redis && !schemes.iter().any(|s| st.url.starts_with(s)) {
        let msg = "a Redis URL: redis://HOST:PORT/DB, rediss:// for TLS, or redis+unix:///PATH";
        err(line_of_key(text, "store.url").or(line_of_key(text, "store.backend")), "store.url", msg);
    }
    if st.timeout.0.is_zero() {
        err(line_of_key(text, "store.timeout"), "store.timeout", "must be greater than zero, e.g. \"500ms\"");
    }
    let r = &config.rate_limits;
    if r.ipv4_prefix > 32 {
        err(line_of_key(text, "rate_limits.ipv4_prefix"), "rate_limits.ipv4_prefix", "at most 32");
    }
    if r.ipv6_prefix > 128 {
        err(line_of_key(text, "rate_limits.ipv6_prefix"), "rate_limits.ipv6_prefix", "at most 128");
    }
    let mut names = std::collections::HashSet::new();
    for (i, rule) in r.rule.iter().enumerate() {
        let line = nth_line_of_key(text, "rate_limits.rule.per", i);
        if rule.limit == 0 || rule.window.0.is_zero() {
            err(line, "rate_limits.rule.limit", "limit and window must be greater than zero");
        }
        if !names.insert(rule.label()) {
            let msg = format!("two rules are named {:?}: give each its own name", rule.label());
            err(line, "rate_limits.rule.name", &msg);
        }
    }
    errors
}
