//! `postern policy test --ip IP --helo NAME [--from ADDR] [--to ADDR]`: runs the `[policy]`
//! checks against live DNS, as the daemon would for that client on an mx listener, and prints
//! every check's verdict without sending mail. It takes the daemon's decisions in the daemon's
//! order: `[policy] enabled`, trusted networks (not screened), `block_networks` at connect,
//! the EHLO and MAIL checks, then the recipient and relay rules at RCPT
//! (`policy::resolve_recipient`, the function the daemon calls).

use std::net::IpAddr;
use std::process::ExitCode;

use clap::Args;
use postern_types::Verdict;

/// `postern policy test`.
#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// The client's IP address.
    #[arg(long)]
    ip: IpAddr,
    /// The HELO/EHLO name the client gives.
    #[arg(long)]
    helo: String,
    /// The MAIL FROM address: runs the sender checks too (sender_domain, sender_mx, rhsbl).
    #[arg(long)]
    from: Option<String>,
    /// A RCPT TO address (greylisting depends on the daemon's store and is not simulated).
    #[arg(long)]
    to: Option<String>,
}

pub(crate) fn test(config: &postern_config::Config, tables: &postern_config::Tables, args: &TestArgs) -> ExitCode {
    println!("client [{}] helo=<{}>", args.ip, args.helo);
    let trusted = postern_policy::is_trusted(args.ip, &config.relay.trusted_networks);
    let verdict = if trusted {
        println!("  client in [relay] trusted_networks: not screened (as the daemon does)");
        Verdict::Ok(())
    } else if !config.policy.enabled {
        println!("  [policy] enabled = false: the daemon runs none of these checks");
        Verdict::Ok(())
    } else {
        match screen(config, args) {
            Some(v) => v,
            None => return ExitCode::FAILURE,
        }
    };
    let verdict = match (verdict, &args.to) {
        (Verdict::Ok(()), Some(to)) => recipient(config, tables, args.ip, to),
        (v, _) => v,
    };
    match verdict {
        Verdict::Ok(()) => println!("verdict: accept"),
        Verdict::PermFail(r) | Verdict::TempFail(r) => println!("verdict: {r}"),
    }
    ExitCode::SUCCESS
}

/// The RCPT TO decision for an untrusted or trusted client that is not authenticated.
fn recipient(config: &postern_config::Config, tables: &postern_config::Tables, ip: IpAddr, to: &str) -> Verdict<()> {
    let address = match postern_types::Address::parse(to) {
        Ok(a) => a,
        Err(e) => {
            return Verdict::PermFail(postern_types::Reply::new(
                501,
                postern_types::EnhancedStatus(5, 1, 3),
                format!("<{to}>: {e}"),
            ));
        }
    };
    let policy = postern_policy::RecipientPolicy::new(config, tables);
    match postern_policy::resolve_recipient(&policy, ip, false, &address) {
        Verdict::Ok(_) => {
            println!("  (RCPT TO <{to}>) recipient: accepted (`postern route {to} --client {ip}` shows where it goes)");
            Verdict::Ok(())
        }
        Verdict::PermFail(r) => Verdict::PermFail(r),
        Verdict::TempFail(r) => Verdict::TempFail(r),
    }
}

/// The `[policy]` checks of an untrusted client; `None` (error printed) when DNS cannot be
/// set up.
fn screen(config: &postern_config::Config, args: &TestArgs) -> Option<Verdict<()>> {
    let lists = match postern_inbound::screen::ScreenLists::load(&config.policy) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("postern: {e}");
            return None;
        }
    };
    if lists.block.contains(args.ip) && !lists.allow.contains(args.ip) {
        println!("  connect: block_networks: refused before the greeting");
        let r = postern_types::Reply::new(
            554,
            postern_types::EnhancedStatus(5, 7, 1),
            format!("Client host [{}] blocked by local policy", args.ip),
        );
        return Some(Verdict::PermFail(r));
    }
    let settings = crate::dns_settings(config);
    let runtime = crate::one_shot_runtime()?;
    let screened = runtime.block_on(async {
        let resolver = postern_dns::HickoryResolver::new(&settings).map_err(|e| e.to_string())?;
        let mut s = postern_inbound::screen::screen(&resolver, config, &lists, args.ip, &args.helo).await;
        if let (Verdict::Ok(()), Some(from)) = (&s.verdict, &args.from) {
            let name = s.client_name().map(str::to_owned);
            let m =
                postern_inbound::screen::screen_sender(&resolver, config, &lists, args.ip, name.as_deref(), from).await;
            s.report.extend(m.report.into_iter().map(|l| format!("(MAIL FROM <{from}>) {l}")));
            s.tags.extend(m.tags);
            s.verdict = m.verdict;
        }
        Ok::<_, String>(s)
    });
    let screened = match screened {
        Ok(s) => s,
        Err(e) => {
            eprintln!("postern: {e}");
            return None;
        }
    };
    for line in &screened.report {
        println!("  {line}");
    }
    if let Some(to) = &args.to {
        let facts =
            postern_inbound::screen::Facts::new(args.ip, screened.client_name(), args.from.as_deref(), Some(to));
        if postern_inbound::screen::exempt(&config.policy, "greylist", &facts) {
            println!("  (RCPT TO <{to}>) greylist: exempt ([[policy.exception]])");
        } else {
            println!(
                "  (RCPT TO <{to}>: greylisting depends on the daemon's store; greylist = {:?})",
                config.policy.greylist
            );
        }
    }
    if !screened.tags.is_empty() {
        println!("  tagged X-Postern-Policy: {}", screened.tags.join("; "));
    }
    Some(screened.verdict)
}
