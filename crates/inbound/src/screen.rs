//! Screening a client right after its first HELO/EHLO (issue: anti-spam): the checks of
//! `[policy]`, cheapest first — local lists, the HELO name's shape, then one reverse lookup,
//! then forward lookups, then DNSBLs — stopping at the first refusal. A check whose DNS lookup
//! fails temporarily never gives a 5xx: `451 4.4.3` (or it is skipped, as configured), so that a
//! wrong answer fails the same way every time and heals when DNS does. Every failed check is
//! logged with its facts and action.

use std::net::IpAddr;
use std::sync::Arc;

use postern_config::Config;
use postern_config::schema::{Check, DnsTempError, Policy};
use postern_dns::{Answer, Resolver};
use postern_policy::screen::{GENERIC_WORDS, HeloShape, IpList, generic_ptr, helo_shape, refusal, registered_domain};
use postern_types::{EnhancedStatus, Reply, Verdict};

/// The network lists of `[policy]`, loaded from the configuration and its files.
#[derive(Debug, Default)]
pub struct ScreenLists {
    /// Refused at once.
    pub block: IpList,
    /// Skip every check.
    pub allow: IpList,
}

impl ScreenLists {
    /// Builds the lists of `policy`, reading its files.
    ///
    /// # Errors
    /// A file that cannot be read, or a line that is not a network (`FILE:LINE: ...`).
    pub fn load(policy: &Policy) -> Result<Self, String> {
        let read = |nets: &[ipnet::IpNet], file: &Option<std::path::PathBuf>| -> Result<IpList, String> {
            let mut all = nets.to_vec();
            if let Some(path) = file {
                let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let list = IpList::parse(&text)
                    .map_err(|(n, w)| format!("{}:{n}: {w:?} is not a network (CIDR or address)", path.display()))?;
                return Ok(if all.is_empty() { list } else { merge(list, &mut all) });
            }
            Ok(IpList::new(all))
        };
        Ok(Self {
            block: read(&policy.block_networks, &policy.block_networks_file)?,
            allow: read(&policy.allow_networks, &policy.allow_networks_file)?,
        })
    }
}

fn merge(list: IpList, extra: &mut Vec<ipnet::IpNet>) -> IpList {
    // Rare: both inline networks and a file. Rebuild from the file's text is avoided by
    // checking both lists.
    let inline = IpList::new(std::mem::take(extra));
    if inline.is_empty() { list } else { IpList::union(list, inline) }
}

/// The outcome of screening.
#[derive(Debug)]
pub struct Screened {
    /// Accept the HELO, or refuse it with a reply.
    pub verdict: Verdict<()>,
    /// `check=result (facts)` of checks whose action is `tag`, for the `X-Postern-Policy` header.
    pub tags: Vec<String>,
    /// One line per check that ran: `check: result (facts) -> action`.
    pub report: Vec<String>,
    /// The client's reverse DNS was forward-confirmed (it may skip greylisting).
    pub fcrdns_passed: bool,
    /// The client is in `allow_networks` (it skips greylisting too).
    pub allowed: bool,
    /// The client's forward-confirmed host name, if any.
    pub client_name: Option<String>,
    /// What the exceptions may match on.
    facts: Facts,
}

/// The facts `[[policy.exception]]` criteria match.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The client's IP.
    pub ip: Option<IpAddr>,
    /// The forward-confirmed client name.
    pub client_name: Option<String>,
    /// The MAIL FROM domain.
    pub sender_domain: Option<String>,
    /// The RCPT TO address.
    pub recipient: Option<String>,
}

/// Whether a `[[policy.exception]]` exempts `check` given `facts`.
pub fn exempt(p: &Policy, check: &str, facts: &Facts) -> bool {
    let within = |name: &str, suffix: &str| {
        let (name, suffix) = (name.to_ascii_lowercase(), suffix.to_ascii_lowercase());
        name == suffix || name.ends_with(&format!(".{suffix}"))
    };
    p.exception.iter().any(|e| {
        (e.checks.iter().any(|c| c == "*" || c == check))
            && (facts.ip.is_some_and(|ip| e.networks.iter().any(|n| n.contains(&ip)))
                || facts.client_name.as_deref().is_some_and(|c| e.client_names.iter().any(|n| within(c, n)))
                || facts.sender_domain.as_deref().is_some_and(|d| e.sender_domains.iter().any(|n| within(d, n)))
                || facts.recipient.as_deref().is_some_and(|r| {
                    e.recipients.iter().any(|n| {
                        n.eq_ignore_ascii_case(r)
                            || (n.starts_with('@') && r.to_ascii_lowercase().ends_with(&n.to_ascii_lowercase()))
                    })
                }))
    })
}

enum Result_ {
    Pass(String),
    Fail(String, (u16, u16), String),
    Temp(String),
}

/// Runs the checks of `config.policy` for `ip`, which said `helo`.
pub async fn screen<R: Resolver>(
    resolver: &R,
    config: &Config,
    lists: &ScreenLists,
    ip: IpAddr,
    helo: &str,
) -> Screened {
    let p = &config.policy;
    let mut out = Screened {
        verdict: Verdict::Ok(()),
        tags: Vec::new(),
        report: Vec::new(),
        fcrdns_passed: false,
        allowed: false,
        client_name: None,
        facts: Facts { ip: Some(ip), ..Facts::default() },
    };
    if lists.allow.contains(ip) {
        out.report.push("allow_networks: listed -> accept, no further checks".into());
        out.allowed = true;
        return out;
    }
    if lists.block.contains(ip) {
        out.report.push("block_networks: listed -> reject".into());
        out.verdict = Verdict::PermFail(Reply::new(
            554,
            EnhancedStatus(5, 7, 1),
            format!("Client host [{ip}] blocked by local policy"),
        ));
        return out;
    }
    let shape = helo_shape(helo);
    // Local facts first.
    if apply(&mut out, p, "helo_fqdn", p.helo_fqdn, || {
        if shape == HeloShape::Invalid {
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
        return out;
    }
    let ours = match &shape {
        HeloShape::Fqdn(name) => name.eq_ignore_ascii_case(&config.hostname),
        HeloShape::Literal(lit) => config.listener.iter().any(|l| l.address.ip() == *lit) && !lit.is_unspecified(),
        HeloShape::Invalid => false,
    };
    if apply(&mut out, p, "helo_not_ours", p.helo_not_ours, || {
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
        return out;
    }
    // One reverse lookup serves ptr, fcrdns, generic_ptr and helo_matches.
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
        if apply(&mut out, p, "ptr", p.ptr, || r) {
            return out;
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
    out.fcrdns_passed = confirmed.is_some();
    out.client_name.clone_from(&confirmed);
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
        if apply(&mut out, p, "fcrdns", p.fcrdns, || r) {
            return out;
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
        if apply(&mut out, p, "generic_ptr", p.generic_ptr, || r) {
            return out;
        }
    }
    // The HELO name in DNS.
    let helo_addrs = match &shape {
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
        if apply(&mut out, p, "helo_resolves", p.helo_resolves, || r) {
            return out;
        }
    }
    if p.helo_matches != Check::Off {
        let r = match (&shape, &helo_addrs) {
            (HeloShape::Literal(lit), _) if *lit == ip => Result_::Pass(helo.to_owned()),
            (HeloShape::Literal(_), _) => Result_::Fail(
                format!("literal {helo} is not {ip}"),
                (7, 1),
                format!("HELO/EHLO {helo} rejected: the address literal is not your address {ip}"),
            ),
            (_, Some(Answer::TempFail(e))) => Result_::Temp(format!("HELO lookup: {e}")),
            (HeloShape::Fqdn(name), found) => {
                let resolves_here = matches!(found, Some(Answer::Found(v)) if v.contains(&ip));
                let same_domain = confirmed.as_deref().is_some_and(|c| registered_domain(c) == registered_domain(name));
                if resolves_here || same_domain {
                    Result_::Pass(name.clone())
                } else {
                    Result_::Fail(
                        format!(
                            "{name} resolves to {} and is not in the domain of the PTR {}",
                            addrs_text(found),
                            confirmed.as_deref().unwrap_or("(none)")
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
        if apply(&mut out, p, "helo_matches", p.helo_matches, || r) {
            return out;
        }
    }
    // DNSBLs last: one lookup per zone.
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
            if apply(&mut out, p, "dnsbl", p.dnsbl, || r) {
                return out;
            }
        }
    }
    out
}

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
    let mut out = Screened {
        verdict: Verdict::Ok(()),
        tags: Vec::new(),
        report: Vec::new(),
        fcrdns_passed: false,
        allowed: false,
        client_name: client_name.map(str::to_owned),
        facts: Facts {
            ip: Some(ip),
            client_name: client_name.map(str::to_owned),
            sender_domain: Some(domain.clone()),
            recipient: None,
        },
    };
    if lists.allow.contains(ip) {
        out.allowed = true;
        return out;
    }
    let need_mx = p.sender_domain != Check::Off || p.sender_mx != Check::Off;
    let mx = if need_mx { Some(resolver.mx(&domain).await) } else { None };
    if p.sender_domain != Check::Off
        && let Some(mx) = &mx
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
            Answer::NotFound => match addresses(resolver, &domain).await {
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
        if apply(&mut out, p, "sender_domain", p.sender_domain, || r) {
            return out;
        }
    }
    if p.sender_mx != Check::Off
        && let Some(Answer::Found(mxs)) = &mx
    {
        let mut r = Result_::Pass(domain.clone());
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
            if let Some(bad) = addrs.iter().find(|a| !is_public(**a)) {
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
        if apply(&mut out, p, "sender_mx", p.sender_mx, || r) {
            return out;
        }
    }
    if p.rhsbl != Check::Off {
        for zone in &p.rhsbl_zones {
            let r = match listing(resolver, zone, &domain).await {
                Listing::Listed { zone, code } => Result_::Fail(
                    format!("{domain} listed in {zone} ({code})"),
                    (7, 1),
                    format!("<{sender}>: Sender address rejected: {domain} is listed in {zone} ({code})"),
                ),
                Listing::Clear(detail) => Result_::Pass(detail),
                Listing::Temp(e) => Result_::Temp(e),
            };
            if apply(&mut out, p, "rhsbl", p.rhsbl, || r) {
                return out;
            }
        }
    }
    out
}

/// The answer of one DNS block list about one item.
enum Listing {
    /// Listed: the zone's name and the return code that matched.
    Listed { zone: String, code: IpAddr },
    /// Not listed (what the zone answered, for the log).
    Clear(String),
    /// The lookup failed temporarily.
    Temp(String),
}

/// Looks `item` (a reversed IPv4 address or IPv6 nibbles, RFC 5782 §2, or a domain name, §3) up in
/// the block list `spec`: `"zone"` lists on any `127.0.0.0/8` answer, `"zone=127.0.0.2,..."`
/// only on those codes (so a zone's "query refused" codes such as Spamhaus's 127.255.255.x
/// never list).
async fn listing<R: Resolver>(resolver: &R, spec: &str, item: &str) -> Listing {
    let (zone, filter) = match spec.split_once('=') {
        Some((z, codes)) => (z.trim(), codes.split(',').filter_map(|c| c.trim().parse::<IpAddr>().ok()).collect()),
        None => (spec.trim(), Vec::new()),
    };
    match resolver.ipv4(&format!("{item}.{zone}")).await {
        Answer::Found(codes) => {
            let hit = codes.iter().find(|c| {
                matches!(c, IpAddr::V4(v) if v.octets()[0] == 127) && (filter.is_empty() || filter.contains(c))
            });
            match hit {
                Some(code) => Listing::Listed { zone: zone.to_owned(), code: *code },
                None => Listing::Clear(format!("{zone}: {}", join(&codes))),
            }
        }
        Answer::NotFound => Listing::Clear(format!("not in {zone}")),
        Answer::TempFail(e) => Listing::Temp(format!("{zone}: {e}")),
    }
}

/// Whether `ip` is a public unicast address: not private (RFC 1918), shared (RFC 6598),
/// loopback, link-local, unspecified, documentation or unique-local (RFC 4193).
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            !(v.is_private()
                || v.is_loopback()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.is_documentation()
                || (o[0] == 100 && (64..128).contains(&o[1])))
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            !(v.is_loopback()
                || v.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// Applies one check's result; true when screening stops (a refusal).
fn apply(out: &mut Screened, p: &Policy, name: &str, action: Check, run: impl FnOnce() -> Result_) -> bool {
    if action == Check::Off {
        return false;
    }
    if exempt(p, name, &out.facts) {
        out.report.push(format!("{name}: exempt ([[policy.exception]])"));
        return false;
    }
    match run() {
        Result_::Pass(facts) => {
            out.report.push(format!("{name}: pass ({facts})"));
            false
        }
        Result_::Fail(facts, status, text) => match action {
            Check::Reject | Check::Defer => {
                out.report.push(format!(
                    "{name}: fail ({facts}) -> {}",
                    if action == Check::Reject { "reject" } else { "defer" }
                ));
                out.verdict = if action == Check::Reject {
                    Verdict::PermFail(refusal(false, status, text))
                } else {
                    Verdict::TempFail(refusal(true, status, text))
                };
                true
            }
            Check::Tag | Check::Off => {
                out.report.push(format!("{name}: fail ({facts}) -> tag"));
                out.tags.push(format!("{name}=fail ({facts})"));
                false
            }
        },
        Result_::Temp(e) => {
            let acts = matches!(action, Check::Reject | Check::Defer);
            if acts && p.dns_temperror == DnsTempError::Defer {
                out.report.push(format!("{name}: temperror ({e}) -> defer"));
                out.verdict = Verdict::TempFail(Reply::new(
                    451,
                    EnhancedStatus(4, 4, 3),
                    format!("Temporary DNS failure while checking {name} for you, try again later"),
                ));
                true
            } else {
                out.report.push(format!("{name}: temperror ({e}) -> skipped"));
                false
            }
        }
    }
}

async fn addresses<R: Resolver>(resolver: &R, name: &str) -> Answer<Vec<IpAddr>> {
    let (v4, v6) = (resolver.ipv4(name).await, resolver.ipv6(name).await);
    match (v4, v6) {
        (Answer::Found(mut a), Answer::Found(b)) => {
            a.extend(b);
            Answer::Found(a)
        }
        (Answer::Found(a), _) | (_, Answer::Found(a)) => Answer::Found(a),
        (Answer::TempFail(e), _) | (_, Answer::TempFail(e)) => Answer::TempFail(e),
        _ => Answer::NotFound,
    }
}

fn join(v: &[IpAddr]) -> String {
    v.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

fn addrs_text(a: &Option<Answer<Vec<IpAddr>>>) -> String {
    match a {
        Some(Answer::Found(v)) => join(v),
        _ => "nothing".into(),
    }
}

/// `ip` reversed for a DNSBL query: `2.0.0.127` for 127.0.0.2, nibbles for IPv6.
fn reversed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => v6
            .octets()
            .iter()
            .rev()
            .flat_map(|b| [format!("{:x}", b & 0xf), format!("{:x}", b >> 4)])
            .collect::<Vec<_>>()
            .join("."),
    }
}

/// Shared for the daemon: the lists in force.
pub type SharedLists = std::sync::RwLock<Arc<ScreenLists>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(reversed("127.0.0.2".parse().unwrap()), "2.0.0.127");
        assert!(reversed("2001:db8::1".parse().unwrap()).starts_with("1.0.0.0."));
    }
}
