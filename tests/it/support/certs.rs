//! Certificates made at test time with rcgen, shaped like a real deployment: a root CA that
//! clients trust, an intermediate that signs the server certificate, and the two files certbot
//! writes (`fullchain.pem` = leaf + intermediate, `privkey.pem`). A client that trusts only the
//! root can verify the server only if the server presents the full chain.

use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;

/// A root and an intermediate CA.
pub struct Pki {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate as certbot writes it.
pub struct ServerCert {
    /// Leaf then intermediate, PEM.
    pub fullchain: String,
    /// The leaf's private key, PKCS#8 PEM.
    pub privkey: String,
    /// The leaf, DER (to recognise it on the client side).
    pub leaf_der: Vec<u8>,
    /// The leaf's SubjectPublicKeyInfo, DER (for TLSA records with selector 1).
    pub spki_der: Vec<u8>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p
}

impl Pki {
    pub fn new() -> Self {
        let root = CertifiedIssuer::self_signed(ca_params("Postern Test Root"), KeyPair::generate().unwrap()).unwrap();
        let intermediate =
            CertifiedIssuer::signed_by(ca_params("Postern Test Intermediate"), KeyPair::generate().unwrap(), &root)
                .unwrap();
        Self { root, intermediate }
    }

    /// The root, PEM (for Python's `cafile`, swaks, openssl).
    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// A server certificate for `names` signed by the intermediate; `expired` makes one whose
    /// validity ended in 2021; otherwise it is valid for 90 days from now.
    pub fn server_cert(&self, names: &[&str], expired: bool) -> ServerCert {
        let mut p = CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        } else {
            // Let's Encrypt's 90 days from now.
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            let epoch = rcgen::date_time_ymd(1970, 1, 1);
            p.not_before = epoch + (now - std::time::Duration::from_secs(3600));
            p.not_after = epoch + (now + std::time::Duration::from_secs(90 * 86_400));
        }
        let key = KeyPair::generate().unwrap();
        let leaf = p.signed_by(&key, &self.intermediate).unwrap();
        use rcgen::PublicKeyData as _;
        ServerCert {
            fullchain: format!("{}{}", leaf.pem(), self.intermediate.pem()),
            privkey: key.serialize_pem(),
            leaf_der: leaf.der().to_vec(),
            spki_der: key.subject_public_key_info(),
        }
    }

    /// The intermediate CA's certificate, DER (for DANE-TA records).
    pub fn intermediate_der(&self) -> Vec<u8> {
        self.intermediate.der().to_vec()
    }

    /// A rustls client configuration trusting only the root.
    /// The root certificate, DER.
    pub fn root_der(&self) -> Vec<u8> {
        self.root.der().to_vec()
    }

    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client_config_with(&[&rustls::version::TLS13, &rustls::version::TLS12])
    }

    /// As [`Pki::client_config`], offering only these protocol versions.
    pub fn client_config_with(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(self.root.der().to_vec())).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

impl ServerCert {
    /// A rustls server configuration presenting this certificate and its chain (for a test
    /// peer).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject as _;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.fullchain.as_bytes()).map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_slice(self.privkey.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }

    /// Writes `fullchain.pem` and `privkey.pem` into `dir` (replacing them).
    pub fn write(&self, dir: &Path) {
        std::fs::write(dir.join("fullchain.pem"), &self.fullchain).unwrap();
        std::fs::write(dir.join("privkey.pem"), &self.privkey).unwrap();
    }
}
