//! The outcome of every outbound TLS negotiation, for SMTP TLS Reporting (RFC 8460): deliveries
//! record a [`Negotiation`] here; the daemon drains them into the report store
//! (`[tls_reports]`). Nothing is kept unless enabled, and at most [`MAX_BUFFERED`] wait between
//! two drains (a full buffer drops new results: statistics, never mail).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use postern_types::tls_report::{AppliedPolicy, Failure, Negotiation, PolicyKind, TlsFailure};

/// The most results held between two drains.
pub const MAX_BUFFERED: usize = 100_000;

/// Results waiting to be stored.
#[derive(Debug, Default)]
pub struct TlsResults {
    enabled: AtomicBool,
    buffer: Mutex<Vec<Negotiation>>,
}

impl TlsResults {
    /// Starts keeping results (`[tls_reports] enabled`).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Counts `n` in the metrics, and keeps it when enabled and the buffer has room.
    pub(crate) fn record(&self, n: Negotiation) {
        let result = n.failure.as_ref().map_or("success", |f| f.result.as_str());
        postern_metrics::metrics().tls_negotiation(n.policy.kind.as_str(), result);
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.len() < MAX_BUFFERED {
            buffer.push(n);
        }
    }

    /// Takes every result recorded since the last drain.
    pub fn drain(&self) -> Vec<Negotiation> {
        std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The policy of a domain without MTA-STS (or DANE): `no-policy-found`.
pub(crate) fn no_policy(domain: &str) -> AppliedPolicy {
    AppliedPolicy {
        domain: domain.to_lowercase(),
        kind: PolicyKind::NoPolicyFound,
        strings: Vec::new(),
        mx_patterns: Vec::new(),
    }
}

/// A failed negotiation under `policy`; `ips` are the receiving and the sending address of the
/// connection, when there was one.
pub(crate) fn failed(
    policy: &AppliedPolicy,
    result: TlsFailure,
    mx_host: Option<&str>,
    ips: (Option<std::net::IpAddr>, Option<std::net::IpAddr>),
    detail: impl Into<String>,
) -> Negotiation {
    let (receiving_ip, sending_ip) = ips;
    let mx_host = mx_host.map(str::to_owned);
    let failure = Failure { result, mx_host, receiving_ip, sending_ip, detail: detail.into() };
    Negotiation { policy: policy.clone(), failure: Some(failure) }
}
