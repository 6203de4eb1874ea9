//! `sendmail` (also `postern sendmail`, and the `mailq` and `newaliases` names): the sendmail(8)
//! command line that cron, mailx, PHP and every other program on a Debian box use. It finds the
//! configuration with no help from its caller (`--config`/`-C`, `$POSTERN_CONFIG`, else
//! `/etc/postern/postern.toml`), reads the message from standard input, completes it
//! (`message.rs`) and hands it to the running daemon over the submission socket, which queues
//! it durably before answering (`client.rs`). `-bs` runs an SMTP session on standard input and
//! output (`smtp.rs`); `-bp`, `-bi`, `-bv`, `-bt` and `-q` map to the queue, reload and route
//! tools.
//!
//! Exit codes follow sysexits(3) as sendmail's do: 0 queued, 64 usage, 65 bad message,
//! 67 unknown recipient, 75 daemon unreachable or temporary failure (try again; nothing was
//! queued, the caller still has the message), 78 configuration error.

mod args;
mod client;
mod message;
mod smtp;

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use postern_types::Reply;

pub(crate) use args::HELP;
use args::{ErrorMode, Invocation, Mode};
pub(crate) use message::qualify;

pub(crate) const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_NOUSER: u8 = 67;
pub(crate) const EX_TEMPFAIL: u8 = 75;
const EX_CONFIG: u8 = 78;

/// The configuration file in use and the configuration, or the exit code after printing why
/// it cannot be loaded.
pub(crate) struct Loaded {
    /// `None`: the embedded development default.
    pub(crate) path: Option<PathBuf>,
    pub(crate) config: postern_config::Config,
    /// The tables, when this mode reads them (`-bv`, `-bt`, `-bi`; `-bs` when they are
    /// readable). Sending never needs them: the daemon decides behind the submission socket,
    /// so any local account can send while `users` stays readable by root and the daemon only.
    pub(crate) tables: Option<postern_config::Tables>,
}

/// Which tables a mode reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tables {
    None,
    IfReadable,
    Required,
}

impl Loaded {
    /// The tables of a mode that loaded them ([`Tables::Required`]).
    fn tables(&self) -> &postern_config::Tables {
        self.tables.as_ref().expect("loaded with Tables::Required")
    }

    fn describe(&self) -> String {
        self.path.as_ref().map_or_else(|| "the embedded default configuration".into(), |p| p.display().to_string())
    }
}

fn load(explicit: Option<&Path>, tables: Tables) -> Result<Loaded, ExitCode> {
    let path = postern_config::find(explicit);
    let loaded = match (&path, tables) {
        (None, _) => Ok(postern_config::dev_default()).map(|(c, t)| (c, Some(t))),
        (Some(p), Tables::Required) => postern_config::load(p).map(|(c, t)| (c, Some(t))),
        (Some(p), Tables::IfReadable) => match postern_config::load(p) {
            Ok((c, t)) => Ok((c, Some(t))),
            Err(_) => postern_config::load_without_tables(p).map(|c| (c, None)),
        },
        (Some(p), Tables::None) => postern_config::load_without_tables(p).map(|c| (c, None)),
    };
    match loaded {
        Ok((config, tables)) => Ok(Loaded { path, config, tables }),
        Err(errors) => {
            for e in errors {
                eprintln!("sendmail: {e}");
            }
            eprintln!("sendmail: the configuration has errors; nothing was queued");
            Err(ExitCode::from(EX_CONFIG))
        }
    }
}

/// Runs the command with `args` (without the program name); `name` is what it was invoked as
/// (`sendmail`, `mailq`, `newaliases`).
pub(crate) fn main(name: &str, args: &[OsString]) -> ExitCode {
    let mut inv = match args::parse(args) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    match name {
        "mailq" => inv.mode = Mode::List,
        "newaliases" => inv.mode = Mode::Rebuild,
        _ => {}
    }
    if inv.mode == Mode::Help {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let tables = match inv.mode {
        Mode::Rebuild | Mode::Verify | Mode::AddressTest => Tables::Required,
        Mode::Smtp => Tables::IfReadable,
        _ => Tables::None,
    };
    let loaded = match load(inv.config.as_deref(), tables) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let path = loaded.path.as_deref();
    match &inv.mode {
        Mode::Deliver => deliver(&inv, &loaded),
        Mode::Smtp => smtp::run(&loaded),
        Mode::List => crate::queue_cli::run(path, &crate::queue_cli::QueueCommand::List),
        Mode::Rebuild => rebuild(&loaded),
        Mode::Verify => crate::route_cli::verify(&loaded.config, loaded.tables(), &inv.recipients),
        Mode::AddressTest => crate::route_cli::address_test(&loaded.config, loaded.tables()),
        Mode::Flush(f) => {
            let command = crate::queue_cli::QueueCommand::Flush {
                id: f.id.clone(),
                recipient_domain: f.recipient_domain.clone(),
                sender_domain: f.sender_domain.clone(),
            };
            crate::queue_cli::run(path, &command)
        }
        Mode::QueueInterval(i) => {
            println!(
                "sendmail: -q{i} is not needed: the Postern daemon runs its queue itself ([queue] min_backoff, max_backoff)"
            );
            ExitCode::SUCCESS
        }
        Mode::Help => unreachable!("handled above"),
    }
}

/// `-bi` / `newaliases`: the tables were checked by loading; the daemon re-reads them.
fn rebuild(loaded: &Loaded) -> ExitCode {
    let t = loaded.tables();
    println!(
        "{}: tables OK ({} alias(es), {} virtual entr(ies), {} user(s))",
        loaded.describe(),
        t.aliases.len(),
        t.virtual_.len(),
        t.users.len()
    );
    let socket = loaded.config.control_socket();
    if std::os::unix::net::UnixStream::connect(&socket).is_err() {
        println!("the daemon is not running ({} not reachable): it reads them when it starts", socket.display());
        return ExitCode::SUCCESS;
    }
    crate::control_request(loaded.path.as_deref(), "reload")
}

/// The default mode: read the message, submit it.
fn deliver(inv: &Invocation, loaded: &Loaded) -> ExitCode {
    let config = &loaded.config;
    let max = config.limits.max_message_size.0;
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().take(max + 1).read_to_end(&mut input) {
        return report(inv, None, &format!("reading standard input: {e}"), EX_TEMPFAIL);
    }
    if input.len() as u64 > max {
        return report(inv, None, &format!("message larger than the limit of {max} bytes"), EX_DATAERR);
    }
    let user = client::login_name();
    let inputs = message::Inputs {
        ignore_dots: inv.ignore_dots,
        read_recipients: inv.read_recipients,
        sender: inv.sender.as_deref(),
        full_name: inv.full_name.as_deref(),
        recipients: &inv.recipients,
        user: &user,
        origin: config.domains.origin(),
        hostname: &config.hostname,
    };
    let composed = match message::compose(&input, &inputs) {
        Ok(c) => c,
        Err(e) => return report(inv, None, &e.to_string(), EX_USAGE),
    };
    let request = crate::submit_wire::Request {
        sender: composed.sender.clone(),
        params: crate::submit_wire::Params {
            body_8bit: inv.body.map(|b| b == args::Body::EightBitMime),
            ret_full: inv.ret_full,
            envid: inv.envid.clone(),
            notify: inv.notify,
        },
        recipients: composed.recipients.clone(),
    };
    match client::submit(loaded, &request, &composed.message) {
        Ok(id) => {
            if inv.verbose {
                println!("sendmail: queued as {id}");
            }
            ExitCode::SUCCESS
        }
        Err(client::SubmitError::Unreachable(text)) => {
            // Nobody to mail an error to: always print, whatever -oe says.
            eprintln!("sendmail: {text}");
            ExitCode::from(EX_TEMPFAIL)
        }
        Err(client::SubmitError::Refused(reply)) => {
            let text = format!("{reply}; the message was not queued");
            let mailed = matches!(inv.errors, ErrorMode::Mail | ErrorMode::MailExitZero)
                && client::mail_back(loaded, &composed, &reply).is_ok();
            report(inv, mailed.then_some(&composed.sender), &text, exit_code(&reply))
        }
    }
}

/// Reports a failure as `-oe` asks; `mailed_to` is set when the error was mailed back.
fn report(inv: &Invocation, mailed_to: Option<&String>, text: &str, code: u8) -> ExitCode {
    match (inv.errors, mailed_to) {
        (ErrorMode::MailExitZero, Some(_)) => return ExitCode::SUCCESS,
        (ErrorMode::Quiet, _) => {}
        (_, Some(to)) => eprintln!("sendmail: {text} (error mailed to <{to}>)"),
        _ => eprintln!("sendmail: {text}"),
    }
    ExitCode::from(code)
}

/// sysexits(3) code for a refusal: unknown or bad address 67, temporary 75, other 65.
fn exit_code(reply: &Reply) -> u8 {
    match reply.status {
        _ if reply.is_temporary() => EX_TEMPFAIL,
        Some(s) if s.1 == 1 => EX_NOUSER,
        _ => EX_DATAERR,
    }
}
