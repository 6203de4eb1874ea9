//! DKIM benchmark (`bench/dkim.sh`): signatures per second for RSA-2048 and Ed25519 keys made
//! like `postern dkim keygen` makes them, and the cost of verifying one message's signature, on
//! a 4 KiB message. Verification takes the key from a preloaded cache (no DNS), so it measures
//! the cryptography and canonicalisation only. Bounded by `--iterations`.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::resolver::ToFqdn;
use mail_auth::common::verify::DomainKey;
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt};
use postern_auth::keys::{self, Algorithm};
use postern_config::schema::Dkim;

#[derive(Debug, Parser)]
struct Args {
    /// Signatures (and verifications) per key type.
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
}

/// A TXT cache preloaded with the keys: verification never asks DNS.
#[derive(Default)]
struct Preloaded(Mutex<HashMap<Box<str>, Txt>>);

impl ResolverCache<Box<str>, Txt> for Preloaded {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }
    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }
    fn insert(&self, key: Box<str>, value: Txt, _valid_until: Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

fn message() -> Vec<u8> {
    let mut m = b"From: Alice <alice@bench.test>\r\nTo: bob@far.test\r\nSubject: benchmark\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@bench.test>\r\n\r\n".to_vec();
    while m.len() < 4096 {
        m.extend_from_slice(b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n");
    }
    m
}

fn rate(n: usize, d: Duration) -> String {
    format!("{:.0}/s ({:.1} µs each)", n as f64 / d.as_secs_f64(), d.as_secs_f64() * 1e6 / n as f64)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("postern-dkim-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let msg = message();
    let cache = Preloaded::default();
    let mut config: Dkim = toml::from_str("")?;
    println!("| key | signatures/s | verifications/s (one signature, key cached) |");
    println!("|---|---|---|");
    for (name, algorithm, bits) in [("RSA-2048", Algorithm::Rsa, 2048), ("Ed25519", Algorithm::Ed25519, 0)] {
        let g = keys::generate(algorithm, bits).map_err(anyhow::Error::msg)?;
        let selector = name.to_lowercase();
        let path = dir.join(format!("{selector}.key"));
        std::fs::write(&path, &g.private_pem)?;
        let record = keys::txt_value(algorithm, &g.public_base64);
        let key = DomainKey::parse(record.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let fqdn: Box<str> = format!("{selector}._domainkey.bench.test").to_fqdn().into();
        cache.insert(fqdn, Txt::from(key), Instant::now() + Duration::from_secs(3600));
        config.key = vec![toml::from_str(&format!(
            "domain = \"bench.test\"\nselector = \"{selector}\"\nprivate_key = \"{}\"",
            path.display()
        ))?];
        let signer = postern_auth::Signer::load(&config).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let start = Instant::now();
        let mut signed = Vec::new();
        for _ in 0..args.iterations {
            let (headers, _) = signer.sign(&msg).map_err(anyhow::Error::msg)?.expect("signed");
            signed = headers.into_bytes();
        }
        let sign_time = start.elapsed();
        signed.extend_from_slice(&msg);
        let resolver = postern_dns::tokio_resolver(&postern_dns::DnsSettings {
            nameservers: vec!["127.0.0.1:9".parse()?],
            timeout: Duration::from_secs(1),
            attempts: 1,
        })
        .map_err(anyhow::Error::msg)?;
        let auth = MessageAuthenticator(resolver);
        let parsed = AuthenticatedMessage::parse(&signed).expect("parses");
        let start = Instant::now();
        for _ in 0..args.iterations {
            let out = auth.verify_dkim(Parameters::new(&parsed).with_txt_cache(&cache)).await;
            anyhow::ensure!(out.iter().all(|o| o.result() == &DkimResult::Pass), "verification failed: {out:?}");
        }
        let verify_time = start.elapsed();
        println!("| {name} | {} | {} |", rate(args.iterations, sign_time), rate(args.iterations, verify_time));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
