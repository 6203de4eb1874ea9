//! `[outbound]`: delivery to other mail servers (and the LMTP connection cache).

use crate::error::{ValueError, invalid};
use std::time::Duration;

use serde::Deserialize;

use super::five_minutes;
use crate::units::Seconds;

/// `[outbound]`: delivery to other mail servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    /// The TCP port of remote mail servers. Default 25. (Tests point it at another instance on
    /// loopback; a route `relay:[host]:port` overrides it per destination.)
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// Which address families to use: `"any"` (default: the order DNS gives, IPv6 and IPv4
    /// interleaved), `"ipv4"`, `"ipv6"`, `"prefer-ipv4"`.
    #[serde(default)]
    pub ip_version: IpVersion,
    /// Bound of each TCP connection attempt. Default `"10s"`. Attempts race (see
    /// `attempt_delay`), so a dead address delays a delivery by `attempt_delay`, not by this.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Seconds,
    /// Connection racing over a host's addresses (Happy Eyeballs, RFC 8305 §5): the head
    /// start of each attempt over the next, whose attempt starts when it passes (or at once
    /// when every attempt in flight failed); the first connection to complete wins. Default
    /// `"250ms"` (RFC 8305 §8).
    #[serde(default = "default_attempt_delay")]
    pub attempt_delay: Seconds,
    /// After IPv6 lost a race to a host (timed out, unreachable, or slower than IPv4 by the
    /// head start), that host's IPv4 addresses go first for this long. Default `"30m"`.
    #[serde(default = "default_family_memory")]
    pub family_memory: Seconds,
    /// Waiting for the greeting, and for each reply to a command. Default `"5m"`.
    #[serde(default = "five_minutes")]
    pub command_timeout: Seconds,
    /// Waiting for the reply after the message content. Default `"10m"` (RFC 5321 §4.5.3.2.6).
    #[serde(default = "default_data_done_timeout")]
    pub data_timeout: Seconds,
    /// How long an idle connection to a next hop is kept for the next message to the same
    /// destination (Postfix's connection cache). `"0s"` turns reuse off. Default `"5s"`.
    #[serde(default = "default_connection_cache_time")]
    pub connection_cache_time: Seconds,
    /// Deliveries to one destination (domain, route or smarthost) at once. Default 20.
    #[serde(default = "default_max_per_destination")]
    pub max_per_destination: usize,
    /// After a failed connect, the address is skipped for this long without trying (the host
    /// status cache: a dead host is not hammered). `"0s"` turns it off. Default `"60s"`.
    #[serde(default = "default_dead_host_time")]
    pub dead_host_time: Seconds,
    /// The local address outbound connections of its family are made from (Postfix's
    /// `smtp_bind_address`): the one your SPF record and PTR name. Default: the kernel's choice.
    #[serde(default)]
    pub source_address: Option<std::net::IpAddr>,
    /// A PEM file of trust anchors that replaces Mozilla's roots (webpki-roots) for checking
    /// the certificates of next hops: a private CA, or a test's own. Read once, at the first
    /// use. Default: Mozilla's roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Apply the MTA-STS policies (RFC 8461) of recipient domains delivered to their MX (and
    /// without a `tls_policy` entry). Default true.
    #[serde(default = "yes")]
    pub mta_sts: bool,
    /// The bound of fetching an MTA-STS policy over HTTPS. Default `"30s"`.
    #[serde(default = "default_mta_sts_timeout")]
    pub mta_sts_timeout: Seconds,
    /// Networks a policy host (`mta-sts.DOMAIN`) may resolve to although they are not public
    /// unicast addresses (loopback, private, link-local): for tests and private deployments.
    /// Default none: a policy fetch never connects to such an address, whatever a domain's DNS
    /// says (no server-side request forgery into the host's own network).
    #[serde(default)]
    pub mta_sts_allow_networks: Vec<ipnet::IpNet>,
    /// Look for DANE (RFC 7672) for every domain delivered to its MX without a `tls_policy`
    /// entry, as the table's `dane` level does: DNSSEC-validated MX, addresses and TLSA
    /// records (`[dns] trust_anchor`). It needs a resolver path that passes DNSSEC records.
    /// Default false.
    #[serde(default)]
    pub dane: bool,
}

fn yes() -> bool {
    true
}
fn default_mta_sts_timeout() -> Seconds {
    Seconds(Duration::from_secs(30))
}

/// How much TLS a delivery requires (the `tls_policy` table; Postfix's security levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsLevel {
    /// Never STARTTLS.
    None,
    /// Opportunistic (RFC 7435): STARTTLS when offered, the certificate checked and logged
    /// but not required; a broken handshake is retried in clear text.
    #[default]
    May,
    /// TLS required, any certificate: without it the delivery is deferred (4.7.5).
    Encrypt,
    /// TLS required with a certificate that chains to a trust anchor and names the MX host:
    /// otherwise the delivery is deferred (4.7.5).
    Verify,
    /// DANE (RFC 7672) for MX hosts whose TLSA records validate with DNSSEC: TLS required and
    /// the certificate matched against them; other hosts get `may`.
    Dane,
    /// As `dane`, and a destination without usable DANE is deferred (4.7.5).
    DaneOnly,
}

impl TlsLevel {
    /// Parses a `tls_policy` table value.
    ///
    /// # Errors
    /// The value with the ones allowed.
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "may" => Ok(Self::May),
            "encrypt" => Ok(Self::Encrypt),
            "verify" => Ok(Self::Verify),
            "dane" => Ok(Self::Dane),
            "dane-only" => Ok(Self::DaneOnly),
            _ => Err(invalid!("{s:?}: use none, may, encrypt, verify, dane or dane-only")),
        }
    }

    /// Whether TLS is required whatever the DNS says.
    pub fn requires_tls(self) -> bool {
        matches!(self, Self::Encrypt | Self::Verify | Self::DaneOnly)
    }

    /// Whether DANE is looked for (`dane`, `dane-only`).
    pub fn wants_dane(self) -> bool {
        matches!(self, Self::Dane | Self::DaneOnly)
    }
}

impl std::fmt::Display for TlsLevel {
    /// As written in the table: `none`, `may`, `encrypt`, `verify`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::May => "may",
            Self::Encrypt => "encrypt",
            Self::Verify => "verify",
            Self::Dane => "dane",
            Self::DaneOnly => "dane-only",
        })
    }
}

/// `[outbound] ip_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IpVersion {
    /// IPv6 and IPv4 addresses interleaved, IPv6 first.
    #[default]
    Any,
    /// IPv4 only.
    Ipv4,
    /// IPv6 only.
    Ipv6,
    /// IPv4 addresses first, then IPv6.
    PreferIpv4,
}

fn default_attempt_delay() -> Seconds {
    Seconds(Duration::from_millis(250))
}
fn default_family_memory() -> Seconds {
    Seconds(Duration::from_secs(1800))
}
fn default_connect_timeout() -> Seconds {
    Seconds(Duration::from_secs(10))
}
fn default_connection_cache_time() -> Seconds {
    Seconds(Duration::from_secs(5))
}
fn default_data_done_timeout() -> Seconds {
    Seconds(Duration::from_secs(600))
}
fn default_dead_host_time() -> Seconds {
    Seconds(Duration::from_secs(60))
}
fn default_max_per_destination() -> usize {
    20
}
fn default_smtp_port() -> u16 {
    25
}
