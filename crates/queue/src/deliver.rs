//! One delivery attempt of one message: every due recipient (local ones to Maildir, remote ones
//! through outbound delivery, one transaction per domain), then the envelope saved, or the
//! message removed when every recipient is final.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use postern_config::Config;
use postern_config::schema::LocalTransport;
use postern_outbound::{Body, Message, Outcome, Rcpt};
use postern_report::Action;
use postern_spool::{Envelope, LastResult, RcptState, Recipient, Spool};
use postern_types::dsn::Orcpt;
use postern_types::{Destination, EnhancedStatus, ForwardPath, ReversePath};

use crate::bounce::Notice;
use crate::{Inner, bounce, now_ms};

/// What an attempt leaves: the original's envelope (`None` when finished and removed) and new
/// messages (DSNs) to schedule.
pub(crate) struct AttemptResult {
    pub(crate) envelope: Option<Envelope>,
    pub(crate) new: Vec<Envelope>,
}

/// Attempts the due recipients of `env`. The envelope is saved after every attempt, so a
/// recipient is delivered again only if a crash falls between its delivery and that save.
/// `message`: the bytes of its queue file after the envelope, when the caller kept them from
/// the commit; else they are read from the spool or streamed from it. `forced`: the postmaster
/// flushed the message; the host status cache is bypassed and a failure does not lengthen the
/// backoff.
pub(crate) async fn attempt(
    inner: Arc<Inner>,
    mut env: Envelope,
    message: Option<Arc<Vec<u8>>>,
    forced: bool,
) -> AttemptResult {
    let config = inner.live.config();
    let (bytes, body) = match content(&inner.spool, &env, message).await {
        Ok(both) => both,
        Err(e) => return retry_later(&config, env, &format!("cannot read queued message: {e}")),
    };
    // What is on disk, to fall back on if a delivery task dies before its state is saved.
    let before = env.clone();
    let step =
        Step { inner: &inner, config: config.clone(), tables: inner.live.tables(), now_s: now_ms() / 1000, forced };
    // Reports due: failures, expiries and successes (NOTIFY=SUCCESS).
    let mut reports: Vec<Notice> = expire(&config, &mut env, step.now_s);
    match deliver_local(&step, env, bytes.clone(), reports.is_empty()).await {
        Local::Done(e, delivered) => {
            env = e;
            reports.extend(delivered);
        }
        Local::Removed => return AttemptResult { envelope: None, new: Vec::new() },
        Local::Failed(why) => return retry_later(&config, before, &why),
    }
    if config.delivery.local == LocalTransport::Lmtp {
        reports.extend(lmtp(&config, &inner.pool, &mut env, &body, step.now_s).await);
    }
    reports.extend(deliver_remote(&step, &mut env, &body).await);
    finish(&step, env, before, bytes, reports).await
}

/// What the steps of one attempt share.
struct Step<'a> {
    inner: &'a Arc<Inner>,
    config: Arc<Config>,
    tables: Arc<postern_config::Tables>,
    /// When the attempt started, Unix seconds.
    now_s: u64,
    /// A flush by the postmaster.
    forced: bool,
}

impl Step<'_> {
    fn due(&self, r: &Recipient) -> bool {
        r.state == RcptState::Pending && r.next_attempt <= self.now_s
    }
}

/// How the local deliveries of an attempt went.
enum Local {
    /// Done (or none due): the envelope and the reports they made.
    Done(Envelope, Vec<Notice>),
    /// Every recipient was final with nothing to report: the message was removed.
    Removed,
    /// The delivery task died: why.
    Failed(String),
}

/// The due local recipients (mailboxes, pipes), on a blocking thread; `nothing_to_report`:
/// no report is due yet, so a message finished here is removed at once.
async fn deliver_local(s: &Step<'_>, mut env: Envelope, bytes: Option<Arc<Vec<u8>>>, nothing_to_report: bool) -> Local {
    let any_local = env.recipients.iter().any(|r| s.due(r) && !matches!(r.destination, Destination::Remote(_)));
    if !any_local {
        return Local::Done(env, Vec::new());
    }
    let Some(msg) = bytes else {
        return Local::Failed("the message was not read for its local deliveries".into());
    };
    let (spool, config, now_s) = (s.inner.spool.clone(), s.config.clone(), s.now_s);
    let joined = tokio::task::spawn_blocking(move || {
        let delivered = local(&spool, &config, &mut env, &msg, now_s);
        // Finished with nothing to report: removed on this thread at once, so that the window
        // in which a crash repeats the delivery is only the unlink's.
        if nothing_to_report && delivered.is_empty() && env.is_finished() {
            return save(&spool, env).map(|e| (e, delivered));
        }
        Some((env, delivered))
    })
    .await;
    match joined {
        Ok(Some((env, delivered))) => Local::Done(env, delivered),
        Ok(None) => Local::Removed,
        Err(e) => Local::Failed(format!("local delivery task failed: {e}")),
    }
}

/// The due remote recipients of `env`, grouped by domain and by the reverse-path their copy
/// leaves with (an SRS address for a forwarded one, RFC 7208 §10.1.3 made safe by SRS).
fn remote_groups(s: &Step<'_>, env: &Envelope) -> BTreeMap<(String, ReversePath), Vec<usize>> {
    let mut groups: BTreeMap<(String, ReversePath), Vec<usize>> = BTreeMap::new();
    for (i, r) in env.recipients.iter().enumerate() {
        if let Destination::Remote(address) = &r.destination
            && s.due(r)
        {
            let srs = postern_policy::srs::forward_sender(
                s.tables.srs.as_ref(),
                &s.config.domains.local,
                &env.reverse_path,
                &r.forward_path,
                postern_policy::srs::today(),
            );
            let reverse_path = srs.map_or_else(|| env.reverse_path.clone(), ReversePath::Mailbox);
            groups.entry((address.domain().to_owned(), reverse_path)).or_default().push(i);
        }
    }
    groups
}

/// The remote recipients: one transaction per group ([`remote_groups`]), to an MX, a route
/// or an `lmtp:` route; a group delivered is recorded before the next one starts, so that a
/// crash repeats only the transaction in flight.
async fn deliver_remote(s: &Step<'_>, env: &mut Envelope, body: &Body) -> Vec<Notice> {
    let id = env.id;
    let mut reports = Vec::new();
    let mut unrecorded = false;
    for ((domain, reverse_path), indexes) in remote_groups(s, env) {
        if std::mem::take(&mut unrecorded) {
            let (spool, copy) = (s.inner.spool.clone(), env.clone());
            let _ = tokio::task::spawn_blocking(move || record_progress(&spool, &copy)).await;
        }
        if reverse_path != env.reverse_path {
            tracing::info!("{id}: forwarded to {domain} from {reverse_path} (SRS of {})", env.reverse_path);
        }
        // A domain routed to LMTP (`lmtp:` in the routes table) goes there, not to an MX.
        if let Some(postern_config::Route::Lmtp(server)) = s.tables.route_for(&domain) {
            let pool = &s.inner.pool;
            reports.extend(lmtp_to(&s.config, pool, server, env, &indexes, reverse_path, body, s.now_s).await);
            unrecorded = true;
            continue;
        }
        let (notices, delivered) = deliver_group(s, env, (&domain, reverse_path), &indexes, body).await;
        reports.extend(notices);
        unrecorded |= delivered;
    }
    reports
}

/// One transaction to `domain` for the recipients `indexes`, its copy leaving with
/// `reverse_path`: each outcome recorded. Returns the reports due and whether any recipient
/// was delivered.
async fn deliver_group(
    s: &Step<'_>,
    env: &mut Envelope,
    (domain, reverse_path): (&str, ReversePath),
    indexes: &[usize],
    body: &Body,
) -> (Vec<Notice>, bool) {
    let msg = Message {
        id: env.id.to_string(),
        reverse_path,
        body_8bit: env.body_8bit,
        smtputf8: env.smtputf8,
        data: body.clone(),
        ret: env.ret,
        envid: env.envid.clone(),
        require_tls: env.require_tls,
        tls_optional: env.tls_optional,
        forced: s.forced,
    };
    let rcpts: Vec<Rcpt> = indexes
        .iter()
        .map(|&i| {
            let r = &env.recipients[i];
            // RFC 3461 §4.2: pass the original recipient on, ours if none was given.
            let orcpt = r.orcpt.clone().unwrap_or_else(|| Orcpt::rfc822(&r.forward_path.to_string()));
            Rcpt { address: r.address().clone(), notify: r.notify, orcpt: Some(orcpt) }
        })
        .collect();
    let inner = s.inner;
    let results =
        postern_outbound::deliver(&*inner.resolver, &inner.pool, &s.config, &s.tables, domain, &rcpts, &msg).await;
    let any_delivered = results.iter().any(|r| matches!(r.outcome, Outcome::Delivered(_)));
    if any_delivered {
        postern_types::failpoint::hit("queue::remote-delivered");
    }
    let mut reports = Vec::new();
    for (&i, result) in indexes.iter().zip(results) {
        let r = &mut env.recipients[i];
        let relay = format!("{}, {}", result.relay, result.tls_text());
        let delivered = matches!(result.outcome, Outcome::Delivered(_));
        let tls = result.tls.as_ref().map(|t| t.version.clone());
        let by = By {
            relay: &relay,
            remote_host: result.remote_host.as_deref(),
            tls,
            transport: postern_metrics::Transport::Smtp,
            delays: Some(result.delays),
        };
        reports.extend(record(&s.config, env.id, r, &by, result.outcome, s.now_s, s.forced));
        // NOTIFY=SUCCESS to a next hop without DSN: we report "relayed" (RFC 3464).
        if delivered && r.notify().success && !result.dsn_passed_on {
            let remote = result.remote_host.clone();
            reports.push(bounce::status(r, Action::Relayed, EnhancedStatus(2, 0, 0), remote, None));
        }
    }
    (reports, any_delivered)
}

/// The end of an attempt, on a blocking thread: the DSNs due (the message read for them when
/// it was not in memory), the delay warning, then the envelope saved or the message removed.
async fn finish(
    s: &Step<'_>,
    mut env: Envelope,
    before: Envelope,
    bytes: Option<Arc<Vec<u8>>>,
    reports: Vec<Notice>,
) -> AttemptResult {
    let (spool, config, tables, now_s) = (s.inner.spool.clone(), s.config.clone(), s.inner.live.tables(), s.now_s);
    let id = env.id;
    let saved = tokio::task::spawn_blocking(move || {
        let mut new = Vec::new();
        let mut original = bytes;
        // DSNs first, then the state that records the failures: a crash in between repeats a
        // DSN, it never loses one.
        if !reports.is_empty() {
            let message = original.get_or_insert_with(|| original_for_reports(&spool, id)).clone();
            new.extend(bounce::send(&spool, &config, &tables, &env, &message, reports));
        }
        let delayed = delay_warning(&config, &mut env, now_s);
        if !delayed.is_empty() {
            let message = original.get_or_insert_with(|| original_for_reports(&spool, id)).clone();
            new.extend(bounce::send(&spool, &config, &tables, &env, &message, delayed));
        }
        AttemptResult { envelope: save(&spool, env), new }
    })
    .await;
    match saved {
        Ok(result) => result,
        Err(e) => retry_later(&s.config, before, &format!("saving delivery state failed: {e}")),
    }
}

/// The message of an attempt on `env`: its bytes when a local delivery (mbox, Maildir, pipe)
/// is due (the ones `kept` from the commit, or read from the spool), and the body SMTP and
/// LMTP send: those bytes, else where the message lies in its queue file, streamed from there.
async fn content(
    spool: &Arc<Spool>,
    env: &Envelope,
    kept: Option<Arc<Vec<u8>>>,
) -> Result<(Option<Arc<Vec<u8>>>, Body), postern_spool::SpoolError> {
    // As the attempt's own test for local deliveries (mailboxes over LMTP included).
    let local = env
        .recipients
        .iter()
        .any(|r| r.state == RcptState::Pending && !matches!(r.destination, Destination::Remote(_)));
    let id = env.id;
    let bytes = match kept {
        Some(m) => Some(m),
        None if local => {
            let spool = spool.clone();
            let read = tokio::task::spawn_blocking(move || spool.read_message(id)).await;
            Some(Arc::new(read.unwrap_or_else(|e| Err(join_error(e)))?))
        }
        None => None,
    };
    let body = match &bytes {
        Some(b) => Body::Bytes(b.clone()),
        None => {
            let spool = spool.clone();
            let found = tokio::task::spawn_blocking(move || spool.locate_message(id)).await;
            let file = found.unwrap_or_else(|e| Err(join_error(e)))?;
            Body::File { path: file.path, offset: file.offset, len: file.len }
        }
    };
    Ok((bytes, body))
}

/// A blocking task that died, as the spool error its caller handles.
fn join_error(e: tokio::task::JoinError) -> postern_spool::SpoolError {
    postern_spool::SpoolError::Io { op: "read", path: std::path::PathBuf::new(), source: std::io::Error::other(e) }
}

/// The original message for DSNs: read from the spool (it was streamed, not kept). One that
/// cannot be read leaves the DSNs without it, said in the log: a report is never lost for it.
fn original_for_reports(spool: &Spool, id: postern_types::QueueId) -> Arc<Vec<u8>> {
    Arc::new(spool.read_message(id).unwrap_or_else(|e| {
        tracing::warn!("{id}: cannot read the message for its DSN ({e}); the DSN goes without it");
        Vec::new()
    }))
}

/// An attempt that could not run or finish (the spool could not be read, a task died): the
/// envelope as it was, its pending recipients due again after `[queue] min_backoff`.
fn retry_later(config: &Config, mut env: Envelope, why: &str) -> AttemptResult {
    tracing::error!("{}: {why}; retrying in {}s", env.id, config.queue.min_backoff.0.as_secs());
    let retry = now_ms() / 1000 + config.queue.min_backoff.0.as_secs();
    for r in env.recipients.iter_mut().filter(|r| r.state == RcptState::Pending) {
        r.next_attempt = retry;
    }
    AttemptResult { envelope: Some(env), new: Vec::new() }
}

/// Pending recipients older than `[queue] max_age` fail with 4.4.7 (RFC 3463: delivery time
/// expired).
fn expire(config: &Config, env: &mut Envelope, now_s: u64) -> Vec<Notice> {
    let max_age = config.queue.max_age.0.as_secs();
    if now_s < env.arrival + max_age {
        return Vec::new();
    }
    let mut out = Vec::new();
    for r in env.recipients.iter_mut().filter(|r| r.state == RcptState::Pending) {
        r.state = RcptState::Failed;
        let why = format!(
            "message expired after {}s in the queue; last error: {}",
            max_age,
            r.last_error.as_deref().unwrap_or("none")
        );
        tracing::warn!("{}: to=<{}>, relay=none, dsn=4.4.7, status=expired ({why})", env.id, r.address());
        postern_metrics::metrics().bounced(transport_of(config, r));
        if r.notify().failure {
            out.push(bounce::status(r, Action::Failed, EnhancedStatus(4, 4, 7), None, Some(why)));
        }
    }
    out
}

/// The transport a recipient is delivered by, for the metrics.
fn transport_of(config: &Config, r: &postern_spool::Recipient) -> postern_metrics::Transport {
    use postern_metrics::Transport;
    match &r.destination {
        Destination::Pipe { .. } => Transport::Pipe,
        Destination::Mailbox { .. } if config.delivery.local == LocalTransport::Lmtp => Transport::Lmtp,
        Destination::Mailbox { .. } => Transport::Local,
        Destination::Remote(_) => Transport::Smtp,
    }
}

/// Once per message, after `[queue] warn_after`: a "delayed" report on the pending recipients.
fn delay_warning(config: &Config, env: &mut Envelope, now_s: u64) -> Vec<Notice> {
    let Some(after) = config.queue.warn_after else { return Vec::new() };
    if env.warned || now_s < env.arrival + after.0.as_secs() {
        return Vec::new();
    }
    let pending: Vec<Notice> = env
        .recipients
        .iter()
        .filter(|r| r.state == RcptState::Pending && r.notify().delay)
        .map(|r| {
            let last = r.last_result.as_ref();
            let status = last.map_or(EnhancedStatus(4, 0, 0), LastResult::status);
            bounce::status(r, Action::Delayed, status, last.and_then(|l| l.remote_host.clone()), r.last_error.clone())
        })
        .collect();
    env.warned = !pending.is_empty();
    pending
}

/// Local recipients: Maildir delivery on this (blocking) thread. Returns the reports due: success
/// (NOTIFY=SUCCESS) and failure (a mail forwarding loop, RFC 5321 §6.3).
fn local(spool: &Spool, config: &Config, env: &mut Envelope, message: &[u8], now_s: u64) -> Vec<Notice> {
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

/// Writes what has been delivered so far into the envelope ([`Spool::record_progress`]), so
/// that a crash during the deliveries still to come repeats only the one in flight.
fn record_progress(spool: &Spool, env: &Envelope) {
    if let Err(e) = spool.record_progress(env) {
        tracing::warn!("{}: cannot record delivery progress: {e}", env.id);
    }
}

/// The due mailbox recipients over LMTP (`[delivery] local = "lmtp"`).
async fn lmtp(
    config: &Arc<Config>,
    pool: &postern_outbound::Pool,
    env: &mut Envelope,
    message: &Body,
    now_s: u64,
) -> Vec<Notice> {
    let due: Vec<usize> = (0..env.recipients.len())
        .filter(|&i| {
            let r = &env.recipients[i];
            r.state == RcptState::Pending
                && r.next_attempt <= now_s
                && matches!(r.destination, Destination::Mailbox { .. })
        })
        .collect();
    if due.is_empty() {
        return Vec::new();
    }
    let reverse_path = env.reverse_path.clone();
    lmtp_to(config, pool, &config.delivery.lmtp, env, &due, reverse_path, message, now_s).await
}

/// The recipients `indexes` of `env` over LMTP to `server` (`unix:/path`, `[host]:port`):
/// one transaction, one outcome per recipient (RFC 2033 §4.2), so a mailbox over quota is
/// retried alone.
#[allow(clippy::too_many_arguments)]
async fn lmtp_to(
    config: &Arc<Config>,
    pool: &postern_outbound::Pool,
    server: &postern_config::LmtpServer,
    env: &mut Envelope,
    indexes: &[usize],
    reverse_path: ReversePath,
    message: &Body,
    now_s: u64,
) -> Vec<Notice> {
    use postern_outbound::lmtp;
    let rcpts: Vec<Rcpt> = indexes
        .iter()
        .map(|&i| Rcpt { address: env.recipients[i].address().clone(), notify: None, orcpt: None })
        .collect();
    let msg = Message {
        id: env.id.to_string(),
        reverse_path,
        body_8bit: env.body_8bit,
        smtputf8: env.smtputf8,
        data: message.clone(),
        ret: None,
        envid: None,
        // LMTP is final delivery (RFC 8689 §4.4), over a socket of this host or its network.
        require_tls: false,
        tls_optional: false,
        forced: false,
    };
    // At most `[outbound] max_per_destination` deliveries to the LMTP server at once, as for
    // an SMTP destination.
    let _slot = pool.permit(&format!("lmtp {server}"), config.outbound.max_per_destination).await;
    let cache = (&pool.lmtp_idle, config.outbound.connection_cache_time.0);
    let results = lmtp::deliver(server, &config.hostname, config.outbound.command_timeout.0, cache, &rcpts, &msg).await;
    if results.iter().any(|r| matches!(r.outcome, Outcome::Delivered(_))) {
        postern_types::failpoint::hit("queue::lmtp-delivered");
    }
    let mut reports = Vec::new();
    for (&i, result) in indexes.iter().zip(results) {
        let r = &mut env.recipients[i];
        let delivered = matches!(result.outcome, Outcome::Delivered(_));
        let by = By {
            relay: &result.relay,
            remote_host: None,
            tls: None,
            transport: postern_metrics::Transport::Lmtp,
            delays: None,
        };
        reports.extend(record(config, env.id, r, &by, result.outcome, now_s, false));
        if delivered && r.notify().success {
            reports.push(bounce::status(r, Action::Delivered, EnhancedStatus(2, 0, 0), None, None));
        }
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

/// Applies one outcome to a recipient and logs it (one line per delivery attempt). Returns the
/// report line when the recipient failed permanently.
fn record(
    config: &Config,
    id: postern_types::QueueId,
    r: &mut Recipient,
    by: &By<'_>,
    outcome: Outcome,
    now_s: u64,
    forced: bool,
) -> Option<Notice> {
    r.attempts += 1;
    // A flush attempt does not count towards the backoff (Postfix's `postqueue -f`).
    if forced {
        r.flushed += 1;
    }
    let delay = (now_ms() as f64 / 1000.0) - (id.arrival_micros() as f64 / 1e6);
    let orig = if r.forward_path == ForwardPath::Mailbox(r.address().clone()) {
        String::new()
    } else {
        format!(", orig_to=<{}>", r.forward_path)
    };
    let reply = outcome.reply();
    let dsn = reply.status.map_or_else(|| format!("{}.0.0", reply.code / 100), |s| s.to_string());
    let text = reply.to_string();
    // Postfix's delays=a/b/c/d: before the attempt, DNS + connect, greeting + TLS, transmission.
    let split = by.delays.map_or_else(String::new, |d| {
        let before = (delay - d.connect - d.tls - d.transmission).max(0.0);
        format!(", delays={before:.2}/{:.2}/{:.2}/{:.2}", d.connect, d.tls, d.transmission)
    });
    let head = format!("{id}: to=<{}>{orig}, relay={}, delay={delay:.2}{split}, dsn={dsn}", r.address(), by.relay);
    let failed = |reply: &postern_types::Reply| LastResult {
        code: reply.code,
        status: reply.status.map_or([reply.code / 100 % 10, 0, 0], |s| [u16::from(s.0), s.1, s.2]),
        text: reply.lines.join(" "),
        remote_host: by.remote_host.map(str::to_owned),
        tls: by.tls.clone(),
    };
    let m = postern_metrics::metrics();
    match &outcome {
        Outcome::Delivered(_) => m.delivered(by.transport, delay),
        Outcome::TempFail(reply) => {
            let class =
                reply.status.map_or(postern_metrics::DeferClass::Reply, |s| postern_metrics::DeferClass::of(s.1, s.2));
            m.deferred(by.transport, class, r.address().domain());
        }
        Outcome::PermFail(_) => m.bounced(by.transport),
    }
    match outcome {
        Outcome::Delivered(_) => {
            r.state = RcptState::Delivered;
            r.last_error = None;
            r.last_result = None;
            tracing::info!("{head}, status=sent ({text})");
            None
        }
        Outcome::TempFail(reply) => {
            let wait = backoff(config, r.attempts.saturating_sub(r.flushed).max(1));
            r.next_attempt = now_s + wait.as_secs();
            r.last_error = Some(text.clone());
            r.last_result = Some(failed(&reply));
            tracing::warn!("{head}, status=deferred ({text}), retry in {}s", wait.as_secs());
            None
        }
        Outcome::PermFail(reply) => {
            r.state = RcptState::Failed;
            r.last_error = Some(text.clone());
            r.last_result = Some(failed(&reply));
            tracing::warn!("{head}, status=bounced ({text})");
            let status = reply.status.unwrap_or(EnhancedStatus(5, 0, 0));
            let remote = by.remote_host.map(str::to_owned);
            r.notify().failure.then(|| bounce::status(r, Action::Failed, status, remote, Some(text)))
        }
    }
}

/// Who gave an outcome: the relay for the log (`host[ip]:port, tls=...` or `local, ...`), the
/// remote host's name and the TLS version, typed.
struct By<'a> {
    relay: &'a str,
    remote_host: Option<&'a str>,
    tls: Option<String>,
    /// For the metrics.
    transport: postern_metrics::Transport,
    /// Where an SMTP attempt's time went (the log's `delays=`).
    delays: Option<postern_outbound::Delays>,
}

/// Saves the envelope, or removes the message when every recipient is final.
fn save(spool: &Spool, env: Envelope) -> Option<Envelope> {
    let id = env.id;
    if env.is_finished() {
        match spool.remove(id) {
            Ok(()) => tracing::info!("{id}: removed"),
            Err(e) => {
                // Save the final state so that a restart does not deliver again.
                tracing::error!("{id}: delivered but cannot remove from spool: {e}");
                let _ = spool.update(&env);
            }
        }
        return None;
    }
    if let Err(e) = spool.update(&env) {
        tracing::error!("{id}: cannot save delivery state: {e}");
    }
    Some(env)
}

/// `min_backoff · 2^(attempts-1)`, at most `max_backoff`.
fn backoff(config: &Config, attempts: u32) -> Duration {
    let min = config.queue.min_backoff.0;
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
    min.saturating_mul(factor).min(config.queue.max_backoff.0)
}
