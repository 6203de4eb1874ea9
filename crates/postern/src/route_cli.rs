//! `postern route ADDRESS... [--from SENDER] [--client IP] [--json]` (and `sendmail -bv`,
//! `sendmail -bt`): what Postern would do with each address, step by step, the way
//! `sendmail -bt` and `exim -bt` answer. The recipient steps come from the resolver the daemon
//! uses (`policy::explain_recipient`), each table entry with its file and line; the remote
//! steps from the outbound next-hop code (sender routes, routes, smarthost, MX, addresses).
//! Nothing is sent.

use std::net::IpAddr;
use std::process::ExitCode;

use clap::Args;
use postern_config::{Config, Route, Tables};
use postern_dns::HickoryResolver;
use postern_outbound::nexthop;
use postern_policy::recipients::{Explain, Traced, explain_recipient};
use postern_policy::{RecipientPolicy, is_trusted};
use postern_types::{Address, Destination, ReversePath, Verdict};

/// `postern route`.
#[derive(Debug, Args)]
pub(crate) struct RouteArgs {
    /// Addresses to explain; a bare name gets `[domains] origin`.
    #[arg(required = true)]
    addresses: Vec<String>,
    /// The envelope sender (decides sender routes); default: none (`<>`).
    #[arg(long)]
    from: Option<String>,
    /// The SMTP client's IP address (decides relaying). Default: a local submission
    /// (`sendmail`), which may send anywhere.
    #[arg(long)]
    client: Option<IpAddr>,
    /// One JSON object per address, one per line.
    #[arg(long)]
    json: bool,
}

/// The explanation of one address.
#[derive(Debug, serde::Serialize)]
struct Report {
    address: String,
    /// The steps, in order, as indented text.
    steps: Vec<String>,
    /// `deliver`, `relay` or `refuse`.
    verdict: &'static str,
    /// Maildir paths (deliver), next hops (relay) or the SMTP reply (refuse).
    detail: Vec<String>,
}

/// `postern route`.
pub(crate) fn run(config: &Config, tables: &Tables, args: &RouteArgs) -> ExitCode {
    let Some(runtime) = crate::one_shot_runtime() else { return ExitCode::FAILURE };
    let resolver = match HickoryResolver::new(&crate::dns_settings(config)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("postern: {e}");
            return ExitCode::FAILURE;
        }
    };
    let from = match args.from.as_deref().map(|f| crate::sendmail::qualify(f, config.domains.origin())) {
        None => ReversePath::Null,
        Some(f) => match Address::parse(&f) {
            Ok(a) => ReversePath::Mailbox(a),
            Err(e) => {
                eprintln!("postern: --from <{f}>: {e}; give the envelope sender as user@domain");
                return ExitCode::from(crate::sendmail::EX_USAGE);
            }
        },
    };
    for a in &args.addresses {
        let report = runtime.block_on(explain(config, tables, &resolver, a, &from, args.client));
        if args.json {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
        } else {
            print_report(&report);
        }
    }
    ExitCode::SUCCESS
}

fn print_report(r: &Report) {
    println!("{}", r.address);
    for s in &r.steps {
        println!("  {s}");
    }
    println!("  verdict: {} {}", r.verdict, r.detail.join("; "));
}

/// `sendmail -bv`: the verdict of each recipient, nothing sent.
pub(crate) fn verify(config: &Config, tables: &Tables, recipients: &[String]) -> ExitCode {
    if recipients.is_empty() {
        eprintln!("sendmail: -bv needs recipient addresses");
        return ExitCode::from(crate::sendmail::EX_USAGE);
    }
    let args = RouteArgs { addresses: recipients.to_vec(), from: None, client: None, json: false };
    run(config, tables, &args)
}

/// `sendmail -bt`: addresses on standard input, one per line, optionally after sendmail's
/// ruleset numbers (`3,0 user@domain`); each explained as `postern route` does.
pub(crate) fn address_test(config: &Config, tables: &Tables) -> ExitCode {
    println!("Postern address test mode: enter addresses (sendmail's `3,0 address` form works too); end with ^D");
    let mut addresses = Vec::new();
    for line in std::io::stdin().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with(['/', '$', '=', '.']) {
            println!("{line}: Postern has no rulesets or macros; give addresses");
            continue;
        }
        let mut words = line.split_whitespace().peekable();
        if words.peek().is_some_and(|w| w.split(',').all(|n| n.chars().all(|c| c.is_ascii_digit()))) {
            words.next();
        }
        addresses.extend(words.map(str::to_owned));
    }
    if addresses.is_empty() {
        return ExitCode::SUCCESS;
    }
    run(config, tables, &RouteArgs { addresses, from: None, client: None, json: false })
}

/// `file:line` of a table entry.
fn at(path: Option<&std::path::Path>, line: Option<&usize>) -> String {
    match (path, line) {
        (Some(p), Some(l)) => format!("{}:{l}", p.display()),
        (Some(p), None) => p.display().to_string(),
        _ => "?".into(),
    }
}

async fn explain(
    config: &Config,
    tables: &Tables,
    resolver: &HickoryResolver,
    given: &str,
    from: &ReversePath,
    client: Option<IpAddr>,
) -> Report {
    let mut steps = Vec::new();
    let qualified = crate::sendmail::qualify(given, config.domains.origin());
    if qualified != given {
        steps.push(format!("bare name: qualified with [domains] origin as {qualified}"));
    }
    let refuse =
        |steps, reply: String| Report { address: given.to_owned(), steps, verdict: "refuse", detail: vec![reply] };
    let address = match Address::parse(&qualified) {
        Ok(a) => a,
        Err(e) => return refuse(steps, format!("501 5.1.3 <{qualified}>: {e}")),
    };
    let policy = RecipientPolicy::new(config, tables);
    let (verdict, trace) = match client {
        Some(ip) => {
            let trusted = is_trusted(ip, &config.relay.trusted_networks);
            steps.push(format!(
                "client [{ip}]: {}",
                if trusted { "in [relay] trusted_networks" } else { "not trusted" }
            ));
            explain_recipient(&policy, ip, false, &address)
        }
        None => {
            steps.push("client: a local submission (sendmail), which may send to any domain".into());
            explain_local(&policy, &address)
        }
    };
    steps.extend(trace.iter().map(|t| describe(config, tables, t)));
    match verdict {
        Verdict::PermFail(r) | Verdict::TempFail(r) => refuse(steps, format!("{r} (at RCPT TO)")),
        Verdict::Ok(destinations) => {
            let mut detail = Vec::new();
            let mut remote = false;
            for d in &destinations {
                match d {
                    Destination::Mailbox { name, .. } => detail.push(match config.delivery.local {
                        postern_config::schema::LocalTransport::Maildir => {
                            format!("Maildir {} (mailbox {name})", config.maildir_of(name).display())
                        }
                        postern_config::schema::LocalTransport::Mbox => {
                            format!("mbox {} (mailbox {name})", config.mbox_of(name).display())
                        }
                        postern_config::schema::LocalTransport::Lmtp => {
                            format!("LMTP {} (mailbox {name})", config.delivery.lmtp)
                        }
                    }),
                    Destination::Pipe { command, name, .. } => {
                        let allowed =
                            if config.delivery.allow_pipes { "" } else { " (refused: [delivery] allow_pipes is off)" };
                        let by = if name.is_empty() {
                            format!("route, as [delivery] pipe_user {}", config.delivery.pipe_user)
                        } else {
                            format!("alias {name}")
                        };
                        detail.push(format!("pipe to \"{command}\" ({by}){allowed}"));
                    }
                    Destination::Remote(a) => {
                        remote = true;
                        let (mut s, hops) = next_hop(config, tables, resolver, a, from).await;
                        steps.append(&mut s);
                        detail.push(format!("{a} via {hops}"));
                    }
                }
            }
            let verdict = if remote { "relay" } else { "deliver" };
            Report { address: given.to_owned(), steps, verdict, detail }
        }
    }
}

/// A local submission: as the daemon's submission socket resolves it
/// ([`postern_policy::resolve_for_delivery`]: local domains through the tables, other domains
/// through the routes table).
fn explain_local(policy: &RecipientPolicy<'_>, address: &Address) -> (Verdict<Vec<Destination>>, Vec<Traced>) {
    postern_policy::explain_for_delivery(policy, address)
}

/// One trace step as text, with the table line that decided it.
fn describe(config: &Config, tables: &Tables, t: &Traced) -> String {
    let paths = &config.tables;
    let lines = &tables.lines;
    let indent = "  ".repeat(t.depth);
    let text = match &t.step {
        Explain::LocalDomain(d) => format!("domain {d}: local ([domains] local)"),
        Explain::Relay { domain, granted: Some(why) } => {
            format!("domain {domain}: not local; relaying allowed ({why})")
        }
        Explain::Relay { domain, granted: None } => {
            format!("domain {domain}: not local; relaying denied (client neither trusted nor authenticated)")
        }
        Explain::Route(key) => {
            let route = tables.routes.get(key).map(describe_route).unwrap_or_default();
            format!("routes {}: {key} {route}", at(paths.routes.as_deref(), lines.routes.get(key)))
        }
        Explain::SubAddress { base, detail } => format!("sub-address: user {base}, detail {detail:?}"),
        Explain::Virtual { key, target, substituted } => {
            let place = at(paths.virtual_.as_deref(), lines.virtual_.get(key));
            match substituted {
                Some(s) => format!("virtual {place}: {key} {target} -> {s}"),
                None if *target == postern_config::Target::AsAddressed => {
                    format!("virtual {place}: {key} ! (as addressed, no catch-all)")
                }
                None => format!("virtual {place}: {key} {target}"),
            }
        }
        Explain::Alias { name, targets } => {
            let list: Vec<String> = targets.iter().map(ToString::to_string).collect();
            format!("alias {}: {name}: {}", at(paths.aliases.as_deref(), lines.aliases.get(name)), list.join(", "))
        }
        Explain::Mailbox { name, implicit: true } => {
            format!("mailbox {name} (the implicit postmaster, RFC 5321 §4.5.1)")
        }
        Explain::Mailbox { name, .. } => {
            format!("mailbox {name} (users {})", paths.users.as_ref().map_or("?".into(), |p| p.display().to_string()))
        }
        Explain::Remote(a) => format!("remote address {a}"),
        Explain::Pipe { command, name } => format!("pipe: alias {name} pipes to \"{command}\""),
        Explain::SrsReversed(a) => {
            format!("SRS address of [forwarding] srs_domain: hash and age verify; back to <{a}>")
        }
        Explain::Failed(r) => format!("refused: {r}"),
        other => format!("{other:?}"),
    };
    format!("{indent}{text}")
}

fn describe_route(r: &Route) -> String {
    match r {
        Route::Relay(r) => describe_relay(r),
        Route::Local(m) => format!("local:{m}"),
        Route::Lmtp(server) => format!("lmtp:{server}"),
        Route::Pipe(command) => format!("pipe:{command}"),
        Route::Error(reply) => postern_config::error_form(reply),
    }
}

/// The TLS policy delivery to `domain` follows: the `tls_policy` entry, or opportunistic.
fn tls_step(config: &Config, tables: &Tables, domain: &str, to_mx: bool) -> String {
    use postern_config::schema::TlsLevel;
    let Some((key, level)) = tables.tls_policy_entry(domain) else {
        let opportunistic =
            "opportunistic STARTTLS (used when offered; the certificate is logged as verify=OK|FAIL, not required)";
        let dane = if to_mx && config.outbound.dane {
            "; DANE first when the MX is DNSSEC-signed with TLSA records ([outbound] dane, looked up at delivery)"
        } else {
            ""
        };
        if !(to_mx && config.outbound.mta_sts) {
            return format!("TLS: {opportunistic}{dane}");
        }
        // What the daemon cached; `postern route` fetches nothing.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        return match postern_outbound::sts::cached(&config.data_dir.join("mta-sts"), domain) {
            Some(c) if c.policy.max_age.saturating_add(c.fetched) > now => format!(
                "TLS: MTA-STS policy of {domain} (id {}, cached {}s ago): mode {}, mx {}{}",
                c.id,
                now.saturating_sub(c.fetched),
                c.policy.mode,
                c.policy.mx.join(", "),
                if c.policy.mode == postern_outbound::sts::Mode::Enforce {
                    ": only those hosts, TLS with a verified certificate, else deferred (4.7.5)"
                } else {
                    ""
                }
            ),
            _ => format!("TLS: {opportunistic}; MTA-STS: no policy of {domain} cached (looked up at delivery)"),
        };
    };
    let place = at(config.tables.tls_policy.as_deref(), tables.lines.tls_policy.get(key));
    let what = match level {
        TlsLevel::None => "no STARTTLS, even when offered",
        TlsLevel::May => "opportunistic STARTTLS (used when offered, the certificate not required)",
        TlsLevel::Encrypt => "TLS required, any certificate; without it the delivery is deferred (4.7.5)",
        TlsLevel::Verify => "TLS required with a certificate that verifies for the MX host; otherwise deferred (4.7.5)",
        TlsLevel::Dane => {
            "DANE for MX hosts whose TLSA records validate with DNSSEC (looked up at delivery); others opportunistic"
        }
        TlsLevel::DaneOnly => {
            "DANE required (TLSA records validated with DNSSEC, looked up at delivery); otherwise deferred (4.7.5)"
        }
    };
    format!("TLS: tls_policy {place}: {key} {level}: {what}")
}

fn describe_relay(r: &postern_config::Relay) -> String {
    let host = if r.mx_lookup { r.host.clone() } else { format!("[{}]", r.host) };
    r.port.map_or_else(|| format!("relay:{host}"), |p| format!("relay:{host}:{p}"))
}

/// How mail to the remote `address` leaves: the rule that picked the next hop, the hosts and
/// their addresses in the order they would be tried, and the TLS policy.
async fn next_hop(
    config: &Config,
    tables: &Tables,
    resolver: &HickoryResolver,
    address: &Address,
    sender: &ReversePath,
) -> (Vec<String>, String) {
    let (paths, lines) = (&config.tables, &tables.lines);
    let domain = address.domain();
    let mut steps = Vec::new();
    // An LMTP route is a transport of its own: no MX, no sender route (as Postfix's
    // transport_maps come before sender_dependent_relayhost_maps).
    if let Some((key, Route::Lmtp(server))) = tables.route_entry(domain) {
        let place = at(paths.routes.as_deref(), lines.routes.get(key));
        steps.push(format!("route {place}: {key} lmtp:{server} (most specific match)"));
        return (steps, format!("LMTP to {server}"));
    }
    if let Some((key, relay)) = tables.sender_route_entry(sender) {
        let place = at(paths.sender_routes.as_deref(), lines.sender_routes.get(&key));
        steps.push(format!("sender route {place}: {key} {} (mail from {sender})", describe_relay(relay)));
    } else if let Some((key, Route::Relay(relay))) = tables.route_entry(domain) {
        let place = at(paths.routes.as_deref(), lines.routes.get(key));
        steps.push(format!("route {place}: {key} {} (most specific match)", describe_relay(relay)));
    } else if let Some(s) = &config.relay.smarthost {
        steps.push(format!("no route for {domain}: [relay] smarthost = {s:?}"));
    } else {
        steps.push(format!("no route for {domain}, no smarthost: the MX of {domain}"));
    }
    let target = nexthop::target_for(domain, sender, tables, config.relay.smarthost.as_deref(), config.outbound.port);
    let hosts = match nexthop::hosts(resolver, &target).await {
        Ok(h) => h,
        Err(outcome) => {
            steps.push(format!("next hop: {}", outcome.reply()));
            return (steps, format!("nowhere now ({})", target.name));
        }
    };
    if target.mx_lookup && target.name.parse::<IpAddr>().is_err() {
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        match postern_dns::Resolver::mx(resolver, &target.name).await {
            postern_dns::Answer::NotFound => {
                steps.push(format!("MX of {}: none, so the domain itself (implicit MX, RFC 5321 §5.1)", target.name));
            }
            _ => steps.push(format!("MX of {}: {} (in preference order)", target.name, names.join(", "))),
        }
    }
    let mut tried = Vec::new();
    for h in &hosts {
        match nexthop::addresses(resolver, &h.name, config.outbound.ip_version).await {
            Ok(ips) => {
                let list: Vec<String> =
                    ips.iter().map(|ip| format!("{}", std::net::SocketAddr::new(*ip, h.port))).collect();
                steps.push(format!("host {}: {}", h.name, list.join(", ")));
                tried.push(format!("{}:{}", h.name, h.port));
            }
            Err(outcome) => steps.push(format!("host {}: {}", h.name, outcome.reply())),
        }
    }
    let to_mx = target.mx_lookup && target.name.eq_ignore_ascii_case(domain);
    steps.push(tls_step(config, tables, &domain.to_lowercase(), to_mx));
    let hops = if tried.is_empty() {
        format!("nowhere now ({})", target.name)
    } else {
        format!("SMTP to {}", tried.join(", then "))
    };
    (steps, hops)
}
