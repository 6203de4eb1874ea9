//! The embedded backend, for one host: redb files in the data folder for what must survive a
//! restart (greylisting triplets in `greylist.redb`, report aggregates in `dmarc.redb` and
//! `tlsrpt.redb`, in the tables earlier versions wrote), memory for what need not (bans and
//! rate limits, as Postfix's anvil keeps them). The redb calls run on the blocking pool.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::bans::{self, Strikes};
use crate::gcra::{Rate, gcra};
use crate::greylist::{self, Greylist, Seen};
use crate::{Aggregate, Ban, DayTally, Settings, StoreError};

/// Triplet → `first last passed` (seconds since the epoch, 0/1).
const TRIPLETS: TableDefinition<'_, &str, &str> = TableDefinition::new("greylist");

/// Entries of the in-memory maps kept before stale ones are swept.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
pub(crate) struct Embedded {
    greylist: Option<Arc<Database>>,
    aggregates: HashMap<Aggregate, Arc<Database>>,
    strikes: Mutex<HashMap<IpAddr, Strikes>>,
    /// Rate-limit key → theoretical arrival time (ms).
    rates: Mutex<HashMap<String, u64>>,
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(e.to_string())
}

fn open(path: &Path) -> Result<Arc<Database>, StoreError> {
    Database::create(path).map(Arc::new).map_err(|e| StoreError::Failed(format!("{}: {e}", path.display())))
}

/// The redb tables of an aggregate: counts (`DAY \t KEY` → n) and metadata (`DAY \t KEY` →
/// text), named as the report stores of earlier versions named them.
fn tables(
    a: Aggregate,
) -> (TableDefinition<'static, &'static str, u64>, TableDefinition<'static, &'static str, &'static str>) {
    match a {
        Aggregate::Dmarc => (TableDefinition::new("dmarc_rows"), TableDefinition::new("dmarc_policies")),
        Aggregate::TlsRpt => (TableDefinition::new("tlsrpt_counts"), TableDefinition::new("tlsrpt_meta")),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, redb::Error> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(failed)?.map_err(failed)
}

impl Embedded {
    pub(crate) fn open(s: &Settings) -> Result<Self, StoreError> {
        let greylist = if s.greylist { Some(open(&s.data_dir.join("greylist.redb"))?) } else { None };
        let mut aggregates = HashMap::new();
        for a in &s.aggregates {
            aggregates.insert(*a, open(&s.data_dir.join(format!("{}.redb", a.name())))?);
        }
        Ok(Self { greylist, aggregates, strikes: Mutex::default(), rates: Mutex::default() })
    }

    fn greylist_db(&self) -> Result<Arc<Database>, StoreError> {
        self.greylist.clone().ok_or_else(|| StoreError::Failed("greylisting store not opened".into()))
    }

    fn aggregate_db(&self, a: Aggregate) -> Result<Arc<Database>, StoreError> {
        self.aggregates.get(&a).cloned().ok_or_else(|| StoreError::Failed(format!("{} store not opened", a.name())))
    }

    pub(crate) async fn greylist(
        &self,
        key: &str,
        now: u64,
        delay: Duration,
        expire: Duration,
    ) -> Result<Greylist, StoreError> {
        let db = self.greylist_db()?;
        let key = key.to_owned();
        blocking(move || {
            let mut tx = db.begin_write()?;
            let (answer, changed) = {
                let mut t = tx.open_table(TRIPLETS)?;
                let old = t.get(key.as_str())?.and_then(|v| Seen::decode(v.value()));
                let (answer, seen, changed) = greylist::attempt(old, now, delay, expire);
                t.insert(key.as_str(), seen.encode().as_str())?;
                (answer, changed)
            };
            // A new triplet or one that just passed is made durable (it must survive a crash or
            // restart); refreshing the last-seen time of a known one is not worth an fsync.
            if !changed {
                tx.set_durability(Durability::None)?;
            }
            tx.commit()?;
            Ok(answer)
        })
        .await
    }

    pub(crate) async fn purge_greylist(&self, now: u64, delay: Duration, expire: Duration) -> Result<u64, StoreError> {
        let db = self.greylist_db()?;
        blocking(move || {
            let tx = db.begin_write()?;
            let removed = {
                let mut t = tx.open_table(TRIPLETS)?;
                let before = t.len()?;
                t.retain(|_, v| {
                    Seen::decode(v)
                        .is_some_and(|s| now.saturating_sub(s.last) <= greylist::forget_after(s.passed, delay, expire))
                })?;
                before - t.len()?
            };
            tx.commit()?;
            Ok(removed)
        })
        .await
    }

    pub(crate) async fn auth_failure(
        &self,
        ip: IpAddr,
        now_ms: u64,
        limit: u32,
        ban_time: Duration,
    ) -> Result<(bool, bool), StoreError> {
        let mut map = self.strikes.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, s| bans::current(s, now_ms, ban_time));
        }
        let (s, newly) = bans::failure(map.get(&ip).copied(), now_ms, limit, ban_time);
        map.insert(ip, s);
        Ok((s.banned, newly))
    }

    pub(crate) async fn banned(
        &self,
        ip: IpAddr,
        now_ms: u64,
        ban_time: Duration,
    ) -> Result<Option<Duration>, StoreError> {
        let map = self.strikes.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(&ip).and_then(|s| bans::remaining(s, now_ms, ban_time)))
    }

    pub(crate) async fn bans(&self, now_ms: u64, ban_time: Duration) -> Result<Vec<Ban>, StoreError> {
        let map = self.strikes.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .iter()
            .filter(|(_, s)| bans::current(s, now_ms, ban_time))
            .map(|(ip, s)| Ban { ip: *ip, failures: s.failures, left: bans::remaining(s, now_ms, ban_time) })
            .collect())
    }

    pub(crate) async fn lift(&self, ip: IpAddr) -> Result<bool, StoreError> {
        Ok(self.strikes.lock().unwrap_or_else(|e| e.into_inner()).remove(&ip).is_some())
    }

    pub(crate) async fn rate(
        &self,
        key: &str,
        cost: u32,
        limit: u32,
        window: Duration,
        now_ms: u64,
    ) -> Result<Rate, StoreError> {
        let mut map = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED {
            // A TAT in the past is the same as no entry.
            map.retain(|_, tat| *tat > now_ms);
        }
        let (rate, tat) = gcra(map.get(key).copied(), now_ms, cost, limit, window);
        map.insert(key.to_owned(), tat);
        Ok(rate)
    }

    pub(crate) async fn tally(
        &self,
        a: Aggregate,
        day: &str,
        keys: &[String],
        meta: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        let db = self.aggregate_db(a)?;
        let (counts_t, meta_t) = tables(a);
        let keys: Vec<String> = keys.iter().map(|k| format!("{day}\t{k}")).collect();
        let meta = meta.map(|(k, v)| (format!("{day}\t{k}"), v.to_owned()));
        blocking(move || {
            let mut tx = db.begin_write()?;
            // Statistics, not mail: a crash may lose the last counts (no fsync per message).
            tx.set_durability(Durability::None)?;
            {
                let mut counts = tx.open_table(counts_t)?;
                for k in &keys {
                    let n = counts.get(k.as_str())?.map_or(0, |v| v.value());
                    counts.insert(k.as_str(), n + 1)?;
                }
                if let Some((k, v)) = &meta {
                    tx.open_table(meta_t)?.insert(k.as_str(), v.as_str())?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn day_tally(&self, a: Aggregate, day: &str) -> Result<DayTally, StoreError> {
        let db = self.aggregate_db(a)?;
        let (counts_t, meta_t) = tables(a);
        let prefix = format!("{day}\t");
        blocking(move || {
            let tx = db.begin_read()?;
            let mut tally = DayTally::default();
            if let Ok(t) = tx.open_table(counts_t) {
                for entry in t.range(prefix.as_str()..)? {
                    let (k, v) = entry?;
                    let Some(key) = k.value().strip_prefix(&prefix) else { break };
                    tally.counts.push((key.to_owned(), v.value()));
                }
            }
            if let Ok(t) = tx.open_table(meta_t) {
                for entry in t.range(prefix.as_str()..)? {
                    let (k, v) = entry?;
                    let Some(key) = k.value().strip_prefix(&prefix) else { break };
                    tally.meta.push((key.to_owned(), v.value().to_owned()));
                }
            }
            Ok(tally)
        })
        .await
    }

    pub(crate) async fn tallied_days(&self, a: Aggregate) -> Result<Vec<String>, StoreError> {
        let db = self.aggregate_db(a)?;
        let (counts_t, meta_t) = tables(a);
        blocking(move || {
            let tx = db.begin_read()?;
            let mut days = std::collections::BTreeSet::new();
            if let Ok(t) = tx.open_table(counts_t) {
                for entry in t.iter()? {
                    days.insert(day_of(entry?.0.value()));
                }
            }
            if let Ok(t) = tx.open_table(meta_t) {
                for entry in t.iter()? {
                    days.insert(day_of(entry?.0.value()));
                }
            }
            Ok(days.into_iter().collect())
        })
        .await
    }

    pub(crate) async fn forget_day(&self, a: Aggregate, day: &str) -> Result<(), StoreError> {
        let db = self.aggregate_db(a)?;
        let (counts_t, meta_t) = tables(a);
        let prefix = format!("{day}\t");
        blocking(move || {
            let tx = db.begin_write()?;
            tx.open_table(counts_t)?.retain(|k, _| !k.starts_with(&prefix))?;
            tx.open_table(meta_t)?.retain(|k, _| !k.starts_with(&prefix))?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

fn day_of(key: &str) -> String {
    key.split('\t').next().unwrap_or("").to_owned()
}
