//! `postern`: the binary. Command line, logging, signals, reload and wiring of the crates; no
//! mail logic lives here.

mod control;
mod queue_cli;
mod sendmail;
mod serve;
mod submit;
mod unix_server;

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
    /// Run the server in the foreground, logging to stderr. Without --config, uses the embedded
    /// development default (127.0.0.1:2525, domain localhost, data in ./postern-data).
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and its tables; print every error with file, line and key.
    CheckConfig {
        /// Configuration file (TOML); without it, the embedded default is checked.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Queue a message from standard input, sendmail style (also: invoked as `sendmail`).
    Sendmail(sendmail::SendmailArgs),
    /// Inspect and steer the queue of the running daemon (also: `mailq` for `queue list`).
    Queue {
        /// Configuration file of the daemon (default: $POSTERN_CONFIG, else the embedded default).
        #[arg(long, short, env = "POSTERN_CONFIG")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: queue_cli::QueueCommand,
    },
}

fn main() -> ExitCode {
    // Invoked as `mailq`: list the queue, as sendmail's mailq does.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if Path::new(&argv0).file_name().is_some_and(|n| n == "mailq") {
        let config = std::env::var_os("POSTERN_CONFIG").map(PathBuf::from);
        return queue_cli::run(config.as_deref(), &queue_cli::QueueCommand::List);
    }
    if Path::new(&argv0).file_name().is_some_and(|n| n == "sendmail") {
        return sendmail::run(&sendmail::SendmailArgs::parse());
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve::main(config.as_deref()),
        Command::CheckConfig { config } => check_config(config.as_deref()),
        Command::Queue { config, command } => queue_cli::run(config.as_deref(), &command),
        Command::Sendmail(args) => sendmail::run(&args),
    }
}

/// The configuration at `path`, or the embedded default; every error is printed to stderr.
pub(crate) fn load_config(path: Option<&Path>) -> Option<postern_config::Config> {
    let loaded = match path {
        Some(p) => postern_config::load(p),
        None => Ok(postern_config::dev_default()),
    };
    match loaded {
        Ok((config, _)) => Some(config),
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            None
        }
    }
}

fn check_config(path: Option<&std::path::Path>) -> ExitCode {
    let loaded = match path {
        Some(p) => postern_config::load(p),
        None => Ok(postern_config::dev_default()),
    };
    match loaded {
        Ok((config, tables)) => {
            println!(
                "{}: configuration OK ({} listener(s), {} local domain(s), {} user(s), {} alias(es), {} virtual entr(ies))",
                config.source.display(),
                config.listener.len(),
                config.domains.local.len(),
                tables.users.len(),
                tables.aliases.len(),
                tables.virtual_.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{} error(s); fix them and run `postern check-config` again", errors.len());
            ExitCode::from(2)
        }
    }
}
