//! DKIM keys: loading the PEM files of `[[dkim.key]]` (RSA PKCS#1 or PKCS#8, Ed25519 PKCS#8 as
//! openssl and `postern dkim keygen` write them), generating new ones, and the DNS TXT record
//! that publishes the public key (RFC 6376 §3.6.1), split into strings of at most 255 bytes
//! (RFC 1035 §3.3.14) as zone files need.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::dkim::generate::DkimKeyPair;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

/// A loaded signing key.
pub enum Key {
    /// RSA-SHA256 (`a=rsa-sha256`), 2048 bits or more (ring refuses smaller keys).
    Rsa(RsaKey<Sha256>),
    /// Ed25519-SHA256 (`a=ed25519-sha256`, RFC 8463).
    Ed25519(Ed25519Key),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Rsa(_) => "Key::Rsa",
            Self::Ed25519(_) => "Key::Ed25519",
        })
    }
}

/// Key algorithms of `postern dkim keygen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSA (`k=rsa`).
    Rsa,
    /// Ed25519 (`k=ed25519`).
    Ed25519,
}

/// A DKIM key that cannot be read or made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file and what is wrong with it: unreadable, not PEM, or not an RSA (2048 bits or
    /// more) or Ed25519 key.
    #[error("{}: {why}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        why: String,
    },
    /// An RSA key shorter than RFC 8301 §3.2 allows.
    #[error("{0} bits is too weak: use 2048 or more (RFC 8301 §3.2)")]
    TooWeak(usize),
    /// The library could not make the key.
    #[error("{0}")]
    Generate(String),
}

/// Reads a private key file.
///
/// # Errors
/// A message naming the file: unreadable, not PEM, or not an RSA (≥ 2048 bits) or Ed25519 key.
pub fn load(path: &Path) -> Result<Key, KeyError> {
    load_with(path, &postern_config::Disk)
}

/// As [`load`], reading the file from `files` (the privileged helper after a privilege drop).
///
/// # Errors
/// As [`load`].
pub fn load_with(path: &Path, files: &dyn postern_config::FileSource) -> Result<Key, KeyError> {
    let bad = |why: String| KeyError::File { path: path.to_path_buf(), why };
    let pem = files.read(path).map_err(|e| bad(e.to_string()))?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad(format!("not a PEM private key ({e:?})")))?;
    if let PrivateKeyDer::Pkcs8(p8) = &der
        && let Ok(k) = Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der())
    {
        return Ok(Key::Ed25519(k));
    }
    RsaKey::<Sha256>::from_key_der(der)
        .map(Key::Rsa)
        .map_err(|e| bad(format!("not a usable RSA (2048 bits or more) or Ed25519 key: {e}")))
}

/// A new key pair.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The private key, PEM (`RSA PRIVATE KEY` PKCS#1, or `PRIVATE KEY` PKCS#8 for Ed25519).
    pub private_pem: String,
    /// The public key as the `p=` tag wants it, base64.
    pub public_base64: String,
    /// Its algorithm.
    pub algorithm: Algorithm,
}

/// Generates a key: RSA of `bits` bits (at least 2048), or Ed25519.
///
/// # Errors
/// Too few bits, or the library's error.
pub fn generate(algorithm: Algorithm, bits: usize) -> Result<Generated, KeyError> {
    let (pair, label) = match algorithm {
        Algorithm::Rsa => {
            if bits < 2048 {
                return Err(KeyError::TooWeak(bits));
            }
            (DkimKeyPair::generate_rsa(bits).map_err(|e| KeyError::Generate(e.to_string()))?, "RSA PRIVATE KEY")
        }
        Algorithm::Ed25519 => {
            (DkimKeyPair::generate_ed25519().map_err(|e| KeyError::Generate(e.to_string()))?, "PRIVATE KEY")
        }
    };
    let public_base64 = match algorithm {
        Algorithm::Rsa => STANDARD.encode(rsa_spki(pair.public_key())),
        Algorithm::Ed25519 => STANDARD.encode(pair.public_key()),
    };
    Ok(Generated { private_pem: pem(label, pair.private_key()), public_base64, algorithm })
}

/// The `p=` value (base64) of a loaded key, with its algorithm.
pub fn public_base64(key: &Key) -> (Algorithm, String) {
    match key {
        Key::Rsa(k) => (Algorithm::Rsa, STANDARD.encode(rsa_spki(&k.public_key()))),
        Key::Ed25519(k) => (Algorithm::Ed25519, STANDARD.encode(k.public_key())),
    }
}

/// A PKCS#1 `RSAPublicKey` wrapped as X.509 `SubjectPublicKeyInfo` (rsaEncryption), the form
/// `openssl rsa -pubout` gives and every DKIM verifier accepts (RFC 6376 §3.6.1 allows both).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    // SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }
    const ALGORITHM: [u8; 15] =
        [0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
    let mut bit_string = vec![0u8];
    bit_string.extend_from_slice(pkcs1);
    let mut body = ALGORITHM.to_vec();
    der(&mut body, 0x03, &bit_string);
    let mut out = Vec::new();
    der(&mut out, 0x30, &body);
    out
}

/// Appends a DER tag-length-value.
fn der(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    let n = value.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(value);
}

/// PEM armour: base64 in lines of 64 characters (RFC 7468).
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The TXT record value for a public key: `v=DKIM1; k=rsa|ed25519; p=...`.
pub fn txt_value(algorithm: Algorithm, public_base64: &str) -> String {
    let k = match algorithm {
        Algorithm::Rsa => "rsa",
        Algorithm::Ed25519 => "ed25519",
    };
    format!("v=DKIM1; k={k}; p={public_base64}")
}

/// `value` as zone-file character strings of at most 255 bytes each, quoted and separated by
/// spaces (`"v=DKIM1; k=rsa; p=MIIB..." "...rest"`), as RFC 1035 §3.3.14 requires.
pub fn zone_strings(value: &str) -> Vec<String> {
    value.as_bytes().chunks(255).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect()
}

/// The zone-file lines publishing the key: `SELECTOR._domainkey.DOMAIN. IN TXT ( "..." "..." )`.
pub fn zone_record(selector: &str, domain: &str, value: &str) -> String {
    let strings = zone_strings(value);
    let mut out = format!("{selector}._domainkey.{domain}. IN TXT (\n");
    for s in strings {
        out.push_str(&format!("    {s}\n"));
    }
    out.push_str(")\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_at_most_255_bytes() {
        let value = txt_value(Algorithm::Rsa, &"A".repeat(392));
        let strings = zone_strings(&value);
        assert_eq!(strings.len(), 2);
        assert!(strings.iter().all(|s| s.len() <= 257));
        let joined: String = strings.iter().map(|s| s.trim_matches('"')).collect();
        assert_eq!(joined, value);
    }

    #[test]
    fn generated_keys_load_back() {
        let dir = std::env::temp_dir().join(format!("postern-dkim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (alg, bits) in [(Algorithm::Ed25519, 0), (Algorithm::Rsa, 2048)] {
            let g = generate(alg, bits).unwrap();
            let path = dir.join(format!("{alg:?}.pem"));
            std::fs::write(&path, &g.private_pem).unwrap();
            let k = load(&path).unwrap();
            assert_eq!(matches!(k, Key::Ed25519(_)), alg == Algorithm::Ed25519);
        }
        assert!(generate(Algorithm::Rsa, 1024).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
