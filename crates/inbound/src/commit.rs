//! Turning an accepted transaction into a queued message: queue ID, Received header, envelope,
//! the durable spool commit, and the hand-over to the scheduler.

use std::collections::HashSet;

use postern_config::Config;
use postern_proto::{Transaction, trace};
use postern_spool::{Envelope, Recipient};
use postern_types::{Destination, EnhancedStatus, QueueId, Reply, ReversePath};

use crate::Context;

/// Commits `tx` to the spool. `Ok(id)` only once message and envelope are fsynced.
///
/// # Errors
/// `451 4.3.0` when the spool cannot be written (the client retries; nothing is lost).
/// `extra` are header fields (CRLF-terminated) to place after the Received header:
/// Authentication-Results, DKIM-Signature. `quarantine` is the Maildir folder for local
/// deliveries, if the message was quarantined. `client` is `name[ip]:port`, for the log.
pub(crate) async fn commit(
    ctx: &Context,
    config: &Config,
    tx: Transaction,
    client: &str,
    extra: &str,
    quarantine: Option<String>,
) -> Result<QueueId, Reply> {
    let id = QueueId::generate();
    let date = chrono::Utc::now().to_rfc2822();
    let mut received = trace::received(&tx, &config.hostname, id, &date);
    received.push_str(extra);
    let mut env = envelope(&tx, id, (received.len() + tx.message.len()) as u64);
    env.quarantine = quarantine;
    let spool = ctx.spool.clone();
    let saved = env.clone();
    let message = tx.message;
    let result = tokio::task::spawn_blocking(move || spool.commit(&saved, received.as_bytes(), &message)).await;
    match result {
        Ok(Ok(())) => {
            let from = match &tx.reverse_path {
                ReversePath::Null => String::new(),
                ReversePath::Mailbox(a) => a.to_string(),
            };
            let sasl = tx.auth.as_deref().map(|l| format!(", sasl_username={l}")).unwrap_or_default();
            let tls = tx.tls.as_ref().map(|t| format!(", tls={}", t.version)).unwrap_or_default();
            tracing::info!(
                "{id}: client={client}{sasl}{tls}, helo=<{}>, from=<{from}>, size={}, nrcpt={} (queue active)",
                tx.helo,
                env.size,
                env.recipients.len()
            );
            ctx.queue.enqueue(env);
            Ok(id)
        }
        Ok(Err(e)) => {
            tracing::error!("{id}: spool commit failed, replying 451: {e}");
            Err(Reply::new(451, EnhancedStatus(4, 3, 0), "Error: queue file write error, try again later"))
        }
        Err(e) => {
            tracing::error!("{id}: spool commit task failed, replying 451: {e}");
            Err(Reply::new(451, EnhancedStatus(4, 3, 0), "Error: queue file write error, try again later"))
        }
    }
}

/// The envelope of `tx`: one entry per distinct destination (a mailbox reached through two
/// recipients is delivered once).
fn envelope(tx: &Transaction, id: QueueId, size: u64) -> Envelope {
    let mut seen = HashSet::new();
    let mut recipients = Vec::new();
    for r in &tx.recipients {
        for d in &r.destinations {
            let key = match d {
                Destination::Mailbox { name, .. } => format!("mailbox:{name}"),
                Destination::Remote(a) => format!("remote:{a}"),
            };
            if seen.insert(key) {
                let mut rcpt = Recipient::new(r.forward_path.to_string(), d);
                rcpt.notify = r.notify.map(|n| n.to_string());
                rcpt.orcpt.clone_from(&r.orcpt);
                recipients.push(rcpt);
            }
        }
    }
    let reverse_path = match &tx.reverse_path {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(a) => a.to_string(),
    };
    let mut env = Envelope::new(id, tx.client_ip.to_string(), tx.helo.clone(), reverse_path, size, recipients);
    env.body_8bit = tx.body_8bit;
    env.smtputf8 = tx.smtputf8;
    env.ret = tx.ret_full.map(|full| if full { "full".to_owned() } else { "hdrs".to_owned() });
    env.envid.clone_from(&tx.envid);
    env
}
