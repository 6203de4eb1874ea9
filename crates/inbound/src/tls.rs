//! The server side of TLS: loading the certificate and key exactly as certbot and other ACME
//! clients write them (`fullchain.pem`: the leaf first, then its chain; `privkey.pem`), the
//! rustls configuration the listeners share (TLS 1.2 and 1.3), the checks `postern
//! check-config` reports (missing, unreadable, expired, key not matching the certificate, days
//! left), and the negotiated parameters of a connection for logs and the Received header.

use std::path::Path;
use std::sync::Arc;

use postern_proto::TlsInfo;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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

/// Reads the chain and the key and builds the listeners' TLS configuration.
///
/// # Errors
/// A message naming the file at fault: missing or unreadable, no certificate or no key in it,
/// or a key that does not belong to the leaf certificate.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let (chain, key_der) = read_pair(cert, key)?;
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                format!("{}: the private key does not match the certificate in {}", key.display(), cert.display())
            }
            e => format!("{}: {e}", key.display()),
        })?;
    Ok(Arc::new(config))
}

/// Checks the pair as [`server_config`] does and reports on the leaf certificate.
///
/// # Errors
/// As [`server_config`], and an expired or unparsable leaf certificate.
pub fn inspect(cert: &Path, key: &Path, now_unix: i64) -> Result<CertificateReport, String> {
    server_config(cert, key)?;
    let (chain, _) = read_pair(cert, key)?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
        .map_err(|e| format!("{}: cannot parse the first certificate: {e}", cert.display()))?;
    let not_after = leaf.validity().not_after.timestamp();
    let days_left = (not_after - now_unix).div_euclid(86_400);
    let names = leaf
        .subject_alternative_name()
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
        .unwrap_or_default();
    let report = CertificateReport { subject: leaf.subject().to_string(), names, chain_length: chain.len(), days_left };
    if not_after < now_unix {
        return Err(format!(
            "{}: the certificate for {} expired {} day(s) ago",
            cert.display(),
            report.subject,
            -days_left
        ));
    }
    Ok(report)
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("{}: cannot read the certificate chain: {}", cert.display(), pem_error(&e)))?;
    if chain.is_empty() {
        return Err(format!("{}: no CERTIFICATE block found (expected certbot's fullchain.pem)", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: cannot read the private key: {}", key.display(), pem_error(&e)))?;
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
