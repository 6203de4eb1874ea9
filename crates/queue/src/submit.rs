//! The one way into the queue. Every message — an SMTP transaction, a `sendmail` submission,
//! a DSN, a DMARC report — is a typed [`Submission`]; [`Queue::submit`] (or, inside the
//! scheduler's blocking tasks, [`commit_blocking`]) gives it a queue ID, builds its `Received:`
//! header (`proto::trace::received_from`, the one builder), removes duplicate destinations,
//! commits it to the spool (the only caller of `Spool::commit_batch`, through the committer
//! thread that batches concurrent commits), logs one line and schedules it.
//! `tests/it/layering.rs` fails if any other code calls the spool commit.

use std::collections::HashSet;
use std::net::IpAddr;

use postern_proto::trace::{Origin, received_from};
use postern_spool::{Envelope, Recipient, Ret, Spool, SpoolError};
use postern_types::dsn::Notify;
use postern_types::{Destination, ForwardPath, QueueId, ReversePath};

use crate::Queue;

/// One recipient of a submission: the forward-path as given, where it resolved to, and its
/// DSN parameters (RFC 3461 §4.1, §4.2).
#[derive(Debug, Clone)]
pub struct SubmitRecipient {
    /// As given in RCPT TO (or on the command line, or the DSN's sender).
    pub forward_path: ForwardPath,
    /// Where it goes.
    pub destination: Destination,
    /// `NOTIFY=`, if given.
    pub notify: Option<Notify>,
    /// `ORCPT=` (`addr-type;xtext`), if given.
    pub orcpt: Option<postern_types::dsn::Orcpt>,
}

/// The MAIL parameters of a submission (RFC 6152, RFC 6531, RFC 3461 §4.3, §4.4).
#[derive(Debug, Clone, Default)]
pub struct MailParams {
    /// `BODY=8BITMIME` (`Some(true)`) or `7BIT`; `None`: decided from the bytes.
    pub body_8bit: Option<bool>,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
    /// `RET=FULL` (true) or `HDRS`.
    pub ret_full: Option<bool>,
    /// `ENVID=`, xtext.
    pub envid: Option<String>,
    /// `REQUIRETLS` (RFC 8689 §4.1).
    pub require_tls: bool,
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Where it came from (its `Received:` header).
    pub origin: Origin,
    /// For the log: `client=name[ip]:port, sasl_username=...`, `uid=1000`, `DSN of ID`.
    pub source: String,
    /// The reverse-path.
    pub reverse_path: ReversePath,
    /// Recipients in order; duplicates of a destination are dropped (a mailbox reached through
    /// two aliases gets the message once).
    pub recipients: Vec<SubmitRecipient>,
    /// Header fields (each ending in CRLF) to place after the `Received:` header:
    /// Authentication-Results, DKIM-Signature, X-Postern-Policy.
    pub headers: String,
    /// The message as received, CRLF line endings; never changed.
    pub message: Vec<u8>,
    /// MAIL parameters.
    pub params: MailParams,
    /// Maildir++ folder for local deliveries (DMARC quarantine).
    pub quarantine: Option<String>,
    /// Queue it held, until `postern queue release` (a milter's quarantine).
    pub held: bool,
    /// The queue ID to use, when the caller chose it before the commit (the one the milters
    /// were given as macro `i`); `None` makes a new one.
    pub id: Option<QueueId>,
}

/// Why a submission was not queued. Nothing was: the caller still has the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// No recipient is left.
    #[error("no recipients")]
    NoRecipients,
    /// The spool could not be written.
    #[error("cannot write the queue file: {0}")]
    Spool(#[from] SpoolError),
    /// The commit task died.
    #[error("the spool commit task failed: {0}")]
    Task(String),
}

impl Queue {
    /// Queues `s` durably and schedules it; `Ok` only once the queue file is on disk. The
    /// commit itself is the committer thread's ([`run_committer`]), which syncs the spool once
    /// for every message that arrived meanwhile.
    ///
    /// # Errors
    /// [`SubmitError`]: nothing was queued.
    pub async fn submit(&self, s: Submission) -> Result<QueueId, SubmitError> {
        let origin = match &s.origin {
            Origin::Smtp { .. } => postern_metrics::Origin::Smtp,
            Origin::Local { .. } => postern_metrics::Origin::Local,
            _ => postern_metrics::Origin::Generated,
        };
        let prepared = prepare(&self.inner.live.config().hostname, s)?;
        let (reply, done) = tokio::sync::oneshot::channel();
        let gone = || SubmitError::Task("the spool commit thread is gone".into());
        self.inner.commits.send(Job { prepared, reply }).map_err(|_| gone())?;
        let (prepared, result) = done.await.map_err(|_| gone())?;
        result?;
        // The arrival line belongs to the caller's log span (the SMTP session's ID).
        prepared.log(self.arrival_state(&prepared.envelope));
        let id = prepared.envelope.id;
        if !prepared.expanded.is_empty() {
            self.report_expansions(&prepared).await;
        }
        self.enqueue_fresh(prepared.envelope, Some(prepared.data));
        postern_metrics::metrics().received(origin);
        Ok(id)
    }
}

impl Queue {
    /// What happens next to a message just queued, for its arrival line.
    fn arrival_state(&self, env: &Envelope) -> &'static str {
        if env.held {
            "held"
        } else if self.runs_by_itself(env) {
            "queue active"
        } else {
            "queue only: waits for postern queue flush"
        }
    }

    /// Sends the `expanded` success DSN of a just committed message ([`take_expansions`]).
    async fn report_expansions(&self, prepared: &Prepared) {
        let statuses = prepared
            .expanded
            .iter()
            .map(|(forward_path, orcpt)| {
                crate::bounce::Notice::of_sender(postern_report::RecipientStatus {
                    final_recipient: forward_path.clone(),
                    original_recipient: orcpt.as_ref().map(postern_types::dsn::Orcpt::address),
                    action: postern_report::Action::Expanded,
                    status: postern_types::EnhancedStatus(2, 0, 0),
                    remote_mta: None,
                    diagnostic: None,
                })
            })
            .collect();
        let (spool, config, tables) = (self.inner.spool.clone(), self.inner.live.config(), self.inner.live.tables());
        let (env, data) = (prepared.envelope.clone(), prepared.data.clone());
        let sent =
            tokio::task::spawn_blocking(move || crate::bounce::send(&spool, &config, &tables, &env, &data, statuses));
        for dsn in sent.await.unwrap_or_default() {
            self.enqueue_fresh(dsn, None);
        }
    }
}

/// A message ready to be committed: its envelope, the bytes to write after it (trace header
/// fields, then the message), and what the arrival line says.
#[derive(Debug)]
pub(crate) struct Prepared {
    envelope: Envelope,
    data: Vec<u8>,
    /// Bytes of `data` that are the trace header fields.
    trace_len: usize,
    source: String,
    reverse_path: ReversePath,
    /// Forward-paths (with ORCPT) to report as `expanded` once committed.
    expanded: Vec<(ForwardPath, Option<postern_types::dsn::Orcpt>)>,
}

impl Prepared {
    fn commit(&self) -> postern_spool::Commit<'_> {
        let (trace, message) = self.data.split_at(self.trace_len);
        postern_spool::Commit { envelope: &self.envelope, trace, message }
    }

    /// The one line about the arrival: `(queue active)` when the message is scheduled, `(held)`
    /// when it waits for `postern queue release`, `(queue only)` when `[queue] mode =
    /// "queue-only"` keeps it for a flush.
    fn log(&self, state: &str) {
        let env = &self.envelope;
        let tls = match (env.require_tls, env.tls_optional) {
            (true, _) => ", requiretls",
            (_, true) => ", tls_required=no",
            _ => "",
        };
        tracing::info!(
            "{}: {}, from={}, size={}, nrcpt={}{tls} ({state})",
            env.id,
            self.source,
            self.reverse_path,
            env.size,
            env.recipients.len()
        );
    }
}

/// A commit for the committer thread, and where its outcome goes.
#[derive(Debug)]
pub(crate) struct Job {
    prepared: Prepared,
    reply: tokio::sync::oneshot::Sender<(Prepared, Result<(), SpoolError>)>,
}

/// Most messages one batch of the committer thread takes, and most bytes.
const BATCH_MESSAGES: usize = 128;
const BATCH_BYTES: usize = 16 << 20;

/// The committer thread: takes every commit waiting (up to a bound), commits them together
/// ([`Spool::commit_batch`]: one data sync, one sync of `queue/`), answers each; returns when
/// every sender is gone. One thread, so concurrent sessions cost one wake-up per batch rather
/// than a blocking task each, and their files are created without contending for the spool's
/// folders.
pub(crate) fn run_committer(spool: &Spool, jobs: &std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut bytes = first.prepared.data.len();
        let mut batch = vec![first];
        while batch.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
            let Ok(next) = jobs.try_recv() else { break };
            bytes += next.prepared.data.len();
            batch.push(next);
        }
        let commits: Vec<postern_spool::Commit<'_>> = batch.iter().map(|j| j.prepared.commit()).collect();
        let results = spool.commit_batch(&commits);
        drop(commits);
        for (job, result) in batch.into_iter().zip(results) {
            // A session gone meanwhile (its client hung up) is no reason to stop.
            let _ = job.reply.send((job.prepared, result));
        }
    }
}

/// Commits `s` to `spool` from a blocking context and returns its envelope for the caller to
/// schedule ([`Queue::enqueue`]); logs the one line about its arrival.
///
/// # Errors
/// As [`Queue::submit`].
pub fn commit_blocking(spool: &Spool, hostname: &str, s: Submission) -> Result<Envelope, SubmitError> {
    let prepared = prepare(hostname, s)?;
    let c = prepared.commit();
    spool.commit(c.envelope, c.trace, c.message)?;
    prepared.log(if prepared.envelope.held { "held" } else { "queue active" });
    Ok(prepared.envelope)
}

/// Gives `s` its queue ID, envelope and `Received:` header (RFC 5321 §4.4).
///
/// # Errors
/// [`SubmitError::NoRecipients`].
fn prepare(hostname: &str, s: Submission) -> Result<Prepared, SubmitError> {
    let id = s.id.unwrap_or_else(QueueId::generate);
    let mut s = s;
    let expanded = take_expansions(&mut s.recipients);
    let recipients = unique_recipients(&s.recipients);
    if recipients.is_empty() {
        return Err(SubmitError::NoRecipients);
    }
    // The `for` clause names the forward-path when there is just one (RFC 5321 §4.4).
    let mut paths = s.recipients.iter().map(|r| &r.forward_path);
    let first = paths.next();
    let only = first.filter(|f| paths.all(|p| p == *f)).map(ToString::to_string);
    let date = chrono::Utc::now().to_rfc2822();
    let mut trace = received_from(&s.origin, hostname, id, only.as_deref(), &date);
    trace.push_str(&s.headers);
    let mut data = Vec::with_capacity(trace.len() + s.message.len());
    data.extend_from_slice(trace.as_bytes());
    data.extend_from_slice(&s.message);
    let (client_ip, helo) = match &s.origin {
        Origin::Smtp { client_ip, helo, .. } => (*client_ip, helo.clone()),
        _ => (IpAddr::from([127, 0, 0, 1]), hostname.to_owned()),
    };
    let mut env = Envelope::new(id, client_ip, helo, s.reverse_path.clone(), data.len() as u64, recipients);
    env.body_8bit = s.params.body_8bit.unwrap_or_else(|| s.message.iter().any(|b| *b >= 0x80));
    env.smtputf8 = s.params.smtputf8;
    env.ret = s.params.ret_full.map(|full| if full { Ret::Full } else { Ret::Hdrs });
    env.envid = s.params.envid;
    env.require_tls = s.params.require_tls;
    // RFC 8689 §4.1: with REQUIRETLS the TLS-Required field is ignored.
    env.tls_optional = !env.require_tls && postern_proto::requiretls::tls_required_no(&s.message);
    env.quarantine = s.quarantine;
    env.held = s.held;
    Ok(Prepared {
        envelope: env,
        data,
        trace_len: trace.len(),
        source: s.source,
        reverse_path: s.reverse_path,
        expanded,
    })
}

/// The forward-paths with `NOTIFY=SUCCESS` that an alias or the virtual table turned into
/// other addresses, with their ORCPT: each gets one `Action: expanded` report at once, and its
/// targets lose SUCCESS (RFC 3461 §6.2.7.3, as Postfix's local(8) does), so that the sender
/// learns that the address took the message, never where it went.
fn take_expansions(recipients: &mut [SubmitRecipient]) -> Vec<(ForwardPath, Option<postern_types::dsn::Orcpt>)> {
    let target = |d: &Destination| match d {
        Destination::Mailbox { address, .. } | Destination::Remote(address) | Destination::Pipe { address, .. } => {
            address.to_string()
        }
    };
    let mut expanded: Vec<(ForwardPath, Option<postern_types::dsn::Orcpt>)> = Vec::new();
    for i in 0..recipients.len() {
        let r = &recipients[i];
        let asked = r.notify.is_some_and(|n| n.success);
        let group = || recipients.iter().filter(|o| o.forward_path == r.forward_path);
        if asked
            && (group().count() > 1
                || group().any(|o| !target(&o.destination).eq_ignore_ascii_case(&o.forward_path.to_string())))
        {
            if !expanded.iter().any(|(f, _)| *f == r.forward_path) {
                expanded.push((r.forward_path.clone(), r.orcpt.clone()));
            }
            if let Some(n) = &mut recipients[i].notify {
                n.success = false;
            }
        }
    }
    expanded
}

/// One envelope recipient per distinct destination, in order.
fn unique_recipients(list: &[SubmitRecipient]) -> Vec<Recipient> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for r in list {
        let key = match &r.destination {
            Destination::Mailbox { name, .. } => format!("mailbox:{name}"),
            Destination::Remote(a) => format!("remote:{a}"),
            Destination::Pipe { command, name, .. } => format!("pipe:{name}:{command}"),
        };
        if seen.insert(key) {
            let mut rcpt = Recipient::new(r.forward_path.clone(), r.destination.clone());
            rcpt.notify = r.notify;
            rcpt.orcpt.clone_from(&r.orcpt);
            out.push(rcpt);
        }
    }
    out
}
