//! DKIM signing (RFC 6376 §5) of mail that leaves: which From addresses are signed (`[dkim]
//! sign`, like opendkim's SigningTable), with which keys (every `[[dkim.key]]` of the From
//! domain, else of its closest parent domain that has keys), relaxed/relaxed canonicalisation,
//! the header set RFC 6376 §5.4.1 recommends, and From signed one time more than it occurs
//! (oversigning: a From added in transit breaks the signature).

use mail_auth::AuthenticatedMessage;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done, NeedDomain};
use postern_config::schema::Dkim;

use crate::keys::Key;

/// RFC 6376 §5.4.1's recommended header fields; From twice (oversigned).
pub const SIGNED_HEADERS: [&str; 20] = [
    "From",
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Resent-Date",
    "Resent-From",
    "Resent-To",
    "Resent-Cc",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
];

/// One loaded `[[dkim.key]]`, ready to sign.
pub struct SigningKey {
    /// `d=`, lower-case.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    signer: KeySigner,
}

enum KeySigner {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(d={} s={})", self.domain, self.selector)
    }
}

/// The signing configuration in force.
#[derive(Debug, Default)]
pub struct Signer {
    keys: Vec<SigningKey>,
    patterns: Option<Vec<String>>,
}

/// A message that should be DKIM-signed but could not be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signing as d={domain} s={selector}: {why}")]
pub struct SignError {
    /// `d=`.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// The library's reason.
    pub why: String,
}

impl Signer {
    /// Loads every key of `config`.
    ///
    /// # Errors
    /// One message per key file that cannot be used.
    pub fn load(config: &Dkim) -> Result<Self, Vec<String>> {
        Self::load_with(config, &postern_config::Disk)
    }

    /// As [`Signer::load`], reading the key files from `files`.
    ///
    /// # Errors
    /// As [`Signer::load`].
    pub fn load_with(config: &Dkim, files: &dyn postern_config::FileSource) -> Result<Self, Vec<String>> {
        let mut keys = Vec::new();
        let mut errors = Vec::new();
        for k in &config.key {
            match crate::keys::load_with(&k.private_key, files) {
                Ok(key) => {
                    let signer = match key {
                        Key::Rsa(key) => KeySigner::Rsa(configure(DkimSigner::from_key(key), &k.domain, &k.selector)),
                        Key::Ed25519(key) => {
                            KeySigner::Ed25519(configure(DkimSigner::from_key(key), &k.domain, &k.selector))
                        }
                    };
                    keys.push(SigningKey { domain: k.domain.clone(), selector: k.selector.clone(), signer });
                }
                Err(e) => errors.push(format!("[[dkim.key]] {} {}: {e}", k.domain, k.selector)),
            }
        }
        let patterns = config.sign.as_ref().map(|p| p.iter().map(|s| s.to_lowercase()).collect());
        if errors.is_empty() { Ok(Self { keys, patterns }) } else { Err(errors) }
    }

    /// Whether any key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that sign mail from `from` (an address, lower-case): none when `from` matches no
    /// `sign` pattern; else the keys of its domain or of the closest parent domain with keys.
    pub fn keys_for(&self, from: &str) -> Vec<&SigningKey> {
        let from = from.to_lowercase();
        let Some((_, domain)) = from.rsplit_once('@') else { return Vec::new() };
        if let Some(patterns) = &self.patterns
            && !patterns.iter().any(|p| glob(p, &from))
        {
            return Vec::new();
        }
        let mut d = domain;
        loop {
            let found: Vec<&SigningKey> = self.keys.iter().filter(|k| k.domain == d).collect();
            if !found.is_empty() {
                return found;
            }
            match d.split_once('.') {
                Some((_, parent)) if parent.contains('.') => d = parent,
                _ => return Vec::new(),
            }
        }
    }

    /// The `DKIM-Signature:` header fields (CRLF-terminated) to prepend to `message`, one per
    /// key; `Ok(None)` when the message is not to be signed (no From, or no key for it).
    ///
    /// # Errors
    /// A message that should be signed but cannot be (unparsable header section, signing error).
    pub fn sign(&self, message: &[u8]) -> Result<Option<(String, String)>, SignError> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let from = AuthenticatedMessage::parse(message).map(|m| m.from().to_owned()).unwrap_or_default();
        let keys = self.keys_for(&from);
        if keys.is_empty() {
            return Ok(None);
        }
        let mut headers = String::new();
        let mut names = Vec::new();
        for k in keys {
            let signature = match &k.signer {
                KeySigner::Rsa(s) => s.sign(message),
                KeySigner::Ed25519(s) => s.sign(message),
            };
            let signature = signature.map_err(|e| SignError {
                domain: k.domain.clone(),
                selector: k.selector.clone(),
                why: e.to_string(),
            })?;
            headers.push_str(&signature.to_header());
            names.push(format!("d={} s={}", k.domain, k.selector));
        }
        Ok(Some((headers, names.join(", "))))
    }
}

fn configure<T: mail_auth::common::crypto::SigningKey>(
    signer: DkimSigner<T, NeedDomain>,
    domain: &str,
    selector: &str,
) -> DkimSigner<T, Done> {
    signer
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

/// `*` matches any run of characters (patterns and text lower-case).
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(text) = text.strip_prefix(head) else { return false };
            (0..=text.len()).any(|i| text.is_char_boundary(i) && glob(rest, &text[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns() {
        assert!(glob("*@example.test", "a@example.test"));
        assert!(!glob("*@example.test", "a@sub.example.test"));
        assert!(glob("*@*.example.test", "a@sub.example.test"));
        assert!(!glob("*@*.example.test", "a@example.test"));
        assert!(glob("alice@example.test", "alice@example.test"));
    }
}
