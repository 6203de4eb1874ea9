//! One suite, two backends: every rule is checked on the embedded store and on a real
//! `redis-server` (Debian's, installed by `scripts/test`) started on a unix socket in a
//! temporary folder and stopped by PID.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::{Aggregate, BackendKind, Greylist, Rate, Settings, Store, StoreError};

/// A private redis-server on a unix socket; killed on drop.
pub(crate) struct TestRedis {
    child: Child,
    pub(crate) dir: PathBuf,
}

impl TestRedis {
    pub(crate) fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// As [`TestRedis::start`], with more `redis-server` arguments.
    pub(crate) fn start_with(dir: &Path, args: &[&str]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(args)
            .arg("--unixsocket")
            .arg(dir.join("redis.sock"))
            .arg("--dir")
            .arg(dir)
            .stdout(std::fs::File::create(dir.join("redis.log")).unwrap())
            .spawn()
            .expect("redis-server (Debian's redis-server package; scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.join("redis.sock").exists() {
            assert!(Instant::now() < deadline, "redis-server did not open its socket");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, dir: dir.to_owned() }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis+unix://{}", self.dir.join("redis.sock").display())
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.join("redis.sock"));
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("postern-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn settings(backend: BackendKind, dir: &Path) -> Settings {
    Settings {
        backend,
        prefix: "test:".into(),
        timeout: Duration::from_millis(500),
        ca_file: None,
        data_dir: dir.to_owned(),
        greylist: true,
        aggregates: vec![Aggregate::Dmarc, Aggregate::TlsRpt],
    }
}

/// Runs `suite` on both backends.
async fn both(name: &str, suite: impl AsyncFn(&Store)) {
    let dir = temp(name);
    suite(&Store::open(&settings(BackendKind::Embedded, &dir)).unwrap()).await;
    let redis = TestRedis::start(&dir.join("redis"));
    let store = Store::open(&settings(BackendKind::Redis(redis.url()), &dir)).unwrap();
    assert!(store.is_shared());
    suite(&store).await;
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn greylisting() {
    both("grey", async |s: &Store| {
        let (d, e) = (Duration::from_secs(300), Duration::from_secs(86400));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let same_net: IpAddr = "192.0.2.99".parse().unwrap();
        let g = async |ip, from: &str, now| s.greylist(ip, from, "b@y.test", now, d, e).await.unwrap();
        assert_eq!(g(ip, "a@x.test", 1000).await, Greylist::Wait(Duration::from_secs(300)));
        assert_eq!(g(ip, "a@x.test", 1100).await, Greylist::Wait(Duration::from_secs(200)));
        assert_eq!(g(same_net, "A@x.test", 1300).await, Greylist::Pass, "same /24, case-insensitive");
        assert_eq!(g(ip, "a@x.test", 80_000).await, Greylist::Pass, "seen within expiry");
        assert!(matches!(g(ip, "a@x.test", 200_000).await, Greylist::Wait(_)), "expired");
        assert!(matches!(g(ip, "other@x.test", 1300).await, Greylist::Wait(_)));
        assert!(matches!(g(ip, "", 1300).await, Greylist::Wait(_)), "the null sender");
        // A first attempt never retried is forgotten after the retry window (two days).
        assert!(matches!(g(ip, "late@x.test", 300_000).await, Greylist::Wait(_)));
        assert!(matches!(g(ip, "late@x.test", 300_000 + 3 * 86_400).await, Greylist::Wait(_)));
    })
    .await;
}

#[tokio::test]
async fn greylist_purge_embedded() {
    let dir = temp("purge");
    let s = Store::open(&settings(BackendKind::Embedded, &dir)).unwrap();
    let (d, e) = (Duration::from_secs(300), Duration::from_secs(86400));
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    for (from, now) in [("a@x.test", 1000), ("b@x.test", 1000), ("kept@x.test", 1_000_000)] {
        s.greylist(ip, from, "r@y.test", now, d, e).await.unwrap();
    }
    assert_eq!(s.purge_greylist(1_000_100, d, e).await.unwrap(), 2);
    assert_eq!(s.greylist(ip, "kept@x.test", "r@y.test", 1_000_400, d, e).await.unwrap(), Greylist::Pass);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bans() {
    both("bans", async |s: &Store| {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "2001:db8::2".parse().unwrap();
        let ban = Duration::from_secs(60);
        let t = 1_000_000_000_000u64;
        assert!(!s.auth_failure(ip, t, 3, ban).await.unwrap());
        assert!(!s.auth_failure(ip, t + 1000, 3, ban).await.unwrap());
        assert_eq!(s.banned(ip, t + 1000, ban).await.unwrap(), None);
        assert!(s.auth_failure(ip, t + 2000, 3, ban).await.unwrap());
        assert_eq!(s.banned(ip, t + 2000, ban).await.unwrap(), Some(ban));
        assert_eq!(s.banned(ip, t + 62_001, ban).await.unwrap(), None, "expired");
        assert!(!s.auth_failure(other, t, 3, ban).await.unwrap());
        let listed = s.bans(t + 2000, ban).await.unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!((listed[0].ip, listed[0].failures, listed[0].left), (ip, 3, Some(ban)));
        assert_eq!((listed[1].ip, listed[1].left), (other, None));
        assert!(s.lift(ip).await.unwrap() && !s.lift(ip).await.unwrap());
        assert_eq!(s.banned(ip, t + 2000, ban).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn rate_limits() {
    both("rate", async |s: &Store| {
        let w = Duration::from_secs(60);
        let t = 1_000_000_000_000u64;
        for _ in 0..3 {
            assert_eq!(s.rate("client:192.0.2.0/24", 1, 3, w, t).await.unwrap(), Rate::Allowed);
        }
        assert_eq!(s.rate("client:192.0.2.0/24", 1, 3, w, t).await.unwrap(), Rate::Exceeded(Duration::from_secs(20)));
        assert_eq!(s.rate("client:198.51.100.0/24", 1, 3, w, t).await.unwrap(), Rate::Allowed, "another key");
        assert_eq!(s.rate("client:192.0.2.0/24", 1, 3, w, t + 20_000).await.unwrap(), Rate::Allowed);
        assert_eq!(s.rate("rcpt:u", 5, 3, w, t).await.unwrap(), Rate::Exceeded(Duration::from_secs(40)));
    })
    .await;
}

#[tokio::test]
async fn aggregates_and_leases() {
    both("agg", async |s: &Store| {
        let keys = ["row-a".to_owned(), "row-b".to_owned(), "row-a".to_owned()];
        s.tally(Aggregate::Dmarc, "2026-12-01", &keys, Some(("a.test", "policy-a"))).await.unwrap();
        s.tally(Aggregate::Dmarc, "2026-12-01", &keys[..1], Some(("b.test", "policy-b"))).await.unwrap();
        s.tally(Aggregate::Dmarc, "2026-12-02", &keys[..1], None).await.unwrap();
        s.tally(Aggregate::TlsRpt, "2026-11-30", &keys[1..2], None).await.unwrap();
        let day = s.day_tally(Aggregate::Dmarc, "2026-12-01").await.unwrap();
        assert_eq!(day.counts, vec![("row-a".to_owned(), 3), ("row-b".to_owned(), 1)]);
        assert_eq!(day.meta, vec![("a.test".into(), "policy-a".into()), ("b.test".into(), "policy-b".into())]);
        assert_eq!(s.tallied_days(Aggregate::Dmarc).await.unwrap(), ["2026-12-01", "2026-12-02"]);
        assert_eq!(s.tallied_days(Aggregate::TlsRpt).await.unwrap(), ["2026-11-30"]);
        s.forget_day(Aggregate::Dmarc, "2026-12-01").await.unwrap();
        assert_eq!(s.tallied_days(Aggregate::Dmarc).await.unwrap(), ["2026-12-02"]);
        assert!(s.day_tally(Aggregate::Dmarc, "2026-12-01").await.unwrap().counts.is_empty());
        let ttl = Duration::from_secs(60);
        s.put_shared("sts:a.test", "policy", ttl).await.unwrap();
        let got = s.get_shared("sts:a.test").await.unwrap();
        assert_eq!(got.as_deref(), s.is_shared().then_some("policy"), "shared only by Redis");
        assert!(s.lease("dmarc:2026-12-02", "mx1", ttl).await.unwrap());
        // One host: always granted; shared: the second holder is refused.
        assert_eq!(s.lease("dmarc:2026-12-02", "mx2", ttl).await.unwrap(), !s.is_shared());
    })
    .await;
}

/// The store stopped mid-run: calls fail within the timeout (no stall), and once the server
/// is back the same `Store` works again without being reopened.
#[tokio::test]
async fn redis_outage_and_return() {
    let dir = temp("outage");
    let mut redis = TestRedis::start(&dir.join("redis"));
    let store = Store::open(&settings(BackendKind::Redis(redis.url()), &dir)).unwrap();
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let (d, e) = (Duration::from_secs(0), Duration::from_secs(86400));
    assert_eq!(
        store.greylist(ip, "a@x.test", "r@y.test", 1000, d, e).await.unwrap(),
        Greylist::Wait(Duration::from_secs(1))
    );
    redis.stop();
    for _ in 0..3 {
        let t = Instant::now();
        let r = store.greylist(ip, "a@x.test", "r@y.test", 1001, d, e).await;
        assert!(matches!(r, Err(StoreError::Unreachable { .. })), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(2), "bounded by the timeout: {:?}", t.elapsed());
    }
    let _redis = TestRedis::start(&dir.join("redis"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.rate("k", 1, 10, Duration::from_secs(60), 5).await {
            Ok(r) => {
                assert_eq!(r, Rate::Allowed);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "never reconnected: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server that requires a password (`requirepass`): the right one in the URL works, a wrong
/// one is an error of the store (never a hang), reported with the URL but not the password.
#[tokio::test]
async fn redis_with_a_password() {
    let dir = temp("pass");
    let redis = TestRedis::start_with(&dir.join("redis"), &["--requirepass", "s3cret"]);
    let url = |pass: &str| format!("{}?pass={pass}", redis.url());
    let good = Store::open(&settings(BackendKind::Redis(url("s3cret")), &dir)).unwrap();
    good.ping().await.unwrap();
    assert!(!good.describe().contains("s3cret"), "{}", good.describe());
    let bad = Store::open(&settings(BackendKind::Redis(url("wrong")), &dir)).unwrap();
    let e = bad.ping().await.unwrap_err();
    assert!(!e.to_string().contains("wrong"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `rediss://` to a server whose certificate a private CA signed (`[store] ca_file`): trusted
/// with the CA, refused without it (the web PKI's roots do not know it).
#[tokio::test]
async fn redis_over_tls_with_a_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = temp("tls");
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    let files = [("ca.pem", ca.pem()), ("cert.pem", leaf.pem()), ("key.pem", key.serialize_pem())];
    for (name, pem) in &files {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let path = |name: &str| dir.join(name).display().to_string();
    let (cert, key_file) = (path("cert.pem"), path("key.pem"));
    let args = ["--bind", "127.0.0.1", "--tls-port", &port, "--tls-cert-file", &cert, "--tls-key-file", &key_file];
    let _redis = TestRedis::start_with(&dir.join("redis"), &[&args[..], &["--tls-auth-clients", "no"]].concat());
    let url = format!("rediss://localhost:{port}/0");
    let mut s = settings(BackendKind::Redis(url), &dir);
    s.ca_file = Some(dir.join("ca.pem"));
    let trusted = Store::open(&s).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = trusted.ping().await {
        assert!(Instant::now() < deadline, "never answered over TLS: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(trusted.describe().starts_with("rediss://localhost:"), "{}", trusted.describe());
    s.ca_file = None;
    assert!(Store::open(&s).unwrap().ping().await.is_err(), "a certificate of an unknown CA");
    let _ = std::fs::remove_dir_all(&dir);
}
