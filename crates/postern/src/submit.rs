//! The submission socket (`{data_dir}/submit.sock`, mode 0666, or 0660 with `[server]
//! submit_group`) behind `postern sendmail`: any local user (or member of that group) may queue
//! mail, as with sendmail or Postfix's postdrop. The kernel tells us the
//! client's uid (`SO_PEERCRED`), recorded in the trace header.
//!
//! Wire format: `submit_wire.rs`. The message is committed durably before `ok`. Mail to other
//! domains is DKIM-signed like mail relayed over SMTP for our users.

use std::path::Path;
use std::sync::Arc;

use postern_inbound::Context;
use postern_policy::{RecipientPolicy, resolve_for_delivery};
use postern_proto::trace::Origin;
use postern_queue::{MailParams, Submission, SubmitRecipient};
use postern_types::{Address, Destination, EnhancedStatus, ForwardPath, QueueId, Reply, ReversePath, Verdict};
use tracing::Instrument as _;

use crate::submit_wire::Request;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

/// Binds the socket and serves until `stop`: mode 0666 (any local user may submit), or 0660
/// with the group `group` (`[server] submit_group`: only its members may).
///
/// # Errors
/// The socket cannot be bound, or its group set (an unknown group).
pub(crate) fn spawn(
    path: &Path,
    group: Option<&str>,
    ctx: Arc<Context>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let gid = group.map(crate::privileges::lookup_group).transpose()?;
    let mode = if gid.is_some() { 0o660 } else { 0o666 };
    crate::unix_server::serve(path, mode, stop, move |stream| {
        let ctx = ctx.clone();
        async move {
            let uid = stream.peer_cred().map_or(u32::MAX, |c| c.uid());
            let (rd, mut wr) = stream.into_split();
            let result = receive(rd, uid, &ctx).await.map(|id| id.to_string());
            if let Err(e) = &result {
                tracing::warn!("NOQUEUE: reject: sendmail submission from uid {uid}: {e}");
            }
            let answer = crate::submit_wire::encode_answer(&result);
            let _ = wr.write_all(answer.as_bytes()).await;
        }
    })?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    Ok(())
}

fn temp(what: impl std::fmt::Display) -> Reply {
    Reply::new(451, EnhancedStatus(4, 3, 0), what.to_string())
}

async fn receive(rd: tokio::net::unix::OwnedReadHalf, uid: u32, ctx: &Context) -> Result<QueueId, Reply> {
    let config = ctx.live.config();
    let tables = ctx.live.tables();
    let max = config.limits.max_message_size.0;
    let mut rd = BufReader::new(rd);
    let mut head = String::new();
    (&mut rd).take(64 * 1024).read_line(&mut head).await.map_err(temp)?;
    let request = Request::decode(head.trim_end_matches('\n'))?;
    let sender = request.sender.clone();
    if !sender.is_empty() {
        Address::parse(&sender)
            .map_err(|e| Reply::new(553, EnhancedStatus(5, 1, 7), format!("sender <{sender}>: {e}")))?;
    }
    let mut message = Vec::new();
    (&mut rd).take(max + 1).read_to_end(&mut message).await.map_err(temp)?;
    if message.len() as u64 > max {
        return Err(Reply::new(552, EnhancedStatus(5, 3, 4), format!("message larger than the limit of {max} bytes")));
    }
    let policy = RecipientPolicy::new(&config, &tables);
    let mut recipients = Vec::new();
    for r in &request.recipients {
        let address =
            Address::parse(r).map_err(|e| Reply::new(553, EnhancedStatus(5, 1, 3), format!("recipient <{r}>: {e}")))?;
        match resolve_for_delivery(&policy, &address) {
            Verdict::Ok(destinations) => {
                recipients.extend(destinations.into_iter().map(|destination| SubmitRecipient {
                    forward_path: ForwardPath::Mailbox(address.clone()),
                    destination,
                    notify: request.params.notify,
                    orcpt: None,
                }))
            }
            Verdict::TempFail(reply) | Verdict::PermFail(reply) => return Err(reply),
        }
    }
    // Mail that leaves is signed like mail our users relay over SMTP; the queue ID is chosen
    // first, so that the signing line names it.
    let id = QueueId::generate();
    let headers = if recipients.iter().any(|r| matches!(r.destination, Destination::Remote(_))) {
        let who = format!("uid {uid}");
        let signed = postern_inbound::dkim_sign(ctx.auth(), config.dkim.on_error, &who, &mut message);
        signed.instrument(tracing::info_span!("submit", queue_id = %id)).await.map_err(|r| r.reply())?
    } else {
        String::new()
    };
    let reverse_path = if sender.is_empty() {
        ReversePath::Null
    } else {
        ReversePath::Mailbox(Address::parse(&sender).map_err(|e| temp(format_args!("sender: {e}")))?)
    };
    let submission = Submission {
        origin: Origin::Local { uid },
        source: format!("uid={uid} (sendmail)"),
        reverse_path,
        recipients,
        headers,
        message,
        params: MailParams {
            body_8bit: request.params.body_8bit,
            smtputf8: false,
            ret_full: request.params.ret_full,
            envid: request.params.envid.clone(),
            require_tls: false,
        },
        quarantine: None,
        held: false,
        id: Some(id),
    };
    ctx.queue.submit(submission).await.map_err(|e| temp(format_args!("cannot queue the message: {e}")))
}
