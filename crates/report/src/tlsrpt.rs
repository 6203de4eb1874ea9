//! SMTP TLS Reporting (RFC 8460): the outcome of every outbound TLS negotiation is counted per
//! day, recipient domain, policy and result in the `[store]` (each negotiation encoded here as
//! one tally key, [`key`]; [`domain_days`] reads a day back), and turned once a day into one
//! report per domain: the JSON of RFC 8460 §4.4 (mail-auth's `report::tlsrpt` types),
//! gzip-compressed, in a `multipart/report; report-type=tlsrpt` message (§5.3) to the
//! `mailto:` addresses of the domain's `_smtp._tls` record (§3).

use std::collections::BTreeMap;
use std::net::IpAddr;

use mail_auth::report::tlsrpt::{DateRange, FailureDetails, Policy, PolicyDetails, PolicyType, ResultType, Summary};
use postern_types::tls_report::{AppliedPolicy, Failure, Negotiation, PolicyKind, TlsFailure};

pub use mail_auth::report::tlsrpt::TlsReport;

/// Separates the strings of one field inside a key.
const SEP: char = '\u{1f}';

/// One day's negotiations with one recipient domain: per policy, its successes and failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainDay {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// The recipient domain (`policy-domain`).
    pub domain: String,
    /// Per policy: its sessions.
    pub policies: Vec<PolicyDay>,
}

/// One policy's sessions of a day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDay {
    /// The policy.
    pub policy: AppliedPolicy,
    /// Successful sessions.
    pub successes: u64,
    /// The failures, each with its session count.
    pub failures: Vec<(Failure, u64)>,
}

/// A TLS report that could not be made into a message (serialisation, compression or
/// composition failed).
#[derive(Debug, thiserror::Error)]
#[error("composing the TLS report: {0}")]
pub struct ComposeError(String);

fn err(e: impl std::fmt::Display) -> ComposeError {
    ComposeError(e.to_string())
}

/// Why a domain's TLS-RPT record gives no report address (RFC 8460 §3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuaError {
    /// Not exactly one TXT record starts with `v=TLSRPTv1`.
    #[error("{0} TXT records start with v=TLSRPTv1 (one is needed)")]
    RecordCount(usize),
    /// The record does not parse.
    #[error("{record:?}: {why}")]
    Syntax {
        /// The record.
        record: String,
        /// mail-auth's reason.
        why: String,
    },
}

fn clean(s: &str) -> String {
    s.replace(['\t', SEP, '\n', '\r'], " ")
}

/// One negotiation as a tally key: `DOMAIN \t POLICY \t STRINGS \t MX \t RESULT \t HOST \t IP
/// \t DETAIL \t SENDING-IP`, tabs and newlines in the strings made spaces (keys of earlier
/// versions, without the sending IP, still read).
#[must_use]
pub fn key(n: &Negotiation) -> String {
    let p = &n.policy;
    let strings: Vec<String> = p.strings.iter().map(|s| clean(s)).collect();
    let mx: Vec<String> = p.mx_patterns.iter().map(|s| clean(s)).collect();
    let result = match &n.failure {
        None => "ok\t\t\t\t".to_owned(),
        Some(f) => format!(
            "{}\t{}\t{}\t{}\t{}",
            f.result,
            f.mx_host.as_deref().map(clean).unwrap_or_default(),
            f.receiving_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            clean(&f.detail),
            f.sending_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        ),
    };
    format!(
        "{}\t{}\t{}\t{}\t{result}",
        clean(&p.domain),
        p.kind.as_str(),
        strings.join(&SEP.to_string()),
        mx.join(&SEP.to_string())
    )
}

fn split(field: &str) -> Vec<String> {
    field.split(SEP).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

fn from_key(key: &str) -> Option<Negotiation> {
    let f: Vec<&str> = key.split('\t').collect();
    let (fields, sending) = match f.as_slice() {
        [fields @ .., sending] if fields.len() == 8 => (fields, *sending),
        fields => (fields, ""),
    };
    let [domain, kind, strings, mx, result, host, ip, detail] = fields else { return None };
    let kind =
        [PolicyKind::Sts, PolicyKind::Tlsa, PolicyKind::NoPolicyFound].into_iter().find(|k| k.as_str() == *kind)?;
    let policy = AppliedPolicy { domain: (*domain).to_owned(), kind, strings: split(strings), mx_patterns: split(mx) };
    let failure = match *result {
        "ok" => None,
        r => Some(Failure {
            result: TlsFailure::parse(r)?,
            mx_host: (!host.is_empty()).then(|| (*host).to_owned()),
            receiving_ip: ip.parse::<IpAddr>().ok(),
            sending_ip: sending.parse::<IpAddr>().ok(),
            detail: (*detail).to_owned(),
        }),
    };
    Some(Negotiation { policy, failure })
}

/// One day's negotiations, one entry per recipient domain (sorted), each policy's failures in
/// order of their keys, from the `[store]`'s tally of `day`: (key, sessions). Keys that do not
/// parse are left out.
#[must_use]
pub fn domain_days(day: &str, counts: &[(String, u64)]) -> Vec<DomainDay> {
    type Tally = (u64, Vec<(Failure, u64)>);
    let mut by_domain: BTreeMap<String, BTreeMap<AppliedPolicy, Tally>> = BTreeMap::new();
    for (k, count) in counts {
        let Some(n) = from_key(k) else { continue };
        let tally = by_domain.entry(n.policy.domain.clone()).or_default().entry(n.policy).or_default();
        match n.failure {
            None => tally.0 += count,
            Some(f) => tally.1.push((f, *count)),
        }
    }
    by_domain
        .into_iter()
        .map(|(domain, policies)| DomainDay {
            day: day.to_owned(),
            domain,
            policies: policies
                .into_iter()
                .map(|(policy, (successes, failures))| PolicyDay { policy, successes, failures })
                .collect(),
        })
        .collect()
}

/// The `mailto:` addresses of a domain's TLS-RPT record among `txts` (the TXT strings of
/// `_smtp._tls.DOMAIN`): the one record starting with `v=TLSRPTv1` (RFC 8460 §3), parsed by
/// mail-auth. `https:` destinations are left out (reports are sent by mail only).
///
/// # Errors
/// No such record, several, or one that does not parse.
pub fn rua_mailto(txts: &[String]) -> Result<Vec<String>, RuaError> {
    use mail_auth::common::parse::TxtRecordParser as _;
    use mail_auth::mta_sts::{ReportUri, TlsRpt};
    let ours: Vec<&String> = txts.iter().filter(|t| t.trim_start().starts_with("v=TLSRPTv1")).collect();
    let [record] = ours.as_slice() else {
        return Err(RuaError::RecordCount(ours.len()));
    };
    let parsed = TlsRpt::parse(record.as_bytes())
        .map_err(|e| RuaError::Syntax { record: (*record).clone(), why: e.to_string() })?;
    Ok(parsed
        .rua
        .into_iter()
        .filter_map(|u| match u {
            ReportUri::Mail(a) => Some(a),
            ReportUri::Http(_) => None,
        })
        .collect())
}

/// Who reports, and which report this is (RFC 8460 §4.4 report metadata).
#[derive(Debug, Clone)]
pub struct Meta {
    /// `organization-name`.
    pub organization: String,
    /// `contact-info`: an address for questions about the report.
    pub contact: String,
    /// `report-id`.
    pub report_id: String,
    /// First second of the period (Unix seconds, UTC).
    pub begin: i64,
    /// Last second of the period.
    pub end: i64,
}

fn policy_type(kind: PolicyKind) -> PolicyType {
    match kind {
        PolicyKind::Sts => PolicyType::Sts,
        PolicyKind::Tlsa => PolicyType::Tlsa,
        PolicyKind::NoPolicyFound => PolicyType::NoPolicyFound,
    }
}

fn result_type(f: TlsFailure) -> ResultType {
    match f {
        TlsFailure::StarttlsNotSupported => ResultType::StartTlsNotSupported,
        TlsFailure::CertificateHostMismatch => ResultType::CertificateHostMismatch,
        TlsFailure::CertificateExpired => ResultType::CertificateExpired,
        TlsFailure::CertificateNotTrusted => ResultType::CertificateNotTrusted,
        TlsFailure::ValidationFailure => ResultType::ValidationFailure,
        TlsFailure::TlsaInvalid => ResultType::TlsaInvalid,
        TlsFailure::DnssecInvalid => ResultType::DnssecInvalid,
        TlsFailure::StsPolicyFetchError => ResultType::StsPolicyFetchError,
        TlsFailure::StsPolicyInvalid => ResultType::StsPolicyInvalid,
        TlsFailure::StsWebpkiInvalid => ResultType::StsWebpkiInvalid,
    }
}

/// The report of one domain's day (RFC 8460 §4.4), counts saturated at `u32::MAX`.
pub fn to_report(day: &DomainDay, meta: &Meta) -> TlsReport {
    let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let policies = day
        .policies
        .iter()
        .map(|PolicyDay { policy: p, successes: ok, failures }| Policy {
            policy: PolicyDetails {
                policy_type: policy_type(p.kind),
                policy_string: p.strings.clone(),
                policy_domain: p.domain.clone(),
                mx_host: p.mx_patterns.clone(),
            },
            summary: Summary { total_success: count(*ok), total_failure: count(failures.iter().map(|(_, n)| n).sum()) },
            failure_details: failures
                .iter()
                .map(|(f, n)| FailureDetails {
                    result_type: result_type(f.result),
                    receiving_mx_hostname: f.mx_host.clone(),
                    receiving_ip: f.receiving_ip,
                    sending_mta_ip: f.sending_ip,
                    failed_session_count: count(*n),
                    additional_information: (!f.detail.is_empty()).then(|| f.detail.clone()),
                    ..FailureDetails::default()
                })
                .collect(),
        })
        .collect();
    TlsReport {
        organization_name: Some(meta.organization.clone()),
        date_range: DateRange::from_timestamps(meta.begin, meta.end),
        contact_info: Some(meta.contact.clone()),
        report_id: meta.report_id.clone(),
        policies,
    }
}

/// The report message (RFC 8460 §5.3): from `from`, to `to`, subject `Report Domain: D
/// Submitter: S Report-ID: <ID>`, the `TLS-Report-Domain` and `TLS-Report-Submitter` fields, a
/// text part and the gzip-compressed JSON as `application/tlsrpt+gzip`
/// (`S!D!BEGIN!END.json.gz`), CRLF line endings.
///
/// # Errors
/// Compression or composition failed.
pub fn compose(
    report: &TlsReport,
    domain: &str,
    submitter: &str,
    from: &str,
    to: &[String],
) -> Result<Vec<u8>, ComposeError> {
    let json = json_without_nulls(report).map_err(err)?;
    let mut gz = mail_auth::flate2::write::GzEncoder::new(Vec::new(), mail_auth::flate2::Compression::default());
    std::io::Write::write_all(&mut gz, json.as_bytes()).map_err(err)?;
    let bytes = gz.finish().map_err(err)?;
    let mut out = Vec::new();
    report
        .write_rfc5322_from_bytes(domain, submitter, from, to.iter().map(String::as_str), &bytes, &mut out)
        .map_err(err)?;
    Ok(out)
}

/// The report's JSON (RFC 8460 §4.4) with every absent field left out: the RFC gives each
/// field a string, number or list, never `null`, and receivers' parsers are strict about it.
///
/// # Errors
/// The report did not serialise.
pub fn json_without_nulls(report: &TlsReport) -> Result<String, serde_json::Error> {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.retain(|_, v| !v.is_null());
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(report)?;
    strip(&mut value);
    serde_json::to_string(&value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_gives_its_mailto_addresses() {
        let txts = ["v=spf1 -all".to_owned(), "v=TLSRPTv1; rua=mailto:a@b.test,https://r.test/x".to_owned()];
        assert_eq!(rua_mailto(&txts).unwrap(), ["a@b.test"]);
        assert!(rua_mailto(&txts[..1]).is_err());
    }

    #[test]
    fn counts_round_trip_into_a_report() {
        let sts = AppliedPolicy {
            domain: "a.test".into(),
            kind: PolicyKind::Sts,
            strings: vec!["version: STSv1".into(), "mode: enforce".into()],
            mx_patterns: vec!["mx.a.test".into()],
        };
        let ok = Negotiation { policy: sts.clone(), failure: None };
        let failure = Failure {
            result: TlsFailure::CertificateHostMismatch,
            mx_host: Some("mx.a.test".into()),
            receiving_ip: Some("192.0.2.1".parse().unwrap()),
            sending_ip: Some("198.51.100.7".parse().unwrap()),
            detail: "certificate not valid for name\t\"mx.a.test\"".into(),
        };
        let bad = Negotiation { policy: sts.clone(), failure: Some(failure.clone()) };
        let mut counts = vec![(key(&ok), 2), (key(&bad), 1), ("junk".into(), 3)];
        counts.sort();
        let day = domain_days("2026-12-01", &counts);
        let cleaned = Failure { detail: "certificate not valid for name \"mx.a.test\"".into(), ..failure };
        assert_eq!(
            day,
            vec![DomainDay {
                day: "2026-12-01".into(),
                domain: "a.test".into(),
                policies: vec![PolicyDay { policy: sts, successes: 2, failures: vec![(cleaned, 1)] }]
            }]
        );
        let meta = Meta {
            organization: "B".into(),
            contact: "postmaster@b.test".into(),
            report_id: "r1".into(),
            begin: 0,
            end: 86_399,
        };
        let json = json_without_nulls(&to_report(&day[0], &meta)).unwrap();
        for field in [
            "\"total-successful-session-count\":2",
            "\"total-failure-session-count\":1",
            "\"result-type\":\"certificate-host-mismatch\"",
            "\"policy-type\":\"sts\"",
            "\"sending-mta-ip\":\"198.51.100.7\"",
            "\"receiving-ip\":\"192.0.2.1\"",
        ] {
            assert!(json.contains(field), "{field} in {json}");
        }
        // RFC 8460 §4.4 has no null: absent fields are left out (issue 27).
        assert!(!json.contains("null"), "{json}");
        // A key of an earlier version (no sending IP) still reads.
        let old = key(&bad).rsplit_once('\t').unwrap().0.to_owned();
        let day = domain_days("2026-12-01", &[(old, 1)]);
        let f = &day[0].policies[0].failures[0].0;
        assert_eq!((f.receiving_ip, f.sending_ip), (Some("192.0.2.1".parse().unwrap()), None));
    }
}
