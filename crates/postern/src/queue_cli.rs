//! `postern queue ...` and `mailq`: the client of the control socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use postern_queue::control::{Entry, format_list, format_stats};

/// `postern queue` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum QueueCommand {
    /// List queued messages like mailq: ID (* being delivered, ! held), size, arrival, sender,
    /// pending recipients with their last deferral reason.
    List,
    /// Counts and oldest age per recipient domain and per last error.
    Stats,
    /// One message's envelope and headers.
    Show {
        /// Queue ID.
        id: String,
    },
    /// Deliver now (sendmail -qI / -qR / -qS); without a filter, everything not held.
    Flush {
        /// Only this message.
        #[arg(long)]
        id: Option<String>,
        /// Only messages with a pending recipient in this domain.
        #[arg(long)]
        recipient_domain: Option<String>,
        /// Only messages from this sender domain.
        #[arg(long)]
        sender_domain: Option<String>,
    },
    /// Remove a message from the queue without a DSN.
    Delete {
        /// Queue ID.
        id: String,
    },
    /// Keep a message from being delivered until released.
    Hold {
        /// Queue ID.
        id: String,
    },
    /// Undo hold.
    Release {
        /// Queue ID.
        id: String,
    },
}

impl QueueCommand {
    fn request(&self) -> String {
        match self {
            Self::List => "list".into(),
            Self::Stats => "stats".into(),
            Self::Show { id } => format!("show {id}"),
            Self::Flush { id, recipient_domain, sender_domain } => {
                let mut r = String::from("flush");
                for (k, v) in [("id", id), ("recipient-domain", recipient_domain), ("sender-domain", sender_domain)] {
                    if let Some(v) = v {
                        r.push_str(&format!(" {k}={v}"));
                    }
                }
                r
            }
            Self::Delete { id } => format!("delete {id}"),
            Self::Hold { id } => format!("hold {id}"),
            Self::Release { id } => format!("release {id}"),
        }
    }
}

/// `list`, `stats` and `show` from the spool's envelopes, read-only, for when the daemon is
/// down.
fn offline(spool: &Path, cmd: &QueueCommand) -> ExitCode {
    let found = match postern_spool::read_envelopes(spool) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("postern: cannot read the queue: {e}");
            return ExitCode::from(3);
        }
    };
    let mut entries = Vec::new();
    for f in found {
        match f {
            Ok(envelope) => entries.push(Entry { envelope, active: false }),
            Err(e) => eprintln!("postern: {e}"),
        }
    }
    entries.sort_by_key(|e| e.envelope.id);
    match cmd {
        QueueCommand::List => print!("{}", format_list(&entries)),
        QueueCommand::Stats => print!("{}", format_stats(&entries)),
        QueueCommand::Show { id } => {
            match entries.iter().find(|e| e.envelope.id.to_string().eq_ignore_ascii_case(id)) {
                Some(e) => print!("{}", e.envelope.to_text()),
                None => {
                    eprintln!("postern: {id}: no such message");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => unreachable!("only reading commands run offline"),
    }
    ExitCode::SUCCESS
}

/// Sends the command to the daemon whose configuration is at `config` (the embedded default
/// when `None`) and prints the answer. Exit codes: 0 done, 1 refused, 3 daemon unreachable.
pub(crate) fn run(config: Option<&Path>, cmd: &QueueCommand) -> ExitCode {
    let Some(config) = crate::load_config(config) else { return ExitCode::from(2) };
    let socket = config.control_socket();
    let stream = match UnixStream::connect(&socket) {
        Ok(s) => s,
        Err(e) if matches!(cmd, QueueCommand::List | QueueCommand::Stats | QueueCommand::Show { .. }) => {
            // Reading needs no daemon: the envelopes on disk are the truth (docs/spool.md).
            eprintln!("postern: the daemon is not reachable ({e}); reading the spool directly");
            return offline(&config.spool_dir(), cmd);
        }
        Err(e) => {
            eprintln!(
                "postern: cannot reach the daemon at {} ({e}), the control socket of {}; is `postern serve` \
                 running with this configuration? Pass --config or set POSTERN_CONFIG.",
                socket.display(),
                config.source.display()
            );
            return ExitCode::from(3);
        }
    };
    exchange(stream, &socket, &cmd.request())
}

/// Sends one request on the control socket and prints the answer: the text on stdout (exit 0),
/// or the daemon's error on stderr (exit 1); 3 when the socket fails mid-way.
pub(crate) fn exchange(mut stream: UnixStream, socket: &Path, request: &str) -> ExitCode {
    let mut answer = String::new();
    let sent = stream.write_all(format!("{request}\n").as_bytes()).and_then(|()| stream.read_to_string(&mut answer));
    if let Err(e) = sent {
        eprintln!("postern: talking to the daemon at {}: {e}", socket.display());
        return ExitCode::from(3);
    }
    match answer.split_once('\n') {
        Some(("ok", text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        _ => {
            eprint!("postern: {}", answer.strip_prefix("error: ").unwrap_or(&answer));
            ExitCode::FAILURE
        }
    }
}
