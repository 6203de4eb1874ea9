//! The [`Resolver`](crate::Resolver) on hickory-resolver.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver as HResolver, TokioResolver};

use crate::{Answer, Mx};

/// Resolver settings (`[dns]` in the configuration).
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// Name servers as `IP:port`; empty means the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Time to wait for one answer from one server.
    pub timeout: Duration,
    /// Tries per server.
    pub attempts: usize,
}

/// hickory-resolver with TTL-bounded caching.
#[derive(Debug, Clone)]
pub struct HickoryResolver {
    inner: TokioResolver,
    /// The configured name servers and per-query timeout, for the loopback PTR bypass.
    nameservers: Vec<SocketAddr>,
    timeout: Duration,
}

impl HickoryResolver {
    /// Builds a resolver.
    ///
    /// # Errors
    /// When the system configuration cannot be read (only with empty `nameservers`).
    pub fn new(settings: &DnsSettings) -> Result<Self, ResolverError> {
        Ok(Self {
            inner: tokio_resolver(settings)?,
            nameservers: settings.nameservers.clone(),
            timeout: settings.timeout,
        })
    }

    /// The records of `rtype` at `name`, each turned into a value by `pick`.
    async fn records_as<T>(&self, name: &str, rtype: RecordType, pick: impl Fn(RData) -> Option<T>) -> Answer<Vec<T>> {
        self.records(name, rtype).await.map(|v| v.into_iter().filter_map(pick).collect())
    }

    async fn records(&self, name: &str, rtype: RecordType) -> Answer<Vec<RData>> {
        let fqdn = if name.ends_with('.') { name.to_owned() } else { format!("{name}.") };
        // A name that is not a host name (SPF asks `foo:bar/baz.example.com` or a macro's
        // `%20`) is still a DNS name: its labels are asked as they are (RFC 2181 §11).
        let name = match hickory_resolver::proto::rr::Name::from_utf8(&fqdn) {
            Ok(n) => n,
            Err(_) => match hickory_resolver::proto::rr::Name::from_labels(
                fqdn.trim_end_matches('.').split('.').map(str::as_bytes),
            ) {
                Ok(mut n) => {
                    n.set_fqdn(true);
                    n
                }
                Err(e) => return Answer::TempFail(format!("{fqdn}: {e}")),
            },
        };
        match self.inner.lookup(name, rtype).await {
            Ok(lookup) => {
                let data: Vec<RData> =
                    lookup.answers().iter().filter(|r| r.record_type() == rtype).map(|r| r.data.clone()).collect();
                if data.is_empty() { Answer::NotFound } else { Answer::Found(data) }
            }
            Err(e) => classify(&e),
        }
    }
}

/// NXDOMAIN and NODATA are [`Answer::NotFound`]; everything else is temporary.
fn classify(e: &NetError) -> Answer<Vec<RData>> {
    if e.is_no_records_found() || e.is_nx_domain() { Answer::NotFound } else { Answer::TempFail(e.to_string()) }
}

/// A name as its labels, lower-cased, joined by dots, without escaping: the form
/// [`HickoryResolver::records`] asks again (`to_ascii` would escape `:` or a space).
fn host(name: &hickory_resolver::proto::rr::Name) -> String {
    name.iter().map(String::from_utf8_lossy).collect::<Vec<_>>().join(".").to_ascii_lowercase()
}

impl crate::Resolver for HickoryResolver {
    async fn mx(&self, domain: &str) -> Answer<Vec<Mx>> {
        self.records_as(domain, RecordType::MX, |d| match d {
            RData::MX(mx) => Some(Mx { preference: mx.preference, exchange: host(&mx.exchange) }),
            _ => None,
        })
        .await
    }

    async fn ipv4(&self, name: &str) -> Answer<Vec<IpAddr>> {
        self.records_as(name, RecordType::A, |d| match d {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .await
    }

    async fn ipv6(&self, name: &str) -> Answer<Vec<IpAddr>> {
        self.records_as(name, RecordType::AAAA, |d| match d {
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .await
    }

    async fn txt(&self, name: &str) -> Answer<Vec<String>> {
        self.records_as(name, RecordType::TXT, |d| match d {
            RData::TXT(t) => Some(t.txt_data.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect()),
            _ => None,
        })
        .await
    }

    async fn cname(&self, name: &str) -> Answer<Vec<String>> {
        self.records_as(name, RecordType::CNAME, |d| match d {
            RData::CNAME(c) => Some(host(&c.0)),
            _ => None,
        })
        .await
    }

    async fn ptr(&self, ip: IpAddr) -> Answer<Vec<String>> {
        if ip.is_loopback() && !self.nameservers.is_empty() {
            return self.loopback_ptr(ip).await;
        }
        let name = hickory_resolver::proto::rr::Name::from(ip).to_ascii();
        self.records_as(&name, RecordType::PTR, |d| match d {
            RData::PTR(p) => Some(host(&p.0)),
            _ => None,
        })
        .await
    }
}

impl HickoryResolver {
    /// PTR of a loopback address, asked of the configured name servers directly: hickory
    /// answers `localhost` itself for 127.0.0.0/8 (RFC 6761 §6.3), which hides the records a
    /// test DNS server publishes for its 127.0.0.x clients. Only used with explicit
    /// `[dns] nameservers`.
    async fn loopback_ptr(&self, ip: IpAddr) -> Answer<Vec<String>> {
        use hickory_resolver::proto::op::{Message, Query, ResponseCode};
        let name = hickory_resolver::proto::rr::Name::from(ip);
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(name, RecordType::PTR));
        let Ok(bytes) = query.to_vec() else { return Answer::TempFail("cannot encode the query".into()) };
        let mut last = String::from("no name server");
        for ns in &self.nameservers {
            let attempt = async {
                let sock = tokio::net::UdpSocket::bind(if ns.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).await?;
                sock.send_to(&bytes, ns).await?;
                let mut buf = vec![0u8; 4096];
                loop {
                    let (n, from) = sock.recv_from(&mut buf).await?;
                    if from == *ns {
                        return Ok::<_, std::io::Error>(buf[..n].to_vec());
                    }
                }
            };
            match tokio::time::timeout(self.timeout, attempt).await {
                Ok(Ok(reply)) => match Message::from_vec(&reply) {
                    Ok(m) if m.metadata.id == query.metadata.id => match m.metadata.response_code {
                        ResponseCode::NoError => {
                            let names: Vec<String> = m
                                .answers
                                .iter()
                                .filter_map(|r| match &r.data {
                                    RData::PTR(p) => Some(host(&p.0)),
                                    _ => None,
                                })
                                .collect();
                            return if names.is_empty() { Answer::NotFound } else { Answer::Found(names) };
                        }
                        ResponseCode::NXDomain => return Answer::NotFound,
                        code => last = format!("{ns}: {code}"),
                    },
                    Ok(_) => last = format!("{ns}: answer to another query"),
                    Err(e) => last = format!("{ns}: {e}"),
                },
                Ok(Err(e)) => last = format!("{ns}: {e}"),
                Err(_) => last = format!("{ns}: timed out"),
            }
        }
        Answer::TempFail(last)
    }
}

/// Why a resolver could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolverError {
    /// The system's configuration (`/etc/resolv.conf`) could not be read; only without
    /// `[dns] nameservers`.
    #[error("reading the system DNS configuration: {0}")]
    SystemConfig(String),
    /// hickory refused the settings.
    #[error("building the resolver: {0}")]
    Build(String),
    /// The trust anchor file of `[dns] trust_anchor` cannot be read or parsed.
    #[error("{0}")]
    TrustAnchor(String),
}

/// A hickory resolver for `settings`: the name servers given (UDP, then TCP) or the system's,
/// caching for the records' TTL only, no search domains. Shared with the email authentication
/// checks (mail-auth), so both see the same DNS.
///
/// # Errors
/// When the system configuration cannot be read (only with empty `nameservers`).
pub fn tokio_resolver(settings: &DnsSettings) -> Result<TokioResolver, ResolverError> {
    build(settings, None)
}

/// As [`tokio_resolver`], validating every answer with DNSSEC up to `anchors`
/// ([`crate::dnssec`]).
///
/// # Errors
/// As [`tokio_resolver`].
pub(crate) fn validating_resolver(
    settings: &DnsSettings,
    anchors: std::sync::Arc<hickory_resolver::proto::dnssec::TrustAnchors>,
) -> Result<TokioResolver, ResolverError> {
    build(settings, Some(anchors))
}

fn build(
    settings: &DnsSettings,
    anchors: Option<std::sync::Arc<hickory_resolver::proto::dnssec::TrustAnchors>>,
) -> Result<TokioResolver, ResolverError> {
    let mut builder = if settings.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| ResolverError::SystemConfig(e.to_string()))?
    } else {
        let servers = settings
            .nameservers
            .iter()
            .map(|addr| {
                let conn = |mut c: ConnectionConfig| {
                    c.port = addr.port();
                    c
                };
                NameServerConfig::new(
                    addr.ip(),
                    true,
                    vec![conn(ConnectionConfig::udp()), conn(ConnectionConfig::tcp())],
                )
            })
            .collect();
        HResolver::builder_with_config(ResolverConfig::from_name_servers(servers), TokioRuntimeProvider::default())
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = settings.timeout;
    opts.attempts = settings.attempts;
    opts.cache_size = 4096;
    // Cache for the records' TTL only (negative answers: the SOA minimum).
    opts.positive_min_ttl = None;
    opts.negative_min_ttl = None;
    // Names are fully qualified; never try search domains.
    opts.ndots = 0;
    if let Some(anchors) = anchors {
        builder = builder.with_trust_anchor(anchors);
    }
    builder.build().map_err(|e| ResolverError::Build(e.to_string()))
}
