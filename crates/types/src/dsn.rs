//! The DSN extension's parameters (RFC 3461): NOTIFY and ORCPT on RCPT, RET and ENVID on MAIL,
//! and xtext, their encoding (RFC 3461 §4).

use std::fmt;

/// `NOTIFY=` (RFC 3461 §4.1): when the sender wants a DSN. Absent means failure and delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    /// `SUCCESS`.
    pub success: bool,
    /// `FAILURE`.
    pub failure: bool,
    /// `DELAY`.
    pub delay: bool,
}

impl Notify {
    /// `NOTIFY=NEVER`.
    pub const NEVER: Self = Self { success: false, failure: false, delay: false };
    /// What an absent NOTIFY means (RFC 3461 §4.1: failure, and delay at the MTA's discretion).
    pub const DEFAULT: Self = Self { success: false, failure: true, delay: true };

    /// Parses `NEVER` or a comma list of `SUCCESS`, `FAILURE`, `DELAY` (case-insensitive).
    /// `None` when malformed (NEVER combined with others, unknown words, empty).
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("NEVER") {
            return Some(Self::NEVER);
        }
        let mut n = Self::NEVER;
        for word in s.split(',') {
            match word.to_ascii_uppercase().as_str() {
                "SUCCESS" => n.success = true,
                "FAILURE" => n.failure = true,
                "DELAY" => n.delay = true,
                _ => return None,
            }
        }
        Some(n)
    }
}

impl fmt::Display for Notify {
    /// The parameter value: `NEVER` or e.g. `SUCCESS,FAILURE`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = [(self.success, "SUCCESS"), (self.failure, "FAILURE"), (self.delay, "DELAY")]
            .into_iter()
            .filter_map(|(on, w)| on.then_some(w))
            .collect();
        if words.is_empty() { f.write_str("NEVER") } else { f.write_str(&words.join(",")) }
    }
}

/// `ORCPT=` of RCPT (RFC 3461 §4.2): the original recipient, an address type and an address
/// in xtext. Only a well-formed value is one: an address type of letters, digits and `-`, and
/// printable xtext that decodes to printable ASCII, at most 500 characters in all, so that it
/// can go into a RCPT command or a DSN field as it is. Kept as given; [`Orcpt::address`]
/// decodes it for a DSN's `Original-Recipient`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Orcpt {
    addr_type: String,
    xtext: String,
}

impl Orcpt {
    /// Parses a parameter value `addr-type;xtext`.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        let (addr_type, xtext) = value.split_once(';')?;
        let type_ok = !addr_type.is_empty() && addr_type.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        (type_ok && value.len() <= 500 && is_printable_xtext(xtext))
            .then(|| Self { addr_type: addr_type.to_owned(), xtext: xtext.to_owned() })
    }

    /// `rfc822;ADDRESS`: the original recipient Postern passes on when the client gave none.
    #[must_use]
    pub fn rfc822(address: &str) -> Self {
        Self { addr_type: "rfc822".into(), xtext: xtext_encode(address) }
    }

    /// The address type, e.g. `rfc822`.
    #[must_use]
    pub fn addr_type(&self) -> &str {
        &self.addr_type
    }

    /// The address, decoded from xtext.
    #[must_use]
    pub fn address(&self) -> String {
        xtext_decode(&self.xtext)
    }
}

impl fmt::Display for Orcpt {
    /// The parameter value, `addr-type;xtext`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{};{}", self.addr_type, self.xtext)
    }
}

/// `RET=` of MAIL (RFC 3461 §4.3): what a failure DSN returns of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    /// `FULL`: the whole message.
    Full,
    /// `HDRS`: its header only.
    Hdrs,
}

impl Ret {
    /// The MAIL parameter value: `FULL` or `HDRS`.
    #[must_use]
    pub fn param(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Hdrs => "HDRS",
        }
    }
}

/// Whether `s` is valid xtext: printable ASCII except `+` and `=`, with `+HH` hex escapes.
pub fn is_xtext(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
                if !b.get(i + 1).copied().is_some_and(hex) || !b.get(i + 2).copied().is_some_and(hex) {
                    return false;
                }
                i += 3;
            }
            33..=126 if b[i] != b'=' => i += 1,
            _ => return false,
        }
    }
    true
}

/// Whether `s` is xtext ([`is_xtext`]) whose decoded value is printable US-ASCII (graphic
/// characters and space): what ENVID must hold (RFC 3461 §4.4) and what an ORCPT address can
/// (§4.2). A `+0D+0A` would otherwise decode into a line break inside the DSN's delivery-status
/// fields, where an outsider could add fields of their choice; such a value is refused when it
/// arrives (501 5.5.4), so that what the queue keeps decodes to one printable line.
pub fn is_printable_xtext(s: &str) -> bool {
    is_xtext(s) && xtext_decode(s).bytes().all(|b| (b' '..=b'~').contains(&b))
}

/// Decodes xtext (`+HH` escapes); invalid input is returned as is.
pub fn xtext_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes as xtext: `+`, `=`, controls, space and non-ASCII become `+HH`.
pub fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if (33..=126).contains(&c) && c != b'+' && c != b'=' {
            out.push(c as char);
        } else {
            out.push_str(&format!("+{c:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify() {
        assert_eq!(Notify::parse("never"), Some(Notify::NEVER));
        let n = Notify::parse("SUCCESS,delay").unwrap();
        assert!(n.success && n.delay && !n.failure);
        assert_eq!(n.to_string(), "SUCCESS,DELAY");
        assert_eq!(Notify::parse("NEVER,SUCCESS"), None);
        assert_eq!(Notify::parse(""), None);
        assert_eq!(Notify::parse("SOMETIMES"), None);
    }

    /// Only a well-formed ORCPT is one: nothing a client sends can break a RCPT line or a DSN
    /// field through it.
    #[test]
    fn orcpt_values() {
        let o = Orcpt::parse("rfc822;bob+2Bx@b.test").unwrap();
        assert_eq!(
            (o.addr_type(), o.address(), o.to_string()),
            ("rfc822", "bob+x@b.test".into(), "rfc822;bob+2Bx@b.test".into())
        );
        assert_eq!(Orcpt::rfc822("a+b@c.test").to_string(), "rfc822;a+2Bb@c.test");
        for bad in ["noseparator", ";x@y.test", "rfc 822;x@y.test", "rfc822;x\r\nQUIT", "rfc822;x+0D+0A", "rfc822;x y"]
        {
            assert_eq!(Orcpt::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Orcpt::parse(&format!("rfc822;{}", "a".repeat(500))), None, "too long");
    }

    #[test]
    fn printable_xtext() {
        assert!(is_printable_xtext("fixture+2Bv1"));
        assert!(is_printable_xtext("rfc822;a+20b@example.test"));
        for bad in ["x+0D+0AFinal-Recipient:+20rfc822;x@evil.test", "x+00", "x+1B[31m", "x+7F", "x+C3+A9"] {
            assert!(is_xtext(bad) && !is_printable_xtext(bad), "{bad}");
        }
    }

    #[test]
    fn xtext() {
        assert!(is_xtext("rfc822;bob+2Bx@example.test"));
        assert!(!is_xtext("a=b"));
        assert!(!is_xtext("a+2"));
        assert!(!is_xtext("a b"));
        assert_eq!(xtext_decode("bob+2Bx@example.test"), "bob+x@example.test");
        assert_eq!(xtext_encode("bob+x=y@ex"), "bob+2Bx+3Dy@ex");
        assert_eq!(xtext_decode(&xtext_encode("a+b c")), "a+b c");
    }
}
