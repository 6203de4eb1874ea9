//! DMARC aggregate reports (RFC 7489 §7.2): what the checks found is counted per day, From
//! domain, source IP and result in the `[store]` (embedded, or shared by a cluster: the rows
//! and policies are encoded here as tally keys, [`tally`] and [`day_reports`]), and turned once
//! a day into one report per domain: XML as RFC 7489 Appendix C defines it, gzip-compressed,
//! attached to a message for each `rua` address that accepts reports for the domain (external
//! destinations must publish `DOMAIN._report._dmarc.DEST`, RFC 7489 §7.1).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;

use mail_builder::MessageBuilder;

/// The policy a domain published (RFC 7489 `policy_published`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The domain whose record applied.
    pub domain: String,
    /// `adkim`: `r` or `s`.
    pub adkim: char,
    /// `aspf`: `r` or `s`.
    pub aspf: char,
    /// `p`: none, quarantine, reject.
    pub p: String,
    /// `sp`.
    pub sp: String,
    /// `pct` (100; 0 in DMARCbis test mode `t=y`).
    pub pct: u32,
    /// `mailto:` addresses of `rua`, without the scheme.
    pub rua: Vec<String>,
}

/// What one message contributes to a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The RFC 5322.From domain.
    pub header_from: String,
    /// The client's IP.
    pub source_ip: IpAddr,
    /// What we did: `none`, `quarantine` or `reject`.
    pub disposition: String,
    /// DKIM aligned pass (`pass`) or not (`fail`).
    pub dkim: String,
    /// SPF aligned pass or not.
    pub spf: String,
    /// Every DKIM signature: (d=, s=, result as in RFC 7489 DKIMResultType).
    pub dkim_results: Vec<(String, String, String)>,
    /// The SPF (MAIL FROM) domain and result (SPFResultType).
    pub spf_result: (String, String),
}

impl Row {
    /// The row as one tally key: its fields joined by tabs.
    #[must_use]
    pub fn key(&self) -> String {
        let dkim: Vec<String> = self.dkim_results.iter().map(|(d, s, r)| format!("{d},{s},{r}")).collect();
        [
            self.header_from.as_str(),
            &self.source_ip.to_string(),
            &self.disposition,
            &self.dkim,
            &self.spf,
            &self.spf_result.0,
            &self.spf_result.1,
            &dkim.join(";"),
        ]
        .join("\t")
    }

    fn from_key(key: &str) -> Option<Self> {
        let f: Vec<&str> = key.split('\t').collect();
        let [header_from, ip, disposition, dkim, spf, spf_domain, spf_result, sigs] = f.as_slice() else {
            return None;
        };
        let dkim_results = sigs
            .split(';')
            .filter(|s| !s.is_empty())
            .filter_map(|s| {
                let mut p = s.splitn(3, ',');
                Some((p.next()?.to_owned(), p.next()?.to_owned(), p.next()?.to_owned()))
            })
            .collect();
        Some(Self {
            header_from: (*header_from).to_owned(),
            source_ip: ip.parse().ok()?,
            disposition: (*disposition).to_owned(),
            dkim: (*dkim).to_owned(),
            spf: (*spf).to_owned(),
            dkim_results,
            spf_result: ((*spf_domain).to_owned(), (*spf_result).to_owned()),
        })
    }
}

impl Published {
    /// The policy as one text: its fields joined by tabs.
    #[must_use]
    pub fn encode(&self) -> String {
        format!("{}\t{}\t{}\t{}\t{}\t{}", self.adkim, self.aspf, self.p, self.sp, self.pct, self.rua.join(" "))
    }

    fn decode(domain: &str, s: &str) -> Option<Self> {
        let f: Vec<&str> = s.split('\t').collect();
        let [adkim, aspf, p, sp, pct, rua] = f.as_slice() else { return None };
        Some(Self {
            domain: domain.to_owned(),
            adkim: adkim.chars().next()?,
            aspf: aspf.chars().next()?,
            p: (*p).to_owned(),
            sp: (*sp).to_owned(),
            pct: pct.parse().ok()?,
            rua: rua.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        })
    }
}

/// One day's report for one domain.
#[derive(Debug, Clone)]
pub struct DayReport {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// The policy published.
    pub policy: Published,
    /// Rows with their message counts.
    pub rows: Vec<(Row, u64)>,
}

/// The tally keys of one message of `day`: its row ([`Row::key`]), and the policy its domain
/// published as the metadata (domain, [`Published::encode`]). The `[store]` counts them; see
/// [`day_reports`] for the way back.
#[must_use]
pub fn tally(policy: &Published, row: &Row) -> (String, (String, String)) {
    (row.key(), (policy.domain.clone(), policy.encode()))
}

/// One day's reports, one per domain with a published policy, from the `[store]`'s tally of
/// `day`: `meta` as (domain, encoded policy), `counts` as (row key, messages). Rows of a domain
/// without a policy, and keys that do not parse, are left out.
#[must_use]
pub fn day_reports(day: &str, meta: &[(String, String)], counts: &[(String, u64)]) -> Vec<DayReport> {
    let mut by_domain: BTreeMap<String, DayReport> = BTreeMap::new();
    for (domain, v) in meta {
        if let Some(policy) = Published::decode(domain, v) {
            by_domain.insert(domain.clone(), DayReport { day: day.to_owned(), policy, rows: Vec::new() });
        }
    }
    for (k, n) in counts {
        if let Some(row) = Row::from_key(k)
            && let Some(r) = by_domain.get_mut(&row.header_from)
        {
            r.rows.push((row, *n));
        }
    }
    by_domain.into_values().collect()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Who reports, and which report this is.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Our host name (the `Submitter`).
    pub submitter: String,
    /// `org_name`.
    pub org_name: String,
    /// `email`, also the From of the message.
    pub email: String,
    /// `report_id`.
    pub report_id: String,
    /// First second of the period (since the epoch, UTC).
    pub begin: i64,
    /// Last second of the period.
    pub end: i64,
}

/// The report as RFC 7489 Appendix C XML (version 1.0 format, no namespace, as receivers send
/// them).
pub fn to_xml(report: &DayReport, meta: &Meta) -> String {
    let (org_name, email, report_id, begin, end) =
        (meta.org_name.as_str(), meta.email.as_str(), meta.report_id.as_str(), meta.begin, meta.end);
    let p = &report.policy;
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>\n");
    x.push_str("  <version>1.0</version>\n");
    x.push_str(&format!(
        "  <report_metadata>\n    <org_name>{}</org_name>\n    <email>{}</email>\n    <report_id>{}</report_id>\n    <date_range>\n      <begin>{begin}</begin>\n      <end>{end}</end>\n    </date_range>\n  </report_metadata>\n",
        xml_escape(org_name),
        xml_escape(email),
        xml_escape(report_id)
    ));
    x.push_str(&format!(
        "  <policy_published>\n    <domain>{}</domain>\n    <adkim>{}</adkim>\n    <aspf>{}</aspf>\n    <p>{}</p>\n    <sp>{}</sp>\n    <pct>{}</pct>\n  </policy_published>\n",
        xml_escape(&p.domain),
        p.adkim,
        p.aspf,
        p.p,
        p.sp,
        p.pct
    ));
    for (row, count) in &report.rows {
        x.push_str(&format!(
            "  <record>\n    <row>\n      <source_ip>{}</source_ip>\n      <count>{count}</count>\n      <policy_evaluated>\n        <disposition>{}</disposition>\n        <dkim>{}</dkim>\n        <spf>{}</spf>\n      </policy_evaluated>\n    </row>\n    <identifiers>\n      <envelope_from>{}</envelope_from>\n      <header_from>{}</header_from>\n    </identifiers>\n    <auth_results>\n",
            row.source_ip,
            row.disposition,
            row.dkim,
            row.spf,
            xml_escape(&row.spf_result.0),
            xml_escape(&row.header_from)
        ));
        for (d, s, r) in &row.dkim_results {
            x.push_str(&format!(
                "      <dkim>\n        <domain>{}</domain>\n        <selector>{}</selector>\n        <result>{r}</result>\n      </dkim>\n",
                xml_escape(d),
                xml_escape(s)
            ));
        }
        x.push_str(&format!(
            "      <spf>\n        <domain>{}</domain>\n        <scope>mfrom</scope>\n        <result>{}</result>\n      </spf>\n    </auth_results>\n  </record>\n",
            xml_escape(&row.spf_result.0),
            row.spf_result.1
        ));
    }
    x.push_str("</feedback>\n");
    x
}

/// The report message (RFC 7489 §7.2.1.1): subject `Report Domain: D Submitter: S Report-ID:
/// <ID>`, a short text part, and the gzip-compressed XML as `S!D!BEGIN!END.xml.gz`.
///
/// # Errors
/// Compression or composition failed.
pub fn compose(xml: &str, domain: &str, meta: &Meta, to: &[String]) -> Result<Vec<u8>, std::io::Error> {
    let err = |e: std::io::Error| e;
    let (submitter, from, report_id, begin, end) =
        (meta.submitter.as_str(), meta.email.as_str(), meta.report_id.as_str(), meta.begin, meta.end);
    let mut gz = mail_auth::flate2::write::GzEncoder::new(Vec::new(), mail_auth::flate2::Compression::default());
    gz.write_all(xml.as_bytes()).map_err(err)?;
    let compressed = gz.finish().map_err(err)?;
    let mut out = Vec::new();
    MessageBuilder::new()
        .from(from)
        .to(to.iter().map(String::as_str).collect::<Vec<_>>())
        .header("Auto-Submitted", mail_builder::headers::text::Text::new("auto-generated"))
        .message_id(format!("{report_id}@{submitter}"))
        .subject(format!("Report Domain: {domain} Submitter: {submitter} Report-ID: <{report_id}>"))
        .text_body(format!(
            "DMARC aggregate report from {submitter}\r\n\r\nReport Domain: {domain}\r\nSubmitter: {submitter}\r\nReport-ID: {report_id}\r\n"
        ))
        .attachment("application/gzip", format!("{submitter}!{domain}!{begin}!{end}.xml.gz"), compressed)
        .write_to(&mut out)
        .map_err(err)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_round_trip_and_xml() {
        let policy = Published {
            domain: "a.test".into(),
            adkim: 'r',
            aspf: 'r',
            p: "reject".into(),
            sp: "reject".into(),
            pct: 100,
            rua: vec!["reports@a.test".into()],
        };
        let row = Row {
            header_from: "a.test".into(),
            source_ip: "192.0.2.1".parse().unwrap(),
            disposition: "none".into(),
            dkim: "pass".into(),
            spf: "pass".into(),
            dkim_results: vec![("a.test".into(), "s1".into(), "pass".into())],
            spf_result: ("a.test".into(), "pass".into()),
        };
        let (key, meta) = tally(&policy, &row);
        let stray = ("b.test\t192.0.2.2\tnone\tfail\tfail\tb.test\tfail\t".to_owned(), 7);
        let day = day_reports("2026-11-24", &[meta], &[(key, 2), stray, ("junk".into(), 1)]);
        assert_eq!(day.len(), 1);
        assert_eq!(day[0].policy, policy);
        assert_eq!(day[0].rows, vec![(row, 2)]);
        let meta = Meta {
            submitter: "mx.b.test".into(),
            org_name: "mx.b.test".into(),
            email: "postmaster@b.test".into(),
            report_id: "1".into(),
            begin: 0,
            end: 86399,
        };
        let xml = to_xml(&day[0], &meta);
        assert!(xml.contains("<count>2</count>") && xml.contains("<selector>s1</selector>"), "{xml}");
    }
}
