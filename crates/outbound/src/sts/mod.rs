//! MTA-STS for outbound delivery (RFC 8461). For a recipient domain without a `tls_policy`
//! entry, the `_mta-sts` TXT record is looked up; its policy is fetched over HTTPS from
//! `https://mta-sts.DOMAIN/.well-known/mta-sts.txt` (no redirects, 64 KiB at most, bounded in
//! time, the address from our own resolver) and cached in memory and on disk
//! (`{data_dir}/mta-sts/DOMAIN.toml`) for its `max_age`. It is fetched again when the TXT `id`
//! changes or the cached copy is half-expired; a failed fetch keeps a cached copy that is still
//! valid (§10.2). A domain with no record and no valid cached policy has none.
//!
//! With a shared `[store]` (Redis) the hosts of a cluster share the cache: a host that has no
//! fresh copy for the record's `id` takes the one another host fetched (`sts:DOMAIN` in the
//! store, expiring with its `max_age`) before fetching itself, and stores what it fetches.

/// The record and policy formats and the MX matching, pure (in `postern-policy`, which the fuzz
/// targets reach without the network stack).
pub use postern_policy::sts as policy;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_dns::{Answer, Resolver};
use postern_types::tls_report::TlsFailure;
use serde::{Deserialize, Serialize};

pub use policy::{Mode, Policy, Record};

/// The largest policy file accepted (RFC 8461 §3.3 suggests 64 KiB), bytes.
const MAX_POLICY: usize = 64 * 1024;

/// A policy as cached: the TXT id it was fetched for and when (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    /// The `id` of the TXT record when fetched.
    pub id: String,
    /// When it was fetched, Unix seconds.
    pub fetched: u64,
    /// The policy.
    pub policy: Policy,
}

impl Cached {
    fn valid(&self, now: u64) -> bool {
        now < self.fetched.saturating_add(self.policy.max_age)
    }

    fn fresh(&self, now: u64) -> bool {
        now < self.fetched.saturating_add(self.policy.max_age / 2)
    }
}

/// The policy cache: memory in front of one file per domain, and the cluster's shared store
/// when there is one.
#[derive(Debug, Default)]
pub struct Store {
    /// Per domain: its policy, or `None` once the disk was found to have none.
    memory: Mutex<HashMap<String, Option<Cached>>>,
    /// The `[store]` shared with the other hosts (Redis), once the daemon has set it.
    shared: std::sync::OnceLock<Arc<postern_store::Store>>,
}

/// How policies are fetched: the folder of the disk cache, the trust anchors of the HTTPS
/// server's certificate (`None`: Mozilla's roots), the time limit.
#[derive(Debug, Clone, Copy)]
pub struct Fetching<'a> {
    /// `{data_dir}/mta-sts`.
    pub cache_dir: &'a Path,
    /// `[outbound] ca_file`.
    pub ca_file: Option<&'a Path>,
    /// `[outbound] mta_sts_allow_networks`: non-public addresses a policy host may have.
    pub allow: &'a [ipnet::IpNet],
    /// Connect and whole-fetch bound.
    pub timeout: Duration,
}

impl Store {
    /// Shares the cache with the other hosts of a cluster through `store` (with the embedded
    /// store nothing is shared: its shared values are always absent).
    pub fn share(&self, store: Arc<postern_store::Store>) {
        let _ = self.shared.set(store);
    }

    /// The copy another host fetched for `id`, if fresh at `now`; kept here too. A store that
    /// fails is as good as an empty one (its outage is logged by the store).
    async fn take_shared(&self, dir: &Path, domain: &str, id: &str, now: u64) -> Option<Cached> {
        let store = self.shared.get()?;
        let text = store.get_shared(&format!("sts:{domain}")).await.ok()??;
        let c: Cached = toml::from_str(&text).ok()?;
        if c.id != id || !c.fresh(now) {
            return None;
        }
        tracing::info!("MTA-STS: the policy of {domain} (id {id}) from the shared store: mode {}", c.policy.mode);
        self.put(dir, domain, c.clone());
        Some(c)
    }

    /// Gives a policy just fetched to the other hosts, for its `max_age`.
    async fn give_shared(&self, domain: &str, cached: &Cached) {
        if let Some(store) = self.shared.get() {
            let text = toml::to_string(cached).unwrap_or_default();
            let ttl = Duration::from_secs(cached.policy.max_age);
            let _ = store.put_shared(&format!("sts:{domain}"), &text, ttl).await;
        }
    }

    /// The cached policy of `domain`: from memory, else read once from disk (a domain with no
    /// file is remembered as such, so deliveries do not stat the disk each time).
    fn get(&self, dir: &Path, domain: &str) -> Option<Cached> {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.entry(domain.to_owned()).or_insert_with(|| cached(dir, domain)).clone()
    }

    fn put(&self, dir: &Path, domain: &str, cached: Cached) {
        let path = file_of(dir, domain);
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, toml::to_string(&cached).unwrap_or_default())?;
            std::fs::rename(&tmp, &path)
        });
        if let Err(e) = written {
            tracing::warn!("MTA-STS: cannot cache the policy of {domain} in {}: {e}", path.display());
        }
        self.memory.lock().unwrap_or_else(|e| e.into_inner()).insert(domain.to_owned(), Some(cached));
    }

    /// The policy in force for `domain` (lower-case) at `now` (Unix seconds), fetched or
    /// refreshed as the module documentation says; `None` when the domain has none. With the
    /// failure of a fetch that was needed, typed for TLS reporting (RFC 8460 §4.3.3).
    pub async fn policy_for<R: Resolver>(
        &self,
        resolver: &R,
        domain: &str,
        how: Fetching<'_>,
        now: u64,
    ) -> (Option<Policy>, Option<(TlsFailure, String)>) {
        let record = match resolver.txt(&format!("_mta-sts.{domain}")).await {
            Answer::Found(txts) => Record::find(&txts).ok(),
            Answer::NotFound | Answer::TempFail(_) => None,
        };
        let cached = self.get(how.cache_dir, domain).filter(|c| c.valid(now));
        let Some(record) = record else { return (cached.map(|c| c.policy), None) };
        if let Some(c) = cached.as_ref().filter(|c| c.id == record.id && c.fresh(now)) {
            return (Some(c.policy.clone()), None);
        }
        if let Some(c) = self.take_shared(how.cache_dir, domain, &record.id, now).await {
            return (Some(c.policy), None);
        }
        let fetched = fetch(resolver, domain, how)
            .await
            .and_then(|text| Policy::parse(&text).map_err(|e| (TlsFailure::StsPolicyInvalid, e.to_string())));
        match fetched {
            Ok(policy) => {
                tracing::info!("MTA-STS: fetched the policy of {domain} (id {}): mode {}", record.id, policy.mode);
                let fetched = Cached { id: record.id, fetched: now, policy: policy.clone() };
                self.give_shared(domain, &fetched).await;
                self.put(how.cache_dir, domain, fetched);
                (Some(policy), None)
            }
            Err((kind, e)) => {
                let kept = if cached.is_some() { "; the cached policy stays in force" } else { "" };
                tracing::warn!("MTA-STS: policy of {domain}: {e}{kept}");
                (cached.map(|c| c.policy), Some((kind, e)))
            }
        }
    }
}

/// The policy of `domain` cached on disk in `dir` (`{data_dir}/mta-sts`), as the daemon last
/// stored it, expired or not (for `postern route`).
pub fn cached(dir: &Path, domain: &str) -> Option<Cached> {
    toml::from_str(&std::fs::read_to_string(file_of(dir, domain)).ok()?).ok()
}

fn file_of(dir: &Path, domain: &str) -> PathBuf {
    dir.join(format!("{domain}.toml"))
}

/// Fetches and parses the policy of `domain` now, without the cache (`postern doctor`).
///
/// # Errors
/// As a fetch the daemon makes: the policy host's address, certificate, HTTP status, size,
/// or a policy that does not parse (RFC 8461 §3.2), typed for TLS reporting.
pub async fn fetch_policy<R: Resolver>(
    resolver: &R,
    domain: &str,
    ca_file: Option<&Path>,
    allow: &[ipnet::IpNet],
    timeout: Duration,
) -> Result<Policy, (TlsFailure, String)> {
    let how = Fetching { cache_dir: Path::new(""), ca_file, allow, timeout };
    let text = fetch(resolver, domain, how).await?;
    Policy::parse(&text).map_err(|e| (TlsFailure::StsPolicyInvalid, e.to_string()))
}

/// Whether `e` (a reqwest error) comes from the policy host's certificate: a rustls
/// certificate error somewhere in its chain of sources.
fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        let tls = err
            .downcast_ref::<rustls::Error>()
            .or_else(|| err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()?.downcast_ref()));
        if matches!(tls, Some(rustls::Error::InvalidCertificate(_))) {
            return true;
        }
        next = err.source();
    }
    false
}

/// Fetches the policy file of `domain`.
///
/// # Errors
/// The TLS-RPT result type (`sts-webpki-invalid` for the host's certificate, else
/// `sts-policy-fetch-error`) and a description: no address, an address that is not public
/// unicast and not allowed, the HTTPS request failed, a status
/// other than 200, a redirect, or a body over 64 KiB.
async fn fetch<R: Resolver>(resolver: &R, domain: &str, how: Fetching<'_>) -> Result<String, (TlsFailure, String)> {
    fetch_text(resolver, domain, how).await.map_err(|e| match e {
        FetchError::Certificate(e) => (TlsFailure::StsWebpkiInvalid, e),
        FetchError::Other(e) => (TlsFailure::StsPolicyFetchError, e),
    })
}

/// Why a fetch failed: the policy host's certificate, or anything else.
enum FetchError {
    Certificate(String),
    Other(String),
}

impl From<String> for FetchError {
    fn from(e: String) -> Self {
        Self::Other(e)
    }
}

async fn fetch_text<R: Resolver>(resolver: &R, domain: &str, how: Fetching<'_>) -> Result<String, FetchError> {
    let host = format!("mta-sts.{domain}");
    let ip = match resolver.ipv4(&host).await {
        Answer::Found(ips) if !ips.is_empty() => ips[0],
        _ => match resolver.ipv6(&host).await {
            Answer::Found(ips) if !ips.is_empty() => ips[0],
            _ => return Err(format!("{host} has no address").into()),
        },
    };
    // The policy host's address comes from the domain's DNS, which anyone can point at our own
    // network: only public unicast addresses, or those the postmaster allowed.
    if !postern_types::net::is_public_unicast(ip) && !how.allow.iter().any(|n| n.contains(&ip)) {
        return Err(format!("{host} resolves to {ip}, not a public address ([outbound] mta_sts_allow_networks)").into());
    }
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(how.timeout)
        .timeout(how.timeout)
        .resolve(&host, std::net::SocketAddr::new(ip, 443))
        .user_agent("postern");
    if let Some(path) = how.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("[outbound] ca_file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("[outbound] ca_file: {e}"))?;
        builder = builder.tls_built_in_root_certs(false);
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    let client = builder.build().map_err(|e| format!("HTTPS client: {e}"))?;
    let url = format!("https://{host}/.well-known/mta-sts.txt");
    let mut response = client.get(&url).send().await.map_err(|e| {
        let text = format!("fetching {url}: {e:#}");
        if is_certificate_error(&e) { FetchError::Certificate(text) } else { FetchError::Other(text) }
    })?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(format!("fetching {url}: HTTP {}", response.status()).into());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("reading {url}: {e}"))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_POLICY {
            return Err(format!("{url}: larger than {MAX_POLICY} bytes").into());
        }
    }
    String::from_utf8(body).map_err(|_| format!("{url}: not UTF-8").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_policy_is_fresh_for_half_its_max_age_and_valid_for_all_of_it() {
        let policy = Policy { mode: Mode::Enforce, mx: vec!["mx.a.test".into()], max_age: 100 };
        let c = Cached { id: "1".into(), fetched: 1000, policy };
        assert!(c.fresh(1049) && !c.fresh(1050), "refetched once half-expired");
        assert!(c.valid(1099) && !c.valid(1100), "used until max_age");
    }

    #[test]
    fn the_disk_cache_round_trips() {
        let dir = std::env::temp_dir().join(format!("postern-sts-{}", std::process::id()));
        let policy = Policy { mode: Mode::Testing, mx: vec!["*.a.test".into()], max_age: 86400 };
        let cached = Cached { id: "abc".into(), fetched: 5, policy };
        Store::default().put(&dir, "a.test", cached.clone());
        assert_eq!(Store::default().get(&dir, "a.test"), Some(cached), "a new store reads it from disk");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
