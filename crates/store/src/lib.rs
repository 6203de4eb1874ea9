//! State that several Postern hosts share (`[store]`): greylisting triplets, failed-AUTH
//! strikes and bans, rate-limit counters, the daily aggregates of DMARC and TLS reports,
//! leases that let one host of a cluster send a day's report, and shared values (the MTA-STS
//! policy cache). Never the queue: each host's
//! spool is its own durability domain, as with Postfix and Exim.
//!
//! Two backends behind one [`Store`]:
//! - **embedded** (the default, one host): redb files in the data folder for greylisting and
//!   the report aggregates, memory for bans and rate limits (as Postfix's anvil), a lease
//!   always granted;
//! - **redis**: Redis or Valkey ≥ 7 through the `redis` crate's tokio connection manager; keys
//!   under a prefix, expiry by TTL, every read-modify-write one Lua script (atomic on the
//!   server, so two hosts cannot race), reconnection with backoff.
//!
//! Every call is bounded by `[store] timeout`; an unreachable store is a [`StoreError`], which
//! callers turn into their feature's fail-open or fail-closed answer (never a 5xx). The
//! outage is logged once, when it starts, and once when the store answers again.
//!
//! The rules themselves are pure and shared ([`greylist`], [`gcra`], the bans); the Lua
//! scripts in `scripts/` restate them for the server, and `tests.rs` runs one suite on both
//! backends.

mod bans;
mod embedded;
pub mod gcra;
pub mod greylist;
mod outage;
mod redis_store;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use gcra::Rate;
pub use greylist::{Greylist, network};

/// Why a store call failed. Every variant is temporary: the caller fails open or closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The shared store did not answer within `[store] timeout`, or refused the connection.
    #[error("{backend} unreachable: {detail}")]
    Unreachable {
        /// `redis://host:port/db`, `rediss://...` or `redis+unix:///path` (never the password).
        backend: String,
        /// What failed.
        detail: String,
    },
    /// The store answered with an error (a corrupt file, a script error, a wrong type).
    #[error("{0}")]
    Failed(String),
}

/// Which backend (`[store] backend`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendKind {
    /// redb files in `data_dir` and memory: one host.
    Embedded,
    /// Redis or Valkey at this URL (`redis://`, `rediss://` for TLS; a password in the URL).
    Redis(String),
}

/// The daily aggregates a report is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggregate {
    /// DMARC aggregate reports (RFC 7489 §7.2): message counts per row, the policy per domain.
    Dmarc,
    /// SMTP TLS reports (RFC 8460): session counts per domain, policy and result.
    TlsRpt,
}

impl Aggregate {
    /// The short name in keys and logs.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Dmarc => "dmarc",
            Self::TlsRpt => "tlsrpt",
        }
    }
}

/// One day of an aggregate: its counts and its per-domain metadata, each sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayTally {
    /// Metadata by key (for DMARC: the published policy per domain).
    pub meta: Vec<(String, String)>,
    /// Counts by row key.
    pub counts: Vec<(String, u64)>,
}

/// One client address with failed AUTH attempts (`postern bans`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// The client address.
    pub ip: IpAddr,
    /// Failures counted in this round.
    pub failures: u32,
    /// How much longer it stays banned, if it is.
    pub left: Option<Duration>,
}

/// How to open the store (from `[store]`, `[policy] greylist` and the report switches).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The backend.
    pub backend: BackendKind,
    /// Prefix of every Redis key (default `postern:`), so that several clusters or other
    /// programs can share one server.
    pub prefix: String,
    /// Bound on each call, connecting included.
    pub timeout: Duration,
    /// For `rediss://`: the CA certificates (PEM) the server's certificate must chain to,
    /// instead of the web PKI's roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// The embedded backend's folder (`data_dir`): `greylist.redb`, `dmarc.redb`, `tlsrpt.redb`.
    pub data_dir: PathBuf,
    /// Open the embedded greylisting file.
    pub greylist: bool,
    /// Open the embedded files of these aggregates.
    pub aggregates: Vec<Aggregate>,
}

/// The store: one backend, and its outage log.
#[derive(Debug)]
pub struct Store {
    backend: Backend,
    outage: outage::Outage,
}

#[derive(Debug)]
enum Backend {
    Embedded(embedded::Embedded),
    Redis(redis_store::RedisStore),
}

/// Dispatches a call to the backend, logging the start and end of an outage (a Redis server
/// away, or an embedded file that fails).
macro_rules! dispatch {
    ($self:ident, $b:ident => $call:expr) => {{
        let r = match &$self.backend {
            Backend::Embedded($b) => $call,
            Backend::Redis($b) => $call,
        };
        $self.observed(r)
    }};
}

impl Store {
    /// Notes `r` in the outage log, and returns it.
    fn observed<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        self.outage.observe(&r);
        r
    }

    /// Opens the store. A Redis server that does not answer yet is not an error: it is
    /// connected on first use (and the calls fail meanwhile).
    ///
    /// # Errors
    /// An embedded file that cannot be opened or created; a malformed Redis URL; a `ca_file`
    /// that cannot be read.
    pub fn open(settings: &Settings) -> Result<Self, StoreError> {
        let backend = match &settings.backend {
            BackendKind::Embedded => Backend::Embedded(embedded::Embedded::open(settings)?),
            BackendKind::Redis(url) => Backend::Redis(redis_store::RedisStore::new(url, settings)?),
        };
        Ok(Self { backend, outage: outage::Outage::default() })
    }

    /// True when the state is shared with other hosts (Redis).
    #[must_use]
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    /// `embedded` or the Redis server (`redis://host:port/db`, no password), for logs.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Embedded(_) => "embedded".to_owned(),
            Backend::Redis(r) => r.describe(),
        }
    }

    /// Greylisting: checks and records one attempt of the triplet (client `ip`'s network,
    /// reverse-path `sender`, empty for the null sender, forward-path `rcpt`) at `now`
    /// (seconds since the epoch). See [`greylist::attempt`].
    ///
    /// # Errors
    /// The store failed or did not answer.
    pub async fn greylist(
        &self,
        ip: IpAddr,
        sender: &str,
        rcpt: &str,
        now: u64,
        delay: Duration,
        expire: Duration,
    ) -> Result<Greylist, StoreError> {
        let key = greylist::triplet_key(ip, sender, rcpt);
        let r = dispatch!(self, b => b.greylist(&key, now, delay, expire).await);
        if let Ok(answer) = r {
            postern_metrics::metrics().greylist(answer == Greylist::Pass);
        }
        r
    }

    /// Deletes the triplets greylisting would no longer remember at `now` (seconds since the
    /// epoch); returns how many. Redis expires them by TTL itself (0).
    ///
    /// # Errors
    /// The store failed.
    pub async fn purge_greylist(&self, now: u64, delay: Duration, expire: Duration) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Embedded(b) => self.observed(b.purge_greylist(now, delay, expire).await),
            Backend::Redis(_) => Ok(0),
        }
    }

    /// Records a failed AUTH from `ip` at `now_ms` (milliseconds since the epoch); returns
    /// true when `ip` is banned after it (`limit` failures, each within `ban_time` of the one
    /// before).
    ///
    /// # Errors
    /// The store failed or did not answer.
    pub async fn auth_failure(
        &self,
        ip: IpAddr,
        now_ms: u64,
        limit: u32,
        ban_time: Duration,
    ) -> Result<bool, StoreError> {
        let r = dispatch!(self, b => b.auth_failure(ip, now_ms, limit, ban_time).await);
        r.map(|(banned, newly)| {
            if newly {
                postern_metrics::metrics().ban();
            }
            banned
        })
    }

    /// How much longer `ip` stays banned at `now_ms`, if it is.
    ///
    /// # Errors
    /// The store failed or did not answer.
    pub async fn banned(&self, ip: IpAddr, now_ms: u64, ban_time: Duration) -> Result<Option<Duration>, StoreError> {
        dispatch!(self, b => b.banned(ip, now_ms, ban_time).await)
    }

    /// Every address with failures counted within `ban_time` of `now_ms`, sorted by address.
    ///
    /// # Errors
    /// The store failed or did not answer.
    pub async fn bans(&self, now_ms: u64, ban_time: Duration) -> Result<Vec<Ban>, StoreError> {
        let mut v = dispatch!(self, b => b.bans(now_ms, ban_time).await)?;
        v.sort_by_key(|b| b.ip);
        Ok(v)
    }

    /// Forgets `ip`'s failures and lifts its ban; false when nothing was recorded for it.
    ///
    /// # Errors
    /// The store failed or did not answer.
    pub async fn lift(&self, ip: IpAddr) -> Result<bool, StoreError> {
        dispatch!(self, b => b.lift(ip).await)
    }

    /// Counts `cost` against the rate limit `key` (`limit` per `window`) at `now_ms`
    /// (milliseconds since the epoch); see [`gcra::gcra`]. A refused request is not counted.
    ///
    /// # Errors
    /// The store failed or did not answer.
    pub async fn rate(
        &self,
        key: &str,
        cost: u32,
        limit: u32,
        window: Duration,
        now_ms: u64,
    ) -> Result<Rate, StoreError> {
        dispatch!(self, b => b.rate(key, cost, limit, window, now_ms).await)
    }

    /// Adds one to each of `keys` (repeats add again) in `day`'s (`YYYY-MM-DD`) `aggregate`,
    /// and sets its metadata `meta` (key, value) when given.
    ///
    /// # Errors
    /// The store failed or did not answer.
    pub async fn tally(
        &self,
        aggregate: Aggregate,
        day: &str,
        keys: &[String],
        meta: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        if keys.is_empty() && meta.is_none() {
            return Ok(());
        }
        dispatch!(self, b => b.tally(aggregate, day, keys, meta).await)
    }

    /// `day`'s counts and metadata of `aggregate`.
    ///
    /// # Errors
    /// The store failed or did not answer.
    pub async fn day_tally(&self, aggregate: Aggregate, day: &str) -> Result<DayTally, StoreError> {
        dispatch!(self, b => b.day_tally(aggregate, day).await)
    }

    /// The days `aggregate` has counts or metadata for, oldest first.
    ///
    /// # Errors
    /// The store failed or did not answer.
    pub async fn tallied_days(&self, aggregate: Aggregate) -> Result<Vec<String>, StoreError> {
        dispatch!(self, b => b.tallied_days(aggregate).await)
    }

    /// Forgets `day` of `aggregate` (once its reports are queued).
    ///
    /// # Errors
    /// The store failed or did not answer.
    pub async fn forget_day(&self, aggregate: Aggregate, day: &str) -> Result<(), StoreError> {
        dispatch!(self, b => b.forget_day(aggregate, day).await)
    }

    /// Takes the lease `name` for `holder` (e.g. `mx1.example.org`) for `ttl`: true when
    /// taken, false when another holder has it. A lease is never released early, so a job
    /// done under it is not repeated by another host within `ttl`. The embedded backend
    /// always grants it (one host).
    ///
    /// # Errors
    /// The store failed or did not answer.
    pub async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Embedded(_) => Ok(true),
            Backend::Redis(b) => self.observed(b.lease(name, holder, ttl).await),
        }
    }

    /// The shared value `key` (e.g. `sts:DOMAIN`, a cached MTA-STS policy): `None` when absent
    /// or expired, and always with the embedded store (each host keeps its own cache).
    ///
    /// # Errors
    /// The store failed or did not answer.
    pub async fn get_shared(&self, key: &str) -> Result<Option<String>, StoreError> {
        match &self.backend {
            Backend::Embedded(_) => Ok(None),
            Backend::Redis(b) => self.observed(b.get(key).await),
        }
    }

    /// Sets the shared value `key` for `ttl` (nothing with the embedded store).
    ///
    /// # Errors
    /// The store failed or did not answer.
    pub async fn put_shared(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Embedded(_) => Ok(()),
            Backend::Redis(b) => self.observed(b.set(key, value, ttl).await),
        }
    }

    /// Pings the store (start-up logs).
    ///
    /// # Errors
    /// The store failed or did not answer.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Embedded(_) => Ok(()),
            Backend::Redis(b) => self.observed(b.ping().await),
        }
    }
}

/// Milliseconds since the epoch, for the `now_ms` arguments.
#[must_use]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
