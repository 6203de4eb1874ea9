//! `postern dns check --domain D [--ip IP]`: asks live DNS whether what `postern dns records`
//! says to publish is there and right, record by record, so a postmaster whose mail is refused
//! by a large provider can tell which of MX, reverse DNS, SPF, DKIM and DMARC is wrong.
//!
//! Each line is `ok`, `FAIL` (wrong or missing: the fix is printed) or `TEMP` (DNS did not
//! answer: try again). Exit code 0 when all are ok, 1 otherwise, 2 on a configuration error.

use std::net::IpAddr;
use std::process::ExitCode;

use clap::Args;
use postern_auth::Outcome;
use postern_auth::keys;
use postern_dns::{Answer, HickoryResolver, Resolver};

/// `postern dns check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The mail domain.
    #[arg(long)]
    domain: String,
    /// The public address this server sends from. Default: the first listener's address, when
    /// it is a specific public one.
    #[arg(long)]
    ip: Option<IpAddr>,
}

/// One verdict.
pub(crate) enum Verdict {
    Ok(String),
    Fail(String),
    Temp(String),
}

pub(crate) fn check(config: &postern_config::Config, args: &CheckArgs) -> ExitCode {
    let domain = args.domain.to_lowercase();
    let listener_ip =
        config.listener.iter().map(|l| l.address.ip()).find(|ip| !ip.is_unspecified() && !ip.is_loopback());
    let Some(ip) = args.ip.or(listener_ip) else {
        eprintln!(
            "postern: give --ip: the public address this server sends mail from (the listeners bind no specific one)"
        );
        return ExitCode::from(2);
    };
    let settings = crate::dns_settings(config);
    let Some(runtime) = crate::one_shot_runtime() else { return ExitCode::FAILURE };
    let checks = runtime.block_on(async {
        let resolver = HickoryResolver::new(&settings).map_err(|e| e.to_string())?;
        let checker = postern_auth::Checker::new(&settings, &config.hostname).map_err(|e| e.to_string())?;
        Ok::<_, String>(run(&resolver, &checker, config, &domain, ip).await)
    });
    let checks = match checks {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postern: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("DNS check of {domain} for {} [{ip}]", config.hostname);
    let mut problems = 0;
    for (what, verdict) in &checks {
        let (tag, text) = match verdict {
            Verdict::Ok(t) => ("ok  ", t),
            Verdict::Fail(t) => ("FAIL", t),
            Verdict::Temp(t) => ("TEMP", t),
        };
        if !matches!(verdict, Verdict::Ok(_)) {
            problems += 1;
        }
        println!("  {tag}  {what:<6} {text}");
    }
    if problems == 0 {
        println!("result: all ok");
        ExitCode::SUCCESS
    } else {
        println!("result: {problems} problem(s); `postern dns records --domain {domain}` prints what to publish");
        ExitCode::FAILURE
    }
}

pub(crate) async fn run<R: Resolver>(
    resolver: &R,
    checker: &postern_auth::Checker,
    config: &postern_config::Config,
    domain: &str,
    ip: IpAddr,
) -> Vec<(&'static str, Verdict)> {
    let host = config.hostname.to_lowercase();
    let mut out = Vec::new();
    out.push(("MX", mx(resolver, domain, &host, ip).await));
    out.push(("PTR", ptr(resolver, &host, ip).await));
    out.push(("SPF", spf(checker.spf_mail_from(ip, &host, &format!("postmaster@{domain}")).await, domain, ip)));
    out.push(("SPF", spf(checker.spf_helo(ip, &host).await, &format!("HELO {host}"), ip)));
    for k in config.dkim.key.iter().filter(|k| k.domain == domain) {
        out.push(("DKIM", dkim(resolver, domain, &k.selector, &k.private_key).await));
    }
    if !config.dkim.key.iter().any(|k| k.domain == domain) {
        out.push(("DKIM", Verdict::Fail(format!("no [[dkim.key]] for {domain}: mail from it is not signed"))));
    }
    out.push(("DMARC", dmarc(resolver, domain).await));
    out
}

/// An MX of `domain` is this host, or has `ip` among its addresses.
async fn mx<R: Resolver>(resolver: &R, domain: &str, host: &str, ip: IpAddr) -> Verdict {
    let mxs = match resolver.mx(domain).await {
        Answer::Found(v) => v,
        Answer::NotFound => {
            return Verdict::Fail(format!("{domain} has no MX record: publish `{domain}. IN MX 10 {host}.`"));
        }
        Answer::TempFail(e) => return Verdict::Temp(format!("MX of {domain}: {e}")),
    };
    let names: Vec<&str> = mxs.iter().map(|m| m.exchange.as_str()).collect();
    if names.iter().any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(host)) {
        return Verdict::Ok(format!("{domain} -> {} (this host)", names.join(", ")));
    }
    for name in &names {
        if resolves_to(resolver, name, ip).await {
            return Verdict::Ok(format!("{domain} -> {} ({name} is {ip})", names.join(", ")));
        }
    }
    Verdict::Fail(format!("{domain} -> {}: none is {host} or {ip}", names.join(", ")))
}

/// The PTR of `ip` is `host`, and `host` resolves back to `ip` (forward-confirmed).
async fn ptr<R: Resolver>(resolver: &R, host: &str, ip: IpAddr) -> Verdict {
    let names = match resolver.ptr(ip).await {
        Answer::Found(v) => v,
        Answer::NotFound => {
            return Verdict::Fail(format!("{ip} has no PTR record: ask your provider to set it to {host}"));
        }
        Answer::TempFail(e) => return Verdict::Temp(format!("PTR of {ip}: {e}")),
    };
    if !names.iter().any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(host)) {
        return Verdict::Fail(format!(
            "{ip} -> {}, not {host}: receivers compare it with the HELO name",
            names.join(", ")
        ));
    }
    if resolves_to(resolver, host, ip).await {
        Verdict::Ok(format!("{ip} -> {host}, which resolves back (FCrDNS)"))
    } else {
        Verdict::Fail(format!("{ip} -> {host}, but {host} does not resolve to {ip}: add its A/AAAA record"))
    }
}

/// Whether `name` has `ip` among its A (or AAAA, for an IPv6 `ip`) records.
async fn resolves_to<R: Resolver>(resolver: &R, name: &str, ip: IpAddr) -> bool {
    let addrs = if ip.is_ipv4() { resolver.ipv4(name).await } else { resolver.ipv6(name).await };
    matches!(addrs, Answer::Found(v) if v.contains(&ip))
}

fn spf(outcome: Outcome, identity: &str, ip: IpAddr) -> Verdict {
    match outcome {
        Outcome::Pass => Verdict::Ok(format!("{identity} allows {ip} (pass)")),
        Outcome::TempError => Verdict::Temp(format!("{identity}: the SPF lookup failed temporarily")),
        Outcome::None => Verdict::Fail(format!("{identity}: no SPF record (or neutral) for {ip}")),
        Outcome::PermError => Verdict::Fail(format!("{identity}: the SPF record is broken (permerror)")),
        Outcome::Fail | Outcome::SoftFail => Verdict::Fail(format!("{identity} does not list {ip} ({outcome:?})")),
    }
}

/// The key published at `SELECTOR._domainkey.DOMAIN` is the public half of `private_key`.
pub(crate) async fn dkim<R: Resolver>(
    resolver: &R,
    domain: &str,
    selector: &str,
    private_key: &std::path::Path,
) -> Verdict {
    let name = format!("{selector}._domainkey.{domain}");
    let ours = match keys::load(private_key) {
        Ok(key) => keys::public_base64(&key).1,
        Err(e) => return Verdict::Fail(format!("{name}: cannot read our key {}: {e}", private_key.display())),
    };
    let records = match resolver.txt(&name).await {
        Answer::Found(v) => v,
        Answer::NotFound => {
            return Verdict::Fail(format!("{name}: no record; publish the one `postern dns records` prints"));
        }
        Answer::TempFail(e) => return Verdict::Temp(format!("{name}: {e}")),
    };
    let published = records.iter().find_map(|r| {
        r.split(';')
            .map(str::trim)
            .find_map(|tag| tag.strip_prefix("p="))
            .map(|p| p.split_whitespace().collect::<String>())
    });
    match published {
        Some(p) if p == ours => Verdict::Ok(format!("{name} matches {}", private_key.display())),
        Some(p) if p.is_empty() => Verdict::Fail(format!("{name}: the key is revoked (empty p=)")),
        Some(_) => Verdict::Fail(format!("{name}: the published key is not {}'s", private_key.display())),
        None => Verdict::Fail(format!("{name}: the record has no p= tag")),
    }
}

/// `_dmarc.DOMAIN` publishes a DMARC record (RFC 7489 §6.1).
async fn dmarc<R: Resolver>(resolver: &R, domain: &str) -> Verdict {
    let name = format!("_dmarc.{domain}");
    match resolver.txt(&name).await {
        Answer::Found(v) => match v.iter().find(|r| r.trim_start().starts_with("v=DMARC1")) {
            Some(r) => {
                let p = r.split(';').map(str::trim).find_map(|t| t.strip_prefix("p=")).unwrap_or("?");
                Verdict::Ok(format!("{name}: p={p}"))
            }
            None => Verdict::Fail(format!("{name}: no v=DMARC1 record")),
        },
        Answer::NotFound => {
            Verdict::Fail(format!("{name}: no record; start with \"v=DMARC1; p=none; rua=mailto:postmaster@{domain}\""))
        }
        Answer::TempFail(e) => Verdict::Temp(format!("{name}: {e}")),
    }
}
