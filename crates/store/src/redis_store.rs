//! The Redis/Valkey backend: one multiplexed connection through the `redis` crate's tokio
//! connection manager (connected lazily, so a server that is down at start is not fatal;
//! reconnected in the background with exponential backoff after an I/O error), every call
//! bounded by `[store] timeout`.
//!
//! Keys, all under `prefix` (default `postern:`):
//! - `grey:NETWORK\tSENDER\tRECIPIENT`: `first last passed`, TTL as greylisting forgets it;
//! - `ban:IP`: hash `failures last banned`, TTL `ban_time` after the last failure;
//! - `rate:RULE:SUBJECT`: the GCRA theoretical arrival time (ms), TTL until it has passed;
//! - `AGGREGATE:DAY:counts` (hash, row → count), `AGGREGATE:DAY:meta` (hash), `AGGREGATE:days`
//!   (set), expiring after 35 days if never reported;
//! - `lease:NAME`: the holder, TTL the lease's;
//! - `sts:DOMAIN`: an MTA-STS policy as cached, TTL its `max_age`.
//!
//! Read-modify-write updates are Lua scripts (`scripts/*.lua`, atomic on the server; loaded
//! again by the crate after a server restart flushed them); the aggregates use MULTI.

use std::net::IpAddr;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, Script};

use crate::bans::{self, Strikes};
use crate::gcra::Rate;
use crate::greylist::Greylist;
use crate::{Aggregate, Ban, DayTally, Settings, StoreError};

/// Days an aggregate is kept if no host ever reports it.
const AGGREGATE_TTL: i64 = 35 * 86_400;

pub(crate) struct RedisStore {
    con: ConnectionManager,
    described: String,
    prefix: String,
    timeout: Duration,
    greylist: Script,
    gcra: Script,
    ban: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("server", &self.described).field("prefix", &self.prefix).finish()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisStore {
    pub(crate) fn new(url: &str, s: &Settings) -> Result<Self, StoreError> {
        let client = match &s.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| StoreError::Failed(format!("[store] ca_file {}: {e}", path.display())))?;
                let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
                redis::Client::build_with_tls(url, certs)
            }
            None => redis::Client::open(url),
        }
        .map_err(|e| StoreError::Failed(format!("[store] url: {e}")))?;
        let info = client.get_connection_info();
        let described = match info.addr() {
            redis::ConnectionAddr::Unix(path) => format!("redis+unix://{}", path.display()),
            redis::ConnectionAddr::TcpTls { host, port, .. } => {
                format!("rediss://{host}:{port}/{}", info.redis_settings().db())
            }
            addr => format!("redis://{addr}/{}", info.redis_settings().db()),
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(s.timeout))
            .set_response_timeout(Some(s.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(5));
        let con = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Failed(format!("[store] url: {e}")))?;
        Ok(Self {
            con,
            described,
            prefix: s.prefix.clone(),
            timeout: s.timeout,
            greylist: Script::new(include_str!("scripts/greylist.lua")),
            gcra: Script::new(include_str!("scripts/gcra.lua")),
            ban: Script::new(include_str!("scripts/ban.lua")),
        })
    }

    pub(crate) fn describe(&self) -> String {
        self.described.clone()
    }

    /// Runs one request with the deadline; an I/O error or a timeout is `Unreachable`.
    async fn timed<T>(&self, f: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
        let unreachable = |detail: String| StoreError::Unreachable { backend: self.described.clone(), detail };
        match tokio::time::timeout(self.timeout, f).await {
            Err(_) => Err(unreachable(format!("no answer within {:?}", self.timeout))),
            Ok(Err(e))
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() =>
            {
                Err(unreachable(e.to_string()))
            }
            Ok(Err(e)) => Err(StoreError::Failed(format!("{}: {e}", self.described))),
            Ok(Ok(v)) => Ok(v),
        }
    }

    fn key(&self, parts: &[&str]) -> String {
        format!("{}{}", self.prefix, parts.join(":"))
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.con.clone();
        self.timed(async move { redis::cmd("PING").query_async::<String>(&mut c).await }).await.map(drop)
    }

    pub(crate) async fn greylist(
        &self,
        key: &str,
        now: u64,
        delay: Duration,
        expire: Duration,
    ) -> Result<Greylist, StoreError> {
        let (k, mut c) = (self.key(&["grey", key]), self.con.clone());
        let script = &self.greylist;
        let (pass, wait): (u8, u64) = self
            .timed(async move {
                script.key(k).arg(now).arg(delay.as_secs()).arg(expire.as_secs()).invoke_async(&mut c).await
            })
            .await?;
        Ok(if pass == 1 { Greylist::Pass } else { Greylist::Wait(Duration::from_secs(wait)) })
    }

    pub(crate) async fn auth_failure(
        &self,
        ip: IpAddr,
        now_ms: u64,
        limit: u32,
        ban_time: Duration,
    ) -> Result<(bool, bool), StoreError> {
        let (k, mut c) = (self.key(&["ban", &ip.to_string()]), self.con.clone());
        let script = &self.ban;
        let (banned, newly): (u8, u8) = self
            .timed(async move { script.key(k).arg(now_ms).arg(limit).arg(ms(ban_time)).invoke_async(&mut c).await })
            .await?;
        Ok((banned == 1, newly == 1))
    }

    async fn strikes(&self, key: String) -> Result<Option<Strikes>, StoreError> {
        let mut c = self.con.clone();
        let (f, l, b): (Option<u32>, Option<u64>, Option<String>) = self
            .timed(async move {
                redis::cmd("HMGET").arg(key).arg(&["failures", "last", "banned"]).query_async(&mut c).await
            })
            .await?;
        Ok(match (f, l) {
            (Some(failures), Some(last)) => Some(Strikes { failures, last, banned: b.as_deref() == Some("1") }),
            _ => None,
        })
    }

    pub(crate) async fn banned(
        &self,
        ip: IpAddr,
        now_ms: u64,
        ban_time: Duration,
    ) -> Result<Option<Duration>, StoreError> {
        let s = self.strikes(self.key(&["ban", &ip.to_string()])).await?;
        Ok(s.and_then(|s| bans::remaining(&s, now_ms, ban_time)))
    }

    pub(crate) async fn bans(&self, now_ms: u64, ban_time: Duration) -> Result<Vec<Ban>, StoreError> {
        let pattern = self.key(&["ban", "*"]);
        let mut c = self.con.clone();
        let keys: Vec<String> = self
            .timed(async move {
                let mut it = c.scan_match::<_, String>(pattern).await?;
                let mut keys = Vec::new();
                while let Some(k) = it.next_item().await {
                    keys.push(k?);
                }
                Ok(keys)
            })
            .await?;
        let mut out = Vec::new();
        for k in keys {
            let Some(ip) = k.rsplit_once("ban:").and_then(|(_, ip)| ip.parse::<IpAddr>().ok()) else { continue };
            if let Some(s) = self.strikes(k).await?.filter(|s| bans::current(s, now_ms, ban_time)) {
                out.push(Ban { ip, failures: s.failures, left: bans::remaining(&s, now_ms, ban_time) });
            }
        }
        Ok(out)
    }

    pub(crate) async fn lift(&self, ip: IpAddr) -> Result<bool, StoreError> {
        let (k, mut c) = (self.key(&["ban", &ip.to_string()]), self.con.clone());
        let n: u64 = self.timed(async move { c.del(k).await }).await?;
        Ok(n > 0)
    }

    pub(crate) async fn rate(
        &self,
        key: &str,
        cost: u32,
        limit: u32,
        window: Duration,
        now_ms: u64,
    ) -> Result<Rate, StoreError> {
        let (k, mut c) = (self.key(&["rate", key]), self.con.clone());
        let script = &self.gcra;
        let (allowed, wait): (u8, u64) =
            self.timed(async move {
                script.key(k).arg(now_ms).arg(cost).arg(limit).arg(ms(window)).invoke_async(&mut c).await
            })
            .await?;
        Ok(if allowed == 1 { Rate::Allowed } else { Rate::Exceeded(Duration::from_millis(wait)) })
    }

    fn aggregate_keys(&self, a: Aggregate, day: &str) -> (String, String, String) {
        (self.key(&[a.name(), day, "counts"]), self.key(&[a.name(), day, "meta"]), self.key(&[a.name(), "days"]))
    }

    pub(crate) async fn tally(
        &self,
        a: Aggregate,
        day: &str,
        keys: &[String],
        meta: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        let (counts, meta_key, days) = self.aggregate_keys(a, day);
        let mut p = redis::pipe();
        p.atomic();
        for k in keys {
            p.hincr(&counts, k, 1).ignore();
        }
        p.expire(&counts, AGGREGATE_TTL).ignore();
        if let Some((k, v)) = meta {
            p.hset(&meta_key, k, v).ignore().expire(&meta_key, AGGREGATE_TTL).ignore();
        }
        p.sadd(&days, day).ignore();
        let mut c = self.con.clone();
        self.timed(async move { p.query_async::<()>(&mut c).await }).await
    }

    pub(crate) async fn day_tally(&self, a: Aggregate, day: &str) -> Result<DayTally, StoreError> {
        let (counts, meta, _) = self.aggregate_keys(a, day);
        let mut c = self.con.clone();
        let (counts, meta) =
            self.timed(async move { redis::pipe().hgetall(counts).hgetall(meta).query_async(&mut c).await }).await?;
        let mut tally = DayTally { meta, counts };
        tally.counts.sort();
        tally.meta.sort();
        Ok(tally)
    }

    pub(crate) async fn tallied_days(&self, a: Aggregate) -> Result<Vec<String>, StoreError> {
        let (_, _, days) = self.aggregate_keys(a, "");
        let mut c = self.con.clone();
        let mut v: Vec<String> = self.timed(async move { c.smembers(days).await }).await?;
        v.sort();
        Ok(v)
    }

    pub(crate) async fn forget_day(&self, a: Aggregate, day: &str) -> Result<(), StoreError> {
        let (counts, meta, days) = self.aggregate_keys(a, day);
        let mut p = redis::pipe();
        p.atomic().del(&counts).ignore().del(&meta).ignore().srem(&days, day).ignore();
        let mut c = self.con.clone();
        self.timed(async move { p.query_async::<()>(&mut c).await }).await
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let (k, mut c) = (self.key(&[key]), self.con.clone());
        self.timed(async move { c.get(k).await }).await
    }

    pub(crate) async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let (k, mut c) = (self.key(&[key]), self.con.clone());
        self.timed(async move { c.pset_ex(k, value, ms(ttl).max(1)).await }).await
    }

    pub(crate) async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let (k, mut c) = (self.key(&["lease", name]), self.con.clone());
        let mut cmd = redis::cmd("SET");
        cmd.arg(k).arg(holder).arg("NX").arg("PX").arg(ms(ttl).max(1));
        let set: Option<String> = self.timed(async move { cmd.query_async(&mut c).await }).await?;
        Ok(set.is_some())
    }
}
