//! Mail addresses as they appear in the SMTP envelope (RFC 5321 §4.1.2 `Mailbox`).
//!
//! Postern keeps the local part exactly as the client sent it (case is significant to the
//! receiving system, RFC 5321 §2.4) and compares domains case-insensitively. Quoted local parts
//! are kept with their quotes so that the address round-trips unchanged.

use std::fmt;

/// Why a path could not be parsed; each maps to a 501 reply by the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The path is not enclosed in `<` `>` or has trailing garbage.
    #[error("address must be enclosed in <>")]
    Brackets,
    /// No `@` separating local part and domain.
    #[error("address has no domain")]
    NoDomain,
    /// Local part violates RFC 5321 §4.1.2 (Dot-string or Quoted-string).
    #[error("bad local part")]
    LocalPart,
    /// Domain violates RFC 5321 §4.1.2 (sub-domains or address literal).
    #[error("bad domain")]
    Domain,
    /// The path is longer than 256 octets (RFC 5321 §4.5.3.1.3).
    #[error("path too long")]
    TooLong,
}

/// A mailbox `local-part@domain` from the envelope.
///
/// `domain` is stored lower-cased (ASCII; UTF-8 domains lower-cased with Unicode rules) so that
/// comparisons are plain string equality. `local` is stored as sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    local: String,
    domain: String,
}

impl Address {
    /// Builds an address from parts. The domain is lower-cased; nothing else is checked.
    pub fn new(local: impl Into<String>, domain: &str) -> Self {
        Self { local: local.into(), domain: domain.to_lowercase() }
    }

    /// Parses `local@domain` (no angle brackets) per RFC 5321 §4.1.2.
    ///
    /// Accepts Dot-string and Quoted-string local parts, domains of dot-separated labels
    /// (letters, digits, hyphens, and any UTF-8 for SMTPUTF8, RFC 6531 §3.3) and address
    /// literals `[192.0.2.1]` / `[IPv6:...]`.
    ///
    /// # Errors
    /// [`AddressError`] naming the part at fault.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        if s.len() > 254 {
            return Err(AddressError::TooLong);
        }
        let at = s.rfind('@').ok_or(AddressError::NoDomain)?;
        let (local, domain) = (&s[..at], &s[at + 1..]);
        check_local(local)?;
        check_domain(domain)?;
        Ok(Self::new(local, domain))
    }

    /// The local part as sent, e.g. `Bob+tag` for `Bob+tag@example.test`.
    pub fn local_part(&self) -> &str {
        &self.local
    }

    /// The domain, lower-cased.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether any octet is non-ASCII (needs SMTPUTF8, RFC 6531 §3.4).
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

fn check_local(local: &str) -> Result<(), AddressError> {
    if local.is_empty() || local.len() > 64 && local.is_ascii() {
        return Err(AddressError::LocalPart);
    }
    if local.starts_with('"') {
        // Quoted-string: "..." with qtextSMTP or quoted-pairSMTP (RFC 5321 §4.1.2).
        if local.len() < 2 || !local.ends_with('"') {
            return Err(AddressError::LocalPart);
        }
        let inner = &local.as_bytes()[1..local.len() - 1];
        let mut escaped = false;
        for &b in inner {
            if escaped {
                escaped = false;
                if !(32..=126).contains(&b) {
                    return Err(AddressError::LocalPart);
                }
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' || (b < 32 && b != b'\t') || b == 127 {
                return Err(AddressError::LocalPart);
            }
        }
        return if escaped { Err(AddressError::LocalPart) } else { Ok(()) };
    }
    // Dot-string: atoms separated by single dots.
    for atom in local.split('.') {
        if atom.is_empty() || !atom.chars().all(is_atext) {
            return Err(AddressError::LocalPart);
        }
    }
    Ok(())
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn check_domain(domain: &str) -> Result<(), AddressError> {
    if domain.is_empty() || domain.len() > 255 {
        return Err(AddressError::Domain);
    }
    if let Some(lit) = domain.strip_prefix('[') {
        let lit = lit.strip_suffix(']').ok_or(AddressError::Domain)?;
        let ok = match lit.get(..5) {
            Some(p) if p.eq_ignore_ascii_case("IPv6:") => lit[5..].parse::<std::net::Ipv6Addr>().is_ok(),
            _ => lit.parse::<std::net::Ipv4Addr>().is_ok(),
        };
        return if ok { Ok(()) } else { Err(AddressError::Domain) };
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    for label in domain.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii());
        if !ok {
            return Err(AddressError::Domain);
        }
    }
    Ok(())
}

/// The reverse-path of MAIL FROM: an address, or the null sender `<>` used by DSNs
/// (RFC 5321 §4.5.5), which must never be bounced to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReversePath {
    /// `MAIL FROM:<>`.
    Null,
    /// `MAIL FROM:<local@domain>`.
    Mailbox(Address),
}

impl ReversePath {
    /// The address, or `None` for the null sender.
    #[must_use]
    pub fn mailbox(&self) -> Option<&Address> {
        match self {
            Self::Null => None,
            Self::Mailbox(a) => Some(a),
        }
    }
}

impl fmt::Display for ReversePath {
    /// Formats with angle brackets: `<>` or `<a@b>`, as in logs and Return-Path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("<>"),
            Self::Mailbox(a) => write!(f, "<{a}>"),
        }
    }
}

/// The forward-path of RCPT TO (RFC 5321 §4.1.2: `Forward-path = Path / "<Postmaster>"`): an
/// address, or the bare `<postmaster>` that every SMTP server must take (§4.5.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// `RCPT TO:<postmaster>` without a domain (any case; kept as sent).
    Postmaster(String),
    /// `RCPT TO:<local@domain>`.
    Mailbox(Address),
}

impl ForwardPath {
    /// Parses a forward-path without its angle brackets: `postmaster` (any case), or an
    /// address as [`Address::parse`] takes it.
    ///
    /// # Errors
    /// As [`Address::parse`].
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        if s.eq_ignore_ascii_case("postmaster") {
            return Ok(Self::Postmaster(s.to_owned()));
        }
        Address::parse(s).map(Self::Mailbox)
    }

    /// The local part: `postmaster` as sent, or the address's.
    #[must_use]
    pub fn local_part(&self) -> &str {
        match self {
            Self::Postmaster(p) => p,
            Self::Mailbox(a) => a.local_part(),
        }
    }

    /// The domain, or `None` for a bare `<postmaster>`.
    #[must_use]
    pub fn domain(&self) -> Option<&str> {
        match self {
            Self::Postmaster(_) => None,
            Self::Mailbox(a) => Some(a.domain()),
        }
    }
}

impl From<Address> for ForwardPath {
    fn from(a: Address) -> Self {
        Self::Mailbox(a)
    }
}

impl fmt::Display for ForwardPath {
    /// Formats without angle brackets, as [`Address`] does: `postmaster` or `a@b`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postmaster(p) => f.write_str(p),
            Self::Mailbox(a) => a.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_paths_are_addresses_or_postmaster() {
        assert_eq!(ForwardPath::parse("PostMaster").unwrap().to_string(), "PostMaster");
        assert_eq!(ForwardPath::parse("PostMaster").unwrap().domain(), None);
        let f = ForwardPath::parse("bob+x@Example.TEST").unwrap();
        assert_eq!((f.local_part(), f.domain()), ("bob+x", Some("example.test")));
        assert_eq!(ForwardPath::parse("nodomain"), Err(AddressError::NoDomain));
    }

    #[test]
    fn parses_common_forms() {
        let a = Address::parse("Bob+Tag@Example.TEST").unwrap();
        assert_eq!(a.local_part(), "Bob+Tag");
        assert_eq!(a.domain(), "example.test");
        assert!(Address::parse("\"john doe\"@example.test").is_ok());
        assert!(Address::parse("x@[192.0.2.1]").is_ok());
        assert!(Address::parse("x@[IPv6:::1]").is_ok());
        assert!(Address::parse("jörg@bücher.test").unwrap().is_utf8());
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(Address::parse("nodomain"), Err(AddressError::NoDomain));
        assert_eq!(Address::parse("a..b@x.test"), Err(AddressError::LocalPart));
        assert_eq!(Address::parse(".a@x.test"), Err(AddressError::LocalPart));
        assert_eq!(Address::parse("a b@x.test"), Err(AddressError::LocalPart));
        assert_eq!(Address::parse("a@-x.test"), Err(AddressError::Domain));
        assert_eq!(Address::parse("a@x..test"), Err(AddressError::Domain));
        assert_eq!(Address::parse("a@[999.1.1.1]"), Err(AddressError::Domain));
        assert_eq!(Address::parse("\"unterminated@x.test"), Err(AddressError::LocalPart));
    }
}
