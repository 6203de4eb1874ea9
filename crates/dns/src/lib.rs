//! DNS for Postern. This crate owns the [`Resolver`] seam, answering [`Answer::Found`],
//! [`Answer::NotFound`] or [`Answer::TempFail`], and its implementation on hickory-resolver
//! ([`HickoryResolver`]).
//!
//! Caching follows the records: an answer is kept for its TTL only, a negative answer for the
//! SOA minimum (RFC 2308 §5). Our users lost weeks of mail to a cache that ignored TTLs, so no
//! minimum TTL is imposed and the maximum is hickory's one-day cap. A timeout, SERVFAIL or
//! REFUSED is [`Answer::TempFail`]: it must become a 4xx or a retry, never a 5xx or a bounce.

pub mod dnssec;
mod hickory;

use std::future::Future;
use std::net::IpAddr;

pub use hickory::{DnsSettings, HickoryResolver, ResolverError, tokio_resolver};

/// The outcome of one lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// Records of the requested type exist (never an empty list).
    Found(T),
    /// The name does not exist (NXDOMAIN) or has no records of that type (NODATA).
    NotFound,
    /// The question could not be answered now (timeout, SERVFAIL, REFUSED, network error).
    TempFail(String),
}

impl<T> Answer<T> {
    /// Maps the found value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        match self {
            Self::Found(t) => Answer::Found(f(t)),
            Self::NotFound => Answer::NotFound,
            Self::TempFail(e) => Answer::TempFail(e),
        }
    }
}

/// One MX record: preference (lower is tried first) and exchange host, without the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mx {
    /// Preference, RFC 5321 §5.1.
    pub preference: u16,
    /// The mail exchanger's host name, lower-cased, without the trailing dot. `""` for a null
    /// MX (RFC 7505: exchange `.`).
    pub exchange: String,
}

/// The lookups Postern needs. Implemented over hickory-resolver; tests run a real DNS server on
/// loopback rather than replacing this trait.
pub trait Resolver: Send + Sync + 'static {
    /// MX records of `domain`.
    fn mx(&self, domain: &str) -> impl Future<Output = Answer<Vec<Mx>>> + Send;
    /// IPv4 addresses (A records, CNAMEs followed) of `host`.
    fn ipv4(&self, host: &str) -> impl Future<Output = Answer<Vec<IpAddr>>> + Send;
    /// IPv6 addresses (AAAA records, CNAMEs followed) of `host`.
    fn ipv6(&self, host: &str) -> impl Future<Output = Answer<Vec<IpAddr>>> + Send;
    /// TXT records of `name`, each record's strings concatenated (RFC 7208 §3.3).
    fn txt(&self, name: &str) -> impl Future<Output = Answer<Vec<String>>> + Send;
    /// PTR names of `ip`, without trailing dots.
    fn ptr(&self, ip: IpAddr) -> impl Future<Output = Answer<Vec<String>>> + Send;
    /// The CNAME target of `name` if `name` is an alias (`NotFound` when it is not).
    fn cname(&self, name: &str) -> impl Future<Output = Answer<Vec<String>>> + Send;
}
