//! The checks right after the first HELO/EHLO, cheapest first: the network lists, the HELO
//! name's shape, one reverse lookup (PTR, FCrDNS, generic names), the HELO name in DNS, then
//! the DNSBLs. Each stage returns `true` when a refusal stops screening.

use postern_proto::Refusal;
use std::net::IpAddr;

use postern_config::Config;
use postern_config::schema::{Check, Policy};
use postern_dns::{Answer, Resolver};
use postern_policy::screen::{GENERIC_WORDS, HeloShape, generic_ptr, helo_shape, registered_domain};
use postern_types::Verdict;

use super::{Facts, Listing, Result_, ScreenLists, Screened, addresses, addrs_text, apply, join, listing, reversed};

/// Runs the checks of `config.policy` for `ip`, which said `helo` (RFC 5321 §4.1.1.1), and
/// returns the verdict with every check's report line. Never a 5xx for a DNS failure: the
/// check gives `451 4.4.3` or is skipped (`dns_temperror`).
pub async fn screen<R: Resolver>(
    resolver: &R,
    config: &Config,
    lists: &ScreenLists,
    ip: IpAddr,
    helo: &str,
) -> Screened {
    let p = &config.policy;
    let mut out = Screened::new(Facts::new(ip, None, None, None));
    if lists.allow.contains(ip) {
        out.report.push("allow_networks: listed -> accept, no further checks".into());
        out.allowed = true;
        return out;
    }
    if lists.block.contains(ip) {
        out.report.push("block_networks: listed -> reject".into());
        out.verdict = Verdict::PermFail(Refusal::Blocked(ip).reply());
        return out;
    }
    let shape = helo_shape(helo);
    if local_checks(&mut out, config, helo, &shape) {
        return out;
    }
    let Some(confirmed) = reverse_dns(resolver, &mut out, p, ip).await else { return out };
    if helo_in_dns(resolver, &mut out, p, ip, helo, &shape, confirmed.as_deref()).await {
        return out;
    }
    dnsbls(resolver, &mut out, p, ip).await;
    out
}

/// Local facts first: the HELO name's shape, and that it is not ours.
fn local_checks(out: &mut Screened, config: &Config, helo: &str, shape: &HeloShape) -> bool {
    let p = &config.policy;
    if apply(out, p, "helo_fqdn", p.helo_fqdn, || {
        if *shape == HeloShape::Invalid {
            Result_::Fail(
                format!("{helo:?} is neither a domain name nor an address literal"),
                (5, 2),
                format!(
                    "HELO/EHLO {helo} rejected: use your fully qualified host name or [address] (RFC 5321 4.1.1.1)"
                ),
            )
        } else {
            Result_::Pass(helo.to_owned())
        }
    }) {
        return true;
    }
    let ours = match shape {
        HeloShape::Fqdn(name) => name.eq_ignore_ascii_case(&config.hostname),
        HeloShape::Literal(lit) => config.listener.iter().any(|l| l.address.ip() == *lit) && !lit.is_unspecified(),
        HeloShape::Invalid => false,
    };
    if apply(out, p, "helo_not_ours", p.helo_not_ours, || {
        if ours {
            Result_::Fail(
                format!("{helo} is our own name"),
                (7, 1),
                format!("HELO/EHLO {helo} rejected: that is our name, and you are not us"),
            )
        } else {
            Result_::Pass(helo.to_owned())
        }
    }) {
        return true;
    }
    false
}

/// One reverse lookup serves ptr, fcrdns, generic_ptr and helo_matches. Returns the
/// forward-confirmed name (`Some(None)` when there is none), or `None` when a refusal stops
/// screening.
async fn reverse_dns<R: Resolver>(resolver: &R, out: &mut Screened, p: &Policy, ip: IpAddr) -> Option<Option<String>> {
    let need_ptr = [p.ptr, p.fcrdns, p.generic_ptr, p.helo_matches].iter().any(|c| *c != Check::Off)
        || (p.greylist != Check::Off && p.greylist_skip_fcrdns);
    let ptr = if need_ptr { Some(resolver.ptr(ip).await) } else { None };
    if let Some(ptr) = &ptr {
        let r = match ptr {
            Answer::Found(names) => Result_::Pass(names.join(",")),
            Answer::NotFound => Result_::Fail(
                "no PTR record".into(),
                (7, 25),
                format!("Client [{ip}] has no reverse DNS (PTR record); ask your provider to set one"),
            ),
            Answer::TempFail(e) => Result_::Temp(format!("PTR lookup: {e}")),
        };
        if apply(out, p, "ptr", p.ptr, || r) {
            return None;
        }
    }
    // FCrDNS: a PTR name whose addresses include the client's.
    let mut confirmed: Option<String> = None;
    let mut fcrdns_temp = None;
    if let Some(Answer::Found(names)) = &ptr {
        for name in names.iter().take(10) {
            match addresses(resolver, name).await {
                Answer::Found(addrs) if addrs.contains(&ip) => {
                    confirmed = Some(name.clone());
                    break;
                }
                Answer::TempFail(e) => fcrdns_temp = Some(e),
                _ => {}
            }
        }
    }
    out.facts.client_name.clone_from(&confirmed);
    if p.fcrdns != Check::Off
        && let Some(ptr) = &ptr
    {
        let r = match (ptr, &confirmed, &fcrdns_temp) {
            (_, Some(name), _) => Result_::Pass(name.clone()),
            (Answer::TempFail(e), _, _) | (_, None, Some(e)) => Result_::Temp(format!("forward lookup: {e}")),
            (Answer::Found(names), None, None) => Result_::Fail(
                format!("PTR {} does not resolve back", names.join(",")),
                (7, 25),
                format!(
                    "Reverse DNS of {ip} ({}) does not resolve back to it (FCrDNS); fix the A/AAAA record of that name",
                    names.join(", ")
                ),
            ),
            (_, None, None) => Result_::Fail(
                "no PTR record".into(),
                (7, 25),
                format!("Reverse DNS of {ip} is missing, so it cannot resolve back (FCrDNS)"),
            ),
        };
        if apply(out, p, "fcrdns", p.fcrdns, || r) {
            return None;
        }
    }
    if p.generic_ptr != Check::Off
        && let Some(Answer::Found(names)) = &ptr
    {
        let words: Vec<String> =
            p.generic_words.clone().unwrap_or_else(|| GENERIC_WORDS.iter().map(|s| (*s).to_owned()).collect());
        let name = confirmed.clone().unwrap_or_else(|| names[0].clone());
        let r = if generic_ptr(&name, ip, &words) {
            Result_::Fail(
                format!("{name} looks generic"),
                (7, 25),
                format!(
                    "Reverse DNS of {ip} ({name}) looks like a dynamic or generic address; send through your provider's mail server or set a specific PTR"
                ),
            )
        } else {
            Result_::Pass(name)
        };
        if apply(out, p, "generic_ptr", p.generic_ptr, || r) {
            return None;
        }
    }
    Some(confirmed)
}

/// The HELO name in DNS: it resolves, and matches the client (its address, or the registered
/// domain of the forward-confirmed name).
async fn helo_in_dns<R: Resolver>(
    resolver: &R,
    out: &mut Screened,
    p: &Policy,
    ip: IpAddr,
    helo: &str,
    shape: &HeloShape,
    confirmed: Option<&str>,
) -> bool {
    let helo_addrs = match shape {
        HeloShape::Fqdn(name) if p.helo_resolves != Check::Off || p.helo_matches != Check::Off => {
            Some(addresses(resolver, name).await)
        }
        _ => None,
    };
    if p.helo_resolves != Check::Off
        && let Some(a) = &helo_addrs
    {
        let r = match a {
            Answer::Found(v) => Result_::Pass(format!("{helo} -> {}", join(v))),
            Answer::NotFound => Result_::Fail(
                format!("{helo} has no A/AAAA record"),
                (7, 1),
                format!("HELO/EHLO {helo} rejected: the name does not resolve; use a host name that exists in DNS"),
            ),
            Answer::TempFail(e) => Result_::Temp(format!("HELO lookup: {e}")),
        };
        if apply(out, p, "helo_resolves", p.helo_resolves, || r) {
            return true;
        }
    }
    if p.helo_matches != Check::Off {
        let r = match (shape, &helo_addrs) {
            (HeloShape::Literal(lit), _) if *lit == ip => Result_::Pass(helo.to_owned()),
            (HeloShape::Literal(_), _) => Result_::Fail(
                format!("literal {helo} is not {ip}"),
                (7, 1),
                format!("HELO/EHLO {helo} rejected: the address literal is not your address {ip}"),
            ),
            (_, Some(Answer::TempFail(e))) => Result_::Temp(format!("HELO lookup: {e}")),
            (HeloShape::Fqdn(name), found) => {
                let resolves_here = matches!(found, Some(Answer::Found(v)) if v.contains(&ip));
                let same_domain = confirmed.is_some_and(|c| registered_domain(c) == registered_domain(name));
                if resolves_here || same_domain {
                    Result_::Pass(name.clone())
                } else {
                    Result_::Fail(
                        format!(
                            "{name} resolves to {} and is not in the domain of the PTR {}",
                            addrs_text(found),
                            confirmed.unwrap_or("(none)")
                        ),
                        (7, 1),
                        format!(
                            "HELO/EHLO {helo} rejected: the name does not point to {ip}, nor share a domain with its reverse DNS"
                        ),
                    )
                }
            }
            (HeloShape::Invalid, _) => Result_::Pass(helo.to_owned()),
        };
        if apply(out, p, "helo_matches", p.helo_matches, || r) {
            return true;
        }
    }
    false
}

/// DNSBLs last: one lookup per zone.
async fn dnsbls<R: Resolver>(resolver: &R, out: &mut Screened, p: &Policy, ip: IpAddr) {
    if p.dnsbl != Check::Off {
        for zone in &p.dnsbl_zones {
            let r = match listing(resolver, zone, &reversed(ip)).await {
                Listing::Listed { zone, code } => Result_::Fail(
                    format!("listed in {zone} ({code})"),
                    (7, 1),
                    format!("Service unavailable; client [{ip}] blocked using {zone} ({code})"),
                ),
                Listing::Clear(detail) => Result_::Pass(detail),
                Listing::Temp(e) => Result_::Temp(e),
            };
            if apply(out, p, "dnsbl", p.dnsbl, || r) {
                return;
            }
        }
    }
}
