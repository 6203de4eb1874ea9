//! SPF, RFC 7208: Postern's own `check_host()`, written against the RFC 7208 test suite
//! (tests/it/spf_suite.rs) where mail-auth 0.13.3's failed it (issue 27). mail-auth still does
//! DKIM, ARC and DMARC; its [`SpfOutput`] carries our result into them.
//!
//! Initial processing (§4.3) returns `none` for a malformed or literal domain; the record is the
//! one TXT record that starts with `v=spf1` (§4.5: two are `permerror`); it is parsed strictly
//! ([`record`]); terms are evaluated in order (§4.6, §5), `redirect` when nothing matched and
//! there is no `all` (§6.1). Limits (§4.6.4): 10 terms that query DNS, 2 lookups that find
//! nothing ("void"), 10 MX names, 10 PTR names; past them the result is `permerror`. A DNS
//! timeout or SERVFAIL is `temperror`; a name that is not a valid domain name after macro
//! expansion is never asked, and matches nothing.

mod macros;
mod record;

use std::net::IpAddr;

use mail_auth::{SpfOutput, SpfResult};
use postern_dns::{Answer, Resolver};

use self::macros::{MacroString, Values};
use self::record::{Mechanism, Qualifier, Record};

/// Terms that query DNS, per check (RFC 7208 §4.6.4).
const MAX_LOOKUPS: u32 = 10;
/// Lookups that find nothing, per check (RFC 7208 §4.6.4).
const MAX_VOID: u32 = 2;
/// MX and PTR names looked at per mechanism (RFC 7208 §4.6.4).
const MAX_NAMES: usize = 10;

/// Why an evaluation stopped early.
enum Stop {
    /// `temperror`: a DNS lookup failed for now.
    Temp,
    /// `permerror`: the record (or one it leads to) is broken, or a limit was passed.
    Perm,
}

/// One `check_host()` evaluation and its counters.
struct Check<'a, R> {
    resolver: &'a R,
    ip: IpAddr,
    sender: String,
    helo: &'a str,
    receiver: &'a str,
    lookups: u32,
    voids: u32,
}

/// SPF of the MAIL FROM identity (RFC 7208 §2.4): `mail_from` as given (empty for the null
/// sender, which is checked as `postmaster@HELO`), from `ip`, which said `helo`. `receiver`
/// is our host name.
pub async fn check_mail_from<R: Resolver>(
    resolver: &R,
    ip: IpAddr,
    helo: &str,
    mail_from: &str,
    receiver: &str,
) -> SpfOutput {
    let sender = match mail_from.rsplit_once('@') {
        _ if mail_from.is_empty() => format!("postmaster@{helo}"),
        Some(("", domain)) => format!("postmaster@{domain}"),
        Some(_) => mail_from.to_owned(),
        None => format!("postmaster@{mail_from}"),
    };
    run(resolver, ip, helo, sender, receiver).await
}

/// SPF of the HELO identity (RFC 7208 §2.3): may `ip` say `helo`?
pub async fn check_helo<R: Resolver>(resolver: &R, ip: IpAddr, helo: &str, receiver: &str) -> SpfOutput {
    run(resolver, ip, helo, format!("postmaster@{helo}"), receiver).await
}

async fn run<R: Resolver>(resolver: &R, ip: IpAddr, helo: &str, sender: String, receiver: &str) -> SpfOutput {
    let domain = sender.rsplit_once('@').map(|(_, d)| d.to_owned()).unwrap_or_default();
    let mut check = Check { resolver, ip: ip.to_canonical(), sender, helo, receiver, lookups: 0, voids: 0 };
    let result = if is_domain(&domain, true) {
        match check.check_host(&domain).await {
            Ok(r) => r,
            Err(Stop::Temp) => SpfResult::TempError,
            Err(Stop::Perm) => SpfResult::PermError,
        }
    } else {
        // RFC 7208 §4.3: a malformed domain, a literal, a single label: `none`.
        SpfResult::None
    };
    SpfOutput::new(domain.to_lowercase()).with_result(result)
}

/// Whether `name` may be asked of the DNS: labels of 1 to 63 printable characters (a space
/// included: a macro's `%_` makes one), 253 in all, one trailing dot allowed; with `initial`,
/// also at least two labels and no literal.
fn is_domain(name: &str, initial: bool) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.iter().all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| (0x20..0x7f).contains(&b)))
        && !(initial && (labels.len() < 2 || name.starts_with('[') || name.parse::<IpAddr>().is_ok()))
}

impl<R: Resolver> Check<'_, R> {
    fn check_host<'s>(
        &'s mut self,
        domain: &'s str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<SpfResult, Stop>> + Send + 's>>
    where
        R: Sync,
    {
        Box::pin(async move {
            let records = match self.resolver.txt(domain).await {
                Answer::Found(v) => v,
                Answer::NotFound => return Ok(SpfResult::None),
                Answer::TempFail(_) => return Err(Stop::Temp),
            };
            let spf: Vec<&String> = records.iter().filter(|r| record::is_spf(r)).collect();
            let text = match spf.as_slice() {
                [] => return Ok(SpfResult::None),
                [one] => *one,
                _ => return Err(Stop::Perm),
            };
            let record = Record::parse(text).map_err(|_| Stop::Perm)?;
            for (qualifier, mechanism) in &record.directives {
                if self.matches(mechanism, domain).await? {
                    return Ok(match qualifier {
                        Qualifier::Pass => SpfResult::Pass,
                        Qualifier::Fail => SpfResult::Fail,
                        Qualifier::SoftFail => SpfResult::SoftFail,
                        Qualifier::Neutral => SpfResult::Neutral,
                    });
                }
            }
            match &record.redirect {
                Some(target) if !record.has_all() => {
                    self.count()?;
                    let target = self.expand(target, domain).await;
                    if !is_domain(&target, false) {
                        return Err(Stop::Perm);
                    }
                    match self.check_host(&target).await? {
                        SpfResult::None => Err(Stop::Perm),
                        r => Ok(r),
                    }
                }
                _ => Ok(SpfResult::Neutral),
            }
        })
    }

    /// Counts one DNS-querying term.
    fn count(&mut self) -> Result<(), Stop> {
        self.lookups += 1;
        if self.lookups > MAX_LOOKUPS { Err(Stop::Perm) } else { Ok(()) }
    }

    /// Counts one lookup that found nothing.
    fn void(&mut self) -> Result<bool, Stop> {
        self.voids += 1;
        if self.voids > MAX_VOID { Err(Stop::Perm) } else { Ok(false) }
    }

    async fn matches(&mut self, mechanism: &Mechanism, domain: &str) -> Result<bool, Stop>
    where
        R: Sync,
    {
        match mechanism {
            Mechanism::All => Ok(true),
            Mechanism::Ip4(net, bits) => Ok(in_network(self.ip, IpAddr::V4(*net), *bits)),
            Mechanism::Ip6(net, bits) => Ok(in_network(self.ip, IpAddr::V6(*net), *bits)),
            Mechanism::Include(spec) => {
                self.count()?;
                let target = self.expand(spec, domain).await;
                if !is_domain(&target, false) {
                    return Err(Stop::Perm);
                }
                match self.check_host(&target).await? {
                    SpfResult::Pass => Ok(true),
                    SpfResult::Fail | SpfResult::SoftFail | SpfResult::Neutral => Ok(false),
                    SpfResult::TempError => Err(Stop::Temp),
                    SpfResult::PermError | SpfResult::None => Err(Stop::Perm),
                }
            }
            Mechanism::A(spec, v4, v6) => {
                self.count()?;
                let target = self.target(spec.as_ref(), domain).await;
                self.addresses_match(&target, *v4, *v6, true).await
            }
            Mechanism::Mx(spec, v4, v6) => {
                self.count()?;
                let target = self.target(spec.as_ref(), domain).await;
                self.mx_matches(&target, *v4, *v6).await
            }
            Mechanism::Ptr(spec) => {
                self.count()?;
                let target = self.target(spec.as_ref(), domain).await;
                Ok(self.validated_names().await.iter().any(|n| is_within(n, &target)))
            }
            Mechanism::Exists(spec) => {
                self.count()?;
                let target = self.expand(spec, domain).await;
                if !is_domain(&target, false) {
                    return Ok(false);
                }
                // Always an A query, whatever the client's family (RFC 7208 §5.7).
                match self.resolver.ipv4(&target).await {
                    Answer::Found(_) => Ok(true),
                    Answer::NotFound => self.void(),
                    Answer::TempFail(_) => Err(Stop::Temp),
                }
            }
        }
    }

    async fn target(&self, spec: Option<&MacroString>, domain: &str) -> String {
        match spec {
            Some(s) => self.expand(s, domain).await,
            None => domain.to_owned(),
        }
    }

    /// Whether an address of `name` (A for an IPv4 client, AAAA for IPv6) holds the client
    /// within the CIDR length; `count_void` for the mechanism's own lookup.
    async fn addresses_match(&mut self, name: &str, v4: u8, v6: u8, count_void: bool) -> Result<bool, Stop> {
        if !is_domain(name, false) {
            return Ok(false);
        }
        let (found, bits) = match self.ip {
            IpAddr::V4(_) => (self.resolver.ipv4(name).await, v4),
            IpAddr::V6(_) => (self.resolver.ipv6(name).await, v6),
        };
        match found {
            Answer::Found(addrs) => Ok(addrs.iter().any(|a| in_network(self.ip, *a, bits))),
            Answer::NotFound if count_void => self.void(),
            Answer::NotFound => Ok(false),
            Answer::TempFail(_) => Err(Stop::Temp),
        }
    }

    async fn mx_matches(&mut self, name: &str, v4: u8, v6: u8) -> Result<bool, Stop> {
        if !is_domain(name, false) {
            return Ok(false);
        }
        let exchanges = match self.resolver.mx(name).await {
            Answer::Found(mx) => mx,
            Answer::NotFound => return self.void(),
            Answer::TempFail(_) => return Err(Stop::Temp),
        };
        if exchanges.len() > MAX_NAMES {
            return Err(Stop::Perm);
        }
        for mx in exchanges.iter().filter(|m| !m.exchange.is_empty()) {
            if self.addresses_match(&mx.exchange, v4, v6, false).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The client's PTR names (the first 10) whose addresses include the client (RFC 7208
    /// §5.5): forward-confirmed. A failed lookup gives none.
    async fn validated_names(&self) -> Vec<String> {
        let Answer::Found(names) = self.resolver.ptr(self.ip).await else { return Vec::new() };
        let mut out = Vec::new();
        for name in names.into_iter().take(MAX_NAMES) {
            let addrs = match self.ip {
                IpAddr::V4(_) => self.resolver.ipv4(&name).await,
                IpAddr::V6(_) => self.resolver.ipv6(&name).await,
            };
            if let Answer::Found(a) = addrs
                && a.contains(&self.ip)
            {
                out.push(name);
            }
        }
        out
    }

    /// `spec` expanded for `domain`, its leftmost labels dropped past 253 characters (RFC
    /// 7208 §7.3).
    async fn expand(&self, spec: &MacroString, domain: &str) -> String {
        let validated = if spec.uses_validated_name() {
            let names = self.validated_names().await;
            names
                .iter()
                .find(|n| is_within(n, domain))
                .or_else(|| names.first())
                .cloned()
                .unwrap_or_else(|| "unknown".to_owned())
        } else {
            String::new()
        };
        let values = Values {
            sender: &self.sender,
            domain,
            ip: self.ip,
            helo: self.helo,
            validated: &validated,
            receiver: self.receiver,
        };
        let mut name = spec.expand(&values);
        while name.trim_end_matches('.').len() > 253 {
            match name.split_once('.') {
                Some((_, rest)) => name = rest.to_owned(),
                None => break,
            }
        }
        name
    }
}

/// Whether `name` is `domain` or below it (case-insensitive, trailing dots ignored).
fn is_within(name: &str, domain: &str) -> bool {
    let (n, d) = (name.trim_end_matches('.').to_lowercase(), domain.trim_end_matches('.').to_lowercase());
    n == d || n.ends_with(&format!(".{d}"))
}

/// Whether `ip` is in `net`/`bits`, of the same family (an IPv4 client never matches `ip6:`).
fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits.min(32))).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits.min(128))).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}
