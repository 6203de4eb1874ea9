//! The scheduler. This crate owns "what is due when": an index of queued messages by next
//! attempt time, the retry backoff, and dispatching due recipients to delivery. It holds IDs,
//! times and envelopes, never message bytes; the spool owns the files.
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
mod submit;

pub use submit::{MailParams, Submission, SubmitError, SubmitRecipient, commit_blocking};

use std::collections::{BTreeSet, HashMap, HashSet};
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
    max_active: usize,
}

#[derive(Debug, Default)]
struct Sched {
    /// (due time in epoch milliseconds, ID) of messages with recipients to try.
    due: BTreeSet<(u64, QueueId)>,
    /// Every queued message's envelope, as last saved.
    envelopes: HashMap<QueueId, Envelope>,
    /// Messages being delivered right now.
    active: HashSet<QueueId>,
    /// Messages whose next attempt was asked for by the postmaster (`flush`).
    forced: HashSet<QueueId>,
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
        let inner = Inner {
            spool,
            live,
            resolver,
            pool: postern_outbound::Pool::default(),
            wake: Notify::new(),
            sched: Mutex::default(),
            slots: Arc::new(Semaphore::new(max_active)),
            max_active,
        };
        Self { inner: Arc::new(inner) }
    }

    /// Sets the queue gauges of [`postern_metrics::metrics`] from the scheduler's state: messages
    /// queued, and per recipient domain the pending recipients and the oldest arrival.
    pub fn refresh_metrics(&self) {
        let s = self.summary();
        postern_metrics::metrics().set_queue(s.messages, s.domains, now_ms() / 1000);
    }

    /// What is queued, per destination domain (`qshape` in one pass under the scheduler lock).
    pub fn summary(&self) -> Summary {
        let mut domains: HashMap<String, postern_metrics::QueuedDomain> = HashMap::new();
        let s = self.lock();
        let mut deferred = 0;
        for env in s.envelopes.values() {
            let mut was_deferred = false;
            for r in env.recipients.iter().filter(|r| r.state == RcptState::Pending) {
                was_deferred |= r.attempts > 0;
                let domain = r.address.rsplit_once('@').map_or("", |(_, d)| d).to_lowercase();
                let d = domains.entry(domain.clone()).or_insert(postern_metrics::QueuedDomain {
                    domain,
                    recipients: 0,
                    oldest_arrival: env.arrival,
                });
                d.recipients += 1;
                d.oldest_arrival = d.oldest_arrival.min(env.arrival);
            }
            deferred += u64::from(was_deferred);
        }
        Summary { messages: s.envelopes.len() as u64, deferred, domains: domains.into_values().collect() }
    }

    /// Gives outbound delivery its DNSSEC-validating resolver (DANE, RFC 7672); without it
    /// no destination is DANE-secured.
    pub fn set_dnssec(&self, resolver: postern_dns::dnssec::DnssecResolver) {
        let _ = self.inner.pool.dnssec.set(resolver);
    }

    /// The outbound TLS negotiations waiting to be stored for TLS reports (RFC 8460).
    pub fn tls_results(&self) -> &postern_outbound::tls_results::TlsResults {
        &self.inner.pool.tls_results
    }

    /// Loads every envelope from the spool (after a restart or crash) and schedules them.
    /// Returns how many messages were found.
    ///
    /// # Errors
    /// [`SpoolError`] when the spool cannot be read.
    pub fn recover(&self) -> Result<usize, SpoolError> {
        let envelopes = self.inner.spool.recover()?;
        let n = envelopes.len();
        for env in envelopes {
            tracing::info!("{}: recovered from spool, {} recipient(s) pending", env.id, pending(&env));
            self.enqueue(env);
        }
        Ok(n)
    }

    /// Schedules a message just committed to the spool (or recovered, or released). Held
    /// messages, and every message in queue-only mode, wait for a flush.
    pub fn enqueue(&self, env: Envelope) {
        let mut s = self.lock();
        if let Some(due) = next_due(&env).filter(|_| self.runs_by_itself(&env)) {
            s.due.insert((due, env.id));
        }
        s.envelopes.insert(env.id, env);
        drop(s);
        self.inner.wake.notify_one();
    }

    /// Number of messages in the queue.
    pub fn len(&self) -> usize {
        self.lock().envelopes.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `env` is scheduled without a flush: not held, and the queue is not queue-only.
    fn runs_by_itself(&self, env: &Envelope) -> bool {
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

    /// Starts delivery of every due message while slots are free; returns the next due time.
    fn dispatch_due(&self) -> Option<u64> {
        let now = now_ms();
        loop {
            let mut s = self.lock();
            let &(due, id) = s.due.first()?;
            if due > now {
                return Some(due);
            }
            let Ok(permit) = self.inner.slots.clone().try_acquire_owned() else {
                // Woken again when a delivery finishes.
                return Some(now + 1000);
            };
            s.due.pop_first();
            let Some(env) = s.envelopes.get(&id).cloned() else { continue };
            if env.held {
                continue;
            }
            s.active.insert(id);
            let forced = s.forced.remove(&id);
            drop(s);
            let this = self.clone();
            tokio::spawn(async move {
                let result = deliver::attempt(this.inner.clone(), env, forced).await;
                for new in result.new {
                    this.enqueue(new);
                }
                this.finished(id, result.envelope);
                drop(permit);
                this.inner.wake.notify_one();
            });
        }
    }

    /// Records the outcome of an attempt: the envelope to keep scheduling, or `None` when the
    /// message was finished and removed from the spool.
    fn finished(&self, id: QueueId, env: Option<Envelope>) {
        let mut s = self.lock();
        s.active.remove(&id);
        match env {
            None => {
                s.envelopes.remove(&id);
            }
            Some(env) => {
                if let Some(due) = next_due(&env).filter(|_| self.runs_by_itself(&env)) {
                    s.due.insert((due, id));
                }
                s.envelopes.insert(id, env);
            }
        }
    }
}

fn pending(env: &Envelope) -> usize {
    env.recipients.iter().filter(|r| r.state == RcptState::Pending).count()
}

/// The earliest next attempt (epoch ms) over pending recipients, if any.
fn next_due(env: &Envelope) -> Option<u64> {
    env.recipients.iter().filter(|r| r.state == RcptState::Pending).map(|r| r.next_attempt * 1000).min()
}
