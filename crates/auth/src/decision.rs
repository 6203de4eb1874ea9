//! The action taken on the [`Findings`] of a message, as configured in `[authentication]`. Pure:
//! the same findings always give the same decision. Temporary DNS failures never give a 5xx
//! (`451 4.4.3` when the missing answer could have meant a rejection, or accept), and a sender
//! domain listed in `exempt_domains` is never refused for its results.

use postern_config::schema::{Action, Authentication};
use postern_types::{EnhancedStatus, Reply};

use crate::verify::{DmarcPolicy, Findings, Outcome};

/// What happens to the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Deliver as usual (results in the headers).
    Accept,
    /// Deliver to the quarantine folder, marked with `X-Postern-Quarantine: REASON`.
    Quarantine(String),
    /// Refuse with this reply (5xx or 4xx).
    Refuse(Reply),
}

/// Decides on `f` for a message whose RFC 5321.MailFrom domain is `f.spf_domain`, sent from
/// `client_ip` (for the reply text).
pub fn decide(f: &Findings, cfg: &Authentication, client_ip: std::net::IpAddr) -> Decision {
    // An exempt MAIL FROM domain waives the SPF actions, an exempt From domain the DMARC ones:
    // a forged MAIL FROM of a partner must not waive another domain's DMARC policy.
    let exempt = |d: &str| !d.is_empty() && cfg.exempt_domains.iter().any(|e| e == d);
    let spf_exempt = exempt(&f.spf_domain);
    // SPF is judged together with DMARC (RFC 7489 §10.1): a message that passes DMARC (through
    // an aligned DKIM signature, when SPF failed) is not refused for SPF. The forwarded-mail
    // case: the forwarder's address fails SPF, the author's signature still holds.
    // (`spf_at = "mail"` refuses at MAIL FROM, before DMARC can be known.)
    if !spf_exempt
        && f.dmarc != Outcome::Pass
        && let Some(refusal) = spf_refusal(f.spf, &f.spf_domain, cfg, client_ip)
    {
        return Decision::Refuse(refusal);
    }
    // DMARC (RFC 7489 §6.7): act on the domain's policy as configured.
    if exempt(&f.from_domain) || trusted_arc(f, cfg) {
        return Decision::Accept;
    }
    let action = match f.dmarc_policy {
        Some(DmarcPolicy::Reject) => cfg.dmarc_reject,
        Some(DmarcPolicy::Quarantine) => cfg.dmarc_quarantine,
        Some(DmarcPolicy::None) | None => Action::Accept,
    };
    let temp = || Decision::Refuse(temp_reply());
    let dkim_temp = f.dkim.iter().any(|(_, o)| *o == Outcome::TempError);
    match f.dmarc {
        Outcome::Fail | Outcome::TempError
            if (f.dmarc == Outcome::TempError || dkim_temp || f.spf == Outcome::TempError)
                && matches!(action, Action::Reject | Action::Quarantine)
                && cfg.temperror == Action::Defer =>
        {
            temp()
        }
        Outcome::Fail => match action {
            Action::Reject => Decision::Refuse(Reply::new(
                550,
                EnhancedStatus(5, 7, 1),
                format!(
                    "Message rejected by the DMARC policy of {}: neither SPF nor DKIM passed aligned with the From domain",
                    f.from_domain
                ),
            )),
            Action::Defer => {
                Decision::Refuse(Reply::new(451, EnhancedStatus(4, 7, 1), "DMARC check failed, try later"))
            }
            Action::Quarantine => Decision::Quarantine(format!("DMARC policy of {} (quarantine)", f.from_domain)),
            Action::Tag | Action::Accept => Decision::Accept,
        },
        _ => Decision::Accept,
    }
}

/// A DMARC failure vouched for by a trusted forwarder: the ARC chain passes and its last
/// sealer is in `arc_trusted_sealers` (RFC 8617 §7.2; RFC 7489 §10 lets local policy override).
fn trusted_arc(f: &Findings, cfg: &Authentication) -> bool {
    f.dmarc == Outcome::Fail
        && f.arc == Outcome::Pass
        && f.arc_sealer.as_ref().is_some_and(|s| cfg.arc_trusted_sealers.iter().any(|t| t.eq_ignore_ascii_case(s)))
}

/// The refusal, if any, that SPF's result `spf` for `domain` (the RFC 5321.MailFrom domain)
/// from `client_ip` calls for: RFC 7208 §8.4 `fail` and §8.5 `softfail` as configured
/// (`550 5.7.23`, RFC 7372), `temperror` as `451 4.4.3` when a failure would have been refused
/// and `temperror = "defer"`. Used after DATA by [`decide`], and at MAIL with `spf_at = "mail"`
/// (where `exempt_domains` is checked by the caller).
pub fn spf_refusal(spf: Outcome, domain: &str, cfg: &Authentication, client_ip: std::net::IpAddr) -> Option<Reply> {
    let refusal = || {
        Reply::new(
            550,
            EnhancedStatus(5, 7, 23),
            format!("SPF: {domain} does not designate {client_ip} as permitted sender"),
        )
    };
    match spf {
        Outcome::Fail if cfg.spf_fail == Action::Reject => Some(refusal()),
        Outcome::SoftFail if cfg.spf_softfail == Action::Reject => Some(refusal()),
        Outcome::TempError if cfg.spf_fail == Action::Reject && cfg.temperror == Action::Defer => Some(temp_reply()),
        _ => None,
    }
}

fn temp_reply() -> Reply {
    Reply::new(451, EnhancedStatus(4, 4, 3), "Temporary DNS failure while checking SPF/DKIM/DMARC, try again later")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings() -> Findings {
        Findings {
            spf: Outcome::Pass,
            spf_domain: "sender.test".into(),
            spf_helo: Outcome::None,
            dkim: vec![],
            dmarc: Outcome::Pass,
            dmarc_policy: Some(DmarcPolicy::Reject),
            from_domain: "sender.test".into(),
            arc: Outcome::None,
            arc_sealer: None,
            arc_seal: None,
            headers: String::new(),
            report: None,
        }
    }

    fn cfg() -> Authentication {
        toml::from_str("").unwrap()
    }

    #[test]
    fn defaults() {
        let ip = "192.0.2.7".parse().unwrap();
        assert_eq!(decide(&findings(), &cfg(), ip), Decision::Accept);
        let spf_fail = Findings { spf: Outcome::Fail, dmarc: Outcome::None, ..findings() };
        let Decision::Refuse(r) = decide(&spf_fail, &cfg(), ip) else { panic!() };
        assert_eq!((r.code, r.status), (550, Some(EnhancedStatus(5, 7, 23))));
        // SPF fails, DMARC passes (an aligned DKIM signature): delivered (RFC 7489 §10.1).
        let forwarded = Findings { spf: Outcome::Fail, dmarc: Outcome::Pass, ..findings() };
        assert_eq!(decide(&forwarded, &cfg(), ip), Decision::Accept);
        let soft = Findings { spf: Outcome::SoftFail, dmarc: Outcome::Pass, ..findings() };
        assert_eq!(decide(&soft, &cfg(), ip), Decision::Accept);
        let temp = Findings { spf: Outcome::TempError, dmarc: Outcome::None, ..findings() };
        let Decision::Refuse(r) = decide(&temp, &cfg(), ip) else { panic!() };
        assert_eq!((r.code, r.status), (451, Some(EnhancedStatus(4, 4, 3))));
        let dmarc = Findings { dmarc: Outcome::Fail, spf: Outcome::None, ..findings() };
        let Decision::Refuse(r) = decide(&dmarc, &cfg(), ip) else { panic!() };
        assert_eq!(r.code, 550);
        let q = Findings { dmarc_policy: Some(DmarcPolicy::Quarantine), ..dmarc.clone() };
        assert!(matches!(decide(&q, &cfg(), ip), Decision::Quarantine(_)));
        let none = Findings { dmarc_policy: Some(DmarcPolicy::None), ..dmarc.clone() };
        assert_eq!(decide(&none, &cfg(), ip), Decision::Accept);
        // A DKIM key lookup that failed temporarily: never a 5xx.
        let dkim_temp = Findings { dkim: vec![("sender.test".into(), Outcome::TempError)], ..dmarc.clone() };
        let Decision::Refuse(r) = decide(&dkim_temp, &cfg(), ip) else { panic!() };
        assert_eq!(r.code, 451);
        let mut exempt = cfg();
        exempt.exempt_domains = vec!["sender.test".into()];
        assert_eq!(decide(&spf_fail, &exempt, ip), Decision::Accept);
        assert_eq!(decide(&dmarc, &exempt, ip), Decision::Accept, "the From domain is exempt too");
        // A partner's MAIL FROM does not waive another From domain's DMARC policy.
        let forged = Findings { from_domain: "bank.test".into(), ..dmarc.clone() };
        let Decision::Refuse(r) = decide(&forged, &exempt, ip) else { panic!() };
        assert_eq!(r.code, 550);
    }

    #[test]
    fn trusted_arc_sealers_override_a_dmarc_failure() {
        let ip = "192.0.2.7".parse().unwrap();
        let mut trusting = cfg();
        trusting.arc_trusted_sealers = vec!["lists.example".into()];
        let sealed = Findings {
            dmarc: Outcome::Fail,
            spf: Outcome::None,
            arc: Outcome::Pass,
            arc_sealer: Some("lists.example".into()),
            ..findings()
        };
        assert_eq!(decide(&sealed, &trusting, ip), Decision::Accept);
        assert!(matches!(decide(&sealed, &cfg(), ip), Decision::Refuse(_)), "not trusted by default");
        let broken = Findings { arc: Outcome::Fail, ..sealed.clone() };
        assert!(matches!(decide(&broken, &trusting, ip), Decision::Refuse(_)), "a failed chain is not trusted");
        let other = Findings { arc_sealer: Some("evil.example".into()), ..sealed };
        assert!(matches!(decide(&other, &trusting, ip), Decision::Refuse(_)), "another sealer is not trusted");
    }
}
