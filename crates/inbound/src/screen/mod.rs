//! Screening a client right after its first HELO/EHLO (issue: anti-spam): the checks of
//! `[policy]`, cheapest first — local lists, the HELO name's shape, then one reverse lookup,
//! then forward lookups, then DNSBLs — stopping at the first refusal. A check whose DNS lookup
//! fails temporarily never gives a 5xx: `451 4.4.3` (or it is skipped, as configured), so that a
//! wrong answer fails the same way every time and heals when DNS does. Every failed check is
//! logged with its facts and action.

mod client;
mod sender;

use postern_proto::Refusal;
use std::net::IpAddr;
use std::sync::Arc;

use postern_config::schema::{Check, DnsTempError, Policy};
use postern_dns::{Answer, Resolver};
use postern_policy::screen::{IpList, refusal};
use postern_types::Verdict;

pub use client::screen;
pub use sender::screen_sender;

/// The network lists of `[policy]`, loaded from the configuration and its files.
#[derive(Debug, Default)]
pub struct ScreenLists {
    /// Refused at once.
    pub block: IpList,
    /// Skip every check.
    pub allow: IpList,
}

/// A network list file of `[policy]` that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// A line is not a network.
    #[error("{}:{line}: {text:?} is not a network (CIDR or address)", path.display())]
    Line {
        /// The file.
        path: std::path::PathBuf,
        /// The line number (1-based).
        line: usize,
        /// The line's text.
        text: String,
    },
}

impl ScreenLists {
    /// Builds the lists of `policy`, reading its files.
    ///
    /// # Errors
    /// [`ListError`]: a file that cannot be read, or a line that is not a network.
    pub fn load(policy: &Policy) -> Result<Self, ListError> {
        let read = |nets: &[ipnet::IpNet], file: &Option<std::path::PathBuf>| -> Result<IpList, ListError> {
            let mut all = nets.to_vec();
            if let Some(path) = file {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ListError::Read { path: path.clone(), source })?;
                let list =
                    IpList::parse(&text).map_err(|(line, text)| ListError::Line { path: path.clone(), line, text })?;
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
    /// The client is in `allow_networks` (it skips greylisting too).
    pub allowed: bool,
    /// What the exceptions may match on; its client name is the forward-confirmed one.
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

impl Facts {
    /// The facts of a client at `ip` whose forward-confirmed name is `client_name`, giving
    /// `sender` (an address; its domain is what `sender_domains` match) and `recipient`.
    pub fn new(ip: IpAddr, client_name: Option<&str>, sender: Option<&str>, recipient: Option<&str>) -> Self {
        Self {
            ip: Some(ip),
            client_name: client_name.map(str::to_owned),
            sender_domain: sender.and_then(|s| s.rsplit_once('@')).map(|(_, d)| d.to_ascii_lowercase()),
            recipient: recipient.map(str::to_owned),
        }
    }
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

impl Screened {
    /// Nothing checked yet, with what the exceptions may match on.
    fn new(facts: Facts) -> Self {
        Self { verdict: Verdict::Ok(()), tags: Vec::new(), report: Vec::new(), allowed: false, facts }
    }

    /// The client's forward-confirmed host name, if any.
    pub fn client_name(&self) -> Option<&str> {
        self.facts.client_name.as_deref()
    }

    /// Whether the client's reverse DNS was forward-confirmed (it may skip greylisting).
    pub fn fcrdns_passed(&self) -> bool {
        self.facts.client_name.is_some()
    }
}

/// The answer of one DNS block list about one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// Listed: the zone's name and the return code that matched.
    Listed {
        /// The zone.
        zone: String,
        /// The return code (`127.0.0.2`...).
        code: IpAddr,
    },
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
    // Validated when the configuration was loaded.
    let parsed = postern_config::schema::ZoneSpec::parse(spec);
    let (zone, filter) = match &parsed {
        Ok(z) => (z.zone.as_str(), z.codes.clone()),
        Err(_) => (spec.trim(), Vec::new()),
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

/// Whether `ip` is listed on the DNSBL `spec` (`"zone"` or `"zone=127.0.0.2,..."`, as
/// `[policy] dnsbl_zones`), RFC 5782 §2: for the `dnsbl` alert and `postern doctor`.
pub async fn ip_listing<R: Resolver>(resolver: &R, spec: &str, ip: IpAddr) -> Listing {
    listing(resolver, spec, &reversed(ip)).await
}

/// Applies one check's result; true when screening stops (a refusal).
fn apply(out: &mut Screened, p: &Policy, name: &str, action: Check, run: impl FnOnce() -> Result_) -> bool {
    if action == Check::Off {
        return false;
    }
    let count = |verdict: &'static str| postern_metrics::metrics().policy_check(name, verdict);
    if exempt(p, name, &out.facts) {
        count("exempt");
        out.report.push(format!("{name}: exempt ([[policy.exception]])"));
        return false;
    }
    let result = run();
    count(match (&result, action) {
        (Result_::Pass(_), _) => "pass",
        (Result_::Fail(..), Check::Reject) => "reject",
        (Result_::Fail(..), Check::Defer) => "defer",
        (Result_::Fail(..), _) => "tag",
        (Result_::Temp(_), _) => "temperror",
    });
    match result {
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
                out.verdict = Verdict::TempFail(Refusal::DnsTempFail { check: name.to_string() }.reply());
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
