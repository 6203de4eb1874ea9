//! What one outbound TLS negotiation was like, for SMTP TLS Reporting (RFC 8460): the policy
//! that applied to the recipient domain and the session's result. Outbound delivery produces
//! these; the report store counts them per day and domain.

use std::fmt;
use std::net::IpAddr;

/// The kind of policy that applied (RFC 8460 §4.4 `policy-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// An MTA-STS policy (RFC 8461), `sts`.
    Sts,
    /// DANE TLSA records (RFC 7672), `tlsa`.
    Tlsa,
    /// Neither, `no-policy-found`.
    NoPolicyFound,
}

impl PolicyKind {
    /// The RFC 8460 name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sts => "sts",
            Self::Tlsa => "tlsa",
            Self::NoPolicyFound => "no-policy-found",
        }
    }
}

/// Why a session failed (RFC 8460 §4.3 `result-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsFailure {
    /// The receiving MX does not offer STARTTLS, or refused it (§4.3.1).
    StarttlsNotSupported,
    /// The certificate does not name the MX host (§4.3.1).
    CertificateHostMismatch,
    /// The certificate has expired (§4.3.1).
    CertificateExpired,
    /// The certificate does not chain to a trusted root (§4.3.1).
    CertificateNotTrusted,
    /// Any other failure: a broken handshake, an MX outside the policy (§4.3.1).
    ValidationFailure,
    /// No TLSA record matched the certificate (§4.3.2).
    TlsaInvalid,
    /// The DNSSEC validation of the TLSA records failed (§4.3.2).
    DnssecInvalid,
    /// The MTA-STS policy could not be fetched (§4.3.3).
    StsPolicyFetchError,
    /// The MTA-STS policy did not parse (§4.3.3).
    StsPolicyInvalid,
    /// The certificate of the MTA-STS policy host did not verify (§4.3.3).
    StsWebpkiInvalid,
}

impl TlsFailure {
    /// Every result type, in the RFC's order.
    pub const ALL: [Self; 10] = [
        Self::StarttlsNotSupported,
        Self::CertificateHostMismatch,
        Self::CertificateExpired,
        Self::CertificateNotTrusted,
        Self::ValidationFailure,
        Self::TlsaInvalid,
        Self::DnssecInvalid,
        Self::StsPolicyFetchError,
        Self::StsPolicyInvalid,
        Self::StsWebpkiInvalid,
    ];

    /// The RFC 8460 name, e.g. `certificate-host-mismatch`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StarttlsNotSupported => "starttls-not-supported",
            Self::CertificateHostMismatch => "certificate-host-mismatch",
            Self::CertificateExpired => "certificate-expired",
            Self::CertificateNotTrusted => "certificate-not-trusted",
            Self::ValidationFailure => "validation-failure",
            Self::TlsaInvalid => "tlsa-invalid",
            Self::DnssecInvalid => "dnssec-invalid",
            Self::StsPolicyFetchError => "sts-policy-fetch-error",
            Self::StsPolicyInvalid => "sts-policy-invalid",
            Self::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }

    /// The type named `s` (as [`TlsFailure::as_str`] writes it).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policy of a recipient domain as the report describes it (RFC 8460 §4.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppliedPolicy {
    /// The recipient domain, lower-case (`policy-domain`).
    pub domain: String,
    /// `policy-type`.
    pub kind: PolicyKind,
    /// `policy-string`: the lines of the MTA-STS policy file, or the TLSA records.
    pub strings: Vec<String>,
    /// `mx-host`: the MTA-STS policy's `mx` patterns.
    pub mx_patterns: Vec<String>,
}

/// One negotiation: the policy that applied and how the session went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiation {
    /// The policy.
    pub policy: AppliedPolicy,
    /// `None`: TLS was negotiated as the policy asks; else the failure.
    pub failure: Option<Failure>,
}

/// A failed session's details (RFC 8460 §4.4 `failure-details`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Failure {
    /// `result-type`.
    pub result: TlsFailure,
    /// `receiving-mx-hostname`, when a host was chosen.
    pub mx_host: Option<String>,
    /// `receiving-ip`, when connected.
    pub receiving_ip: Option<IpAddr>,
    /// `sending-mta-ip`: our end of the connection, when connected.
    pub sending_ip: Option<IpAddr>,
    /// `additional-information`: the error as logged.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::TlsFailure;

    #[test]
    fn names_round_trip() {
        for f in TlsFailure::ALL {
            assert_eq!(TlsFailure::parse(f.as_str()), Some(f));
        }
        assert_eq!(TlsFailure::parse("dane-required"), None);
    }
}
