//! STARTTLS for outbound delivery (RFC 3207). The certificate is checked against Mozilla's
//! roots (webpki-roots, or `[outbound] ca_file`) and the next hop's host name, and the result is
//! logged as `verify=OK` or `verify=FAIL`. Whether a failure stops delivery is the `tls_policy`
//! table's call: at `may` (opportunistic, RFC 7435) it does not, since most MX certificates are
//! not verifiable and refusing would only force clear text; at `verify` it defers. The
//! signatures of the handshake itself are always checked.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use postern_types::tls_report::TlsFailure;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// What a TLS session with a next hop was like, for the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// `None` when the certificate verified, else why not.
    pub verify_error: Option<String>,
    /// The failure's TLS-RPT result type (RFC 8460 §4.3.1), when it did not verify.
    pub verify_failure: Option<TlsFailure>,
    /// The certificate was checked against TLSA records (DANE, RFC 7672), not the roots.
    pub dane: bool,
}

impl fmt::Display for TlsInfo {
    /// `tls=TLSv1.3 cipher=TLS13_AES_256_GCM_SHA384 verify=OK` (or `verify=FAIL (reason)`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tls={} cipher={} verify=", self.version, self.cipher)?;
        match (&self.verify_error, self.dane) {
            (None, false) => f.write_str("OK"),
            (None, true) => f.write_str("DANE"),
            (Some(e), _) => write!(f, "FAIL ({e})"),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a TLS session with a next hop could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// `[outbound] ca_file` cannot be read or holds no usable certificate.
    #[error("[outbound] ca_file {path}: {why}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the trust anchors or the protocol versions.
    #[error("trust anchors: {0}")]
    Setup(String),
    /// The next hop's name is not a valid server name.
    #[error("bad server name {host:?}: {why}")]
    ServerName {
        /// The name.
        host: String,
        /// Why it is not valid.
        why: String,
    },
    /// The handshake itself failed (certificate refused by a DANE or verify policy, protocol
    /// error, connection lost).
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    /// The handshake did not finish in time.
    #[error("TLS handshake timed out")]
    Timeout,
}

/// The verifier for the trust anchors of `ca_file` (Mozilla's roots when `None`), built once
/// per file.
///
/// # Errors
/// The file cannot be read or holds no usable certificate.
fn webpki(ca_file: Option<&Path>) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    static VERIFIERS: OnceLock<Mutex<HashMap<Option<PathBuf>, Arc<WebPkiServerVerifier>>>> = OnceLock::new();
    let mut cache = VERIFIERS.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(v) = cache.get(&ca_file.map(Path::to_path_buf)) {
        return Ok(v.clone());
    }
    let roots = match ca_file {
        None => RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
        Some(path) => {
            use rustls::pki_types::pem::PemObject as _;
            let mut roots = RootCertStore::empty();
            let bad = |why: &dyn std::fmt::Display| TlsError::CaFile { path: path.to_path_buf(), why: why.to_string() };
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))?;
            for cert in certs {
                let cert = cert.map_err(|e| bad(&e))?;
                roots.add(cert).map_err(|e| bad(&e))?;
            }
            roots
        }
    };
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    cache.insert(ca_file.map(Path::to_path_buf), verifier.clone());
    Ok(verifier)
}

/// The TLS-RPT result type of a certificate error (RFC 8460 §4.3.1).
fn failure_of(e: &rustls::Error) -> TlsFailure {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            TlsFailure::CertificateHostMismatch
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => TlsFailure::CertificateExpired,
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => TlsFailure::CertificateNotTrusted,
        _ => TlsFailure::ValidationFailure,
    }
}

/// Verifies like webpki, or against TLSA records when it has them (DANE, [`crate::dane`]),
/// records the verdict, and accepts the certificate either way (the session decides).
/// Handshake signatures are always checked.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    tlsa: Option<Arc<Vec<postern_dns::dnssec::Tlsa>>>,
    verdict: Mutex<Option<(String, TlsFailure)>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.tlsa {
            Some(records) => {
                let chain: Vec<&[u8]> = intermediates.iter().map(AsRef::as_ref).collect();
                crate::dane::check(records, end_entity, &chain, server_name, now).map(|e| (e, TlsFailure::TlsaInvalid))
            }
            None => self
                .inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                .err()
                .map(|e| (e.to_string(), failure_of(&e))),
        };
        *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = verdict;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Runs the TLS handshake on `tcp` for the next hop `host` (a name or an IP literal), checking
/// its certificate against the trust anchors of `ca_file` (Mozilla's roots when `None`), or,
/// with `tlsa`, against those TLSA records (DANE, RFC 7672 §3).
///
/// # Errors
/// The handshake failed, or the trust anchors cannot be read.
pub async fn handshake(
    tcp: TcpStream,
    host: &str,
    ca_file: Option<&Path>,
    tlsa: Option<Arc<Vec<postern_dns::dnssec::Tlsa>>>,
) -> Result<(TlsStream<TcpStream>, TlsInfo), TlsError> {
    let dane = tlsa.is_some();
    let verifier = Arc::new(RecordingVerifier { inner: webpki(ca_file)?, tlsa, verdict: Mutex::new(None) });
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_owned())
            .map_err(|e| TlsError::ServerName { host: host.to_owned(), why: e.to_string() })?,
    };
    let stream = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(TlsError::Handshake)?;
    let (_, conn) = stream.get_ref();
    let mut info = TlsInfo {
        version: match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
            other => format!("{other:?}"),
        },
        cipher: conn.negotiated_cipher_suite().map_or_else(|| "unknown".into(), |c| format!("{:?}", c.suite())),
        verify_error: None,
        verify_failure: None,
        dane,
    };
    if let Some((text, failure)) = verifier.verdict.lock().unwrap_or_else(|p| p.into_inner()).take() {
        info.verify_error = Some(text);
        info.verify_failure = Some(failure);
    }
    Ok((stream, info))
}
