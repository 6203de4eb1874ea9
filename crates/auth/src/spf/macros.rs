//! SPF macro strings (RFC 7208 §7): parsed once with the record, expanded per check.

use super::record::{SyntaxError, syntax};
use std::net::IpAddr;

/// One piece of a macro string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// `%{` letter transformers delimiters `}`.
    Macro {
        letter: char,
        escape: bool,
        keep: Option<usize>,
        reverse: bool,
        delimiters: String,
    },
}

/// A parsed macro string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MacroString(Vec<Part>);

/// What the macro letters stand for in one evaluation.
pub(crate) struct Values<'a> {
    /// `s`: the sender, `local@domain`.
    pub(crate) sender: &'a str,
    /// `d`: the domain being checked.
    pub(crate) domain: &'a str,
    /// `i`, `c`, `v`: the client address.
    pub(crate) ip: IpAddr,
    /// `h`: the HELO name.
    pub(crate) helo: &'a str,
    /// `p`: the client's validated name, when the string uses it.
    pub(crate) validated: &'a str,
    /// `r`: our host name (explanations only).
    pub(crate) receiver: &'a str,
}

impl MacroString {
    /// Parses `text`; `exp` allows the explanation-only letters `c`, `r`, `t`.
    ///
    /// # Errors
    /// A `%` that starts no macro, an unknown letter, a malformed transformer.
    pub(crate) fn parse(text: &str, exp: bool) -> Result<Self, SyntaxError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => literal.push('%'),
                Some('_') => literal.push(' '),
                Some('-') => literal.push_str("%20"),
                Some('{') => {
                    let mut body = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => body.push(c),
                            None => return Err("unterminated macro".into()),
                        }
                    }
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                    parts.push(expand_spec(&body, exp).ok_or_else(|| format!("%{{{body}}}: bad macro"))?);
                }
                other => return Err(syntax!("%{}: not a macro", other.map(String::from).unwrap_or_default())),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self(parts.into_iter().filter(|p| *p != Part::Literal(String::new())).collect()))
    }

    /// Parses a domain-spec (RFC 7208 §7.1): a macro string that ends in a macro, or in `.`
    /// and a top label (letters and digits, not all digits; a hyphen only inside).
    ///
    /// # Errors
    /// As [`MacroString::parse`], or the end is no top label.
    pub(crate) fn domain_spec(text: &str) -> Result<Self, SyntaxError> {
        let m = Self::parse(text, false)?;
        match m.0.last() {
            Some(Part::Macro { .. }) => Ok(m),
            Some(Part::Literal(tail)) => {
                let tail = tail.strip_suffix('.').unwrap_or(tail);
                match tail.rsplit_once('.') {
                    Some((_, top)) if is_toplabel(top) => Ok(m),
                    _ => Err(syntax!("{text:?}: does not end in a top-level label")),
                }
            }
            None => Err("empty domain".into()),
        }
    }

    /// Whether `%{p}` is used (it costs DNS lookups).
    pub(crate) fn uses_validated_name(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Part::Macro { letter: 'p', .. }))
    }

    /// The expanded string.
    pub(crate) fn expand(&self, v: &Values<'_>) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Macro { letter, escape, keep, reverse, delimiters } => {
                    let value = letter_value(*letter, v);
                    let delims: &str = if delimiters.is_empty() { "." } else { delimiters };
                    let mut pieces: Vec<&str> = value.split(|c| delims.contains(c)).collect();
                    if *reverse {
                        pieces.reverse();
                    }
                    if let Some(n) = keep
                        && *n < pieces.len()
                    {
                        pieces.drain(..pieces.len() - n);
                    }
                    let joined = pieces.join(".");
                    out.push_str(&if *escape { url_escape(&joined) } else { joined });
                }
            }
        }
        out
    }
}

fn is_toplabel(label: &str) -> bool {
    let alnum = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric());
    let b = label.as_bytes();
    !label.is_empty()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && (label.contains('-') || (alnum(label) && b.iter().any(u8::is_ascii_alphabetic)))
}

/// `letter transformers *delimiter` inside `%{…}`.
fn expand_spec(body: &str, exp: bool) -> Option<Part> {
    let mut chars = body.chars();
    let c = chars.next()?;
    let letter = c.to_ascii_lowercase();
    let allowed = if exp { "slodiphcrtv" } else { "slodiphv" };
    if !allowed.contains(letter) {
        return None;
    }
    let rest: String = chars.collect();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let mut rest = &rest[digits.len()..];
    let keep = if digits.is_empty() {
        None
    } else {
        let n: usize = digits.parse().ok()?;
        (n > 0).then_some(n)?;
        Some(n)
    };
    let reverse = rest.starts_with(['r', 'R']);
    if reverse {
        rest = &rest[1..];
    }
    if !rest.chars().all(|c| ".-+,/_=".contains(c)) {
        return None;
    }
    Some(Part::Macro { letter, escape: c.is_ascii_uppercase(), keep, reverse, delimiters: rest.to_owned() })
}

fn letter_value(letter: char, v: &Values<'_>) -> String {
    let (local, domain) = v.sender.rsplit_once('@').unwrap_or(("postmaster", v.sender));
    match letter {
        's' => v.sender.to_owned(),
        'l' => local.to_owned(),
        'o' => domain.to_owned(),
        'd' => v.domain.to_owned(),
        'i' => match v.ip {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => {
                a.octets().iter().flat_map(|b| [b >> 4, b & 15]).map(|n| format!("{n:x}")).collect::<Vec<_>>().join(".")
            }
        },
        'c' => v.ip.to_string(),
        'p' => v.validated.to_owned(),
        'v' => if v.ip.is_ipv4() { "in-addr" } else { "ip6" }.to_owned(),
        'h' => v.helo.to_owned(),
        'r' => v.receiver.to_owned(),
        't' => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// RFC 3986 escaping of all but the unreserved characters (RFC 7208 §7.3, upper-case letters).
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7208_section_7_4_examples() {
        let v = Values {
            sender: "strong-bad@email.example.com",
            domain: "email.example.com",
            ip: "192.0.2.3".parse().unwrap(),
            helo: "mx.example.org",
            validated: "mx.example.org",
            receiver: "mx.test",
        };
        let x = |s: &str| MacroString::parse(s, true).unwrap().expand(&v);
        assert_eq!(x("%{s}"), "strong-bad@email.example.com");
        assert_eq!(x("%{o}"), "email.example.com");
        assert_eq!(x("%{d4}"), "email.example.com");
        assert_eq!(x("%{d2}"), "example.com");
        assert_eq!(x("%{d1}"), "com");
        assert_eq!(x("%{dr}"), "com.example.email");
        assert_eq!(x("%{d2r}"), "example.email");
        assert_eq!(x("%{l}"), "strong-bad");
        assert_eq!(x("%{l-}"), "strong.bad");
        assert_eq!(x("%{lr-}"), "bad.strong");
        assert_eq!(x("%{l1r-}"), "strong");
        assert_eq!(x("%{ir}.%{v}._spf.%{d2}"), "3.2.0.192.in-addr._spf.example.com");
        assert_eq!(x("%{lr-}.lp._spf.%{d2}"), "bad.strong.lp._spf.example.com");
        assert_eq!(x("%%%_%-"), "% %20");
        let v6 = Values { ip: "2001:db8::cb01".parse().unwrap(), ..v };
        assert_eq!(
            MacroString::parse("%{ir}.%{v}._spf.%{d2}", false).unwrap().expand(&v6),
            "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
        );
        for bad in ["%{x}", "%", "%a", "%{d0}", "%{c}"] {
            assert!(MacroString::parse(bad, false).is_err(), "{bad}");
        }
    }
}
