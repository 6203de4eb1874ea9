//! The server side of TLS: loading the certificate and key exactly as certbot and other ACME
//! clients write them (`fullchain.pem`: the leaf first, then its chain; `privkey.pem`), the
//! rustls configuration the listeners share (TLS 1.2 and 1.3), the checks `postern
//! check-config` reports (missing, unreadable, expired, key not matching the certificate, days
//! left), the choice among several certificates by the name the client asks for (SNI), and the
//! negotiated parameters of a connection for logs and the Received header.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use postern_config::FileSource;
use postern_config::schema::Tls;
use postern_proto::TlsInfo;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate or key of `[tls]` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The file at fault and what is wrong with it (missing, unreadable, no certificate or
    /// key in it, a key that does not belong to its certificate, expired, no DNS names).
    #[error("{}: {why}", path.display())]
    File {
        /// The certificate or key file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A certificate (DER) does not parse.
    #[error("cannot parse the certificate: {0}")]
    Parse(String),
    /// rustls refused the configuration.
    #[error("{0}")]
    Setup(String),
}

/// The error of `path`.
fn bad(path: &Path, why: impl std::fmt::Display) -> CertificateError {
    CertificateError::File { path: path.to_path_buf(), why: why.to_string() }
}

/// What `check-config` reports about a usable certificate.
#[derive(Debug, Clone)]
pub struct CertificateReport {
    /// Subject of the leaf certificate, e.g. `CN=mx.example.test`.
    pub subject: String,
    /// DNS names of the leaf (subjectAltName).
    pub names: Vec<String>,
    /// Certificates in the file, leaf included (2 or more for a full chain).
    pub chain_length: usize,
    /// Whole days until the leaf expires (negative once expired).
    pub days_left: i64,
}

/// The listeners' TLS configuration for `[tls]`: `None` when no certificate is configured.
///
/// # Errors
/// A message naming the file at fault: missing or unreadable, no certificate or no key in it,
/// a key that does not belong to its certificate, or an SNI certificate without DNS names.
pub fn load(tls: &Tls) -> Result<Option<Arc<ServerConfig>>, CertificateError> {
    load_with(tls, &postern_config::Disk)
}

/// As [`load`], reading the files from `files` (the privileged helper after a privilege drop).
///
/// # Errors
/// As [`load`].
pub fn load_with(tls: &Tls, files: &dyn FileSource) -> Result<Option<Arc<ServerConfig>>, CertificateError> {
    let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else { return Ok(None) };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let default = certified_key(&provider, files, cert, key)?;
    let mut by_name = HashMap::new();
    for pair in &tls.sni {
        let ck = certified_key(&provider, files, &pair.cert, &pair.key)?;
        let names = leaf_names(ck.end_entity_cert().map_err(|e| bad(&pair.cert, e))?);
        if names.is_empty() {
            return Err(bad(&pair.cert, "the certificate has no DNS names to select it by"));
        }
        for n in names {
            by_name.insert(n.to_ascii_lowercase(), ck.clone());
        }
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| CertificateError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { default, by_name }));
    // The server's order of the (all strong) suites decides, not the client's, as testssl.sh
    // and BSI TR-02102-2 expect of a server: AES-256-GCM first, ChaCha20 for clients that
    // offer nothing else of ours.
    config.ignore_client_order = true;
    Ok(Some(Arc::new(config)))
}

/// One certificate with its signing key, checked to belong together.
fn certified_key(
    provider: &CryptoProvider,
    files: &dyn FileSource,
    cert: &Path,
    key: &Path,
) -> Result<Arc<CertifiedKey>, CertificateError> {
    let (chain, key_der) = read_pair(files, cert, key)?;
    let signer = provider.key_provider.load_private_key(key_der).map_err(|e| bad(key, e))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match().map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            bad(key, format!("the private key does not match the certificate in {}", cert.display()))
        }
        e => bad(cert, e),
    })?;
    Ok(Arc::new(ck))
}

/// Chooses the certificate by SNI: an exact DNS name, then a wildcard `*.parent`, else the
/// default (`[tls] cert`).
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name().map(str::to_ascii_lowercase) else {
            return Some(self.default.clone());
        };
        let wildcard = name.split_once('.').map(|(_, parent)| format!("*.{parent}"));
        let chosen = self.by_name.get(&name).or_else(|| wildcard.and_then(|w| self.by_name.get(&w)));
        Some(chosen.unwrap_or(&self.default).clone())
    }
}

/// The DNS names (subjectAltName) of a DER certificate; empty if it cannot be parsed.
fn leaf_names(der: &[u8]) -> Vec<String> {
    let Ok((_, leaf)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    dns_names(&leaf)
}

fn dns_names(leaf: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    leaf.subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What the alerts and `postern doctor` look at in a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// Subject, e.g. `CN=mx.example.test`.
    pub subject: String,
    /// DNS names (subjectAltName).
    pub names: Vec<String>,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

impl LeafInfo {
    /// Whether the certificate's names cover `host` (RFC 6125 §6.4: exact, or a `*.` wildcard
    /// for one leftmost label).
    pub fn covers(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().map(|n| n.to_ascii_lowercase()).any(|n| match n.strip_prefix("*.") {
            Some(parent) => host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => n == host,
        })
    }
}

/// The leaf of a DER certificate.
///
/// # Errors
/// It cannot be parsed.
pub fn leaf_info(der: &[u8]) -> Result<LeafInfo, CertificateError> {
    let (_, leaf) = x509_parser::parse_x509_certificate(der).map_err(|e| CertificateError::Parse(e.to_string()))?;
    Ok(LeafInfo {
        subject: leaf.subject().to_string(),
        names: dns_names(&leaf),
        not_after: leaf.validity().not_after.timestamp(),
    })
}

/// The first certificate of a PEM file (certbot's `fullchain.pem`).
///
/// # Errors
/// The file cannot be read or holds no parsable certificate.
pub fn read_leaf(cert: &Path) -> Result<LeafInfo, CertificateError> {
    let pem = std::fs::read(cert).map_err(|e| bad(cert, e))?;
    let first = CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or_else(|| bad(cert, "no CERTIFICATE block"))?
        .map_err(|e| bad(cert, pem_error(&e)))?;
    leaf_info(&first).map_err(|e| bad(cert, e))
}

/// Checks one certificate and key as [`load`] does and reports on the leaf certificate.
///
/// # Errors
/// As [`load`], and an expired or unparsable leaf certificate.
pub fn inspect(cert: &Path, key: &Path, now_unix: i64) -> Result<CertificateReport, CertificateError> {
    certified_key(&rustls::crypto::ring::default_provider(), &postern_config::Disk, cert, key)?;
    let (chain, _) = read_pair(&postern_config::Disk, cert, key)?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
        .map_err(|e| bad(cert, format!("cannot parse the first certificate: {e}")))?;
    let not_after = leaf.validity().not_after.timestamp();
    let days_left = (not_after - now_unix).div_euclid(86_400);
    let names = dns_names(&leaf);
    let report = CertificateReport { subject: leaf.subject().to_string(), names, chain_length: chain.len(), days_left };
    if not_after < now_unix {
        return Err(bad(cert, format!("the certificate for {} expired {} day(s) ago", report.subject, -days_left)));
    }
    Ok(report)
}

type Pair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn read_pair(files: &dyn FileSource, cert: &Path, key: &Path) -> Result<Pair, CertificateError> {
    let cert_pem = files.read(cert).map_err(|e| bad(cert, format!("cannot read the certificate chain: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, format!("cannot read the certificate chain: {}", pem_error(&e))))?;
    if chain.is_empty() {
        return Err(bad(cert, "no CERTIFICATE block found (expected certbot's fullchain.pem)"));
    }
    let key_pem = files.read(key).map_err(|e| bad(key, format!("cannot read the private key: {e}")))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| bad(key, format!("cannot read the private key: {}", pem_error(&e))))?;
    Ok((chain, key_der))
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM block of the expected kind".to_owned(),
        other => format!("{other:?}"),
    }
}

/// The negotiated version and cipher of a server connection.
pub(crate) fn info(conn: &rustls::ServerConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(v) => format!("{v:?}"),
        None => "unknown".to_owned(),
    };
    let cipher = conn.negotiated_cipher_suite().map_or_else(|| "unknown".to_owned(), |c| format!("{:?}", c.suite()));
    TlsInfo { version, cipher }
}
