//! `postern`: the binary. Command line, logging, signals, reload and wiring of the crates; no
//! mail logic lives here.

mod alerts;
mod control;
mod dkim_cli;
mod dns_check;
mod doctor;
mod import_cli;
mod local_helper;
mod logging;
mod metrics_http;
mod notify;
mod policy_cli;
mod privileges;
mod privsep;
mod queue_cli;
mod reports;
mod route_cli;
mod sandbox_cli;
mod sendmail;
mod serve;
mod submit;
mod submit_wire;
mod unix_server;
mod user_cli;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Postern, a mail transfer agent for people who run their own mail server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server in the foreground, logging to stderr. The configuration is --config,
    /// else $POSTERN_CONFIG, else /etc/postern/postern.toml when it exists, else the embedded
    /// development default (127.0.0.1:2525, domain localhost, data in ./postern-data).
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and its tables; print every error with file, line and key.
    CheckConfig {
        /// Configuration file (TOML); default as for `serve`.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Explain where each address goes, step by step (sendmail -bt): local domain, virtual,
    /// aliases and routes lines with file:line, relaying, MX and addresses, and the verdict.
    Route {
        /// Configuration file (default: $POSTERN_CONFIG, else /etc/postern/postern.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: route_cli::RouteArgs,
    },
    /// Tell the running daemon to re-read its configuration, tables and certificate (as SIGHUP
    /// does); prints the errors if the new configuration is refused.
    Reload {
        /// Configuration file of the daemon (default: $POSTERN_CONFIG, else /etc/postern/postern.toml, else the embedded default).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
    /// Manage the passwords of the users table (AUTH on submission).
    User {
        /// Configuration file naming the users table (default: $POSTERN_CONFIG, else /etc/postern/postern.toml).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: user_cli::UserCommand,
    },
    /// DKIM keys.
    Dkim {
        #[command(subcommand)]
        command: DkimCommand,
    },
    /// DMARC aggregate reports (RFC 7489 §7.2) of the running daemon.
    Dmarc {
        /// Configuration file of the daemon (default: $POSTERN_CONFIG, else /etc/postern/postern.toml, else the embedded default).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// SMTP TLS reports (RFC 8460) of the running daemon, to the domains it delivers to.
    #[command(name = "tls-rpt")]
    TlsRpt {
        /// Configuration file of the daemon (default: $POSTERN_CONFIG, else /etc/postern/postern.toml, else the embedded default).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// The client checks of [policy].
    Policy {
        /// Configuration file (default: $POSTERN_CONFIG, else /etc/postern/postern.toml, else the embedded default).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The DNS records to publish for a domain.
    Dns {
        /// Configuration file (default: $POSTERN_CONFIG, else /etc/postern/postern.toml, else the embedded default).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: DnsCommand,
    },
    /// Queue a message from standard input, sendmail style (also: invoked as `sendmail`,
    /// `mailq`, `newaliases`). Takes sendmail's flags; `postern sendmail --help` lists them.
    #[command(disable_help_flag = true)]
    Sendmail {
        /// sendmail's arguments, as sendmail takes them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// The Sender Rewriting Scheme of `[forwarding]`, for debugging.
    Srs {
        /// Configuration file (default: $POSTERN_CONFIG, else /etc/postern/postern.toml).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: SrsCommand,
    },
    /// Turn another MTA's configuration into Postern's.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Check the server from the outside in: DNS records, MTA-STS, TLS-RPT, our MX on port 25
    /// (greeting = PTR = HELO, STARTTLS, certificate, DANE), DNSBLs, open relay; each problem
    /// with its fix. Exit 1 when anything is wrong.
    Doctor {
        /// Configuration file (default: $POSTERN_CONFIG, else /etc/postern/postern.toml, else the embedded default).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: doctor::DoctorArgs,
    },
    /// The state of each `[[alert]]` rule of the running daemon: ok, firing since when, the
    /// last figures.
    Alerts {
        /// Configuration file of the daemon (default: $POSTERN_CONFIG, else /etc/postern/postern.toml, else the embedded default).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// The systemd drop-in that lets postern.service's sandbox write what the configured
    /// deliveries write (mbox in /var/mail, Maildirs under /home, procmail): `ReadWritePaths=`
    /// and `ProtectHome=`. `systemctl edit postern`, or the Debian package's generator.
    Sandbox {
        /// Configuration file (default: $POSTERN_CONFIG, else /etc/postern/postern.toml, else the embedded default).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Run as a systemd generator: write the drop-in to DIR/postern.service.d/ (never fail).
        #[arg(long, value_name = "DIR")]
        generator: Option<PathBuf>,
    },
    /// Bans of client networks by the running daemon (`[server] auth_failures_before_ban`, `ban_prefix_ipv4`, `ban_prefix_ipv6`).
    Bans {
        /// Configuration file of the daemon (default: $POSTERN_CONFIG, else /etc/postern/postern.toml).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: BansCommand,
    },
    /// Inspect and steer the queue of the running daemon (also: `mailq` for `queue list`).
    Queue {
        /// Configuration file of the daemon (default: $POSTERN_CONFIG, else /etc/postern/postern.toml, else the embedded default).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: queue_cli::QueueCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SrsCommand {
    /// The SRS reverse-path a message from SENDER is forwarded with.
    Forward {
        /// The original reverse-path.
        sender: String,
        /// The day to stamp, in days since 1970-01-01 (default: today).
        #[arg(long)]
        day: Option<u64>,
    },
    /// The original sender of an SRS address, or why it is refused (forged, expired).
    Reverse {
        /// An SRS0/SRS1 address in [forwarding] srs_domain.
        address: String,
    },
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// sendmail.mc, /etc/mail's tables, /etc/aliases and opendkim's tables: writes postern.toml
    /// and tables that pass check-config, and a report of every line and what it became.
    Sendmail(import_cli::SendmailImport),
}

#[derive(Debug, Subcommand)]
enum BansCommand {
    /// Client IPs with failed AUTH attempts, and whether each is banned and for how long.
    List,
    /// Lift the ban of an IP and forget its failures.
    Lift {
        /// The client's IP address.
        ip: std::net::IpAddr,
    },
}

#[derive(Debug, Subcommand)]
enum DkimCommand {
    /// Generate a key (mode 0600) and print the TXT record to publish, in zone-file syntax
    /// (strings of at most 255 bytes) and on one line for web DNS panels.
    Keygen(dkim_cli::KeygenArgs),
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Print a day's reports (DMARC: XML; TLS-RPT: one JSON report per line), or queue them to
    /// each domain's rua addresses (the daemon also does this every day after midnight UTC).
    Report {
        /// The day, YYYY-MM-DD (UTC). Default: yesterday.
        #[arg(long)]
        day: Option<String>,
        /// Queue the reports and forget the day, instead of printing them.
        #[arg(long)]
        send: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Run every [policy] check for a client against live DNS and print each verdict, without
    /// sending mail.
    Test(policy_cli::TestArgs),
}

#[derive(Debug, Subcommand)]
enum DnsCommand {
    /// Print every record this server needs for DOMAIN (MX, SPF, DKIM, DMARC, PTR), each with
    /// a comment saying why.
    Records {
        /// The mail domain (also as `--domain DOMAIN`).
        #[arg(required_unless_present = "domain_flag")]
        domain: Option<String>,
        /// The mail domain.
        #[arg(long = "domain", id = "domain_flag", conflicts_with = "domain")]
        domain_flag: Option<String>,
    },
    /// Ask live DNS whether those records are published and right (MX, PTR and FCrDNS, SPF
    /// for the domain and the HELO name, each DKIM key, DMARC); exit 1 if any is not.
    Check(dns_check::CheckArgs),
}

fn main() -> ExitCode {
    // Invoked as `sendmail`, `mailq` or `newaliases` (links to this binary): sendmail's
    // command line, with no environment needed.
    if std::env::args_os().nth(1).is_none_or(|a| a != "serve") {
        // A command's output piped into `head` ends quietly, as other Unix tools do, instead of
        // panicking on EPIPE (Rust ignores SIGPIPE by default; the daemon keeps that).
        // SAFETY: signal(2) with a valid signal number and SIG_DFL.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_default();
    let name = Path::new(&argv0).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if ["sendmail", "mailq", "newaliases"].contains(&name.as_str()) {
        return sendmail::main(&name, &argv.collect::<Vec<_>>());
    }
    let cli = Cli::parse();
    let find = |c: Option<PathBuf>| postern_config::find(c.as_deref());
    match cli.command {
        Command::Serve { config } => serve::main(find(config).as_deref()),
        Command::CheckConfig { config } => check_config(find(config).as_deref()),
        Command::Route { config, args } => match load_config_and_tables(find(config).as_deref()) {
            Some((c, t)) => route_cli::run(&c, &t, &args),
            None => ExitCode::from(2),
        },
        Command::Queue { config, command } => queue_cli::run(find(config).as_deref(), &command),
        Command::Sendmail { args } => sendmail::main("sendmail", &args),
        Command::Reload { config } => reload(find(config).as_deref()),
        Command::Dkim { command: DkimCommand::Keygen(args) } => dkim_cli::keygen(&args),
        Command::Policy { config, command: PolicyCommand::Test(args) } => {
            match load_config_and_tables(find(config).as_deref()) {
                Some((c, t)) => policy_cli::test(&c, &t, &args),
                None => ExitCode::from(2),
            }
        }
        Command::Dmarc { config, command: ReportCommand::Report { day, send } } => {
            report_request(find(config).as_deref(), "dmarc-report", day, send)
        }
        Command::TlsRpt { config, command: ReportCommand::Report { day, send } } => {
            report_request(find(config).as_deref(), "tls-rpt-report", day, send)
        }
        Command::Dns { config, command: DnsCommand::Records { domain, domain_flag } } => {
            match load_config(find(config).as_deref()) {
                Some(c) => dkim_cli::records(&c, &domain.or(domain_flag).unwrap_or_default()),
                None => ExitCode::from(2),
            }
        }
        Command::Dns { config, command: DnsCommand::Check(args) } => match load_config(find(config).as_deref()) {
            Some(c) => dns_check::check(&c, &args),
            None => ExitCode::from(2),
        },
        Command::Import { command: ImportCommand::Sendmail(args) } => import_cli::run(&args),
        Command::Srs { config, command } => match load_config_and_tables(find(config).as_deref()) {
            Some((_, t)) => srs(&t, &command),
            None => ExitCode::from(2),
        },
        Command::Doctor { config, args } => match load_config(find(config).as_deref()) {
            Some(c) => doctor::run(&c, &args),
            None => ExitCode::from(2),
        },
        Command::Sandbox { config, generator } => sandbox_cli::run(find(config).as_deref(), generator.as_deref()),
        Command::Alerts { config } => control_request(find(config).as_deref(), "alerts"),
        Command::Bans { config, command } => {
            let request = match command {
                BansCommand::List => "bans".to_owned(),
                BansCommand::Lift { ip } => format!("unban {ip}"),
            };
            control_request(find(config).as_deref(), &request)
        }
        Command::User { config, command } => user_cli::run(find(config).as_deref(), &command),
    }
}

/// The `[dns]` settings of `config`, for a command that asks DNS itself.
pub(crate) fn dns_settings(config: &postern_config::Config) -> postern_dns::DnsSettings {
    let d = &config.dns;
    postern_dns::DnsSettings { nameservers: d.nameservers.clone(), timeout: d.timeout.0, attempts: d.attempts }
}

/// A single-threaded runtime for a command's DNS lookups; `None` (error printed) if it cannot
/// be built.
pub(crate) fn one_shot_runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("postern: cannot start the DNS runtime: {e}"))
        .ok()
}

/// The configuration at `path`, or the embedded default; every error is printed to stderr.
pub(crate) fn load_config(path: Option<&Path>) -> Option<postern_config::Config> {
    load_config_and_tables(path).map(|(c, _)| c)
}

/// As [`load_config`], with the tables.
pub(crate) fn load_config_and_tables(path: Option<&Path>) -> Option<(postern_config::Config, postern_config::Tables)> {
    let loaded = match path {
        Some(p) => postern_config::load(p),
        None => Ok(postern_config::dev_default()),
    };
    match loaded {
        Ok(both) => Some(both),
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            None
        }
    }
}

/// `postern srs forward|reverse`.
fn srs(tables: &postern_config::Tables, command: &SrsCommand) -> ExitCode {
    let Some(keys) = &tables.srs else {
        eprintln!("postern: SRS is off: set [forwarding] srs_domain and srs_secret_file");
        return ExitCode::from(2);
    };
    let srs = postern_policy::srs::Srs::from(keys);
    let (text, day) = match command {
        SrsCommand::Forward { sender, day } => (sender, day.unwrap_or_else(postern_policy::srs::today)),
        SrsCommand::Reverse { address } => (address, postern_policy::srs::today()),
    };
    let address = match postern_types::Address::parse(text) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("postern: <{text}>: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        SrsCommand::Forward { .. } => println!("{}", srs.forward(&address, day)),
        SrsCommand::Reverse { .. } => match srs.reverse(&address, day) {
            Ok(original) => println!("{original}"),
            Err(e) => {
                eprintln!("postern: <{address}>: {e}");
                return ExitCode::from(1);
            }
        },
    }
    ExitCode::SUCCESS
}

fn reload(path: Option<&Path>) -> ExitCode {
    if load_config(path).is_none() {
        eprintln!("postern: the configuration has errors (above); the daemon keeps its current one");
        return ExitCode::from(2);
    }
    control_request(path, "reload")
}

/// Asks the daemon for a day's reports (`what` is the control command): `day` defaults to
/// yesterday (UTC).
fn report_request(config: Option<&Path>, what: &str, day: Option<String>, send: bool) -> ExitCode {
    let day = day.unwrap_or_else(|| (chrono::Utc::now() - chrono::Days::new(1)).format("%Y-%m-%d").to_string());
    control_request(config, &format!("{what} {day} {}", if send { "send" } else { "print" }))
}

/// Sends `request` to the daemon's control socket and prints the answer (exit 3 when the
/// daemon cannot be reached).
fn control_request(path: Option<&Path>, request: &str) -> ExitCode {
    let Some(config) = load_config(path) else { return ExitCode::from(2) };
    let socket = config.control_socket();
    match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(stream) => queue_cli::exchange(stream, &socket, request),
        Err(e) => {
            eprintln!(
                "postern: cannot reach the daemon at {} ({e}), the control socket of {}; is `postern serve` running with this configuration?",
                socket.display(),
                config.source.display()
            );
            ExitCode::from(3)
        }
    }
}

/// Reports on the `[tls]` certificate: `Err` with the problem (missing, unreadable, expired,
/// key not matching the certificate).
fn check_tls(config: &postern_config::Config) -> Result<Option<String>, postern_inbound::tls::CertificateError> {
    let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) else { return Ok(None) };
    let now = chrono::Utc::now().timestamp();
    let pairs = std::iter::once((cert, key)).chain(config.tls.sni.iter().map(|p| (&p.cert, &p.key)));
    let mut lines = Vec::new();
    for (cert, key) in pairs {
        let r = postern_inbound::tls::inspect(cert, key, now)?;
        let mut line = format!(
            "{}: certificate {} ({}), chain of {}, expires in {} day(s)",
            cert.display(),
            r.subject,
            r.names.join(", "),
            r.chain_length,
            r.days_left
        );
        if r.chain_length < 2 {
            line.push_str("; warning: no intermediate certificate in the file (use fullchain.pem, not cert.pem)");
        }
        if r.days_left < 14 {
            line.push_str("; warning: renew it soon");
        }
        lines.push(line);
    }
    postern_inbound::tls::load(&config.tls)?;
    Ok(Some(lines.join("\n")))
}

/// `postern check-config`: every error first (configuration, tables, certificate, DKIM keys),
/// each with file, line and key; "configuration OK" only when there is none.
fn check_config(path: Option<&std::path::Path>) -> ExitCode {
    let loaded = match path {
        Some(p) => postern_config::load(p),
        None => Ok(postern_config::dev_default()),
    };
    let (config, tables) = match loaded {
        Ok(both) => both,
        Err(errors) => return refuse_config(&errors.iter().map(ToString::to_string).collect::<Vec<_>>()),
    };
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    match check_tls(&config) {
        Ok(Some(line)) => notes.push(line),
        Ok(None) => notes.push("no [tls] certificate: STARTTLS is not offered".to_owned()),
        Err(e) => errors.push(format!("{}: [tls]: {e}", config.source.display())),
    }
    match postern_auth::Signer::load(&config.dkim) {
        Ok(_) if config.dkim.key.is_empty() => notes.push("no [[dkim.key]]: relayed mail is not DKIM-signed".into()),
        Ok(_) => {
            for k in &config.dkim.key {
                notes.push(format!("DKIM key d={} s={} ({}) loaded", k.domain, k.selector, k.private_key.display()));
            }
        }
        Err(e) => errors.extend(e.into_iter().map(|e| format!("{}: {e}", config.source.display()))),
    }
    if !errors.is_empty() {
        return refuse_config(&errors);
    }
    println!(
        "{}: configuration OK ({} listener(s), {} local domain(s), {} user(s), {} alias(es), {} virtual entr(ies))",
        config.source.display(),
        config.listener.len(),
        config.domains.local.len(),
        tables.users.len(),
        tables.aliases.len(),
        tables.virtual_.len()
    );
    for n in notes {
        println!("{n}");
    }
    for w in sandbox_cli::read_only_warnings(&config) {
        println!("{w}");
    }
    ExitCode::SUCCESS
}

fn refuse_config(errors: &[String]) -> ExitCode {
    for e in errors {
        eprintln!("{e}");
    }
    eprintln!("{} error(s); fix them and run `postern check-config` again", errors.len());
    ExitCode::from(2)
}
