//! An SPF record (RFC 7208 §4.5, §4.6, §12): `v=spf1` and its terms, parsed strictly. Anything
//! the ABNF does not allow is a syntax error (the caller's `permerror`): a character outside
//! printable ASCII, an unknown mechanism, a CIDR length out of range or with a leading zero, a
//! domain-spec whose last label is not a top label, a duplicated `redirect` or `exp`.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::macros::MacroString;

/// Why an SPF record does not parse (RFC 7208 §4.6: a permerror).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SyntaxError(pub(crate) String);

impl From<String> for SyntaxError {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for SyntaxError {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// A [`SyntaxError`] from `format!` arguments.
macro_rules! syntax {
    ($($t:tt)*) => {
        SyntaxError(format!($($t)*))
    };
}
pub(crate) use syntax;

/// `+`, `-`, `~`, `?` (RFC 7208 §4.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Qualifier {
    Pass,
    Fail,
    SoftFail,
    Neutral,
}

/// A mechanism (RFC 7208 §5) with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mechanism {
    All,
    Include(MacroString),
    /// `a[:domain][/cidr4][//cidr6]`.
    A(Option<MacroString>, u8, u8),
    /// `mx[:domain][/cidr4][//cidr6]`.
    Mx(Option<MacroString>, u8, u8),
    Ptr(Option<MacroString>),
    Ip4(Ipv4Addr, u8),
    Ip6(Ipv6Addr, u8),
    Exists(MacroString),
}

/// A parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) directives: Vec<(Qualifier, Mechanism)>,
    pub(crate) redirect: Option<MacroString>,
    pub(crate) exp: Option<MacroString>,
}

/// Whether `txt` is an SPF record: `v=spf1` alone or followed by a space (RFC 7208 §4.5).
pub(crate) fn is_spf(txt: &str) -> bool {
    let b = txt.as_bytes();
    b.len() >= 6 && b[..6].eq_ignore_ascii_case(b"v=spf1") && (b.len() == 6 || b[6] == b' ')
}

impl Record {
    /// Parses a record that [`is_spf`].
    ///
    /// # Errors
    /// Why the record is malformed (RFC 7208 §4.6: the result is `permerror`).
    pub(crate) fn parse(txt: &str) -> Result<Self, SyntaxError> {
        if let Some(c) = txt.chars().find(|c| !(' '..='~').contains(c)) {
            return Err(syntax!("character {c:?} outside printable ASCII"));
        }
        let mut record = Self { directives: Vec::new(), redirect: None, exp: None };
        for term in txt[6..].split(' ').filter(|t| !t.is_empty()) {
            record.term(term)?;
        }
        Ok(record)
    }

    fn term(&mut self, term: &str) -> Result<(), SyntaxError> {
        // A modifier is `name=value` with a name of ALPHA *( ALPHA / DIGIT / - / _ / . ).
        if let Some((name, value)) = term.split_once('=')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !name.contains(['/', ':'])
        {
            if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
                return Err(syntax!("{term:?}: not a modifier name"));
            }
            let slot = match name.to_ascii_lowercase().as_str() {
                "redirect" => &mut self.redirect,
                "exp" => &mut self.exp,
                // Unknown modifiers are ignored, once they parse (RFC 7208 §6).
                _ => return MacroString::parse(value, false).map(|_| ()),
            };
            if slot.is_some() {
                return Err(syntax!("{name} given twice"));
            }
            *slot = Some(MacroString::domain_spec(value)?);
            return Ok(());
        }
        let (qualifier, rest) = match term.as_bytes()[0] {
            b'+' => (Qualifier::Pass, &term[1..]),
            b'-' => (Qualifier::Fail, &term[1..]),
            b'~' => (Qualifier::SoftFail, &term[1..]),
            b'?' => (Qualifier::Neutral, &term[1..]),
            _ => (Qualifier::Pass, term),
        };
        self.directives.push((qualifier, mechanism(rest)?));
        Ok(())
    }

    /// Whether an `all` mechanism is anywhere in the record (then `redirect` is ignored).
    pub(crate) fn has_all(&self) -> bool {
        self.directives.iter().any(|(_, m)| *m == Mechanism::All)
    }
}

fn mechanism(text: &str) -> Result<Mechanism, SyntaxError> {
    let split = text.find([':', '/']).unwrap_or(text.len());
    let (name, rest) = text.split_at(split);
    let arg = |rest: &str| rest.strip_prefix(':').map(str::to_owned);
    match name.to_ascii_lowercase().as_str() {
        "all" if rest.is_empty() => Ok(Mechanism::All),
        "include" => Ok(Mechanism::Include(required(rest)?)),
        "exists" => Ok(Mechanism::Exists(required(rest)?)),
        "ptr" if !rest.starts_with('/') => {
            Ok(Mechanism::Ptr(arg(rest).map(|d| MacroString::domain_spec(&d)).transpose()?))
        }
        "a" | "mx" => {
            let (domain, v4, v6) = dual_cidr(rest)?;
            let domain = domain.map(|d| MacroString::domain_spec(&d)).transpose()?;
            Ok(if name.eq_ignore_ascii_case("a") {
                Mechanism::A(domain, v4, v6)
            } else {
                Mechanism::Mx(domain, v4, v6)
            })
        }
        "ip4" => {
            let (net, bits) = network(rest.strip_prefix(':').ok_or("ip4 without a network")?, 32)?;
            // A dotted quad only (RFC 7208 §5.6: ip4-network).
            if net.split('.').count() != 4 {
                return Err(syntax!("ip4:{net}: not an IPv4 address"));
            }
            Ok(Mechanism::Ip4(net.parse().map_err(|_| format!("ip4:{net}: not an IPv4 address"))?, bits))
        }
        "ip6" => {
            let (net, bits) = network(rest.strip_prefix(':').ok_or("ip6 without a network")?, 128)?;
            Ok(Mechanism::Ip6(net.parse().map_err(|_| format!("ip6:{net}: not an IPv6 address"))?, bits))
        }
        _ => Err(syntax!("{text:?}: unknown mechanism")),
    }
}

fn required(rest: &str) -> Result<MacroString, SyntaxError> {
    MacroString::domain_spec(rest.strip_prefix(':').ok_or("a domain is required")?)
}

/// `/N` of at most `max`, without a leading zero (RFC 7208 §5.6: `ip4-cidr-length`).
fn cidr(digits: &str, max: u8) -> Result<u8, SyntaxError> {
    let ok = !digits.is_empty()
        && digits.len() <= 3
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    let n: u8 = if ok {
        digits.parse().map_err(|_| format!("/{digits}"))?
    } else {
        return Err(syntax!("/{digits}: bad CIDR length"));
    };
    if n > max { Err(syntax!("/{n}: more than {max} bits")) } else { Ok(n) }
}

fn network(text: &str, max: u8) -> Result<(&str, u8), SyntaxError> {
    match text.split_once('/') {
        Some((net, bits)) => Ok((net, cidr(bits, max)?)),
        None => Ok((text, max)),
    }
}

/// `[:domain][/cidr4][//cidr6]` after `a` or `mx`: the domain-spec (which may hold `/` and `:`),
/// and the CIDR lengths taken from the end.
fn dual_cidr(rest: &str) -> Result<(Option<String>, u8, u8), SyntaxError> {
    let mut rest = rest;
    let mut v6 = 128;
    if let Some(i) = rest.rfind("//")
        && rest[i + 2..].bytes().all(|b| b.is_ascii_digit())
    {
        v6 = cidr(&rest[i + 2..], 128)?;
        rest = &rest[..i];
    }
    let mut v4 = 32;
    if let Some(i) = rest.rfind('/')
        && rest[i + 1..].bytes().all(|b| b.is_ascii_digit())
    {
        v4 = cidr(&rest[i + 1..], 32)?;
        rest = &rest[..i];
    }
    match rest.strip_prefix(':') {
        Some(d) => Ok((Some(d.to_owned()), v4, v6)),
        None if rest.is_empty() => Ok((None, v4, v6)),
        None => Err(syntax!("{rest:?}: expected :domain or a CIDR length")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_strictly() {
        assert!(is_spf("v=spf1") && is_spf("V=SPF1 -all") && !is_spf("v=spf10") && !is_spf("v=spf1\t-all"));
        let r = Record::parse(
            "v=spf1 a:foo:bar/baz.example.com mx/24//64 -ip4:192.0.2.0/24 ~all moo.cow-far_out=man:dog/cat",
        )
        .unwrap();
        assert_eq!(r.directives.len(), 4);
        assert_eq!(r.directives[1].1, Mechanism::Mx(None, 24, 64));
        for bad in [
            "v=spf1 ip4:1.2.3.4/33",
            "v=spf1 ip4:1.2.3.4/032",
            "v=spf1 a/24/64",
            "v=spf1 a:111.222.33.44",
            "v=spf1 a:museum",
            "v=spf1 a:example.com:8080",
            "v=spf1 =all",
            "v=spf1 1up=foo",
            "v=spf1 exp=-all",
            "v=spf1 redirect=a.example.com redirect=b.example.com",
            "v=spf1 a:foo.example.com\0",
            "v=spf1 ip6:::1/129",
            "v=spf1 foo",
        ] {
            assert!(Record::parse(bad).is_err(), "{bad}");
        }
    }
}
