//! Local deliveries of an attempt, on a blocking thread: Maildir, mbox and pipes, each as the
//! recipient's account through the local-delivery helper when the daemon runs unprivileged.

use super::*;

/// Local recipients: Maildir, mbox and pipes on this (blocking) thread. Returns the reports due: success
/// (NOTIFY=SUCCESS) and failure (a mail forwarding loop, RFC 5321 §6.3).
pub(super) fn local(spool: &Spool, config: &Config, env: &mut Envelope, message: &[u8], now_s: u64) -> Vec<Notice> {
    let mut reports = Vec::new();
    let id = env.id;
    let reverse_path = env.reverse_path.clone();
    // A delivery done but not yet in the envelope on disk.
    let mut unrecorded = false;
    for i in 0..env.recipients.len() {
        let r = &env.recipients[i];
        if matches!(r.destination, Destination::Remote(_)) || r.state != RcptState::Pending || r.next_attempt > now_s {
            continue;
        }
        if std::mem::take(&mut unrecorded) {
            record_progress(spool, env);
        }
        let quarantine = env.quarantine.clone();
        let r = &mut env.recipients[i];
        let destination = r.destination.clone();
        if postern_proto::loops::has_delivered_to(message, &r.address().to_string()) {
            let name = match &destination {
                Destination::Mailbox { name, .. } | Destination::Pipe { name, .. } => name.as_str(),
                Destination::Remote(_) => "",
            };
            let relay = format!("local, mailbox={name}");
            let text = format!("mail forwarding loop for {}", r.address());
            let outcome = Outcome::PermFail(postern_types::Reply::new(554, EnhancedStatus(5, 4, 6), text));
            let by = By {
                relay: &relay,
                remote_host: None,
                tls: None,
                transport: postern_metrics::Transport::Local,
                delays: None,
            };
            reports.extend(record(config, id, r, &by, outcome, now_s, false));
            continue;
        }
        use postern_metrics::Transport;
        let (outcome, relay, transport) = match (&destination, config.delivery.local) {
            (Destination::Pipe { command, name, .. }, _) => {
                let relay =
                    if name.is_empty() { "local, pipe route".to_owned() } else { format!("local, pipe alias={name}") };
                (to_pipe(config, id, command, name, &reverse_path, r, message), relay, Transport::Pipe)
            }
            (Destination::Mailbox { name, .. }, LocalTransport::Maildir) => (
                to_maildir(spool, config, quarantine.as_deref(), name, &reverse_path, r, message),
                format!("local, mailbox={name}"),
                Transport::Local,
            ),
            (Destination::Mailbox { name, .. }, LocalTransport::Mbox) => {
                (to_mbox(config, name, &reverse_path, r, message), format!("local, mailbox={name}"), Transport::Local)
            }
            // Delivered over LMTP by `attempt`, in one transaction for all of them.
            (Destination::Mailbox { .. }, LocalTransport::Lmtp) | (Destination::Remote(_), _) => continue,
        };
        let delivered = matches!(outcome, Outcome::Delivered(_));
        unrecorded |= delivered;
        let by = By { relay: &relay, remote_host: None, tls: None, transport, delays: None };
        // A pipe can bounce (EX_NOUSER...): its failure report goes to the sender.
        reports.extend(record(config, id, r, &by, outcome, now_s, false));
        if delivered && r.notify().success {
            reports.push(bounce::status(r, Action::Delivered, EnhancedStatus(2, 0, 0), None, None));
        }
    }
    if unrecorded && env.recipients.iter().any(|r| r.state == RcptState::Pending && r.next_attempt <= now_s) {
        record_progress(spool, env);
    }
    reports
}

/// Maildir delivery of one recipient (into the quarantine folder when set).
fn to_maildir(
    spool: &Spool,
    config: &Config,
    quarantine: Option<&str>,
    mailbox: &str,
    reverse_path: &ReversePath,
    r: &Recipient,
    message: &[u8],
) -> Outcome {
    let mut maildir = config.maildir_of(mailbox);
    if let Some(folder) = quarantine {
        maildir.push(folder);
    }
    let shared = spool.shared_sync_for(&maildir);
    let shared = shared.as_ref().map(|f| f as &dyn Fn() -> std::io::Result<()>);
    // Delivery errors are temporary (disk full, permissions): retried, never bounced.
    match postern_local::deliver(&maildir, &config.hostname, reverse_path, r.address(), message, shared) {
        Ok(path) => {
            let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            Outcome::Delivered(postern_types::Reply::new(
                250,
                EnhancedStatus(2, 0, 0),
                format!("delivered to maildir as {file}"),
            ))
        }
        Err(e) => Outcome::temp(EnhancedStatus(4, 3, 0), e.to_string()),
    }
}

/// A `|command` recipient: run as the alias's Unix account (not root), else `[delivery]
/// pipe_user`. Refused (retried) while `[delivery] allow_pipes` is off, so that a pipe queued
/// before the switch was turned off never runs.
/// A pipe delivery of one recipient. The command's output is logged (escaped, as every log line),
/// never put in the outcome, whose text a DSN carries to the sender.
fn to_pipe(
    config: &Config,
    id: postern_types::QueueId,
    command: &str,
    alias: &str,
    reverse_path: &ReversePath,
    r: &Recipient,
    message: &[u8],
) -> Outcome {
    use postern_local::pipe::{self, PipeOutcome};
    if !config.delivery.allow_pipes {
        return Outcome::temp(EnhancedStatus(4, 3, 5), "pipes are off ([delivery] allow_pipes = false)");
    }
    let Some(account) = pipe::account(alias).or_else(|| pipe::account(&config.delivery.pipe_user)) else {
        let user = &config.delivery.pipe_user;
        return Outcome::temp(
            EnhancedStatus(4, 3, 5),
            format!("no account to run the pipe as ([delivery] pipe_user {user:?})"),
        );
    };
    let local_part = r.forward_path.local_part();
    let extension = Some(local_part).and_then(|l| {
        l.char_indices()
            .find(|(_, c)| config.delivery.subaddress_separator.contains(*c))
            .map(|(i, c)| &l[i + c.len_utf8()..])
    });
    let (outcome, output) = match postern_local::privileged::helper() {
        // The daemon runs as [server] user: only the helper can run the command as the account.
        Some(socket) => {
            let request = postern_local::privileged::Request::Pipe {
                alias: alias.to_owned(),
                command: command.to_owned(),
                sender: reverse_path.mailbox().map(ToString::to_string).unwrap_or_default(),
                recipient: r.address().to_string(),
                original_recipient: r.forward_path.to_string(),
                extension: extension.unwrap_or("").to_owned(),
            };
            let bound = config.delivery.pipe_timeout.0 + std::time::Duration::from_secs(30);
            postern_local::privileged::deliver(socket, &request, message, bound)
        }
        None => {
            let job = pipe::Job {
                command,
                account: &account,
                sender: reverse_path,
                recipient: r.address(),
                original_recipient: &r.forward_path,
                extension: extension.unwrap_or(""),
                timeout: config.delivery.pipe_timeout.0,
            };
            pipe::deliver(&job, message)
        }
    };
    if !output.is_empty() {
        tracing::info!("{id}: to=<{}>: command output: {output}", r.address());
    }
    match outcome {
        PipeOutcome::Delivered => {
            postern_types::failpoint::hit("queue::pipe-delivered");
            Outcome::Delivered(postern_types::Reply::new(
                250,
                EnhancedStatus(2, 0, 0),
                format!("delivered to command as {}: {command}", account.name),
            ))
        }
        PipeOutcome::TempFail(why) => Outcome::temp(EnhancedStatus(4, 3, 0), why),
        PipeOutcome::PermFail { status, text } => {
            let (c, s, d) = pipe::status_of(status);
            Outcome::PermFail(postern_types::Reply::new(550, EnhancedStatus(c, s, d), text))
        }
    }
}

/// mbox delivery of one recipient (`[delivery] local = "mbox"`).
fn to_mbox(config: &Config, mailbox: &str, reverse_path: &ReversePath, r: &Recipient, message: &[u8]) -> Outcome {
    let path = config.mbox_of(mailbox);
    let owner = postern_local::pipe::account(mailbox);
    let timeout = config.delivery.mbox_lock_timeout.0;
    let delivered = || {
        Outcome::Delivered(postern_types::Reply::new(
            250,
            EnhancedStatus(2, 0, 0),
            format!("delivered to mbox {}", path.display()),
        ))
    };
    match postern_local::privileged::helper() {
        // The daemon runs as [server] user: the helper makes a new mbox the recipient's.
        Some(socket) if owner.is_some() => {
            let request = postern_local::privileged::Request::Mbox {
                mailbox: mailbox.to_owned(),
                sender: reverse_path.mailbox().map(ToString::to_string).unwrap_or_default(),
                recipient: r.address().to_string(),
            };
            let bound = timeout + std::time::Duration::from_secs(60);
            match postern_local::privileged::deliver(socket, &request, message, bound).0 {
                postern_local::pipe::PipeOutcome::Delivered => delivered(),
                postern_local::pipe::PipeOutcome::TempFail(why)
                | postern_local::pipe::PipeOutcome::PermFail { text: why, .. } => {
                    Outcome::temp(EnhancedStatus(4, 3, 0), why)
                }
            }
        }
        _ => match postern_local::mbox::deliver(
            &path,
            owner.map(|a| (a.uid, a.gid)),
            reverse_path,
            r.address(),
            message,
            timeout,
        ) {
            Ok(()) => delivered(),
            Err(e) => Outcome::temp(EnhancedStatus(4, 3, 0), e.to_string()),
        },
    }
}
