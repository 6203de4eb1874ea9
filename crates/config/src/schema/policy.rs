//! `[policy]`: the anti-spam checks at connect, after EHLO and at MAIL/RCPT, their actions and
//! `[[policy.exception]]`.

use crate::error::{ValueError, invalid};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::yes;
use crate::units::Seconds;

/// `[policy]`: checks of the client made right after HELO/EHLO, on `mx` listeners, for clients
/// that are neither trusted nor authenticated, cheapest first: the network lists, the HELO
/// name's shape, then reverse DNS, then the HELO name in DNS, then DNSBLs. Each check has an
/// action: `"reject"` (5xx to EHLO), `"defer"` (4xx), `"tag"` (accept, `X-Postern-Policy`
/// header and a log line) or `"off"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Run the checks. Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Clients refused at connect (`554 5.7.1` greeting, then only QUIT, RFC 5321 §3.1):
    /// networks in CIDR notation.
    #[serde(default)]
    pub block_networks: Vec<IpNet>,
    /// A file of networks to refuse, one per line (`#` comments): large published lists
    /// load in well under a second per million entries. Re-read on reload.
    #[serde(default)]
    pub block_networks_file: Option<PathBuf>,
    /// Clients that skip every check (and the block lists).
    #[serde(default)]
    pub allow_networks: Vec<IpNet>,
    /// A file of networks that skip every check.
    #[serde(default)]
    pub allow_networks_file: Option<PathBuf>,
    /// HELO/EHLO must be a fully qualified domain name or an address literal
    /// (RFC 5321 §4.1.1.1). Default `"reject"`.
    #[serde(default = "check_reject")]
    pub helo_fqdn: Check,
    /// HELO must not be our own host name or one of our addresses. Default `"reject"`.
    #[serde(default = "check_reject")]
    pub helo_not_ours: Check,
    /// The client's IP has a PTR record. Default `"tag"`.
    #[serde(default = "check_tag")]
    pub ptr: Check,
    /// The PTR name resolves back to the client's IP (forward-confirmed reverse DNS).
    /// Default `"tag"`.
    #[serde(default = "check_tag")]
    pub fcrdns: Check,
    /// The PTR name does not look generic (the IP's digits in it, or one of `generic_words`).
    /// Default `"off"`.
    #[serde(default = "check_off")]
    pub generic_ptr: Check,
    /// Words that make a PTR name generic. Default: dynamic, dyn, dsl, pool, dhcp, ppp, cable,
    /// dial, dialup, broadband, customer, unassigned.
    #[serde(default)]
    pub generic_words: Option<Vec<String>>,
    /// The HELO name resolves (A/AAAA). Default `"tag"`.
    #[serde(default = "check_tag")]
    pub helo_resolves: Check,
    /// The HELO name resolves to the client's IP, or shares its registered domain (by the
    /// Public Suffix List) with the client's forward-confirmed PTR name. Default `"off"`.
    #[serde(default = "check_off")]
    pub helo_matches: Check,
    /// The client's IP is listed in one of `dnsbl_zones`. Default `"reject"` (no zone by default).
    #[serde(default = "check_reject")]
    pub dnsbl: Check,
    /// DNSBL zones, `"zone"` (any 127.0.0.x answer lists) or `"zone=127.0.0.2,127.0.0.3"`
    /// (only those answers list).
    #[serde(default)]
    pub dnsbl_zones: Vec<String>,
    /// The MAIL FROM domain resolves: it has an MX, or an A/AAAA record (RFC 5321 §5.1),
    /// and no null MX (RFC 7505). Default `"reject"`.
    #[serde(default = "check_reject")]
    pub sender_domain: Check,
    /// The MAIL FROM domain's MX hosts are not CNAMEs (RFC 2181 §10.3), have public addresses
    /// (not RFC 1918/6598, loopback, link-local) and forward-confirmed reverse DNS.
    /// Default `"off"`.
    #[serde(default = "check_off")]
    pub sender_mx: Check,
    /// The MAIL FROM domain is listed in one of `rhsbl_zones`. Default `"reject"`.
    #[serde(default = "check_reject")]
    pub rhsbl: Check,
    /// Right-hand-side block list zones (domain lists), `"zone"` or `"zone=127.0.0.2"`.
    #[serde(default)]
    pub rhsbl_zones: Vec<String>,
    /// Greylisting at RCPT (`"defer"` turns it on; default `"off"`): the first attempt of a
    /// (client network /24 or /64, sender, recipient) triplet gets `451 4.7.1`; a retry after
    /// `greylist_delay` is accepted and the triplet remembered (in `{data_dir}/greylist.redb`,
    /// across restarts) for `greylist_expire`.
    #[serde(default = "check_off")]
    pub greylist: Check,
    /// How long a first attempt must wait. Default `"5m"`.
    #[serde(default = "default_greylist_delay")]
    pub greylist_delay: Seconds,
    /// How long an accepted triplet is remembered after it was last seen. Default `"35d"`. (A
    /// first attempt is forgotten when not retried within two days, or twice the delay.)
    #[serde(default = "default_greylist_expire")]
    pub greylist_expire: Seconds,
    /// Clients whose reverse DNS is forward-confirmed skip greylisting. Default `true`.
    #[serde(default = "yes")]
    pub greylist_skip_fcrdns: bool,
    /// Exceptions: `[[policy.exception]]` tables.
    #[serde(default)]
    pub exception: Vec<PolicyException>,
    /// A check whose DNS lookup fails temporarily (timeout, SERVFAIL): `"defer"` (default:
    /// `451 4.4.3`, when the check would reject or defer) or `"skip"`.
    #[serde(default = "defer_temperror")]
    pub dns_temperror: DnsTempError,
}

/// One `[[policy.exception]]`: the `checks` named are skipped when any of the criteria
/// matches (client network, forward-confirmed client name or a parent domain of it, MAIL FROM
/// domain, RCPT TO address or `@domain`). A criterion only applies where its fact is known:
/// checks after EHLO see the network and client name, sender checks also the sender domain,
/// greylisting all four.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyException {
    /// Check names (`fcrdns`, `dnsbl`, `greylist`, ...), or `["*"]` (default) for all.
    #[serde(default = "all_checks")]
    pub checks: Vec<String>,
    /// Client networks.
    #[serde(default)]
    pub networks: Vec<IpNet>,
    /// Client host names (forward-confirmed), matching the name or its subdomains.
    #[serde(default)]
    pub client_names: Vec<String>,
    /// MAIL FROM domains (and their subdomains).
    #[serde(default)]
    pub sender_domains: Vec<String>,
    /// RCPT TO addresses, or `@domain`.
    #[serde(default)]
    pub recipients: Vec<String>,
}

/// The check names `[[policy.exception]] checks` may list, in the order they run.
pub const POLICY_CHECKS: &[&str] = &[
    "helo_fqdn",
    "helo_not_ours",
    "ptr",
    "fcrdns",
    "generic_ptr",
    "helo_resolves",
    "helo_matches",
    "dnsbl",
    "sender_domain",
    "sender_mx",
    "rhsbl",
    "greylist",
];

fn all_checks() -> Vec<String> {
    vec!["*".into()]
}

/// A check's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// 5xx.
    Reject,
    /// 4xx.
    Defer,
    /// Accept with a header and a log line.
    Tag,
    /// Not checked.
    Off,
}

/// `[policy] dns_temperror`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsTempError {
    /// `451 4.4.3`.
    Defer,
    /// Pass the check.
    Skip,
}

fn check_reject() -> Check {
    Check::Reject
}
fn check_tag() -> Check {
    Check::Tag
}
fn check_off() -> Check {
    Check::Off
}
fn default_greylist_delay() -> Seconds {
    Seconds(Duration::from_secs(300))
}
fn default_greylist_expire() -> Seconds {
    Seconds(Duration::from_secs(35 * 86400))
}
fn defer_temperror() -> DnsTempError {
    DnsTempError::Defer
}

/// One `dnsbl_zones` / `rhsbl_zones` entry: `zone`, or `zone=127.0.0.2,127.0.0.3` to count only
/// those answers as a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSpec {
    /// The DNS zone queried (`zen.spamhaus.org`).
    pub zone: String,
    /// The answers that mean "listed"; empty: any 127.0.0.0/8 answer.
    pub codes: Vec<std::net::IpAddr>,
}

impl ZoneSpec {
    /// Parses one entry.
    ///
    /// # Errors
    /// The entry with the form it should have, for an empty zone, a zone with white space or
    /// a code that is not an IP address.
    pub fn parse(spec: &str) -> Result<Self, ValueError> {
        let (zone, codes) = spec.split_once('=').unwrap_or((spec, ""));
        let codes: Result<Vec<_>, _> =
            codes.split(',').map(str::trim).filter(|c| !c.is_empty()).map(str::parse).collect();
        let zone = zone.trim();
        match codes {
            Ok(codes) if !zone.is_empty() && !zone.contains(char::is_whitespace) => {
                Ok(Self { zone: zone.to_owned(), codes })
            }
            _ => Err(invalid!("{spec:?}: use \"zone\" or \"zone=127.0.0.2,127.0.0.3\"")),
        }
    }
}
