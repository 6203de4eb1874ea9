//! The submission socket (`{data_dir}/submit.sock`, mode 0666) behind `postern sendmail`: any
//! local user may queue mail, as with sendmail or Postfix's postdrop. The kernel tells us the
//! client's uid (`SO_PEERCRED`), recorded in the trace header.
//!
//! Wire format: `submit_wire.rs`. The message is committed durably before `ok`. Mail to other
//! domains is DKIM-signed like mail relayed over SMTP for our users.

use std::path::Path;
use std::sync::Arc;

use postern_inbound::Context;
use postern_policy::{RecipientPolicy, resolve_for_delivery};
use postern_spool::{Envelope, Recipient};
use postern_types::{Address, EnhancedStatus, QueueId, Reply, Verdict};

use crate::submit_wire::Request;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

/// Binds the socket (mode 0666: any local user may submit) and serves until `stop`.
pub(crate) fn spawn(path: &Path, ctx: Arc<Context>, stop: watch::Receiver<bool>) -> std::io::Result<()> {
    crate::unix_server::serve(path, 0o666, stop, move |stream| {
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
    })
}

fn temp(what: impl std::fmt::Display) -> Reply {
    Reply::new(451, EnhancedStatus(4, 3, 0), what.to_string())
}

async fn receive(rd: tokio::net::unix::OwnedReadHalf, uid: u32, ctx: &Context) -> Result<QueueId, Reply> {
    let (queue, spool) = (&ctx.queue, &ctx.spool);
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
    let policy = RecipientPolicy {
        local_domains: &config.domains.local,
        trusted_networks: &config.relay.trusted_networks,
        separators: &config.delivery.subaddress_separator,
        tables: &tables,
    };
    let mut recipients = Vec::new();
    for r in &request.recipients {
        let address =
            Address::parse(r).map_err(|e| Reply::new(553, EnhancedStatus(5, 1, 3), format!("recipient <{r}>: {e}")))?;
        match resolve_for_delivery(&policy, &address) {
            Verdict::Ok(destinations) => {
                for d in &destinations {
                    let mut rcpt = Recipient::new(address.to_string(), d);
                    rcpt.notify = request.params.notify.map(|n| n.to_string());
                    if !recipients.iter().any(|x: &Recipient| x.address == rcpt.address && x.mailbox == rcpt.mailbox) {
                        recipients.push(rcpt);
                    }
                }
            }
            Verdict::TempFail(reply) | Verdict::PermFail(reply) => return Err(reply),
        }
    }
    let id = QueueId::generate();
    let mut trace = format!(
        "Received: by {} (Postern, from userid {uid})\r\n\tid {id}; {}\r\n",
        config.hostname,
        chrono::Utc::now().to_rfc2822()
    );
    if recipients.iter().any(|r| r.mailbox.is_none()) {
        match ctx.auth().signer.sign(&message) {
            Ok(Some((headers, keys))) => {
                trace.push_str(&headers);
                tracing::info!("{id}: DKIM: signed with {keys}");
            }
            Ok(None) => {}
            Err(e) if config.dkim.on_error == postern_config::schema::DkimOnError::SendUnsigned => {
                tracing::warn!("{id}: DKIM: cannot sign, sending unsigned: {e}");
            }
            Err(e) => return Err(temp(format_args!("cannot DKIM-sign the message, try again: {e}"))),
        }
    }
    let size = (trace.len() + message.len()) as u64;
    let mut env = Envelope::new(id, "127.0.0.1".into(), "localhost".into(), sender.clone(), size, recipients);
    env.body_8bit = request.params.body_8bit.unwrap_or_else(|| message.iter().any(|b| *b >= 0x80));
    env.ret = request.params.ret_full.map(|full| if full { "full" } else { "hdrs" }.to_owned());
    env.envid.clone_from(&request.params.envid);
    let (spool, saved) = (spool.clone(), env.clone());
    tokio::task::spawn_blocking(move || spool.commit(&saved, trace.as_bytes(), &message))
        .await
        .map_err(temp)?
        .map_err(|e| temp(format_args!("cannot queue the message: {e}")))?;
    tracing::info!(
        "{id}: uid={uid}, from=<{sender}>, size={}, nrcpt={} (queue active, via sendmail)",
        env.size,
        env.recipients.len()
    );
    queue.enqueue(env);
    Ok(id)
}
