//! `postern policy test --ip IP --helo NAME [--from ADDR] [--to ADDR]`: runs the `[policy]`
//! checks against live DNS, as the daemon would for that client, and prints every check's
//! verdict without sending mail.

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

pub(crate) fn test(config: &postern_config::Config, args: &TestArgs) -> ExitCode {
    let lists = match postern_inbound::screen::ScreenLists::load(&config.policy) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("postern: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = crate::dns_settings(config);
    let Some(runtime) = crate::one_shot_runtime() else { return ExitCode::FAILURE };
    let screened = runtime.block_on(async {
        let resolver = postern_dns::HickoryResolver::new(&settings)?;
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
            return ExitCode::FAILURE;
        }
    };
    println!("client [{}] helo=<{}>", args.ip, args.helo);
    if !config.policy.enabled {
        println!("note: [policy] enabled = false: the daemon runs none of these checks");
    }
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
    match screened.verdict {
        Verdict::Ok(()) if screened.tags.is_empty() => println!("verdict: accept"),
        Verdict::Ok(()) => println!("verdict: accept, tagged X-Postern-Policy: {}", screened.tags.join("; ")),
        Verdict::PermFail(r) | Verdict::TempFail(r) => println!("verdict: {r}"),
    }
    ExitCode::SUCCESS
}
