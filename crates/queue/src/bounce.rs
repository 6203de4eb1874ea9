//! Delivery status notifications from the scheduler: failure DSNs for recipients that failed
//! permanently or expired (`[queue] max_age`), one "delayed" DSN per message
//! (`[queue] warn_after`). A DSN is committed to the spool as a new message from the null sender
//! *before* the original's failed state is saved, so a crash can duplicate a DSN but never lose
//! one. Nothing is ever sent to the null sender (RFC 5321 §4.5.5: no bounce loops).

use postern_config::{Config, Tables};
use postern_policy::{RecipientPolicy, resolve_for_delivery};
use postern_proto::trace::Origin;
use postern_report::{Action, Dsn, RecipientStatus, compose};
use postern_spool::{Envelope, Recipient, Spool};
use postern_types::dsn::xtext_decode;
use postern_types::{Address, EnhancedStatus, ForwardPath, ReversePath, Verdict};

use crate::submit::{MailParams, Submission, SubmitRecipient, commit_blocking};

/// A recipient's report line, and the forward-path of its copy when that copy went to another
/// domain: what a DSN is made of, and where it goes ([`send`]).
#[derive(Debug, Clone)]
pub(crate) struct Notice {
    pub(crate) status: RecipientStatus,
    /// `Some` for a remote recipient: its forward-path, which decides whether the copy left
    /// with an SRS reverse-path.
    remote_forward_path: Option<ForwardPath>,
}

impl Notice {
    /// A report line about no single copy (an alias's `expanded`): it goes to the sender.
    pub(crate) fn of_sender(status: RecipientStatus) -> Self {
        Self { status, remote_forward_path: None }
    }
}

/// The report line of a recipient: its action, status, the remote host that answered (typed,
/// from the delivery result) and the diagnostic text.
pub(crate) fn status(
    r: &Recipient,
    action: Action,
    status: EnhancedStatus,
    remote: Option<String>,
    diagnostic: Option<String>,
) -> Notice {
    // ORCPT as given (RFC 3461 §4.2), else the RCPT TO address when aliases changed it.
    let original = match &r.orcpt {
        Some(o) => Some(o.address()),
        None => (r.forward_path != ForwardPath::Mailbox(r.address().clone())).then(|| r.forward_path.to_string()),
    };
    let status = RecipientStatus {
        final_recipient: ForwardPath::Mailbox(r.address().clone()),
        original_recipient: original,
        action,
        status,
        remote_mta: remote,
        diagnostic,
    };
    Notice { status, remote_forward_path: r.remote().map(|_| r.forward_path.clone()) }
}

/// Composes and spools the DSNs about `env` for `statuses`: one to each reverse-path the
/// recipients' copies left with. A copy forwarded to another domain left with an SRS address
/// ([`postern_policy::srs::forward_sender`]), and its DSN goes there, as the next hop's own
/// bounce would have: to our SRS domain, whose hash and age are verified before it is sent back
/// to the original sender (docs/operations.md, "Forwarding"). Returns the new messages'
/// envelopes to schedule; none when no DSN is due (null sender, nothing to report) or one could
/// not be addressed or written (logged).
pub(crate) fn send(
    spool: &Spool,
    config: &Config,
    tables: &Tables,
    env: &Envelope,
    original: &[u8],
    notices: Vec<Notice>,
) -> Vec<Envelope> {
    if notices.is_empty() {
        return Vec::new();
    }
    let ReversePath::Mailbox(sender) = &env.reverse_path else {
        tracing::info!("{}: no DSN: the sender is the null reverse-path", env.id);
        return Vec::new();
    };
    let mut groups: Vec<(Address, Vec<RecipientStatus>)> = Vec::new();
    for notice in notices {
        let to = addressee(config, tables, env, &notice).unwrap_or_else(|| sender.clone());
        match groups.iter_mut().find(|(t, _)| *t == to) {
            Some((_, g)) => g.push(notice.status),
            None => groups.push((to, vec![notice.status])),
        }
    }
    groups.into_iter().filter_map(|(to, group)| send_to(spool, config, tables, env, original, &to, group)).collect()
}

/// The SRS reverse-path the copy of `notice` left with when it was forwarded to another
/// domain: where its DSN goes instead of the message's reverse-path.
fn addressee(config: &Config, tables: &Tables, env: &Envelope, notice: &Notice) -> Option<Address> {
    postern_policy::srs::forward_sender(
        tables.srs.as_ref(),
        &config.domains.local,
        &env.reverse_path,
        notice.remote_forward_path.as_ref()?,
        postern_policy::srs::today(),
    )
}

/// Composes and spools one DSN about `env` for `statuses`, to `to`.
fn send_to(
    spool: &Spool,
    config: &Config,
    tables: &Tables,
    env: &Envelope,
    original: &[u8],
    to: &Address,
    statuses: Vec<RecipientStatus>,
) -> Option<Envelope> {
    let id = env.id;
    let kind = if statuses.iter().any(|s| s.action == Action::Failed) {
        "failure"
    } else if statuses.iter().any(|s| s.action == Action::Delayed) {
        "delay"
    } else {
        "success"
    };
    let queue_id = id.to_string();
    let message = compose(&Dsn {
        reporting_mta: &config.hostname,
        queue_id: &queue_id,
        to,
        arrival: env.arrival as i64,
        envelope_id: env.envid.as_deref().map(xtext_decode).as_deref(),
        recipients: statuses,
        original,
        // RFC 8689 §5: the DSN of a REQUIRETLS message returns the header only and is itself
        // sent with REQUIRETLS, so the content never travels a weaker path than it came.
        return_full: env.ret == Some(postern_spool::Ret::Full) && !env.require_tls,
    });
    let policy = RecipientPolicy::new(config, tables);
    let destinations = match resolve_for_delivery(&policy, to) {
        Verdict::Ok(d) => d,
        Verdict::TempFail(r) | Verdict::PermFail(r) => {
            tracing::warn!("{id}: {kind} DSN to <{to}> cannot be delivered: {r}");
            return None;
        }
    };
    let submission = Submission {
        origin: Origin::Generated { what: "DSN" },
        source: format!("{kind} DSN of {id}"),
        reverse_path: ReversePath::Null,
        recipients: destinations
            .into_iter()
            .map(|destination| SubmitRecipient {
                forward_path: ForwardPath::Mailbox(to.clone()),
                destination,
                notify: None,
                orcpt: None,
            })
            .collect(),
        headers: String::new(),
        message,
        params: MailParams { body_8bit: Some(true), require_tls: env.require_tls, ..MailParams::default() },
        quarantine: None,
        held: false,
        id: None,
    };
    match commit_blocking(spool, &config.hostname, submission) {
        Ok(dsn_env) => {
            tracing::info!("{id}: sender {kind} notification: {}", dsn_env.id);
            Some(dsn_env)
        }
        Err(e) => {
            tracing::error!("{id}: cannot queue the {kind} DSN: {e}");
            None
        }
    }
}
