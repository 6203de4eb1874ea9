//! The checks of an incoming message (on `mx` listeners, for clients that are neither trusted
//! nor authenticated): SPF of the HELO identity and of MAIL FROM (RFC 7208 §2.3, §2.4), every
//! DKIM signature (RFC 6376 §6), the ARC chain (RFC 8617), and DMARC on the RFC 5322.From domain
//! with alignment (RFC 7489 §3.1, §6.6). The results come back as owned [`Findings`] together with
//! the header fields to prepend: one `Authentication-Results` (RFC 8601) with our host name as
//! authserv-id, and `Received-SPF` (RFC 7208 §9.1).

use std::net::IpAddr;

use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator, ReceivedSpf, SpfResult,
};
use postern_dns::DnsSettings;

use postern_report::dmarc::{Published, Row};

/// The outcome of one check, reduced to what policy needs (RFC 8601 §2.7 result names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `pass`.
    Pass,
    /// `fail` (SPF `-all`, a broken DKIM signature, DMARC not aligned).
    Fail,
    /// SPF `softfail` (`~all`).
    SoftFail,
    /// `neutral`, `none` and the like: nothing to act on.
    None,
    /// `temperror`: DNS failed temporarily; the answer might have been a failure.
    TempError,
    /// `permerror`: a broken record; treated as no record.
    PermError,
}

impl std::fmt::Display for Outcome {
    /// The RFC 8601 §2.7 result name: `pass`, `fail`, `softfail`, `none`, `temperror`,
    /// `permerror`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::SoftFail => "softfail",
            Self::None => "none",
            Self::TempError => "temperror",
            Self::PermError => "permerror",
        })
    }
}

impl std::fmt::Display for DmarcPolicy {
    /// The `p=` value: `none`, `quarantine`, `reject`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Quarantine => "quarantine",
            Self::Reject => "reject",
        })
    }
}

/// What the checks found about one message.
#[derive(Debug, Clone)]
pub struct Findings {
    /// SPF of the MAIL FROM identity (of `postmaster@HELO` for the null sender).
    pub spf: Outcome,
    /// The domain SPF was checked for.
    pub spf_domain: String,
    /// SPF of the HELO identity.
    pub spf_helo: Outcome,
    /// Each DKIM signature's `d=` and outcome.
    pub dkim: Vec<(String, Outcome)>,
    /// DMARC (pass when SPF or DKIM passes aligned), and the domain's published policy.
    pub dmarc: Outcome,
    /// The policy of the From domain (`p=`, or `sp=` for a subdomain), `None` without a record.
    pub dmarc_policy: Option<DmarcPolicy>,
    /// The RFC 5322.From domain, lower-case (empty without a From).
    pub from_domain: String,
    /// ARC chain validation.
    pub arc: Outcome,
    /// `d=` of the last ARC-Seal of the incoming chain, when there is one.
    pub arc_sealer: Option<String>,
    /// Our ARC set for the message (CRLF-terminated fields), when it was asked for and could be
    /// made; or why not.
    pub arc_seal: Option<Result<String, crate::seal::SealError>>,
    /// `Authentication-Results:` and `Received-SPF:` fields, each ending in CRLF.
    pub headers: String,
    /// For the aggregate report, when the From domain publishes DMARC: its policy and this
    /// message's row (disposition `none` until the caller sets what it did).
    pub report: Option<(Published, Row)>,
}

/// A DMARC `p=` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcPolicy {
    /// `p=none`: monitor only.
    None,
    /// `p=quarantine`.
    Quarantine,
    /// `p=reject`.
    Reject,
}

/// Runs the checks through its own resolver (the `[dns]` settings).
pub struct Checker {
    authenticator: MessageAuthenticator,
    /// SPF's own resolver ([`crate::spf`] evaluates SPF, mail-auth the rest).
    spf_dns: postern_dns::HickoryResolver,
    hostname: String,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Checker({})", self.hostname)
    }
}

impl Checker {
    /// A checker whose authserv-id is `hostname`, resolving through `dns`.
    ///
    /// # Errors
    /// The resolver cannot be built (unreadable system configuration).
    pub fn new(dns: &DnsSettings, hostname: &str) -> Result<Self, postern_dns::ResolverError> {
        let resolver = postern_dns::tokio_resolver(dns)?;
        let spf_dns = postern_dns::HickoryResolver::new(dns)?;
        Ok(Self { authenticator: MessageAuthenticator(resolver), spf_dns, hostname: hostname.to_owned() })
    }

    /// The `rua` addresses of `domain`'s DMARC record that accept its reports: those in the
    /// same domain, and external ones whose domain publishes `DOMAIN._report._dmarc.DEST`
    /// (RFC 7489 §7.1).
    pub async fn report_addresses(&self, domain: &str, addresses: &[String]) -> Vec<String> {
        self.authenticator
            .verify_dmarc_report_address(
                domain,
                addresses,
                None::<&mail_auth::common::cache::NoCache<Box<str>, mail_auth::Txt>>,
            )
            .await
            .map(|v| v.into_iter().cloned().collect())
            .unwrap_or_default()
    }

    /// SPF of the MAIL FROM identity alone (RFC 7208 §2.4), for `[authentication] spf_at =
    /// "mail"`: `mail_from` (not empty) from `ip`, which said `helo`.
    pub async fn spf_mail_from(&self, ip: IpAddr, helo: &str, mail_from: &str) -> Outcome {
        spf_outcome(crate::spf::check_mail_from(&self.spf_dns, ip, helo, mail_from, &self.hostname).await.result())
    }

    /// SPF of the HELO identity alone (RFC 7208 §2.3): may `ip` say `helo`?
    pub async fn spf_helo(&self, ip: IpAddr, helo: &str) -> Outcome {
        spf_outcome(crate::spf::check_helo(&self.spf_dns, ip, helo, &self.hostname).await.result())
    }

    /// Checks `message` (as received, CRLF) from `ip`, which said `helo` and gave `mail_from`
    /// (empty for the null sender). With `seal`, the message is being forwarded: its ARC set
    /// (RFC 8617 §5.1) is made with that key from these results and the incoming chain.
    pub async fn check(
        &self,
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
        message: &[u8],
        seal: Option<&crate::ArcKey>,
    ) -> Findings {
        let host = self.hostname.as_str();
        let auth = &self.authenticator;
        let spf_helo = crate::spf::check_helo(&self.spf_dns, ip, helo, host).await;
        let spf = if mail_from.is_empty() {
            spf_helo.clone()
        } else {
            crate::spf::check_mail_from(&self.spf_dns, ip, helo, mail_from, host).await
        };
        let mail_from_domain = mail_from.rsplit_once('@').map_or(helo, |(_, d)| d).to_lowercase();
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            // No header field to check: ARC is `none` (RFC 8617 §4.4 has no other word for it).
            let headers = AuthenticationResults::new(host)
                .with_spf_ehlo_result(&spf_helo, ip, helo)
                .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
                .with_arc_result(&mail_auth::ArcOutput::default(), ip)
                .to_header();
            return Findings {
                spf: spf_outcome(spf.result()),
                spf_domain: mail_from_domain,
                spf_helo: spf_outcome(spf_helo.result()),
                dkim: Vec::new(),
                dmarc: Outcome::None,
                dmarc_policy: None,
                from_domain: String::new(),
                arc: Outcome::None,
                arc_sealer: None,
                arc_seal: None,
                headers: headers + &ReceivedSpf::new(&spf, ip, helo, mail_from, host).to_header(),
                report: None,
            };
        };
        let dkim = auth.verify_dkim(&parsed).await;
        let (arc, arc_outcome, broken) = arc_result(message, &parsed, auth.verify_arc(&parsed).await);
        let from = parsed.from().to_lowercase();
        let from_domain = from.rsplit_once('@').map(|(_, d)| d.to_owned()).unwrap_or_default();
        let dmarc = auth.verify_dmarc(DmarcParameters::new(&parsed, &dkim, &mail_from_domain, &spf)).await;
        let (dmarc_outcome, dmarc_policy) = dmarc_verdict(&dmarc);
        // RFC 6376 §3.7 and RFC 8601 §2.7.1: a body that does not match its hash is `fail`;
        // mail-auth writes `neutral` for it.
        let results = AuthenticationResults::new(host)
            .with_dkim_results(&dkim, &from)
            .with_spf_ehlo_result(&spf_helo, ip, helo)
            .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
            .with_arc_result(&arc, ip)
            .with_dmarc_result(&dmarc);
        let headers = results
            .to_header()
            .replace("dkim=neutral (body hash did not verify)", "dkim=fail (body hash did not verify)");
        let arc_sealer = arc.sets().last().map(|s| s.seal.header.d.to_lowercase());
        let arc_seal = seal.map(|key| match &broken {
            // A chain mail-auth could not read has no last instance to seal after: a fresh
            // `i=1 cv=none` would hide the failure, so it is forwarded unsealed (logged).
            Some(why) if arc.sets().is_empty() => Err(crate::seal::SealError::Malformed(why.clone())),
            _ => key.seal(&parsed, &results, &arc),
        });
        let report = dmarc.dmarc_record().map(|record| {
            let checked =
                Checked { ip, from_domain: &from_domain, mail_from_domain: &mail_from_domain, dkim: &dkim, spf: &spf };
            aggregate_row(&dmarc, record, &checked)
        });
        Findings {
            report,
            spf: spf_outcome(spf.result()),
            spf_domain: mail_from_domain,
            spf_helo: spf_outcome(spf_helo.result()),
            dkim: dkim
                .iter()
                .map(|d| (d.signature().map(|s| s.d.to_lowercase()).unwrap_or_default(), dkim_outcome(d.result())))
                .collect(),
            dmarc: dmarc_outcome,
            dmarc_policy,
            from_domain,
            arc: arc_outcome,
            arc_sealer,
            arc_seal,
            headers: headers + &ReceivedSpf::new(&spf, ip, helo, mail_from, host).to_header(),
        }
    }
}

/// DMARC's outcome and, when the domain publishes a record, its policy. Pass if either
/// mechanism passes aligned; with a record and neither, fail (RFC 7489 §6.6.2).
fn dmarc_verdict(dmarc: &mail_auth::DmarcOutput) -> (Outcome, Option<DmarcPolicy>) {
    let outcome = match dmarc.result() {
        DmarcResult::Pass => Outcome::Pass,
        DmarcResult::TempError(_) => Outcome::TempError,
        DmarcResult::Fail(_) => Outcome::Fail,
        DmarcResult::PermError(_) => Outcome::PermError,
        DmarcResult::None => Outcome::None,
    };
    let policy = dmarc.dmarc_record().map(|_| match dmarc.policy() {
        Policy::Reject => DmarcPolicy::Reject,
        Policy::Quarantine => DmarcPolicy::Quarantine,
        Policy::None | Policy::Unspecified => DmarcPolicy::None,
    });
    (outcome, policy)
}

/// What one check found, for its row in the DMARC aggregate report.
struct Checked<'a> {
    ip: IpAddr,
    from_domain: &'a str,
    mail_from_domain: &'a str,
    dkim: &'a [mail_auth::DkimOutput<'a>],
    spf: &'a mail_auth::SpfOutput,
}

/// The published policy of `record` and this check's row for the DMARC aggregate report (RFC
/// 7489 §7.2, Appendix C), as `report::dmarc` tallies them.
fn aggregate_row(
    dmarc: &mail_auth::DmarcOutput,
    record: &mail_auth::dmarc::Dmarc,
    c: &Checked<'_>,
) -> (Published, Row) {
    let policy = |p: &Policy| match p {
        Policy::Reject => "reject",
        Policy::Quarantine => "quarantine",
        Policy::None | Policy::Unspecified => "none",
    };
    let align = |a: &mail_auth::dmarc::Alignment| match a {
        mail_auth::dmarc::Alignment::Strict => 's',
        mail_auth::dmarc::Alignment::Relaxed => 'r',
    };
    let published = Published {
        domain: dmarc.domain().to_lowercase(),
        adkim: align(&record.adkim),
        aspf: align(&record.aspf),
        p: policy(&record.p).to_owned(),
        sp: policy(if record.sp == Policy::Unspecified { &record.p } else { &record.sp }).to_owned(),
        pct: if record.t { 0 } else { 100 },
        rua: record.rua.iter().map(|u| u.uri.trim_start_matches("mailto:").to_owned()).collect(),
    };
    let pass_fail = |r: &DmarcResult| if *r == DmarcResult::Pass { "pass" } else { "fail" }.to_owned();
    let row = Row {
        header_from: c.from_domain.to_owned(),
        source_ip: c.ip,
        disposition: "none".to_owned(),
        dkim: pass_fail(dmarc.dkim_result()),
        spf: pass_fail(dmarc.spf_result()),
        dkim_results: c
            .dkim
            .iter()
            .filter_map(|d| {
                let s = d.signature()?;
                Some((s.d.to_lowercase(), s.s.clone(), report_dkim(d.result()).to_owned()))
            })
            .collect(),
        spf_result: (c.mail_from_domain.to_owned(), report_spf(c.spf.result()).to_owned()),
    };
    (published, row)
}

/// The ARC result as RFC 8617 §4.4 knows it, `none`, `pass` or `fail`: mail-auth's verdict on
/// the signatures, failed too when [`crate::arc::structure`] finds the chain broken. Returns
/// the output to report and seal with (its result replaced accordingly), the outcome, and why
/// the structure is broken, if it is.
fn arc_result<'x>(
    message: &[u8],
    parsed: &'x AuthenticatedMessage<'x>,
    arc: mail_auth::ArcOutput<'x>,
) -> (mail_auth::ArcOutput<'x>, Outcome, Option<String>) {
    use crate::arc::Structure;
    let failed = || DkimResult::Fail(mail_auth::Error::Arc(mail_auth::arc::ArcError::BrokenChain));
    match crate::arc::structure(message) {
        Structure::Absent => (arc.with_result(DkimResult::None), Outcome::None, None),
        Structure::Broken(why) => (arc.with_result(failed()), Outcome::Fail, Some(why)),
        Structure::Sound(_) if *arc.result() == DkimResult::Pass => (arc, Outcome::Pass, None),
        Structure::Sound(n) => (with_every_set(arc, parsed, n).with_result(failed()), Outcome::Fail, None),
    }
}

/// `arc` with every set of the sound chain of `n` sets in `parsed`: mail-auth stops adding
/// sets at the first one that fails to verify, and its sealer numbers the new set after the
/// last one it holds, so a failed chain would be sealed as a fresh `i=1 cv=none` instead of
/// `i=n+1 cv=fail` (RFC 8617 §5.1.2).
fn with_every_set<'x>(
    mut arc: mail_auth::ArcOutput<'x>,
    parsed: &'x AuthenticatedMessage<'x>,
    n: u32,
) -> mail_auth::ArcOutput<'x> {
    use mail_auth::arc::Set;
    use mail_auth::common::headers::Header;
    let have = arc.sets().len();
    for i in u32::try_from(have).unwrap_or(u32::MAX) + 1..=n {
        let seal = parsed.as_headers.iter().find(|h| h.header.i == i);
        let sig = parsed.ams_headers.iter().find(|h| h.header.i == i);
        let res = parsed.aar_headers.iter().find(|h| h.header.i == i);
        let (Some(seal), Some(sig), Some(res)) = (seal, sig, res) else { break };
        arc = arc.with_set(Set {
            signature: Header { name: sig.name, value: sig.value, header: &sig.header },
            seal: Header { name: seal.name, value: seal.value, header: &seal.header },
            results: Header { name: res.name, value: res.value, header: &res.header },
        });
    }
    arc
}

/// RFC 7489 Appendix C `DKIMResultType`.
fn report_dkim(r: &DkimResult) -> &'static str {
    match dkim_outcome(r) {
        Outcome::Pass => "pass",
        Outcome::Fail | Outcome::SoftFail => "fail",
        Outcome::None => "neutral",
        Outcome::TempError => "temperror",
        Outcome::PermError => "permerror",
    }
}

/// RFC 7489 Appendix C `SPFResultType`.
fn report_spf(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::None => "none",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
    }
}

fn spf_outcome(r: SpfResult) -> Outcome {
    match r {
        SpfResult::Pass => Outcome::Pass,
        SpfResult::Fail => Outcome::Fail,
        SpfResult::SoftFail => Outcome::SoftFail,
        SpfResult::Neutral | SpfResult::None => Outcome::None,
        SpfResult::TempError => Outcome::TempError,
        SpfResult::PermError => Outcome::PermError,
    }
}

fn dkim_outcome(r: &DkimResult) -> Outcome {
    match r {
        DkimResult::Pass => Outcome::Pass,
        // RFC 6376 §3.7: a body hash mismatch is a failed verification (mail-auth says neutral).
        DkimResult::Neutral(mail_auth::Error::Dkim(mail_auth::dkim::DkimError::FailedBodyHashMatch)) => Outcome::Fail,
        DkimResult::Fail(_) => Outcome::Fail,
        DkimResult::Neutral(_) | DkimResult::None => Outcome::None,
        DkimResult::TempError(_) => Outcome::TempError,
        DkimResult::PermError(_) => Outcome::PermError,
    }
}

/// `message` without the `Authentication-Results` fields whose authserv-id is `authserv_id`
/// (case-insensitive, RFC 8601 §2.5): results that claim to be ours but came from outside are
/// forgeries (§5). The authserv-id is read as §2.2 defines it, from the unfolded field: after
/// any comments and white space, a token or a quoted string, so a comment before it, quotes
/// around it or a fold do not hide it. Everything else, the body included, is kept byte for
/// byte.
pub fn strip_forged_results(message: &[u8], authserv_id: &str) -> Vec<u8> {
    let end = header_end(message);
    let mut out = Vec::with_capacity(message.len());
    let mut pos = 0;
    while pos < end {
        // One field: its first line and every continuation line (RFC 5322 §2.2.3).
        let mut field_end = pos;
        loop {
            field_end = message[field_end..end].iter().position(|&b| b == b'\n').map_or(end, |i| field_end + i + 1);
            if field_end >= end || !matches!(message.get(field_end), Some(b' ' | b'\t')) {
                break;
            }
        }
        let field = &message[pos..field_end];
        if !is_our_result(field, authserv_id) {
            out.extend_from_slice(field);
        }
        pos = field_end;
    }
    out.extend_from_slice(&message[end..]);
    out
}

/// The offset just past the header section's last field (before the empty line).
fn header_end(message: &[u8]) -> usize {
    let mut pos = 0;
    while pos < message.len() {
        let rest = &message[pos..];
        if rest.starts_with(b"\r\n") || rest.starts_with(b"\n") {
            return pos;
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => pos += i + 1,
            None => return message.len(),
        }
    }
    pos
}

/// Whether `field` (a whole header field, folded or not) is an `Authentication-Results` whose
/// authserv-id is `authserv_id`.
fn is_our_result(field: &[u8], authserv_id: &str) -> bool {
    let Some(colon) = field.iter().position(|&b| b == b':') else { return false };
    if !field[..colon].trim_ascii().eq_ignore_ascii_case(b"Authentication-Results") {
        return false;
    }
    let value = String::from_utf8_lossy(&field[colon + 1..]);
    authserv_id_of(&value).is_some_and(|id| id.eq_ignore_ascii_case(authserv_id))
}

/// The authserv-id of an `Authentication-Results` value (RFC 8601 §2.2: `[CFWS] authserv-id`,
/// where authserv-id is a `value`, a token or a quoted-string of RFC 2045 §5.1); `None` when the
/// value does not start with one.
fn authserv_id_of(value: &str) -> Option<String> {
    let rest = skip_cfws(value)?;
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut id = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(id),
                '\\' => id.push(chars.next()?),
                '\r' | '\n' => {}
                c => id.push(c),
            }
        }
        return None;
    }
    // RFC 2045 §5.1: a token is any CHAR but SPACE, CTLs and tspecials.
    let token: String =
        rest.chars().take_while(|c| !c.is_ascii_control() && !" ()<>@,;:\\\"/[]?=".contains(*c)).collect();
    (!token.is_empty()).then_some(token)
}

/// `s` after leading white space, folds and comments (RFC 5322 §3.2.2 CFWS; comments nest, and
/// a backslash quotes the next character); `None` when a comment is not closed.
fn skip_cfws(s: &str) -> Option<&str> {
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([' ', '\t', '\r', '\n']);
        if !rest.starts_with('(') {
            return Some(rest);
        }
        let mut depth = 0usize;
        let mut chars = rest.char_indices();
        let mut close = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[close? + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape of a forged result that claims our authserv-id (issue 26, finding 8): a
    /// comment before the id, a quoted id, a fold before it, a nested comment, other case.
    #[test]
    fn strips_every_spelling_of_our_authserv_id() {
        let forged = [
            "Authentication-Results: (forged) mx.example.test; dkim=pass\r\n",
            "Authentication-Results: \"mx.example.test\"; dkim=pass\r\n",
            "Authentication-Results:\r\n mx.example.test;\r\n\tdmarc=pass\r\n",
            "Authentication-Results: (a (nested \\) comment)) MX.Example.Test 1; spf=pass\r\n",
            "Authentication-Results: \"mx.example\\.test\"; arc=pass\r\n",
            "authentication-results:mx.example.test;dkim=pass\r\n",
        ];
        for f in forged {
            let m = format!("{f}Subject: x\r\n\r\nbody\r\n");
            let out = String::from_utf8(strip_forged_results(m.as_bytes(), "mx.example.test")).unwrap();
            assert_eq!(out, "Subject: x\r\n\r\nbody\r\n", "{f:?}");
        }
        for kept in [
            "Authentication-Results: mx.example.test.evil; dkim=pass\r\n",
            "Authentication-Results: (mx.example.test) other.test; spf=pass\r\n",
            "Authentication-Results: \"other mx.example.test\"; spf=pass\r\n",
        ] {
            let m = format!("{kept}Subject: x\r\n\r\nbody\r\n");
            assert_eq!(strip_forged_results(m.as_bytes(), "mx.example.test"), m.as_bytes(), "{kept:?}");
        }
    }

    #[test]
    fn strips_only_our_forged_results() {
        let m = b"Authentication-Results: mx.example.test;\r\n\tdkim=pass header.d=bank.test\r\n\
            Authentication-Results: other.test; spf=pass\r\nSubject: x\r\nAUTHENTICATION-RESULTS: MX.example.test; dmarc=pass\r\n\r\n\
            Authentication-Results: mx.example.test; body text stays\r\n";
        let out = String::from_utf8(strip_forged_results(m, "mx.example.test")).unwrap();
        assert_eq!(
            out,
            "Authentication-Results: other.test; spf=pass\r\nSubject: x\r\n\r\nAuthentication-Results: mx.example.test; body text stays\r\n"
        );
    }
}
