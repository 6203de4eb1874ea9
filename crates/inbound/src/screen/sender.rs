//! The checks of the MAIL FROM domain (RFC 5321.MailFrom, not the null sender): it can receive
//! mail (MX or A/AAAA, no null MX), its MX hosts are sane, and it is not on a right-hand-side
//! block list.

use std::net::IpAddr;

use postern_config::Config;
use postern_config::schema::{Check, Policy};
use postern_dns::{Answer, Mx, Resolver};

use super::{Facts, Listing, Result_, ScreenLists, Screened, addresses, apply, join, listing};

/// Runs the MAIL FROM checks of `config.policy` for `sender` (RFC 5321.MailFrom, not null)
/// from `ip`: the domain resolves (MX or A/AAAA, no null MX), its MX hosts are sane, and it is
/// not on a right-hand-side block list.
pub async fn screen_sender<R: Resolver>(
    resolver: &R,
    config: &Config,
    lists: &ScreenLists,
    ip: IpAddr,
    client_name: Option<&str>,
    sender: &str,
) -> Screened {
    let p = &config.policy;
    let domain = sender.rsplit_once('@').map_or(sender, |(_, d)| d).to_ascii_lowercase();
    let mut out = Screened::new(Facts::new(ip, client_name, Some(sender), None));
    if lists.allow.contains(ip) {
        out.allowed = true;
        return out;
    }
    let mx = if p.sender_domain != Check::Off || p.sender_mx != Check::Off {
        Some(resolver.mx(&domain).await)
    } else {
        None
    };
    if sender_domain(resolver, &mut out, p, sender, &domain, mx.as_ref()).await {
        return out;
    }
    if let Some(Answer::Found(mxs)) = &mx
        && sender_mx(resolver, &mut out, p, sender, &domain, mxs).await
    {
        return out;
    }
    rhsbl(resolver, &mut out, p, sender, &domain).await;
    out
}

/// The domain has an MX, or an A/AAAA record (RFC 5321 §5.1), and no null MX (RFC 7505).
async fn sender_domain<R: Resolver>(
    resolver: &R,
    out: &mut Screened,
    p: &Policy,
    sender: &str,
    domain: &str,
    mx: Option<&Answer<Vec<Mx>>>,
) -> bool {
    if p.sender_domain != Check::Off
        && let Some(mx) = mx
    {
        let r = match mx {
            Answer::Found(v) if v.iter().any(|m| m.exchange.is_empty()) => Result_::Fail(
                format!("{domain} has a null MX"),
                (7, 27),
                format!(
                    "<{sender}>: Sender address rejected: {domain} accepts no mail (null MX, RFC 7505), so it cannot receive replies"
                ),
            ),
            Answer::Found(v) => {
                Result_::Pass(format!("MX {}", v.iter().map(|m| m.exchange.as_str()).collect::<Vec<_>>().join(",")))
            }
            Answer::TempFail(e) => Result_::Temp(format!("MX lookup: {e}")),
            Answer::NotFound => match addresses(resolver, domain).await {
                Answer::Found(a) => Result_::Pass(format!("no MX, A/AAAA {}", join(&a))),
                Answer::TempFail(e) => Result_::Temp(format!("A/AAAA lookup: {e}")),
                Answer::NotFound => Result_::Fail(
                    format!("{domain} has no MX and no A/AAAA"),
                    (1, 8),
                    format!(
                        "<{sender}>: Sender address rejected: domain {domain} has no mail server (no MX, A or AAAA record)"
                    ),
                ),
            },
        };
        if apply(out, p, "sender_domain", p.sender_domain, || r) {
            return true;
        }
    }
    false
}

/// The MX hosts are not CNAMEs (RFC 2181 §10.3), have public addresses and forward-confirmed
/// reverse DNS (at most ten hosts are looked at).
async fn sender_mx<R: Resolver>(
    resolver: &R,
    out: &mut Screened,
    p: &Policy,
    sender: &str,
    domain: &str,
    mxs: &[Mx],
) -> bool {
    if p.sender_mx != Check::Off {
        let mut r = Result_::Pass(domain.to_owned());
        for m in mxs.iter().filter(|m| !m.exchange.is_empty()).take(10) {
            let host = &m.exchange;
            let fail = |facts: String, text: String| {
                Result_::Fail(facts, (7, 1), format!("<{sender}>: Sender address rejected: {text}"))
            };
            if let Answer::Found(target) = resolver.cname(host).await {
                r = fail(
                    format!("MX {host} is a CNAME"),
                    format!(
                        "the MX host {host} of {domain} is an alias (CNAME) of {}; RFC 2181 10.3 forbids it",
                        target.join(",")
                    ),
                );
                break;
            }
            let addrs = match addresses(resolver, host).await {
                Answer::Found(a) => a,
                Answer::TempFail(e) => {
                    r = Result_::Temp(format!("MX {host}: {e}"));
                    break;
                }
                Answer::NotFound => {
                    r = fail(
                        format!("MX {host} has no address"),
                        format!("the MX host {host} of {domain} has no address"),
                    );
                    break;
                }
            };
            if let Some(bad) = addrs.iter().find(|a| !postern_types::net::is_public_unicast(**a)) {
                r = fail(
                    format!("MX {host} has the non-public address {bad}"),
                    format!("the MX host {host} of {domain} has the non-public address {bad}"),
                );
                break;
            }
            let mut confirmed = false;
            for a in &addrs {
                if let Answer::Found(names) = resolver.ptr(*a).await {
                    for n in names.iter().take(5) {
                        if matches!(addresses(resolver, n).await, Answer::Found(back) if back.contains(a)) {
                            confirmed = true;
                        }
                    }
                }
            }
            if !confirmed {
                r = fail(
                    format!("MX {host} has no forward-confirmed reverse DNS"),
                    format!("the MX host {host} of {domain} has no forward-confirmed reverse DNS"),
                );
                break;
            }
        }
        if apply(out, p, "sender_mx", p.sender_mx, || r) {
            return true;
        }
    }
    false
}

/// The domain is not listed in one of `rhsbl_zones`.
async fn rhsbl<R: Resolver>(resolver: &R, out: &mut Screened, p: &Policy, sender: &str, domain: &str) {
    if p.rhsbl != Check::Off {
        for zone in &p.rhsbl_zones {
            let r = match listing(resolver, zone, domain).await {
                Listing::Listed { zone, code } => Result_::Fail(
                    format!("{domain} listed in {zone} ({code})"),
                    (7, 1),
                    format!("<{sender}>: Sender address rejected: {domain} is listed in {zone} ({code})"),
                ),
                Listing::Clear(detail) => Result_::Pass(detail),
                Listing::Temp(e) => Result_::Temp(e),
            };
            if apply(out, p, "rhsbl", p.rhsbl, || r) {
                return;
            }
        }
    }
}
