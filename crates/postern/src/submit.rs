//! The submission socket (`{data_dir}/submit.sock`, mode 0666) behind `postern sendmail`: any
//! local user may queue mail, as with sendmail or Postfix's postdrop. The kernel tells us the
//! client's uid (`SO_PEERCRED`), recorded in the trace header.
//!
//! Protocol: one line `submit<TAB>sender<TAB>rcpt<TAB>rcpt...` (sender empty for `<>`), then the
//! message with CRLF line endings until the client shuts down its side; the answer is
//! `ok ID` or `error: text`. The message is committed durably before `ok`. Mail to other
//! domains is DKIM-signed like mail relayed over SMTP for our users.

use std::path::Path;
use std::sync::Arc;

use postern_inbound::Context;
use postern_policy::{RecipientPolicy, resolve_for_delivery};
use postern_spool::{Envelope, Recipient};
use postern_types::{Address, QueueId, Verdict};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

/// Binds the socket (mode 0666: any local user may submit) and serves until `stop`.
pub(crate) fn spawn(path: &Path, ctx: Arc<Context>, stop: watch::Receiver<bool>) -> std::io::Result<()> {
    crate::unix_server::serve(path, 0o666, stop, move |stream| {
        let ctx = ctx.clone();
        async move {
            let uid = stream.peer_cred().map_or(u32::MAX, |c| c.uid());
            let (rd, mut wr) = stream.into_split();
            let answer = match receive(rd, uid, &ctx).await {
                Ok(id) => format!("ok {id}\n"),
                Err(e) => {
                    tracing::warn!("sendmail submission from uid {uid} refused: {e}");
                    format!("error: {e}\n")
                }
            };
            let _ = wr.write_all(answer.as_bytes()).await;
        }
    })
}

async fn receive(rd: tokio::net::unix::OwnedReadHalf, uid: u32, ctx: &Context) -> Result<QueueId, String> {
    let (queue, spool) = (&ctx.queue, &ctx.spool);
    let config = ctx.live.config();
    let tables = ctx.live.tables();
    let max = config.limits.max_message_size.0;
    let mut rd = BufReader::new(rd);
    let mut head = String::new();
    (&mut rd).take(64 * 1024).read_line(&mut head).await.map_err(|e| e.to_string())?;
    let mut fields = head.trim_end_matches('\n').split('\t');
    if fields.next() != Some("submit") {
        return Err("bad request".into());
    }
    let sender = fields.next().ok_or("no sender")?.to_owned();
    if !sender.is_empty() {
        Address::parse(&sender).map_err(|e| format!("sender <{sender}>: {e}"))?;
    }
    let rcpts: Vec<String> = fields.map(str::to_owned).collect();
    if rcpts.is_empty() {
        return Err("no recipients".into());
    }
    let mut message = Vec::new();
    (&mut rd).take(max + 1).read_to_end(&mut message).await.map_err(|e| e.to_string())?;
    if message.len() as u64 > max {
        return Err(format!("message larger than the limit of {max} bytes (5.3.4)"));
    }
    let policy = RecipientPolicy {
        local_domains: &config.domains.local,
        trusted_networks: &config.relay.trusted_networks,
        separators: &config.delivery.subaddress_separator,
        tables: &tables,
    };
    let mut recipients = Vec::new();
    for r in &rcpts {
        let address = Address::parse(r).map_err(|e| format!("recipient <{r}>: {e}"))?;
        match resolve_for_delivery(&policy, &address) {
            Verdict::Ok(destinations) => {
                for d in &destinations {
                    let rcpt = Recipient::new(address.to_string(), d);
                    if !recipients.iter().any(|x: &Recipient| x.address == rcpt.address && x.mailbox == rcpt.mailbox) {
                        recipients.push(rcpt);
                    }
                }
            }
            Verdict::TempFail(reply) | Verdict::PermFail(reply) => {
                return Err(format!("recipient <{address}>: {reply}"));
            }
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
            Err(e) => return Err(format!("cannot DKIM-sign the message (4.3.0), try again: {e}")),
        }
    }
    let size = (trace.len() + message.len()) as u64;
    let mut env = Envelope::new(id, "127.0.0.1".into(), "localhost".into(), sender.clone(), size, recipients);
    env.body_8bit = message.iter().any(|b| *b >= 0x80);
    let (spool, saved) = (spool.clone(), env.clone());
    tokio::task::spawn_blocking(move || spool.commit(&saved, trace.as_bytes(), &message))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot queue the message (4.3.0): {e}"))?;
    tracing::info!(
        "{id}: uid={uid}, from=<{sender}>, size={}, nrcpt={} (queue active, via sendmail)",
        env.size,
        env.recipients.len()
    );
    queue.enqueue(env);
    Ok(id)
}
