//! DNSSEC-validated lookups for DANE (RFC 7672 §2.1, RFC 4035 §4.3): a second hickory resolver
//! that asks with the DO bit and validates every answer up to a trust anchor (the root's, or
//! those of `[dns] trust_anchor`, a file of `NAME TTL IN DNSKEY ...` lines). Each answer is
//! [`Secured::Secure`] (validated; an empty list is a validated denial), [`Secured::Insecure`]
//! (provably unsigned, or under no configured trust anchor: RFC 4035's "indeterminate", which
//! DANE treats the same way), [`Secured::Bogus`] (validation failed: never trusted, never a
//! reason to fall back to clear text) or [`Secured::TempFail`].
//!
//! It is separate from [`HickoryResolver`](crate::HickoryResolver) so that a resolver path that
//! strips signatures breaks DANE only, never ordinary delivery.

use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr as _;
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::{DnsSettings, Mx};

/// A validated answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secured<T> {
    /// Validated; empty when the name or type is validated not to exist.
    Secure(T),
    /// Unsigned, or under no trust anchor.
    Insecure,
    /// Validation failed (the text says where).
    Bogus(String),
    /// No answer now (timeout, SERVFAIL).
    TempFail(String),
}

/// A TLSA record (RFC 6698 §2.1): certificate usage, selector, matching type, data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    /// 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0 the full certificate, 1 the SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 exact, 1 SHA-256, 2 SHA-512.
    pub matching: u8,
    /// The association data.
    pub data: Vec<u8>,
}

impl std::fmt::Display for Tlsa {
    /// The presentation form, `3 1 1 HEX` (RFC 6698 §2.2).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} ", self.usage, self.selector, self.matching)?;
        self.data.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The validating resolver.
#[derive(Debug, Clone)]
pub struct DnssecResolver {
    inner: TokioResolver,
    /// The zones the trust anchors are for (lower-case, no trailing dot; `""` the root).
    anchored: Arc<Vec<String>>,
}

/// The zone names of a trust-anchor file: the owner of each DNSKEY line.
fn anchor_names(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        .collect()
}

impl DnssecResolver {
    /// A resolver asking `settings`' servers, validating up to the root's trust anchors or, with
    /// `trust_anchor`, to those of that file.
    ///
    /// # Errors
    /// The file cannot be read or parsed, or the resolver cannot be built.
    pub fn new(settings: &DnsSettings, trust_anchor: Option<&Path>) -> Result<Self, crate::ResolverError> {
        let (anchors, anchored) = match trust_anchor {
            None => (TrustAnchors::default(), vec![String::new()]),
            Some(path) => {
                let bad =
                    |e: &dyn std::fmt::Display| crate::ResolverError::TrustAnchor(format!("{}: {e}", path.display()));
                let text = std::fs::read_to_string(path).map_err(|e| bad(&e))?;
                let anchors = TrustAnchors::from_str(&text).map_err(|e| bad(&e))?;
                (anchors, anchor_names(&text))
            }
        };
        let inner = crate::hickory::validating_resolver(settings, Arc::new(anchors))?;
        Ok(Self { inner, anchored: Arc::new(anchored) })
    }

    /// Whether `name` is at or below a zone with a trust anchor.
    fn covered(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.anchored.iter().any(|z| z.is_empty() || name == *z || name.ends_with(&format!(".{z}")))
    }

    async fn records(&self, name: &str, rtype: RecordType) -> Secured<Vec<RData>> {
        if !self.covered(name) {
            return Secured::Insecure;
        }
        let fqdn = if name.ends_with('.') { name.to_owned() } else { format!("{name}.") };
        match self.inner.lookup(fqdn.as_str(), rtype).await {
            Ok(lookup) => {
                let ours: Vec<_> = lookup.answers().iter().filter(|r| r.record_type() == rtype).collect();
                if ours.iter().any(|r| r.proof == Proof::Insecure) {
                    return Secured::Insecure;
                }
                if let Some(r) = ours.iter().find(|r| r.proof != Proof::Secure) {
                    return Secured::Bogus(format!("{fqdn} {rtype}: {}", r.proof));
                }
                Secured::Secure(ours.into_iter().map(|r| r.data.clone()).collect())
            }
            Err(NetError::Dns(DnsError::Nsec { proof: Proof::Secure, .. })) => Secured::Secure(Vec::new()),
            Err(NetError::Dns(DnsError::Nsec { proof: Proof::Insecure, .. })) => Secured::Insecure,
            Err(e) if e.is_no_records_found() => Secured::Secure(Vec::new()),
            Err(e @ NetError::Dns(DnsError::Nsec { .. } | DnsError::DnssecBogus)) => {
                Secured::Bogus(format!("{fqdn} {rtype}: {e}"))
            }
            Err(e) => Secured::TempFail(format!("{fqdn} {rtype}: {e}")),
        }
    }

    /// The MX records of `domain`.
    pub async fn mx(&self, domain: &str) -> Secured<Vec<Mx>> {
        self.records(domain, RecordType::MX).await.map(|v| {
            v.into_iter()
                .filter_map(|d| match d {
                    RData::MX(mx) => Some(Mx {
                        preference: mx.preference,
                        exchange: mx.exchange.to_ascii().trim_end_matches('.').to_ascii_lowercase(),
                    }),
                    _ => None,
                })
                .collect()
        })
    }

    /// The addresses (A, then AAAA) of `host`: secure only when both answers are.
    pub async fn addresses(&self, host: &str) -> Secured<Vec<IpAddr>> {
        let pick = |v: Vec<RData>| -> Vec<IpAddr> {
            v.into_iter()
                .filter_map(|d| match d {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect()
        };
        let (v4, v6) = tokio::join!(self.records(host, RecordType::A), self.records(host, RecordType::AAAA));
        match (v4.map(pick), v6.map(pick)) {
            (Secured::Secure(mut a), Secured::Secure(b)) => {
                a.extend(b);
                Secured::Secure(a)
            }
            (Secured::Bogus(e), _) | (_, Secured::Bogus(e)) => Secured::Bogus(e),
            (Secured::TempFail(e), _) | (_, Secured::TempFail(e)) => Secured::TempFail(e),
            _ => Secured::Insecure,
        }
    }

    /// The TLSA records of `_PORT._tcp.HOST` (RFC 7672 §2.2).
    pub async fn tlsa(&self, host: &str, port: u16) -> Secured<Vec<Tlsa>> {
        self.records(&format!("_{port}._tcp.{host}"), RecordType::TLSA).await.map(|v| {
            v.into_iter()
                .filter_map(|d| match d {
                    RData::TLSA(t) => Some(Tlsa {
                        usage: t.cert_usage.into(),
                        selector: t.selector.into(),
                        matching: t.matching.into(),
                        data: t.cert_data.clone(),
                    }),
                    _ => None,
                })
                .collect()
        })
    }
}

impl<T> Secured<T> {
    /// Maps the secure value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Secured<U> {
        match self {
            Self::Secure(t) => Secured::Secure(f(t)),
            Self::Insecure => Secured::Insecure,
            Self::Bogus(e) => Secured::Bogus(e),
            Self::TempFail(e) => Secured::TempFail(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_file_names_and_tlsa_text() {
        let text = "; anchors\ndane.test. 300 IN DNSKEY 257 3 13 AAAA\nBogus.Test 300 IN DNSKEY 257 3 13 BBBB\n";
        assert_eq!(anchor_names(text), ["dane.test", "bogus.test"]);
        let t = Tlsa { usage: 3, selector: 1, matching: 1, data: vec![0xab, 0x01] };
        assert_eq!(t.to_string(), "3 1 1 ab01");
    }
}
