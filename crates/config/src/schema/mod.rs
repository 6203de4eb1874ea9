//! The configuration schema: every key, its default and its meaning. These files are the
//! reference (`[policy]` in policy.rs; `[dkim]`, `[authentication]`, `[dmarc_reports]` in auth.rs;
//! `[delivery]` in delivery.rs, `[forwarding]` in forwarding.rs, `[[milter]]` in milter.rs, `[alerts]` and `[[alert]]` in alerts.rs, `[outbound]` in outbound.rs, `[server]` and `[timeouts]` in server.rs);
//! docs/configuration.md follows them. Unknown keys are errors (`deny_unknown_fields`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::resolve;
use crate::units::{Seconds, Size};

mod alerts;
mod auth;
mod delivery;
mod forwarding;
mod milter;
mod outbound;
mod policy;
mod sandbox;
mod server;
mod store;
mod validate;

pub use alerts::{Alert, AlertKind, Alerts, Rule};
pub use auth::{Action, Authentication, Dkim, DkimKey, DkimOnError, Reports, SpfAt};
pub use delivery::{Delivery, LocalTransport};
pub use forwarding::Forwarding;
pub use milter::{Milter, MilterDefault};
pub use outbound::{IpVersion, Outbound, TlsLevel};
pub use policy::{Check, DnsTempError, POLICY_CHECKS, Policy, PolicyException, ZoneSpec};
pub use sandbox::WritePaths;
pub use server::{Server, Timeouts};
pub use store::{FailMode, RateCount, RateLimits, RateRule, RateSubject, Store, StoreBackend};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file this was read from (not a key).
    #[serde(skip)]
    pub source: PathBuf,
    /// Our name in the greeting, the EHLO reply and Received headers; it should equal the PTR
    /// of the server's public IP. Default: the system host name.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Where the spool and (by default) the mailboxes live. Default `/var/lib/postern`; relative
    /// paths are relative to the configuration file's folder.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Sockets to listen on: `[[listener]]` tables.
    #[serde(default)]
    pub listener: Vec<Listener>,
    /// `[domains]`.
    #[serde(default)]
    pub domains: Domains,
    /// `[tables]`: paths of the table files.
    #[serde(default)]
    pub tables: TablePaths,
    /// `[delivery]`.
    #[serde(default)]
    pub delivery: Delivery,
    /// `[relay]`.
    #[serde(default)]
    pub relay: Relay,
    /// `[limits]`.
    #[serde(default)]
    pub limits: Limits,
    /// `[server]`.
    #[serde(default)]
    pub server: Server,
    /// `[timeouts]`.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// `[queue]`.
    #[serde(default)]
    pub queue: Queue,
    /// `[spool]`.
    #[serde(default)]
    pub spool: SpoolSettings,
    /// `[dns]`.
    #[serde(default)]
    pub dns: Dns,
    /// `[outbound]`: the SMTP client that delivers to other hosts.
    #[serde(default)]
    pub outbound: Outbound,
    /// `[tls]`: the server certificate for STARTTLS and implicit TLS.
    #[serde(default)]
    pub tls: Tls,
    /// `[dkim]`: signing of mail that leaves.
    #[serde(default)]
    pub dkim: Dkim,
    /// `[authentication]`: SPF / DKIM / DMARC / ARC checks of mail that arrives.
    #[serde(default)]
    pub authentication: Authentication,
    /// `[dmarc_reports]`: aggregate reports to the domains we receive mail from.
    #[serde(default)]
    pub dmarc_reports: Reports,
    /// `[tls_reports]`: TLS reports (RFC 8460) to the domains we deliver to.
    #[serde(default)]
    pub tls_reports: Reports,
    /// `[metrics]`: the Prometheus endpoint.
    #[serde(default)]
    pub metrics: Metrics,
    /// `[policy]`: client checks right after EHLO.
    #[serde(default)]
    pub policy: Policy,
    /// `[log]`: where the daemon's log lines go.
    #[serde(default)]
    pub log: Log,
    /// `[forwarding]`: SRS for mail forwarded to other domains.
    #[serde(default)]
    pub forwarding: Forwarding,
    /// `[[milter]]`: content filters (rspamd, opendkim, ClamAV) over the milter protocol, in
    /// order, before the 250.
    #[serde(default)]
    pub milter: Vec<Milter>,
    /// `[alerts]`: where alert mails go, how often rules are checked.
    #[serde(default)]
    pub alerts: Alerts,
    /// `[[alert]]`: rules watched by the daemon, a mail on each change of state.
    #[serde(default)]
    pub alert: Vec<Alert>,
    /// `[store]`: where state shared between hosts lives (embedded or Redis).
    #[serde(default)]
    pub store: Store,
    /// `[rate_limits]`: messages and recipients per window, counted in the `[store]`.
    #[serde(default)]
    pub rate_limits: RateLimits,
}

/// `[log]`: one line per event, keyed by session and queue ID (docs/operations.md, "Logs").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// `"stderr"` (default: systemd's journal takes it) or `"syslog"` (facility mail, for
    /// hosts that keep `/var/log/mail.log`).
    #[serde(default)]
    pub target: LogTarget,
    /// The syslog socket (RFC 3164 datagrams). Default `"/dev/log"`.
    #[serde(default = "default_syslog_socket")]
    pub syslog_socket: PathBuf,
}

impl Default for Log {
    fn default() -> Self {
        Self { target: LogTarget::default(), syslog_socket: default_syslog_socket() }
    }
}

fn default_syslog_socket() -> PathBuf {
    PathBuf::from("/dev/log")
}

/// `[log] target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// Standard error.
    #[default]
    Stderr,
    /// The local syslog daemon, facility mail.
    Syslog,
}

pub(crate) fn yes() -> bool {
    true
}

/// `[tls]`: the certificate and key the listeners present (RFC 3207 STARTTLS on `mx` and
/// `submission`, RFC 8314 implicit TLS on `submissions`). Paths are relative to the
/// configuration file's folder. Without `cert`, STARTTLS is not offered (and `submission` /
/// `submissions` listeners are refused by `check-config`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM file with the server certificate first, then its chain: certbot's `fullchain.pem`
    /// as it is.
    pub cert: Option<PathBuf>,
    /// PEM file with the private key (PKCS#8, PKCS#1 RSA or SEC1 EC): certbot's `privkey.pem`.
    pub key: Option<PathBuf>,
    /// Longest a TLS handshake may take. Default `"60s"`.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: Seconds,
    /// More certificates, chosen by the name the client asks for (SNI) among each
    /// certificate's DNS names; `cert`/`key` above serve clients that ask for another name or
    /// none (most SMTP clients send none).
    #[serde(default)]
    pub sni: Vec<CertificatePair>,
}

/// One `[[tls.sni]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatePair {
    /// PEM file: certificate then chain (`fullchain.pem`).
    pub cert: PathBuf,
    /// PEM file: private key (`privkey.pem`).
    pub key: PathBuf,
}

fn default_handshake_timeout() -> Seconds {
    Seconds(Duration::from_secs(60))
}

/// `[metrics]`: Prometheus metrics over HTTP (docs/metrics.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Where `GET /metrics` is served, e.g. `"127.0.0.1:9465"`. Default: off. The endpoint has
    /// no authentication: keep it on loopback or a monitoring network.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// `[dns]`: the resolver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Name servers as `"IP:port"`; empty (default) uses `/etc/resolv.conf`. Tests point this at
    /// a DNS server on loopback.
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
    /// Time to wait for one answer. Default `"5s"`.
    #[serde(default = "default_dns_timeout")]
    pub timeout: Seconds,
    /// Tries per name server. Default 2.
    #[serde(default = "default_dns_attempts")]
    pub attempts: usize,
    /// The DNSSEC trust anchors of the DANE lookups: a file of `NAME TTL IN DNSKEY FLAGS 3 ALG
    /// KEY` lines (zone-file form). Default: the root's (built in). Names under none of them
    /// are treated as unsigned.
    #[serde(default)]
    pub trust_anchor: Option<PathBuf>,
}

fn default_dns_timeout() -> Seconds {
    Seconds(Duration::from_secs(5))
}
fn default_dns_attempts() -> usize {
    2
}
fn default_max_age() -> Seconds {
    Seconds(Duration::from_secs(5 * 86400))
}
fn default_active_limit() -> usize {
    10_000
}

fn default_queue_concurrency() -> usize {
    100
}

/// `[spool]`: how the spool makes accepted mail durable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolSettings {
    /// How message data is flushed before `250`: `"syncfs"` (default) shares one `syncfs(2)`
    /// between all sessions committing at the same moment (group commit; it also flushes other
    /// dirty data on the same filesystem, so give the spool its own filesystem on a busy host),
    /// `"fsync"` flushes each file on its own. Both fsync the queue folder after the renames.
    #[serde(default = "default_spool_sync")]
    pub sync: SpoolSync,
    /// Free space the spool's filesystem must keep (`"500MiB"`, or `"5%"` of its size): below
    /// it, MAIL is answered `452 4.3.1` (RFC 3463 §3.4, before the client sends any data)
    /// until space is free again (checked at most once a second). Default: 1.5 ×
    /// `[limits] max_message_size`, Postfix's floor for `queue_minfree`.
    #[serde(default)]
    pub min_free: Option<crate::units::FreeSpace>,
}

/// The values of `[spool] sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpoolSync {
    /// Group commit with `syncfs(2)`.
    Syncfs,
    /// `fsync(2)` per file.
    Fsync,
}

fn default_spool_sync() -> SpoolSync {
    SpoolSync::Syncfs
}

/// One `[[listener]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `"IP:port"`, e.g. `"0.0.0.0:25"` or `"[::]:25"`; port 0 picks a free port (tests).
    pub address: SocketAddr,
    /// What the listener is for.
    pub role: Role,
    /// Whether AUTH (RFC 4954) is offered, always only after TLS. Default: `true` on
    /// `submission` and `submissions`, `false` on `mx` (port 25 never offers AUTH by default).
    #[serde(default)]
    pub auth: Option<bool>,
}

impl Listener {
    /// Whether this listener offers AUTH once TLS is up.
    pub fn offers_auth(&self) -> bool {
        self.auth.unwrap_or(self.role != Role::Mx)
    }
}

/// The job of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Port 25: mail from the world for our domains, relay for trusted networks.
    Mx,
    /// Port 587 (RFC 6409): STARTTLS, then AUTH is required before MAIL.
    Submission,
    /// Port 465 (RFC 8314): implicit TLS from the first byte, then AUTH is required before MAIL.
    Submissions,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mx => "mx",
            Self::Submission => "submission",
            Self::Submissions => "submissions",
        })
    }
}

/// `[domains]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domains {
    /// Domains delivered locally (sendmail's `local-host-names`); compared case-insensitively.
    /// The first one is the domain of `RCPT TO:<postmaster>`.
    #[serde(default)]
    pub local: Vec<String>,
    /// The domain that bare local names (`root`, `www-data`) and unqualified `From:` headers
    /// of locally submitted mail (`sendmail`) get, as sendmail's `$j` and Postfix's
    /// `myorigin`. Default: the first of `local`.
    #[serde(default)]
    pub origin: Option<String>,
}

impl Domains {
    /// The domain of bare local names: `origin`, else the first local domain (validation
    /// guarantees one exists).
    pub fn origin(&self) -> &str {
        self.origin.as_deref().or(self.local.first().map(String::as_str)).unwrap_or("localhost")
    }
}

/// `[tables]`: table files, relative to the configuration file's folder. Each is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablePaths {
    /// One mailbox per line: `name[:password-hash[:...]]` (Dovecot passwd-file compatible).
    pub users: Option<PathBuf>,
    /// aliases(5): `name: target, target, ...`, continuation lines start with white space.
    pub aliases: Option<PathBuf>,
    /// sendmail virtusertable: `user@domain target`, `user+detail@domain target`,
    /// `@domain target` (catch-all).
    #[serde(rename = "virtual")]
    pub virtual_: Option<PathBuf>,
    /// sendmail mailertable: `domain` or `.suffix` → `relay:[host]:port`, `relay:host`,
    /// `local:mailbox`, `error:5.3.0:Text`.
    pub routes: Option<PathBuf>,
    /// sendmail smarttable: the sender `user@domain` or `@domain` → `relay:[host]:port` or
    /// `relay:host`. Decides the next hop of relayed mail from that sender, before `routes`.
    pub sender_routes: Option<PathBuf>,
    /// Which authenticated logins may use which sender addresses (Postfix's
    /// `smtpd_sender_login_maps`): `user@domain login[, login...]` or `@domain login...`. An
    /// address without an entry belongs to the users-table mailbox it is delivered to.
    pub senders: Option<PathBuf>,
    /// The outbound TLS policy per recipient domain (Postfix's `smtp_tls_policy_maps`):
    /// `domain` or `.suffix` → `none`, `may` (the default), `encrypt` or `verify`.
    pub tls_policy: Option<PathBuf>,
}

/// `[relay]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    /// Clients in these networks may relay to any domain (sendmail's relay from localhost).
    /// Default `["127.0.0.0/8", "::1/128"]`.
    #[serde(default = "default_trusted")]
    pub trusted_networks: Vec<IpNet>,
    /// Where mail for other domains goes when no route matches, in routes-table syntax
    /// (`"[smtp.provider.test]:587"` style: `[host]` skips the MX lookup, `host` looks up its
    /// MX). Default: none (MX of the recipient domain).
    #[serde(default)]
    pub smarthost: Option<String>,
}

/// `[limits]`: per-session and per-message bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest message accepted, in bytes (SIZE, RFC 1870). Default `"25MiB"`.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: Size,
    /// Recipients per message; more get 452 4.5.3. Default 100.
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
    /// Longest command line in bytes, CRLF included. Default 2048.
    #[serde(default = "default_max_line_length")]
    pub max_line_length: usize,
    /// Error replies in one session before it is closed with 421. Default 20.
    #[serde(default = "default_max_errors")]
    pub max_errors: usize,
    /// `Received:` headers a message may carry; one with more is looping and is refused at the
    /// end of DATA with `554 5.4.6` (RFC 5321 §6.3; Postfix's `hopcount_limit`). Default 50.
    #[serde(default = "default_max_hops")]
    pub max_hops: usize,
}

/// `[queue]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    /// First retry after a temporary delivery failure; doubled each time. Default `"5m"`.
    #[serde(default = "default_min_backoff")]
    pub min_backoff: Seconds,
    /// Longest wait between retries. Default `"1h"`.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Seconds,
    /// Messages being delivered at once (local and remote). Default 100, like Postfix's
    /// `default_process_limit`; each holds its message in memory while it is delivered. Read at
    /// start.
    #[serde(default = "default_queue_concurrency")]
    pub max_concurrency: usize,
    /// Messages whose envelopes are held in memory at once (Postfix's
    /// `qmgr_message_active_limit`): those being delivered, and those just received, kept for
    /// their first attempt. The rest of the queue costs the scheduler a few dozen bytes per
    /// message; their envelopes are read from the spool when an attempt starts. Default
    /// 10000; at least `max_concurrency`. Read at start.
    #[serde(default = "default_active_limit")]
    pub active_limit: usize,
    /// How long a message may stay queued before its pending recipients fail with a DSN
    /// (status 4.4.7). Default `"5d"` (RFC 5321 §4.5.4.1 suggests 4-5 days).
    #[serde(default = "default_max_age")]
    pub max_age: Seconds,
    /// After this long in the queue, the sender gets one "delayed" DSN. Default: off.
    #[serde(default)]
    pub warn_after: Option<Seconds>,
    /// `"normal"` (default) delivers at once; `"queue-only"` accepts and holds every message
    /// until `postern queue flush` (a capture instance, sendmail's queue-only mode).
    #[serde(default)]
    pub mode: QueueMode,
}

/// `[queue] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueMode {
    /// Deliver as soon as possible.
    #[default]
    Normal,
    /// Deliver only when flushed.
    QueueOnly,
}

fn default_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "localhost".into(), |s| s.trim().to_owned())
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/postern")
}
fn default_trusted() -> Vec<IpNet> {
    vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
}
fn default_max_message_size() -> Size {
    Size(25 << 20)
}
fn default_max_recipients() -> usize {
    100
}
fn default_max_line_length() -> usize {
    2048
}
fn default_max_errors() -> usize {
    20
}
fn default_max_hops() -> usize {
    50
}
pub(super) fn five_minutes() -> Seconds {
    Seconds(Duration::from_secs(300))
}
fn default_min_backoff() -> Seconds {
    Seconds(Duration::from_secs(300))
}
fn default_max_backoff() -> Seconds {
    Seconds(Duration::from_secs(3600))
}

macro_rules! default_from_serde {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                toml::from_str("").expect("defaults deserialize")
            }
        }
    )*};
}
default_from_serde!(
    Delivery,
    Relay,
    Limits,
    Server,
    Timeouts,
    Queue,
    SpoolSettings,
    Dns,
    Outbound,
    Tls,
    Dkim,
    Authentication,
    Reports,
    Metrics,
    Policy
);

impl Config {
    /// Makes `data_dir` and table paths absolute against `base` (the configuration's folder).
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        self.data_dir = resolve(base, &self.data_dir);
        let t = &mut self.tables;
        let tables =
            [&mut t.users, &mut t.aliases, &mut t.virtual_, &mut t.routes, &mut t.sender_routes, &mut t.senders];
        for p in tables
            .into_iter()
            .chain([
                &mut t.tls_policy,
                &mut self.tls.cert,
                &mut self.tls.key,
                &mut self.outbound.ca_file,
                &mut self.store.ca_file,
                &mut self.dns.trust_anchor,
            ])
            .flatten()
        {
            *p = resolve(base, p);
        }
        for pair in &mut self.tls.sni {
            pair.cert = resolve(base, &pair.cert);
            pair.key = resolve(base, &pair.key);
        }
        if let Some(p) = &mut self.forwarding.srs_secret_file {
            *p = resolve(base, p);
        }
        if let Some(d) = &mut self.forwarding.srs_domain {
            *d = d.to_lowercase();
        }
        for p in [&mut self.policy.block_networks_file, &mut self.policy.allow_networks_file].into_iter().flatten() {
            *p = resolve(base, p);
        }
        for k in &mut self.dkim.key {
            k.private_key = resolve(base, &k.private_key);
            k.domain = k.domain.to_lowercase();
        }
        for d in &mut self.authentication.exempt_domains {
            *d = d.to_lowercase();
        }
        for d in &mut self.domains.local {
            *d = d.to_lowercase();
        }
        if let Some(o) = &mut self.domains.origin {
            *o = o.to_lowercase();
        }
    }

    /// The Maildir root of `mailbox`: the `[delivery] maildir` template with `{data_dir}` and
    /// `{mailbox}` substituted.
    pub fn maildir_of(&self, mailbox: &str) -> PathBuf {
        PathBuf::from(
            self.delivery.maildir.replace("{data_dir}", &self.data_dir.to_string_lossy()).replace("{mailbox}", mailbox),
        )
    }

    /// The mbox file of `mailbox`: the `[delivery] mbox` template with `{data_dir}` and
    /// `{mailbox}` substituted.
    pub fn mbox_of(&self, mailbox: &str) -> PathBuf {
        PathBuf::from(
            self.delivery.mbox.replace("{data_dir}", &self.data_dir.to_string_lossy()).replace("{mailbox}", mailbox),
        )
    }

    /// The control socket of the queue tools, `{data_dir}/control.sock`.
    pub fn control_socket(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }

    /// The submission socket of `postern sendmail`, `{data_dir}/submit.sock`.
    pub fn submit_socket(&self) -> PathBuf {
        self.data_dir.join("submit.sock")
    }

    /// The spool folder, `{data_dir}/spool`.
    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir.join("spool")
    }
}
