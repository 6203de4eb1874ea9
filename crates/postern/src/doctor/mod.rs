//! `postern doctor --domain D`: the server from the outside in. What `postern dns check` asks
//! (MX, PTR, SPF, DKIM, DMARC), then the MTA-STS record and policy (fetched, parsed, its `mx`
//! patterns against the MX records, RFC 8461), the TLS-RPT record (RFC 8460), a connection to
//! our MX by its public name ([`smtp`]: greeting name = PTR = HELO, STARTTLS, the certificate
//! and DANE, RFC 7672), our address on DNSBLs, and an open-relay self-test. Each problem comes
//! with its fix: the record to publish or the command to run.
//!
//! Exit code 0 when all is well, 1 when anything is wrong (or DNS did not answer), 2 on a
//! configuration error.

mod smtp;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use clap::Args;
use postern_dns::dnssec::DnssecResolver;
use postern_dns::{Answer, HickoryResolver, Resolver};
use postern_inbound::screen::{Listing, ip_listing};

use crate::dns_check::Verdict;

/// DNSBLs asked by default: the ones large receivers consult, with the return codes that mean
/// "listed" (Spamhaus answers 127.255.255.x to refused queries, which are not listings).
const DEFAULT_DNSBLS: &[&str] = &[
    "zen.spamhaus.org=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.9,127.0.0.10,127.0.0.11",
    "bl.spamcop.net=127.0.0.2",
    "b.barracudacentral.org=127.0.0.2",
];

/// `postern doctor`.
#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// The mail domain.
    #[arg(long)]
    domain: String,
    /// Our public sending address. Default: `[alerts] ip`, else the first listener's address
    /// when it is a specific public one.
    #[arg(long)]
    ip: Option<IpAddr>,
    /// The SMTP port of our MX.
    #[arg(long, default_value_t = 25)]
    port: u16,
    /// A DNSBL zone to look our address up on (`zone` or `zone=127.0.0.2,...`); repeatable.
    /// Default: the zones of `dnsbl` alert rules, else Spamhaus ZEN, SpamCop and Barracuda.
    #[arg(long = "dnsbl")]
    dnsbls: Vec<String>,
    /// The certificate must stay valid this many more days.
    #[arg(long, default_value_t = 14)]
    days: i64,
}

/// One line of the report.
pub(crate) struct Finding {
    what: &'static str,
    verdict: Verdict,
    fix: Option<String>,
}

impl Finding {
    pub(crate) fn ok(what: &'static str, text: String) -> Self {
        Self { what, verdict: Verdict::Ok(text), fix: None }
    }

    pub(crate) fn fail(what: &'static str, text: String, fix: String) -> Self {
        Self { what, verdict: Verdict::Fail(text), fix: Some(fix) }
    }

    pub(crate) fn temp(what: &'static str, text: String) -> Self {
        Self { what, verdict: Verdict::Temp(text), fix: Some("DNS or the network did not answer: run it again".into()) }
    }
}

pub(crate) fn run(config: &postern_config::Config, args: &DoctorArgs) -> ExitCode {
    let domain = args.domain.to_lowercase();
    let Some(ip) = args.ip.or_else(|| crate::alerts::our_ip(config)) else {
        eprintln!(
            "postern: give --ip: the public address this server sends mail from (the listeners bind no specific one)"
        );
        return ExitCode::from(2);
    };
    let settings = crate::dns_settings(config);
    let Some(runtime) = crate::one_shot_runtime() else { return ExitCode::FAILURE };
    let findings = runtime.block_on(async {
        let resolver = HickoryResolver::new(&settings).map_err(|e| e.to_string())?;
        let checker = postern_auth::Checker::new(&settings, &config.hostname).map_err(|e| e.to_string())?;
        let dnssec = DnssecResolver::new(&settings, config.dns.trust_anchor.as_deref()).map_err(|e| e.to_string())?;
        let mut out: Vec<Finding> = crate::dns_check::run(&resolver, &checker, config, &domain, ip)
            .await
            .into_iter()
            .map(|(what, verdict)| with_fix(what, verdict, &domain, ip, &config.hostname))
            .collect();
        outside(&resolver, &dnssec, config, args, &domain, ip, &mut out).await;
        Ok::<_, String>(out)
    });
    let findings = match findings {
        Ok(f) => f,
        Err(e) => {
            eprintln!("postern: {e}");
            return ExitCode::FAILURE;
        }
    };
    print(&findings, &domain, ip, &config.hostname)
}

/// The fix of a `dns check` finding.
fn with_fix(what: &'static str, verdict: Verdict, domain: &str, ip: IpAddr, host: &str) -> Finding {
    let fix = match (&verdict, what) {
        (Verdict::Ok(_), _) => None,
        (Verdict::Temp(_), _) => Some("DNS did not answer: run it again".to_owned()),
        (_, "PTR") => {
            Some(format!("ask the provider of {ip} to set its PTR to {host}, and publish `{host}. IN A {ip}`"))
        }
        (_, "DKIM") => Some(format!(
            "publish the DKIM record `postern dns records --domain {domain}` prints (postern dkim keygen makes a key)"
        )),
        (_, _) => Some(format!("publish the {what} record `postern dns records --domain {domain}` prints")),
    };
    Finding { what, verdict, fix }
}

/// Everything beyond `dns check`.
async fn outside(
    resolver: &HickoryResolver,
    dnssec: &DnssecResolver,
    config: &postern_config::Config,
    args: &DoctorArgs,
    domain: &str,
    ip: IpAddr,
    out: &mut Vec<Finding>,
) {
    let mxs: Vec<String> = match resolver.mx(domain).await {
        Answer::Found(v) => v.into_iter().map(|m| m.exchange.trim_end_matches('.').to_ascii_lowercase()).collect(),
        _ => Vec::new(),
    };
    sts(resolver, config, domain, &mxs, out).await;
    tls_rpt(resolver, domain, out).await;
    let host = config.hostname.to_ascii_lowercase();
    let ours = mxs.iter().find(|m| **m == host).or(mxs.first()).cloned().unwrap_or(host.clone());
    let addr = match resolver.ipv4(&ours).await {
        Answer::Found(v) if !v.is_empty() => Some(v[0]),
        _ => match resolver.ipv6(&ours).await {
            Answer::Found(v) if !v.is_empty() => Some(v[0]),
            _ => None,
        },
    };
    match addr {
        Some(a) => {
            let ptr = match resolver.ptr(a).await {
                Answer::Found(v) => v,
                _ => Vec::new(),
            };
            let target = smtp::Target {
                mx: &ours,
                addr: SocketAddr::new(a, args.port),
                helo: &host,
                ptr: &ptr,
                ca_file: config.outbound.ca_file.as_deref(),
                min_validity: args.days * 86_400,
            };
            smtp::probe(&target, dnssec, out).await;
            smtp::open_relay(target.addr, &host, &config.relay.trusted_networks, &config.domains.local, out).await;
        }
        None => {
            out.push(Finding::fail("SMTP", format!("{ours} has no address"), format!("publish `{ours}. IN A {ip}`")))
        }
    }
    dnsbls(resolver, config, args, ip, out).await;
}

/// The `_mta-sts` record, the policy it announces, and every MX against its `mx` patterns.
async fn sts(
    resolver: &HickoryResolver,
    config: &postern_config::Config,
    domain: &str,
    mxs: &[String],
    out: &mut Vec<Finding>,
) {
    let name = format!("_mta-sts.{domain}");
    let record = match resolver.txt(&name).await {
        Answer::Found(txts) => postern_outbound::sts::Record::find(&txts),
        Answer::NotFound => {
            let text = format!("no {name} record: senders may deliver without TLS verification (optional, RFC 8461)");
            return out.push(Finding::ok("STS", text));
        }
        Answer::TempFail(e) => return out.push(Finding::temp("STS", format!("{name}: {e}"))),
    };
    let record = match record {
        Ok(r) => r,
        Err(e) => {
            return out.push(Finding::fail(
                "STS",
                format!("{name}: {e}"),
                format!("publish `{name}. IN TXT \"v=STSv1; id={}\"`", chrono::Utc::now().format("%Y%m%d%H%M")),
            ));
        }
    };
    let timeout = config.outbound.connect_timeout.0.max(std::time::Duration::from_secs(10));
    let url = format!("https://mta-sts.{domain}/.well-known/mta-sts.txt");
    let policy = match postern_outbound::sts::fetch_policy(
        resolver,
        domain,
        config.outbound.ca_file.as_deref(),
        &config.outbound.mta_sts_allow_networks,
        timeout,
    )
    .await
    {
        Ok(p) => p,
        Err((_, e)) => {
            return out.push(Finding::fail(
                "STS",
                format!("id {}: {e}", record.id),
                format!("serve the policy at {url} (a certificate for mta-sts.{domain}, HTTP 200, text/plain)"),
            ));
        }
    };
    let unmatched: Vec<&String> = mxs.iter().filter(|m| !policy.matches(m)).collect();
    if unmatched.is_empty() {
        out.push(Finding::ok(
            "STS",
            format!("id {}, mode {}, mx {}: every MX matches", record.id, policy.mode, policy.mx.join(" ")),
        ));
    } else {
        let names: Vec<&str> = unmatched.iter().map(|m| m.as_str()).collect();
        out.push(Finding::fail(
            "STS",
            format!(
                "the policy's mx ({}) does not match the MX {}: senders enforcing it will not deliver",
                policy.mx.join(" "),
                names.join(", ")
            ),
            format!(
                "add {} to {url}, then change the id of {name}",
                names.iter().map(|n| format!("`mx: {n}`")).collect::<Vec<_>>().join(" and ")
            ),
        ));
    }
}

/// `_smtp._tls.DOMAIN` (RFC 8460 §3).
async fn tls_rpt(resolver: &HickoryResolver, domain: &str, out: &mut Vec<Finding>) {
    let name = format!("_smtp._tls.{domain}");
    let publish = format!("publish `{name}. IN TXT \"v=TLSRPTv1; rua=mailto:postmaster@{domain}\"`");
    match resolver.txt(&name).await {
        Answer::Found(txts) => match postern_report::tlsrpt::rua_mailto(&txts) {
            Ok(rua) if !rua.is_empty() => {
                out.push(Finding::ok("TLSRPT", format!("{name}: reports to {}", rua.join(", "))))
            }
            Ok(_) => out.push(Finding::ok("TLSRPT", format!("{name}: reports by https only"))),
            Err(e) => out.push(Finding::fail("TLSRPT", format!("{name}: {e}"), publish)),
        },
        Answer::NotFound => out.push(Finding::fail(
            "TLSRPT",
            format!("{name}: no record, so nobody tells you when TLS to you fails"),
            publish,
        )),
        Answer::TempFail(e) => out.push(Finding::temp("TLSRPT", format!("{name}: {e}"))),
    }
}

async fn dnsbls(
    resolver: &HickoryResolver,
    config: &postern_config::Config,
    args: &DoctorArgs,
    ip: IpAddr,
    out: &mut Vec<Finding>,
) {
    let mut zones = args.dnsbls.clone();
    if zones.is_empty() {
        zones = config
            .alert
            .iter()
            .filter_map(|a| match a.rule() {
                Ok(postern_config::schema::Rule::Dnsbl { zones }) => Some(zones),
                _ => None,
            })
            .flatten()
            .collect();
    }
    if zones.is_empty() {
        zones = DEFAULT_DNSBLS.iter().map(|z| (*z).to_owned()).collect();
    }
    for zone in &zones {
        let shown = zone.split('=').next().unwrap_or(zone);
        match ip_listing(resolver, zone, ip).await {
            Listing::Listed { zone, code } => out.push(Finding::fail("DNSBL", format!("{ip} is listed on {zone} ({code})"), format!("find why (a compromised account? an open relay?), fix it, then ask {zone} for delisting on its web site"))),
            Listing::Clear(_) => out.push(Finding::ok("DNSBL", format!("{ip} is not on {shown}"))),
            Listing::Temp(e) => out.push(Finding::temp("DNSBL", e)),
        }
    }
}

fn print(findings: &[Finding], domain: &str, ip: IpAddr, host: &str) -> ExitCode {
    println!("Doctor of {domain} for {host} [{ip}], from the outside in");
    let mut problems = 0;
    for f in findings {
        let (tag, text) = match &f.verdict {
            Verdict::Ok(t) => ("ok  ", t),
            Verdict::Fail(t) => ("FAIL", t),
            Verdict::Temp(t) => ("TEMP", t),
        };
        println!("  {tag}  {:<6} {text}", f.what);
        if !matches!(f.verdict, Verdict::Ok(_)) {
            problems += 1;
            if let Some(fix) = &f.fix {
                println!("        fix: {fix}");
            }
        }
    }
    if problems == 0 {
        println!("result: all ok");
        ExitCode::SUCCESS
    } else {
        println!("result: {problems} problem(s), each with its fix above");
        ExitCode::FAILURE
    }
}
