//! An accepted SMTP transaction as a [`Submission`] for the one way into the queue
//! (`queue::submit`): its origin, recipients with their destinations and DSN parameters, the
//! header fields the checks added.

use postern_proto::Refusal;
use postern_proto::{Transaction, trace};
use postern_queue::{MailParams, Submission, SubmitRecipient};
use postern_types::{ForwardPath, QueueId};

use crate::Context;

/// Queues `tx`. `Ok(id)` only once message and envelope are fsynced.
///
/// `client` is `name[ip]:port` for the log; `extra` are header fields (CRLF-terminated) to
/// place after the Received header (Authentication-Results, DKIM-Signature); `quarantine` is
/// the Maildir folder for local deliveries, if the message was quarantined; `held` queues it
/// held (a milter's quarantine); `id` is the queue ID chosen beforehand (the one milters saw),
/// or `None` for a new one.
///
/// # Errors
/// `451 4.3.0` when the spool cannot be written (the client retries; nothing is lost).
pub(crate) async fn commit(
    ctx: &Context,
    tx: Transaction,
    client: &str,
    extra: &str,
    quarantine: Option<String>,
    held: bool,
    id: Option<QueueId>,
) -> Result<QueueId, Refusal> {
    let sasl = tx.auth.as_deref().map(|l| format!(", sasl_username={l}")).unwrap_or_default();
    let tls = tx.tls.as_ref().map(|t| format!(", tls={}", t.version)).unwrap_or_default();
    let recipients = tx
        .recipients
        .iter()
        .flat_map(|r| {
            r.destinations.iter().map(|d| SubmitRecipient {
                forward_path: ForwardPath::Mailbox(r.forward_path.clone()),
                destination: d.clone(),
                notify: r.notify,
                orcpt: r.orcpt.clone(),
            })
        })
        .collect();
    let submission = Submission {
        origin: trace::Origin::of(&tx),
        source: format!("client={client}{sasl}{tls}, helo=<{}>", tx.helo),
        reverse_path: tx.reverse_path,
        recipients,
        headers: extra.to_owned(),
        message: tx.message,
        params: MailParams {
            body_8bit: Some(tx.body_8bit),
            smtputf8: tx.smtputf8,
            ret_full: tx.ret_full,
            envid: tx.envid,
            require_tls: tx.require_tls,
        },
        quarantine,
        held,
        id,
    };
    ctx.queue.submit(submission).await.map_err(|e| {
        tracing::error!("spool commit failed, replying 451: {e}");
        Refusal::QueueWrite
    })
}
