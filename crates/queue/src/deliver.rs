//! One delivery attempt of one message: every due recipient (local ones in [`local`], LMTP in
//! [`lmtp`], remote ones through outbound delivery, one transaction per domain and
//! reverse-path), then the DSNs due and the envelope saved, or the message removed when every
//! recipient is final.

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

mod lmtp;
mod local;

use lmtp::{lmtp, lmtp_to};
use local::local;

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
    // Any pending local recipient (mailboxes over LMTP included): decided before expiry, a
    // superset of those the attempt will find due, so that their bytes are always at hand.
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

/// Writes what has been delivered so far into the envelope ([`Spool::record_progress`]), so
/// that a crash during the deliveries still to come repeats only the one in flight.
fn record_progress(spool: &Spool, env: &Envelope) {
    if let Err(e) = spool.record_progress(env) {
        tracing::warn!("{}: cannot record delivery progress: {e}", env.id);
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
