//! `sendmail -bs`: an SMTP session on standard input and output, as a local submission (the
//! way some MUAs and PHP libraries talk to the MTA without a socket). The session is the same
//! sans-I/O `proto::Session` as the daemon's, with the parameters of a trusted local client: no
//! TLS or AUTH offered, no screening, any domain accepted. Recipients are checked against the
//! tables here for an immediate reply when the caller may read them (else at the end of DATA);
//! each transaction is then queued through the submission socket, which checks and commits it
//! again before the `250`.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::process::ExitCode;

use postern_policy::{RecipientPolicy, resolve_for_delivery};
use postern_proto::{AuthOutcome, Session, SessionParams, Step, Transaction};
use postern_types::dsn::Notify;
use postern_types::{EnhancedStatus, QueueId, Reply, ReversePath, Verdict};

use super::Loaded;
use super::client::{SubmitError, submit};
use crate::submit_wire::{Params, Request};

/// Runs the session until QUIT or end of input.
pub(crate) fn run(loaded: &Loaded) -> ExitCode {
    let config = &loaded.config;
    let params = SessionParams {
        hostname: config.hostname.clone(),
        client_ip: Ipv4Addr::LOCALHOST.into(),
        postmaster_domain: config.domains.origin().to_owned(),
        max_message_size: usize::try_from(config.limits.max_message_size.0).unwrap_or(usize::MAX),
        max_recipients: config.limits.max_recipients,
        max_line_length: config.limits.max_line_length,
        max_errors: config.limits.max_errors,
        starttls: false,
        implicit_tls: None,
        auth: false,
        require_auth: false,
        screen: false,
        check_sender: false,
        refuse: None,
        // sendmail took `MAIL FROM:<root>` from a local program: a bare name gets the origin.
        qualify_bare_names: Some(config.domains.origin().to_owned()),
    };
    let policy = loaded.tables.as_ref().map(|tables| RecipientPolicy::new(config, tables));
    let mut session = Session::new(params);
    let (mut stdin, mut stdout) = (std::io::stdin().lock(), std::io::stdout().lock());
    let mut input = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    loop {
        match session.advance(&mut input) {
            Step::NeedInput => {
                if stdout.write_all(&session.take_output()).and_then(|()| stdout.flush()).is_err() {
                    return ExitCode::from(super::EX_TEMPFAIL);
                }
                match stdin.read(&mut chunk) {
                    Ok(0) | Err(_) => return ExitCode::SUCCESS,
                    Ok(n) => input.extend_from_slice(&chunk[..n]),
                }
            }
            // Without the tables (a caller that may not read them), the daemon checks the
            // recipients when the message is queued, and refuses it there.
            Step::CheckRecipient(address) => session.recipient_verdict(match &policy {
                Some(p) => resolve_for_delivery(p, &address),
                None => Verdict::Ok(Vec::new()),
            }),
            Step::Commit(tx) => session.commit_result(queue(loaded, &tx).map_err(postern_proto::Refusal::Decided)),
            Step::CheckSender(_) => session.sender_verdict(Verdict::Ok(())),
            Step::CheckClient(_) => session.client_verdict(Verdict::Ok(())),
            Step::Authenticate { .. } => session.auth_result(AuthOutcome::Invalid),
            Step::StartTls | Step::Close => {
                let _ = stdout.write_all(&session.take_output()).and_then(|()| stdout.flush());
                return ExitCode::SUCCESS;
            }
        }
    }
}

/// Queues one transaction through the daemon.
fn queue(loaded: &Loaded, tx: &Transaction) -> Result<QueueId, Reply> {
    let sender = match &tx.reverse_path {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(a) => a.to_string(),
    };
    // The socket carries one NOTIFY for the message: that of the first recipient giving one.
    let notify: Option<Notify> = tx.recipients.iter().find_map(|r| r.notify);
    let request = Request {
        sender,
        params: Params {
            body_8bit: tx.body_8bit.then_some(true),
            ret_full: tx.ret_full,
            envid: tx.envid.clone(),
            notify,
        },
        recipients: tx.recipients.iter().map(|r| r.forward_path.to_string()).collect(),
    };
    let id = submit(loaded, &request, &tx.message).map_err(|e| match e {
        SubmitError::Refused(reply) => reply,
        SubmitError::Unreachable(text) => Reply::new(451, EnhancedStatus(4, 3, 0), text),
    })?;
    QueueId::parse(&id).ok_or_else(|| Reply::new(451, EnhancedStatus(4, 3, 0), format!("bad queue ID {id:?}")))
}
