//! The users table: one mailbox per line, `name[:password-hash[:more fields]]`. Extra
//! colon-separated fields (Dovecot passwd-file's uid, gid, home...) are ignored, so one file can
//! serve Dovecot and Postern. Password hashes use Dovecot's formats: `{ARGON2ID}$argon2id$...`
//! (also `{ARGON2I}`), `{SHA512-CRYPT}$6$...` and `{SHA256-CRYPT}$5$...`; a hash without a
//! `{SCHEME}` prefix is recognised by its modular-crypt prefix, as Dovecot's `CRYPT` scheme does.
//! Verification lives in `postern_policy::credentials`.

use crate::error::ValueError;
use std::collections::HashMap;
use std::path::Path;

use super::entries;
use crate::error::ConfigError;

pub(super) fn parse(path: &Path, text: &str, errors: &mut Vec<ConfigError>) -> HashMap<String, Option<String>> {
    let mut users = HashMap::new();
    for (n, line) in entries(text) {
        let mut fields = line.trim().splitn(3, ':');
        let name = fields.next().unwrap_or("").trim().to_lowercase();
        let hash = fields.next().map(str::trim).filter(|h| !h.is_empty()).map(str::to_owned);
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '@') {
            errors.push(ConfigError::new(
                path,
                Some(n),
                &name,
                "a mailbox name must be non-empty, without spaces or @",
            ));
        } else if let Some(Err(e)) = hash.as_deref().map(parse_password_hash) {
            errors.push(ConfigError::new(path, Some(n), &name, e));
        } else if users.insert(name.clone(), hash).is_some() {
            errors.push(ConfigError::new(path, Some(n), &name, "duplicate mailbox"));
        }
    }
    users
}

/// The hash families Postern verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Argon2id or Argon2i, PHC string format (RFC 9106).
    Argon2,
    /// SHA-512-crypt or SHA-256-crypt (Drepper's crypt(3) `$6$` / `$5$`).
    ShaCrypt,
}

/// The scheme of a stored hash and the hash without its `{SCHEME}` prefix.
///
/// # Errors
/// A message naming the supported schemes, for an unknown or malformed prefix.
pub fn parse_password_hash(stored: &str) -> Result<(Scheme, &str), ValueError> {
    let (prefix, rest) = match stored.strip_prefix('{').and_then(|s| s.split_once('}')) {
        Some((scheme, rest)) => (Some(scheme.to_ascii_uppercase()), rest),
        None => (None, stored),
    };
    let by_shape = if rest.starts_with("$argon2id$") || rest.starts_with("$argon2i$") {
        Some(Scheme::Argon2)
    } else if rest.starts_with("$6$") || rest.starts_with("$5$") {
        Some(Scheme::ShaCrypt)
    } else {
        None
    };
    let wanted = match prefix.as_deref() {
        None | Some("CRYPT") => by_shape,
        Some("ARGON2ID" | "ARGON2I") => Some(Scheme::Argon2).filter(|_| by_shape == Some(Scheme::Argon2)),
        Some("SHA512-CRYPT" | "SHA256-CRYPT") => Some(Scheme::ShaCrypt).filter(|_| by_shape == Some(Scheme::ShaCrypt)),
        Some(_) => None,
    };
    wanted.map(|s| (s, rest)).ok_or_else(|| {
        "unsupported password hash: use {ARGON2ID}$argon2id$..., {SHA512-CRYPT}$6$... or {SHA256-CRYPT}$5$... \
         (`postern user passwd NAME` writes one)"
            .into()
    })
}
