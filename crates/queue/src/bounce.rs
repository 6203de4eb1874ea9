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
use postern_types::{Address, EnhancedStatus, ReversePath, Verdict};

use crate::submit::{MailParams, Submission, SubmitRecipient, commit_blocking};

/// The report line of a recipient: its action, status, the remote host that answered (typed,
/// from the delivery result) and the diagnostic text.
pub(crate) fn status(
    r: &Recipient,
    action: Action,
    status: EnhancedStatus,
    remote: Option<String>,
    diagnostic: Option<String>,
) -> RecipientStatus {
    // ORCPT as given (RFC 3461 §4.2), else the RCPT TO address when aliases changed it.
    let original = match &r.orcpt {
        Some(o) => Some(xtext_decode(o.split_once(';').map_or(o.as_str(), |(_, a)| a))),
        None => (r.forward_path != r.address).then(|| r.forward_path.clone()),
    };
    RecipientStatus {
        final_recipient: r.address.clone(),
        original_recipient: original,
        action,
        status,
        remote_mta: remote,
        diagnostic,
    }
}

/// Composes and spools a DSN about `env` for `statuses`. Returns the new message's envelope to
/// schedule, or `None` when no DSN is due (null sender, nothing to report) or it could not be
/// addressed or written (logged).
pub(crate) fn send(
    spool: &Spool,
    config: &Config,
    tables: &Tables,
    env: &Envelope,
    original: &[u8],
    statuses: Vec<RecipientStatus>,
) -> Option<Envelope> {
    if statuses.is_empty() {
        return None;
    }
    let id = env.id;
    if env.reverse_path.is_empty() {
        tracing::info!("{id}: no DSN: the sender is the null reverse-path");
        return None;
    }
    let kind = if statuses.iter().any(|s| s.action == Action::Failed) {
        "failure"
    } else if statuses.iter().any(|s| s.action == Action::Delayed) {
        "delay"
    } else {
        "success"
    };
    let Ok(sender) = Address::parse(&env.reverse_path) else {
        tracing::warn!("{id}: no {kind} DSN: sender <{}> is not an address", env.reverse_path);
        return None;
    };
    let queue_id = id.to_string();
    let message = compose(&Dsn {
        reporting_mta: &config.hostname,
        queue_id: &queue_id,
        to: &env.reverse_path,
        arrival: env.arrival as i64,
        envelope_id: env.envid.as_deref().map(xtext_decode).as_deref(),
        recipients: statuses,
        original,
        // RFC 8689 §5: the DSN of a REQUIRETLS message returns the header only and is itself
        // sent with REQUIRETLS, so the content never travels a weaker path than it came.
        return_full: env.ret == Some(postern_spool::Ret::Full) && !env.require_tls,
    });
    let policy = RecipientPolicy {
        local_domains: &config.domains.local,
        trusted_networks: &config.relay.trusted_networks,
        separators: &config.delivery.subaddress_separator,
        tables,
    };
    let destinations = match resolve_for_delivery(&policy, &sender) {
        Verdict::Ok(d) => d,
        Verdict::TempFail(r) | Verdict::PermFail(r) => {
            tracing::warn!("{id}: {kind} DSN to <{sender}> cannot be delivered: {r}");
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
                forward_path: env.reverse_path.clone(),
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
