//! What outbound delivery keeps between messages: idle SMTP sessions per destination (the
//! connection cache), the per-destination concurrency limit, the host status cache (addresses
//! whose connect failed recently), the per-host memory of a broken IPv6, the MTA-STS policy
//! cache, the DNSSEC resolver of DANE and the TLS results waiting for the TLS reports.

use std::sync::Arc;
use std::time::Duration;

use crate::smtp::Session;
use crate::tls_results::TlsResults;

/// Idle sessions per destination, the per-destination concurrency limit, and the host status
/// cache (addresses whose connect failed recently).
#[derive(Default)]
pub struct Pool {
    idle: std::sync::Mutex<std::collections::HashMap<String, Vec<(Session, std::time::Instant)>>>,
    limits: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
    dead: std::sync::Mutex<std::collections::HashMap<std::net::SocketAddr, (std::time::Instant, String)>>,
    /// MTA-STS policies (RFC 8461), cached.
    pub sts: crate::sts::Store,
    /// Hosts whose IPv6 lost a race recently, until when (`[outbound] family_memory`).
    ipv6_lost: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Idle LMTP connections.
    pub lmtp_idle: crate::lmtp::Idle,
    /// The DNSSEC-validating resolver of DANE, once the daemon has set it.
    pub dnssec: std::sync::OnceLock<postern_dns::dnssec::DnssecResolver>,
    /// Outbound TLS negotiations waiting to be stored for TLS reports (RFC 8460).
    pub tls_results: TlsResults,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

impl Pool {
    /// Why `addr` is known to be unreachable right now, if it is.
    pub(crate) fn dead(&self, addr: std::net::SocketAddr) -> Option<String> {
        let mut dead = self.dead.lock().unwrap_or_else(|e| e.into_inner());
        match dead.get(&addr) {
            Some((until, why)) if *until > std::time::Instant::now() => Some(why.clone()),
            Some(_) => {
                dead.remove(&addr);
                None
            }
            None => None,
        }
    }

    /// Remembers that connecting to `addr` failed, for `ttl`.
    pub(crate) fn mark_dead(&self, addr: std::net::SocketAddr, why: &str, ttl: Duration) {
        if !ttl.is_zero() {
            let until = std::time::Instant::now() + ttl;
            self.dead.lock().unwrap_or_else(|e| e.into_inner()).insert(addr, (until, why.to_owned()));
        }
    }

    /// Remembers that IPv6 lost a race to `host`, for `ttl`.
    pub(crate) fn ipv6_lost(&self, host: &str, ttl: Duration) {
        if !ttl.is_zero() {
            let until = std::time::Instant::now() + ttl;
            self.ipv6_lost.lock().unwrap_or_else(|e| e.into_inner()).insert(host.to_lowercase(), until);
        }
    }

    /// `ips` of `host` as socket addresses in the order to race them: as given, or IPv4 first
    /// while IPv6 to this host is remembered as broken.
    pub(crate) fn family_order(&self, host: &str, ips: Vec<std::net::IpAddr>, port: u16) -> Vec<std::net::SocketAddr> {
        let mut lost = self.ipv6_lost.lock().unwrap_or_else(|e| e.into_inner());
        let key = host.to_lowercase();
        let broken = lost.get(&key).is_some_and(|until| *until > std::time::Instant::now());
        if !broken {
            lost.remove(&key);
        }
        let mut addrs: Vec<std::net::SocketAddr> =
            ips.into_iter().map(|ip| std::net::SocketAddr::new(ip, port)).collect();
        if broken {
            // Stable: each family keeps its own order.
            addrs.sort_by_key(std::net::SocketAddr::is_ipv6);
            tracing::info!("{host}: IPv4 first: IPv6 lost a race within [outbound] family_memory");
        }
        addrs
    }

    /// Waits for one of the `max` delivery slots of destination `key`.
    pub async fn permit(&self, key: &str, max: usize) -> tokio::sync::OwnedSemaphorePermit {
        let sem = {
            let mut l = self.limits.lock().unwrap_or_else(|e| e.into_inner());
            l.entry(key.to_owned()).or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(max.max(1)))).clone()
        };
        sem.acquire_owned().await.expect("semaphore never closed")
    }

    /// The most recently used idle session for `key` that is younger than `max_idle`; older ones
    /// are closed.
    pub(crate) fn take(&self, key: &str, max_idle: Duration) -> Option<Session> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(key)?;
        list.retain(|(_, since)| since.elapsed() < max_idle);
        list.pop().map(|(s, _)| s)
    }

    /// Keeps a clean session for reuse (when caching is on), or ends it with QUIT.
    pub(crate) async fn put_or_quit(&self, key: &str, session: Session, cache_time: Duration) {
        if session.reusable() && !cache_time.is_zero() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            for list in idle.values_mut() {
                list.retain(|(_, since)| since.elapsed() < cache_time);
            }
            idle.entry(key.to_owned()).or_default().push((session, std::time::Instant::now()));
        } else {
            session.quit().await;
        }
    }
}
