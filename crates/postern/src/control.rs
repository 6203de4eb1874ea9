//! The control socket (`{data_dir}/control.sock`, mode 0600): the running daemon answers the
//! queue tools. One request line per connection; the answer is `ok` or `error: ...` on the
//! first line, then text, then the connection closes.
//!
//! Requests: `list`, `stats`, `show ID`, `flush [id=ID] [recipient-domain=D] [sender-domain=D]`,
//! `hold ID`, `release ID`, `delete ID`, `reload`, `dmarc-report DAY send|print`, `tls-rpt-report DAY send|print`, `bans`,
//! `unban IP`, `alerts`.

use std::path::Path;

use postern_inbound::Context;
use postern_queue::Queue;
use postern_queue::control::{Filter, LIST_HEADER, format_entry, list_footer};
use postern_spool::Spool;
use postern_types::QueueId;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use crate::serve::Reloader;

/// Binds the socket (mode 0600: queue control is for the postmaster) and serves until `stop`.
pub(crate) fn spawn(
    path: &Path,
    ctx: std::sync::Arc<Context>,
    reloader: std::sync::Arc<Reloader>,
    alerts: std::sync::Arc<crate::alerts::Board>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    crate::unix_server::serve(path, 0o600, stop, move |stream| {
        let (ctx, reloader, alerts) = (ctx.clone(), reloader.clone(), alerts.clone());
        let (queue, spool) = (ctx.queue.clone(), ctx.spool.clone());
        async move {
            let (rd, mut wr) = stream.into_split();
            let mut line = String::new();
            let mut rd = BufReader::new(rd).take(4096);
            if rd.read_line(&mut line).await.is_err() {
                return;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let result = if let ["dmarc-report", day, mode] = words.as_slice() {
                crate::reports::dmarc::run(&ctx, day, *mode == "send").await.map_err(ControlError::from)
            } else if let ["tls-rpt-report", day, mode] = words.as_slice() {
                crate::reports::tls_rpt::run(&ctx, day, *mode == "send").await.map_err(ControlError::from)
            } else if line.trim() == "reload" {
                match tokio::task::spawn_blocking(move || reloader.reload("reload")).await {
                    Ok(Ok(what)) => {
                        tracing::info!("reload: {what}");
                        Ok(format!("{what}\n"))
                    }
                    Ok(Err(e)) => Err(ControlError::Reload(e)),
                    Err(e) => Err(ControlError::Task(e)),
                }
            } else if let Some(rest) = line.trim().strip_prefix("unban") {
                unban(&ctx, rest.trim()).await
            } else if line.trim() == "alerts" {
                Ok(crate::alerts::status(&ctx, &alerts))
            } else if line.trim() == "bans" {
                bans(&ctx).await
            } else if line.trim() == "list" {
                list(&queue, &mut wr).await;
                return;
            } else {
                handle(line.trim(), &queue, &spool).await
            };
            let answer = match result {
                Ok(text) => format!("ok\n{text}"),
                Err(e) => format!("error: {e}\n"),
            };
            let _ = wr.write_all(answer.as_bytes()).await;
        }
    })
}

/// Why a control request failed: the text after `error: ` in the answer.
#[derive(Debug, thiserror::Error)]
enum ControlError {
    #[error("a queue ID is required")]
    NoId,
    #[error("{0:?} is not a queue ID (16 hex digits)")]
    BadId(String),
    #[error("{0:?} is not an IP address")]
    BadIp(String),
    #[error("{0} has no failures recorded")]
    NoFailures(String),
    #[error("unknown flush filter {0:?}")]
    BadFilter(String),
    #[error("unknown request {0:?}")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] postern_store::StoreError),
    #[error(transparent)]
    Queue(#[from] postern_queue::control::ControlError),
    #[error(transparent)]
    Spool(#[from] postern_spool::SpoolError),
    #[error("the task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Reload(crate::serve::ReloadError),
    #[error(transparent)]
    Report(#[from] crate::reports::ReportJobError),
}

/// The failed-AUTH table: one line per client IP with failures in the last `ban_time` (of
/// the whole cluster with a shared store).
async fn bans(ctx: &Context) -> Result<String, ControlError> {
    let server = &ctx.live.config().server;
    let list = ctx.store.bans(postern_store::now_ms(), server.ban_time.0).await?;
    if list.is_empty() {
        return Ok("no failures recorded\n".into());
    }
    let mut out = format!("{:<43} {:>8}  STATE\n", "CLIENT NETWORK", "FAILURES");
    for postern_store::Ban { ip, failures, left } in list {
        let state = left.map_or_else(|| "counting".to_owned(), |d| format!("banned for {}s more", d.as_secs()));
        out.push_str(&format!("{:<43} {failures:>8}  {state}\n", server.ban_label(ip)));
    }
    Ok(out)
}

/// Lifts the ban of the network an IP is in (and forgets its failures).
async fn unban(ctx: &Context, arg: &str) -> Result<String, ControlError> {
    let server = &ctx.live.config().server;
    let ip: std::net::IpAddr = arg.parse().map_err(|_| ControlError::BadIp(arg.to_owned()))?;
    let network = server.ban_network(ip);
    let label = server.ban_label(network);
    if ctx.store.lift(network).await? {
        tracing::info!("ban: {label} lifted by the postmaster");
        Ok(format!("{label}: ban lifted\n"))
    } else {
        Err(ControlError::NoFailures(label))
    }
}

/// `list`, streamed: the envelopes are read from the spool one at a time on a blocking thread
/// and written as they come, so a queue of a million messages is listed in bounded memory.
async fn list(queue: &Queue, wr: &mut tokio::net::unix::OwnedWriteHalf) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
    let q = queue.clone();
    let producer = tokio::task::spawn_blocking(move || {
        let (mut n, mut bytes, mut chunk) = (0usize, 0u64, String::from("ok\n"));
        let walked = q.each_entry(|found| match found {
            Ok(e) => {
                if n == 0 {
                    chunk.push_str(LIST_HEADER);
                }
                n += 1;
                bytes += e.envelope.size;
                chunk.push_str(&format_entry(&e));
                if chunk.len() > 32 * 1024 {
                    let _ = tx.blocking_send(std::mem::take(&mut chunk));
                }
            }
            Err(e) => tracing::warn!("queue list: {e}"),
        });
        if let Err(e) = walked {
            chunk.push_str(&format!("error: {e}\n"));
        }
        chunk.push_str(&list_footer(n, bytes));
        let _ = tx.blocking_send(chunk);
    });
    while let Some(chunk) = rx.recv().await {
        if wr.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = producer.await;
}

fn parse_id(arg: Option<&str>) -> Result<QueueId, ControlError> {
    let arg = arg.ok_or(ControlError::NoId)?;
    QueueId::parse(&arg.to_ascii_uppercase()).ok_or_else(|| ControlError::BadId(arg.to_owned()))
}

async fn handle(request: &str, queue: &Queue, spool: &std::sync::Arc<Spool>) -> Result<String, ControlError> {
    let mut words = request.split_whitespace();
    match words.next().unwrap_or("") {
        "stats" => Ok(queue.stats().await),
        "show" => {
            let id = parse_id(words.next())?;
            let entry = queue.entry(id).await?;
            let spool = spool.clone();
            let message = tokio::task::spawn_blocking(move || spool.read_message(id)).await??;
            let end = message.windows(4).position(|w| w == b"\r\n\r\n").map_or(message.len(), |i| i + 2);
            let headers = String::from_utf8_lossy(&message[..end]).replace("\r\n", "\n");
            Ok(format!("{}\n# message headers ({} bytes in all)\n{headers}", entry.envelope.to_text(), message.len()))
        }
        "flush" => {
            let mut filter = Filter::default();
            for w in words {
                match w.split_once('=') {
                    Some(("id", v)) => filter.id = Some(parse_id(Some(v))?),
                    Some(("recipient-domain", v)) => filter.recipient_domain = Some(v.to_owned()),
                    Some(("sender-domain", v)) => filter.sender_domain = Some(v.to_owned()),
                    _ => return Err(ControlError::BadFilter(w.to_owned())),
                }
            }
            let n = queue.flush(&filter).await;
            Ok(format!("{n} message(s) scheduled for delivery now\n"))
        }
        "hold" => Ok(queue.set_held(parse_id(words.next())?, true).await.map(|()| "held\n".into())?),
        "release" => Ok(queue.set_held(parse_id(words.next())?, false).await.map(|()| "released\n".into())?),
        "delete" => Ok(queue.delete(parse_id(words.next())?).await.map(|()| "deleted\n".into())?),
        other => Err(ControlError::Unknown(other.to_owned())),
    }
}
