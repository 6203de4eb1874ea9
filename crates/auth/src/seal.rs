//! ARC sealing (RFC 8617) of forwarded mail with mail-auth: when Postern forwards a message from
//! outside to another domain, it adds an ARC set (ARC-Authentication-Results with its own
//! checks, ARC-Message-Signature, ARC-Seal with `cv=` from the incoming chain), signed with the
//! `[[dkim.key]]` of the forwarding domain (`[forwarding] srs_domain`, or its closest parent
//! with a key). A receiver that trusts our seal can then accept the message on the results we
//! recorded even when forwarding broke SPF or DKIM.

use mail_auth::arc::ArcSealer;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::Done;
use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults};
use postern_config::schema::Dkim;

use crate::keys::Key;

/// The header fields the ARC-Message-Signature covers (those present are signed).
const SEALED_HEADERS: [&str; 10] =
    ["From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To", "In-Reply-To", "References", "DKIM-Signature"];

enum Sealer {
    Rsa(ArcSealer<RsaKey<Sha256>, Done>),
    Ed25519(ArcSealer<Ed25519Key, Done>),
}

/// Why forwarded mail could not be sealed, or the sealing key not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The `[[dkim.key]]` file cannot be used.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    /// mail-auth refused to seal: the incoming chain failed (`cv=fail` cannot be sealed over,
    /// RFC 8617 §5.1.2), no header to sign, or signing failed.
    #[error("ARC seal as d={domain} s={selector}: {why}")]
    Seal {
        /// `d=`.
        domain: String,
        /// `s=`.
        selector: String,
        /// mail-auth's reason.
        why: String,
    },
    /// The incoming chain is too malformed to be read: there is no last instance to seal
    /// after, and a fresh `i=1 cv=none` would hide the failure (RFC 8617 §5.1.2).
    #[error("the incoming ARC chain is malformed ({0}): forwarded without a seal")]
    Malformed(String),
}

/// The key that seals forwarded mail, for `d=` `domain`, `s=` `selector`.
pub struct ArcKey {
    /// `d=` of the seal.
    pub domain: String,
    /// `s=` of the seal.
    pub selector: String,
    sealer: Sealer,
}

impl std::fmt::Debug for ArcKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArcKey(d={} s={})", self.domain, self.selector)
    }
}

impl ArcKey {
    /// The sealing key for `forwarding_domain`: the `[[dkim.key]]` of that domain, else of its
    /// closest parent domain with one; `None` without either.
    ///
    /// # Errors
    /// [`SealError::Key`]: the key file cannot be read or used (named).
    pub fn load(
        dkim: &Dkim,
        forwarding_domain: &str,
        files: &dyn postern_config::FileSource,
    ) -> Result<Option<Self>, SealError> {
        let mut d = forwarding_domain.to_lowercase();
        let k = loop {
            if let Some(k) = dkim.key.iter().find(|k| k.domain == d) {
                break k;
            }
            match d.split_once('.') {
                Some((_, parent)) if parent.contains('.') => d = parent.to_owned(),
                _ => return Ok(None),
            }
        };
        let key = crate::keys::load_with(&k.private_key, files).map_err(SealError::Key)?;
        let sealer = match key {
            Key::Rsa(key) => {
                Sealer::Rsa(ArcSealer::from_key(key).domain(&k.domain).selector(&k.selector).headers(SEALED_HEADERS))
            }
            Key::Ed25519(key) => Sealer::Ed25519(
                ArcSealer::from_key(key).domain(&k.domain).selector(&k.selector).headers(SEALED_HEADERS),
            ),
        };
        Ok(Some(Self { domain: k.domain.clone(), selector: k.selector.clone(), sealer }))
    }

    /// The ARC set for `message` (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results,
    /// CRLF-terminated) after the checks `results` and the incoming chain `arc`.
    ///
    /// # Errors
    /// [`SealError::Seal`]: the chain cannot be sealed (its last seal says `cv=fail`, RFC 8617
    /// §5.1.2) or signing failed.
    pub fn seal(
        &self,
        message: &AuthenticatedMessage<'_>,
        results: &AuthenticationResults<'_>,
        arc: &ArcOutput<'_>,
    ) -> Result<String, SealError> {
        let set = match &self.sealer {
            Sealer::Rsa(s) => s.seal(message, results, arc),
            Sealer::Ed25519(s) => s.seal(message, results, arc),
        };
        set.map(|s| s.to_header()).map_err(|e| SealError::Seal {
            domain: self.domain.clone(),
            selector: self.selector.clone(),
            why: e.to_string(),
        })
    }
}
