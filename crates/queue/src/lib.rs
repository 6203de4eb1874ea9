//! The scheduler. This crate owns "what is due when": an index of queued messages by next
//! attempt time ([`index`]: a few dozen bytes per message, destinations taken in turn), the
//! retry backoff, and dispatching due recipients to delivery. Envelopes stay in the spool and
//! are read when an attempt starts, but for messages just received (kept for their first
//! attempt, up to `[queue] active_limit`, with the bytes received, up to [`FRESH_BYTES`] in all,
//! so that a message relayed at once is never read back from disk).
//!
//! Each recipient has its own state in the envelope, so a message to several mailboxes is
//! several independent deliveries: one full mailbox does not delay the others, and a delivered
//! recipient is never delivered again. A temporary failure schedules a retry after
//! `[queue] min_backoff`, doubled per attempt up to `max_backoff`.
//!
//! Remote recipients are delivered through `postern-outbound`, one transaction per destination
//! domain; a 4xx or a network error is retried on the same backoff, a 5xx marks the recipient
//! failed.

mod bounce;
pub mod control;
mod deliver;
mod index;
mod submit;

pub use submit::{MailParams, Submission, SubmitError, SubmitRecipient, commit_blocking};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_config::Live;
use postern_config::schema::QueueMode;
use postern_dns::HickoryResolver;
use postern_spool::{Envelope, RcptState, Spool, SpoolError};
use postern_types::QueueId;
use tokio::sync::{Notify, Semaphore, watch};

/// The scheduler handle; clone it freely.
#[derive(Clone, Debug)]
pub struct Queue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) spool: Arc<Spool>,
    pub(crate) live: Arc<Live>,
    pub(crate) resolver: Arc<HickoryResolver>,
    pub(crate) pool: postern_outbound::Pool,
    wake: Notify,
    sched: Mutex<Sched>,
    slots: Arc<Semaphore>,
    /// The message bytes that attempts may hold at once, in KiB ([`ATTEMPT_BYTES`]).
    attempt_bytes: Semaphore,
    max_active: usize,
    /// `[queue] active_limit`, read at start.
    active_limit: usize,
    /// Commits for the committer thread ([`submit::run_committer`]).
    commits: std::sync::mpsc::Sender<submit::Job>,
}

/// At most this many bytes of just-received messages (trace header and message, as in the
/// queue file) are kept for their first attempt, counted until that attempt ends (a kept
/// message waiting for a slot to its destination is still held); beyond it, the first attempt
/// streams the message from the spool.
pub const FRESH_BYTES: usize = 4 << 20;

/// At most this many bytes of messages are held by delivery attempts at once (each holds its
/// message while it is delivered): an attempt waits for room before it reads its message, so
/// that `[queue] max_concurrency` (100) attempts of 25 MiB messages cannot hold 2.5 GiB between
/// them. Messages of ordinary sizes never wait for it; a message larger than this still goes,
/// alone.
pub const ATTEMPT_BYTES: usize = 64 << 20;

#[derive(Debug, Default)]
struct Sched {
    /// Every queued message, in brief.
    index: index::Index,
    /// Messages not yet attempted, so that the first attempt does not read the spool again;
    /// with those being delivered, at most `active_limit`.
    fresh: HashMap<QueueId, Fresh>,
    /// Bytes of the messages kept in `fresh` and of those their first attempts still hold (at
    /// most [`FRESH_BYTES`]).
    fresh_bytes: usize,
}

/// A message just committed, kept for its first attempt: its envelope and, memory allowing,
/// the bytes that were written after it in the queue file (what `Spool::read_message` gives).
#[derive(Debug)]
pub(crate) struct Fresh {
    envelope: Envelope,
    message: Option<Arc<Vec<u8>>>,
}

/// The kept bytes of a first attempt, given back to [`FRESH_BYTES`] when it ends (or its task
/// dies).
struct KeptBytes {
    queue: Queue,
    bytes: usize,
}

impl Drop for KeptBytes {
    fn drop(&mut self) {
        self.queue.lock().fresh_bytes -= self.bytes;
    }
}

impl Sched {
    /// Takes `id` out of `fresh`.
    fn take_fresh(&mut self, id: QueueId) -> Option<Fresh> {
        let fresh = self.fresh.remove(&id)?;
        self.fresh_bytes -= fresh.message.as_ref().map_or(0, |m| m.len());
        Some(fresh)
    }
}

/// The queue in figures: see [`Queue::summary`].
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Messages queued.
    pub messages: u64,
    /// Messages with a pending recipient that has been tried at least once.
    pub deferred: u64,
    /// Per recipient domain with pending recipients: their count and the oldest arrival.
    pub domains: Vec<postern_metrics::QueuedDomain>,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Queue {
    /// A scheduler over `spool`, reading delivery settings from `live` and resolving next hops
    /// with `resolver`.
    pub fn new(spool: Arc<Spool>, live: Arc<Live>, resolver: Arc<HickoryResolver>) -> Self {
        let max_active = live.config().queue.max_concurrency.max(1);
        let active_limit = live.config().queue.active_limit.max(max_active);
        let (commits, jobs) = std::sync::mpsc::channel();
        let committer = spool.clone();
        // Ends when the last sender (this scheduler) is dropped.
        std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || submit::run_committer(&committer, &jobs))
            .expect("cannot start the spool commit thread");
        let inner = Inner {
            spool,
            live,
            resolver,
            pool: postern_outbound::Pool::default(),
            wake: Notify::new(),
            sched: Mutex::default(),
            slots: Arc::new(Semaphore::new(max_active)),
            attempt_bytes: Semaphore::new(ATTEMPT_BYTES >> 10),
            max_active,
            active_limit,
            commits,
        };
        Self { inner: Arc::new(inner) }
    }

    /// Sets the queue gauges of [`postern_metrics::metrics`] from the scheduler's state: messages
    /// queued, and per recipient domain the pending recipients and the oldest arrival.
    pub fn refresh_metrics(&self) {
        let s = self.summary();
        postern_metrics::metrics().set_queue(s.messages, s.domains, now_ms() / 1000);
    }

    /// What is queued, per destination domain (`qshape` in one pass over the index).
    pub fn summary(&self) -> Summary {
        let (messages, deferred, _, domains) = self.lock().index.summary();
        let domains = domains
            .into_iter()
            .map(|d| postern_metrics::QueuedDomain {
                domain: d.domain,
                recipients: d.recipients,
                oldest_arrival: d.oldest.0,
            })
            .collect();
        Summary { messages, deferred, domains }
    }

    /// Gives outbound delivery its DNSSEC-validating resolver (DANE, RFC 7672); without it
    /// no destination is DANE-secured.
    pub fn set_dnssec(&self, resolver: postern_dns::dnssec::DnssecResolver) {
        let _ = self.inner.pool.dnssec.set(resolver);
    }

    /// Shares the MTA-STS policy cache with the other hosts of a cluster through `store`.
    pub fn share_store(&self, store: std::sync::Arc<postern_store::Store>) {
        self.inner.pool.sts.share(store);
    }

    /// The outbound TLS negotiations waiting to be stored for TLS reports (RFC 8460).
    pub fn tls_results(&self) -> &postern_outbound::tls_results::TlsResults {
        &self.inner.pool.tls_results
    }

    /// Reads every envelope from the spool (after a restart or crash) and schedules it, one
    /// at a time: the index grows by a few dozen bytes per message, no envelope is kept. Meant
    /// to run beside the listeners and the scheduler (the daemon accepts mail at once): messages
    /// queued since `started` (an ID issued before anything was accepted) are already indexed
    /// and left alone, so none is delivered twice. Stops early when `stop` becomes true.
    /// Returns how many messages were found.
    ///
    /// # Errors
    /// [`SpoolError`] when the spool cannot be read.
    pub async fn recover(&self, started: QueueId, stop: watch::Receiver<bool>) -> Result<usize, SpoolError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let (mut batch, mut since) = (Vec::new(), std::time::Instant::now());
            let n = this.inner.spool.recover_each(Some(started), |env| {
                batch.push(env);
                // Indexed in batches, at least every 50 ms: deliveries start while it reads.
                if batch.len() >= 256 || since.elapsed() > Duration::from_millis(50) {
                    this.index_recovered(std::mem::take(&mut batch));
                    since = std::time::Instant::now();
                }
                !*stop.borrow()
            });
            this.index_recovered(batch);
            n
        })
        .await
        .map_err(|e| SpoolError::Io {
            op: "recover",
            path: "queue".into(),
            source: std::io::Error::other(e),
        })?
    }

    fn index_recovered(&self, batch: Vec<Envelope>) {
        if batch.is_empty() {
            return;
        }
        let mut s = self.lock();
        for env in batch {
            if !s.index.contains(env.id) {
                tracing::debug!("{}: recovered from spool, {} recipient(s) pending", env.id, pending(&env));
                let runs = self.runs_by_itself(&env);
                s.index.put(&env, runs);
            }
        }
        drop(s);
        self.inner.wake.notify_one();
    }

    /// Schedules a message just committed to the spool (or released). Held messages, and
    /// every message in queue-only mode, wait for a flush.
    pub fn enqueue(&self, env: Envelope) {
        self.enqueue_fresh(env, None);
    }

    /// As [`Queue::enqueue`], keeping `message` (the bytes after the envelope in its queue
    /// file, exactly) for the first attempt when [`FRESH_BYTES`] allows.
    fn enqueue_fresh(&self, env: Envelope, message: Option<Vec<u8>>) {
        let runs = self.runs_by_itself(&env);
        let mut s = self.lock();
        s.index.put(&env, runs);
        if runs && s.fresh.len() + s.index.active() < self.inner.active_limit {
            let message = message.filter(|m| s.fresh_bytes + m.len() <= FRESH_BYTES).map(Arc::new);
            s.fresh_bytes += message.as_ref().map_or(0, |m| m.len());
            s.fresh.insert(env.id, Fresh { envelope: env, message });
        }
        drop(s);
        self.inner.wake.notify_one();
    }

    /// Number of messages in the queue.
    pub fn len(&self) -> usize {
        self.lock().index.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `env` is scheduled without a flush: not held, and the queue is not queue-only.
    pub(crate) fn runs_by_itself(&self, env: &Envelope) -> bool {
        !env.held && self.inner.live.config().queue.mode == QueueMode::Normal
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.inner.sched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the scheduler until `shutdown` becomes true, then waits for deliveries in progress.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let next = self.dispatch_due();
            let sleep =
                next.map_or(Duration::from_secs(3600), |due| Duration::from_millis(due.saturating_sub(now_ms())));
            tokio::select! {
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => {}
            }
        }
        // Wait for deliveries in flight: each holds a slot.
        let _all = self.inner.slots.acquire_many(self.inner.max_active as u32).await;
    }

    /// Starts delivery of every due message while slots are free, destinations in turn;
    /// returns the next due time (epoch ms).
    fn dispatch_due(&self) -> Option<u64> {
        let now = now_ms();
        let mut s = self.lock();
        let next = s.index.promote(u32::try_from(now / 1000).unwrap_or(u32::MAX)).map(|d| u64::from(d) * 1000);
        loop {
            if !s.index.has_ready() {
                return next;
            }
            let Ok(permit) = self.inner.slots.clone().try_acquire_owned() else {
                // Woken again when a delivery finishes.
                return Some(now + 1000);
            };
            let Some((id, forced)) = s.index.take() else { return next };
            // Its kept bytes stay counted until the attempt ends.
            let fresh = s.fresh.remove(&id);
            let bytes = fresh.as_ref().and_then(|f| f.message.as_ref()).map_or(0, |m| m.len());
            drop(s);
            let this = self.clone();
            let kept = KeptBytes { queue: self.clone(), bytes };
            tokio::spawn(async move {
                this.run_attempt(id, fresh, forced).await;
                drop(kept);
                drop(permit);
                this.inner.wake.notify_one();
            });
            s = self.lock();
        }
    }

    /// One attempt of `id`: its envelope (and message) from memory when just received, else
    /// from the spool.
    async fn run_attempt(&self, id: QueueId, fresh: Option<Fresh>, forced: bool) {
        let (env, message) = match fresh {
            Some(Fresh { envelope, message }) => (Ok(envelope), message),
            None => {
                let spool = self.inner.spool.clone();
                let read = tokio::task::spawn_blocking(move || spool.read_envelope(id)).await.unwrap_or_else(|e| {
                    Err(SpoolError::Io { op: "read", path: "queue".into(), source: std::io::Error::other(e) })
                });
                (read, None)
            }
        };
        let mut env = match env {
            Ok(env) => env,
            Err(e) => {
                // Gone (deleted meanwhile) or unreadable: forgotten now; an unreadable file is
                // moved to corrupt/ at the next start.
                tracing::error!("{id}: cannot read its envelope: {e}; not scheduled until the next start");
                self.lock().index.remove(id);
                return;
            }
        };
        if forced {
            for r in env.recipients.iter_mut().filter(|r| r.state == RcptState::Pending) {
                r.next_attempt = 0;
            }
        }
        // Room for the message's bytes (the envelope knows its size) before it is read.
        let kib = u32::try_from((env.size >> 10).clamp(1, (ATTEMPT_BYTES >> 10) as u64)).unwrap_or(1);
        // Never closed: the attempt goes ahead in any case.
        let _room = self.inner.attempt_bytes.acquire_many(kib).await.ok();
        let result = deliver::attempt(self.inner.clone(), env, message, forced).await;
        for new in result.new {
            self.enqueue(new);
        }
        self.finished(id, result.envelope);
    }

    /// Records the outcome of an attempt: the envelope to keep scheduling, or `None` when the
    /// message was finished and removed from the spool.
    fn finished(&self, id: QueueId, env: Option<Envelope>) {
        let mut s = self.lock();
        match env {
            None => s.index.remove(id),
            Some(env) => {
                let runs = self.runs_by_itself(&env);
                s.index.put(&env, runs);
            }
        }
    }
}

fn pending(env: &Envelope) -> usize {
    env.recipients.iter().filter(|r| r.state == RcptState::Pending).count()
}
