//! `postern dkim keygen` (a DKIM key and the TXT record to publish) and `postern dns records`
//! (every DNS record this server needs, with why).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use postern_auth::keys::{self, Algorithm};

/// `postern dkim keygen`.
#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// The signing domain (d=).
    #[arg(long)]
    domain: String,
    /// The selector (s=), e.g. the year: s2026.
    #[arg(long)]
    selector: String,
    /// Key algorithm.
    #[arg(long, value_enum, default_value = "rsa")]
    algorithm: AlgorithmArg,
    /// RSA key size in bits (at least 2048).
    #[arg(long, default_value_t = 2048)]
    bits: usize,
    /// Where to write the private key (mode 0600). Default: where `--config` reads it (its
    /// `[[dkim.key]]` of this domain and selector, else `dkim/DOMAIN.SELECTOR.key` beside the
    /// configuration file), or `dkim/DOMAIN.SELECTOR.key` here without `--config`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The configuration that will use the key.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// Where the key goes: `--out`, else the path the configuration reads it from, else
/// `dkim/DOMAIN.SELECTOR.key` beside the configuration (or here).
fn key_path(args: &KeygenArgs, domain: &str) -> Result<PathBuf, ExitCode> {
    if let Some(out) = &args.out {
        return Ok(out.clone());
    }
    let name = format!("dkim/{domain}.{}.key", args.selector);
    let Some(path) = &args.config else { return Ok(PathBuf::from(name)) };
    let config = postern_config::load_without_tables(path).map_err(|errors| {
        for e in errors {
            eprintln!("{e}");
        }
        ExitCode::from(2)
    })?;
    let configured = config.dkim.key.iter().find(|k| k.domain == domain && k.selector == args.selector);
    Ok(configured.map_or_else(|| path.parent().unwrap_or(Path::new("")).join(name), |k| k.private_key.clone()))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AlgorithmArg {
    Rsa,
    Ed25519,
}

pub(crate) fn keygen(args: &KeygenArgs) -> ExitCode {
    let algorithm = match args.algorithm {
        AlgorithmArg::Rsa => Algorithm::Rsa,
        AlgorithmArg::Ed25519 => Algorithm::Ed25519,
    };
    let domain = args.domain.to_lowercase();
    let out = match key_path(args, &domain) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let generated = match keys::generate(algorithm, args.bits) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("postern: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = write_new(&out, generated.private_pem.as_bytes()) {
        eprintln!("postern: writing {}: {e} (nothing was changed; pick another --out or --selector)", out.display());
        return ExitCode::FAILURE;
    }
    let value = keys::txt_value(algorithm, &generated.public_base64);
    // The daemon reads keys as root at start and through its privileged helper on reload, so
    // root-only (0600, owned by whoever runs this: run it as root on a server) is right.
    println!("; private key written to {} (mode 0600)", out.display());
    println!("; publish this TXT record, then add the key to postern.toml:");
    println!(";   [[dkim.key]]");
    println!(";   domain = \"{domain}\"");
    println!(";   selector = \"{}\"", args.selector);
    println!(";   private_key = \"{}\"", out.display());
    print!("{}", keys::zone_record(&args.selector, &domain, &value));
    println!("; the same for a web DNS panel (name, then value on one line):");
    println!("; {}._domainkey.{domain}", args.selector);
    println!("; {value}");
    ExitCode::SUCCESS
}

/// Creates `path` (and its folder) with mode 0600; refuses to replace an existing file.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// `postern dns records --domain D`: what to publish for `domain`, as zone-file lines with a
/// comment each.
pub(crate) fn records(config: &postern_config::Config, domain: &str) -> ExitCode {
    let domain = domain.to_lowercase();
    let host = &config.hostname;
    println!("; DNS records for {domain}, served by {host} (postern dns records)");
    println!();
    println!("; MX: where other servers deliver mail for {domain}.");
    println!("{domain}. IN MX 10 {host}.");
    println!();
    // One SPF record per name (RFC 7208 §4.5: two are a permerror).
    if host.eq_ignore_ascii_case(&domain) {
        println!("; SPF (RFC 7208): the MX hosts and this host (also the HELO name) may send as {domain}.");
        println!("{domain}. IN TXT \"v=spf1 mx a -all\"");
    } else {
        println!("; SPF (RFC 7208): only the MX hosts may send as {domain}; others fail (-all).");
        println!("{domain}. IN TXT \"v=spf1 mx -all\"");
        println!("; SPF for the HELO name: receivers check it too (RFC 7208 §2.3).");
        println!("{host}. IN TXT \"v=spf1 a -all\"");
    }
    println!();
    let mut any_key = false;
    for k in config.dkim.key.iter().filter(|k| k.domain == domain) {
        any_key = true;
        match keys::load(&k.private_key) {
            Ok(key) => {
                let (algorithm, public) = keys::public_base64(&key);
                let value = keys::txt_value(algorithm, &public);
                println!("; DKIM (RFC 6376): the public key of selector {} ({}).", k.selector, k.private_key.display());
                print!("{}", keys::zone_record(&k.selector, &domain, &value));
            }
            Err(e) => println!("; DKIM selector {}: cannot read the key: {e}", k.selector),
        }
    }
    if !any_key {
        println!("; DKIM: no [[dkim.key]] for {domain}; make one with");
        println!(";   postern dkim keygen --domain {domain} --selector s{}", chrono::Utc::now().format("%Y"));
    }
    println!();
    println!("; DMARC (RFC 7489): start with p=none and read the aggregate reports sent to rua;");
    println!("; move to p=quarantine, then p=reject, once every legitimate source passes.");
    println!("_dmarc.{domain}. IN TXT \"v=DMARC1; p=none; rua=mailto:postmaster@{domain}\"");
    println!();
    mta_sts(&domain, host);
    tlsa(config, host);
    println!("; TLS-RPT (RFC 8460): senders that support it mail a daily report of their TLS sessions");
    println!("; with {domain} (failures with the reason) to rua: read them before moving MTA-STS to enforce.");
    println!("_smtp._tls.{domain}. IN TXT \"v=TLSRPTv1; rua=mailto:postmaster@{domain}\"");
    println!();
    println!("; PTR (reverse DNS) of each address the server sends from must name {host},");
    println!("; and {host} must resolve back to it (forward-confirmed rDNS): set it at your provider.");
    for l in &config.listener {
        let ip = l.address.ip();
        if ip.is_unspecified() || ip.is_loopback() {
            println!("; listener {}: PTR of your public IP -> {host}.", l.address);
        } else {
            println!("{} IN PTR {host}.", reverse_name(ip));
        }
    }
    ExitCode::SUCCESS
}

/// Our TLSA record (RFC 7672 §3.1: DANE-EE, SPKI, SHA-256) from the `[tls] cert` in force.
fn tlsa(config: &postern_config::Config, host: &str) {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    println!("; DANE (RFC 7672): with DNSSEC on the zone of {host}, senders that support DANE check our");
    println!("; certificate against this record instead of the public CAs. It names the key, not the");
    println!("; certificate, so it stays valid across renewals that keep the key: run certbot with");
    println!("; --reuse-key, or publish the record of the next key beside this one before switching.");
    let Some(path) = &config.tls.cert else {
        println!("; no [tls] cert configured: set one, then run this again for the record.");
        println!();
        return;
    };
    let first = CertificateDer::pem_file_iter(path).ok().and_then(|mut certs| certs.next()).and_then(Result::ok);
    match first.as_deref().and_then(postern_outbound::dane::record_3_1_1) {
        Some(record) => println!("_25._tcp.{host}. IN TLSA {record}"),
        None => println!("; cannot read a certificate from {}", path.display()),
    }
    println!();
}

/// The MTA-STS record and policy file of `domain` (RFC 8461 §3), the MX being `host`.
fn mta_sts(domain: &str, host: &str) {
    let id = chrono::Utc::now().format("%Y%m%d%H%M%S");
    println!("; MTA-STS (RFC 8461): senders that support it deliver to {domain} only over TLS with a");
    println!("; valid certificate, to the MX hosts the policy names. Serve the policy below as");
    println!("; https://mta-sts.{domain}/.well-known/mta-sts.txt (text/plain, a certificate valid for");
    println!("; mta-sts.{domain}). Start with mode: testing, move to enforce once the reports are");
    println!("; clean, and change the id whenever the file changes.");
    println!("_mta-sts.{domain}. IN TXT \"v=STSv1; id={id}\"");
    println!("; the policy file:");
    for line in ["version: STSv1", "mode: testing", &format!("mx: {host}"), "max_age: 604800"] {
        println!(";   {line}");
    }
    println!();
}

fn reverse_name(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        std::net::IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa."
        }
    }
}
