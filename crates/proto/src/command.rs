//! SMTP command lines (RFC 5321 §4.1) parsed into [`Command`]s.
//!
//! Parsing is liberal where real clients deviate harmlessly (a space after `FROM:`, verbs in any
//! case) and strict where ambiguity is dangerous (paths, parameters). Errors come back as the
//! [`Reply`] the session sends.

use postern_types::{Address, AddressError, EnhancedStatus, Reply, ReversePath};

/// One parsed command line (without its CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain` (RFC 5321 §4.1.1.1).
    Ehlo(String),
    /// `HELO domain`.
    Helo(String),
    /// `MAIL FROM:<reverse-path> [params]` (§4.1.1.2); params are `KEYWORD[=value]`, keyword
    /// upper-cased.
    Mail { path: ReversePath, params: Vec<(String, Option<String>)> },
    /// `RCPT TO:<forward-path> [params]` (§4.1.1.3). `<postmaster>` without a domain is
    /// returned as local part `postmaster` with `domain: None`.
    Rcpt { local: String, domain: Option<String>, path: Option<Address>, params: Vec<(String, Option<String>)> },
    /// `DATA` (§4.1.1.4).
    Data,
    /// `BDAT size [LAST]` (RFC 3030 §2).
    Bdat { size: u64, last: bool },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY string`.
    Vrfy,
    /// `EXPN string`.
    Expn,
    /// `HELP [string]`.
    Help,
    /// `STARTTLS` (RFC 3207 §4).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954 §4); the mechanism upper-cased, the initial
    /// response still base64 (`=` for an empty one).
    Auth { mechanism: String, initial: Option<String> },
    /// A verb Postern does not implement.
    Unknown(String),
}

fn syntax(status: EnhancedStatus, text: &str) -> Reply {
    Reply::new(501, status, text)
}

/// `path@domain` for a bare name (no `@`, not empty) when bare names are qualified.
fn qualified(path: &str, domain: Option<&str>) -> Option<String> {
    domain.filter(|_| !path.is_empty() && !path.contains('@')).map(|d| format!("{path}@{d}"))
}

impl Command {
    /// Parses one command line, without the trailing CRLF.
    ///
    /// # Errors
    /// The reply to send: 500 5.5.2 for an unrecognised line, 501 5.5.2 for a line with a
    /// control character (see [`has_control`]), 501 with 5.5.4 / 5.1.7 / 5.1.3 for bad
    /// arguments or paths (RFC 3463 §3.2, §3.6).
    pub fn parse(line: &str) -> Result<Self, Reply> {
        Self::parse_with(line, None)
    }

    /// As [`Command::parse`], giving `@qualify` to a bare name in MAIL FROM and RCPT TO
    /// (`<root>`): a local submission ([`crate::SessionParams::qualify_bare_names`]).
    ///
    /// # Errors
    /// As [`Command::parse`].
    pub fn parse_with(line: &str, qualify: Option<&str>) -> Result<Self, Reply> {
        if has_control(line) {
            // Never echoed: the reply names no part of the line.
            return Err(syntax(EnhancedStatus(5, 5, 2), "Syntax error: control character in command"));
        }
        let (verb, rest) = match line.find(' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, ""),
        };
        let arg = rest.trim();
        let verb_upper = verb.to_ascii_uppercase();
        Ok(match verb_upper.as_str() {
            "EHLO" | "HELO" => {
                let name = arg.split_whitespace().next().unwrap_or("");
                if name.is_empty() {
                    return Err(syntax(EnhancedStatus(5, 5, 4), &format!("Syntax: {verb_upper} hostname")));
                }
                if verb_upper == "EHLO" { Self::Ehlo(name.to_owned()) } else { Self::Helo(name.to_owned()) }
            }
            "MAIL" => {
                let rest = strip_keyword(rest, "FROM:")
                    .ok_or_else(|| syntax(EnhancedStatus(5, 5, 4), "Syntax: MAIL FROM:<address>"))?;
                let (path, params) =
                    split_path(rest).map_err(|_| syntax(EnhancedStatus(5, 1, 7), "Bad sender address syntax"))?;
                let qualified = qualified(path, qualify);
                let path = qualified.as_deref().unwrap_or(path);
                let path = if path.is_empty() {
                    ReversePath::Null
                } else {
                    ReversePath::Mailbox(
                        Address::parse(path)
                            .map_err(|_| syntax(EnhancedStatus(5, 1, 7), "Bad sender address syntax"))?,
                    )
                };
                Self::Mail { path, params: parse_params(params)? }
            }
            "RCPT" => {
                let rest = strip_keyword(rest, "TO:")
                    .ok_or_else(|| syntax(EnhancedStatus(5, 5, 4), "Syntax: RCPT TO:<address>"))?;
                let bad = || syntax(EnhancedStatus(5, 1, 3), "Bad recipient address syntax");
                let (path, params) = split_path(rest).map_err(|_| bad())?;
                let params = parse_params(params)?;
                let qualified = qualified(path, qualify);
                let path = qualified.as_deref().unwrap_or(path);
                if path.eq_ignore_ascii_case("postmaster") {
                    // RFC 5321 §4.5.1: <postmaster> without a domain must be accepted.
                    Self::Rcpt { local: path.to_owned(), domain: None, path: None, params }
                } else {
                    let a = Address::parse(path).map_err(|_| bad())?;
                    Self::Rcpt {
                        local: a.local_part().to_owned(),
                        domain: Some(a.domain().to_owned()),
                        path: Some(a),
                        params,
                    }
                }
            }
            "DATA" => no_arg(arg, Self::Data)?,
            "BDAT" => {
                let mut it = arg.split_whitespace();
                let size = it
                    .next()
                    .filter(|s| !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| syntax(EnhancedStatus(5, 5, 4), "Syntax: BDAT size [LAST]"))?;
                let last = match it.next() {
                    None => false,
                    Some(s) if s.eq_ignore_ascii_case("LAST") => true,
                    Some(_) => return Err(syntax(EnhancedStatus(5, 5, 4), "Syntax: BDAT size [LAST]")),
                };
                if it.next().is_some() {
                    return Err(syntax(EnhancedStatus(5, 5, 4), "Syntax: BDAT size [LAST]"));
                }
                Self::Bdat { size, last }
            }
            "RSET" => no_arg(arg, Self::Rset)?,
            "NOOP" => Self::Noop,
            "QUIT" => no_arg(arg, Self::Quit)?,
            "VRFY" => Self::Vrfy,
            "EXPN" => Self::Expn,
            "HELP" => Self::Help,
            "STARTTLS" => no_arg(arg, Self::StartTls)?,
            "AUTH" => {
                let mut it = arg.split_whitespace();
                let mechanism = it
                    .next()
                    .ok_or_else(|| syntax(EnhancedStatus(5, 5, 4), "Syntax: AUTH mechanism [initial-response]"))?
                    .to_ascii_uppercase();
                let initial = it.next().map(str::to_owned);
                if it.next().is_some() {
                    return Err(syntax(EnhancedStatus(5, 5, 4), "Syntax: AUTH mechanism [initial-response]"));
                }
                Self::Auth { mechanism, initial }
            }
            _ => Self::Unknown(verb_upper),
        })
    }
}

/// Whether `line` holds a C0 control (U+0000–U+001F, tab included), DEL (U+007F) or a C1
/// control (U+0080–U+009F). RFC 5321 §4.1.2 builds commands from printable US-ASCII, SP as the
/// only separator, and RFC 6531 §3.3 adds UTF-8 text, never controls: NUL, ESC and their kin
/// in an argument are an attack on whatever logs or displays it, so the line is refused whole.
pub fn has_control(line: &str) -> bool {
    line.chars().any(char::is_control)
}

fn no_arg(arg: &str, cmd: Command) -> Result<Command, Reply> {
    if arg.is_empty() { Ok(cmd) } else { Err(syntax(EnhancedStatus(5, 5, 4), "Syntax error: no arguments allowed")) }
}

/// `FROM:` / `TO:` case-insensitively, tolerating one space after the colon.
fn strip_keyword<'a>(rest: &'a str, kw: &str) -> Option<&'a str> {
    let head = rest.get(..kw.len())?;
    head.eq_ignore_ascii_case(kw).then(|| rest[kw.len()..].trim_start_matches(' '))
}

/// Splits `<path> params` into the path without brackets and the parameter string. A path
/// without brackets (a common client bug) is accepted up to the first space.
fn split_path(s: &str) -> Result<(&str, &str), AddressError> {
    if let Some(inner) = s.strip_prefix('<') {
        // A quoted local part may contain '>': find the closing bracket outside quotes.
        let mut quoted = false;
        let mut escaped = false;
        for (i, c) in inner.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '>' if !quoted => {
                    let path = strip_source_route(&inner[..i]);
                    let params = &inner[i + 1..];
                    if !params.is_empty() && !params.starts_with(' ') {
                        return Err(AddressError::Brackets);
                    }
                    return Ok((path, params.trim()));
                }
                _ => {}
            }
        }
        Err(AddressError::Brackets)
    } else {
        let (path, params) = s.split_once(' ').unwrap_or((s, ""));
        if path.is_empty() || path.contains(['<', '>']) {
            return Err(AddressError::Brackets);
        }
        Ok((path, params.trim()))
    }
}

/// RFC 5321 §4.1.2 / §C: source routes `@a,@b:user@d` must be accepted and ignored.
fn strip_source_route(path: &str) -> &str {
    if path.starts_with('@')
        && let Some(i) = path.find(':')
    {
        return &path[i + 1..];
    }
    path
}

/// `KEY=value KEY2` → upper-cased keywords with optional values (RFC 5321 §4.1.2 esmtp-param).
fn parse_params(s: &str) -> Result<Vec<(String, Option<String>)>, Reply> {
    s.split_whitespace()
        .map(|p| {
            let (k, v) = match p.split_once('=') {
                Some((k, v)) => (k, Some(v.to_owned())),
                None => (p, None),
            };
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(syntax(EnhancedStatus(5, 5, 4), "Bad parameter syntax"));
            }
            Ok((k.to_ascii_uppercase(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mail_and_rcpt() {
        let c = Command::parse("mail from: <a@B.test> SIZE=100 body=8BITMIME").unwrap();
        let Command::Mail { path, params } = c else { panic!() };
        assert_eq!(path.to_string(), "<a@b.test>");
        assert_eq!(params[0], ("SIZE".into(), Some("100".into())));
        assert_eq!(params[1].0, "BODY");
        assert_eq!(Command::parse("MAIL FROM:<>").unwrap(), Command::Mail { path: ReversePath::Null, params: vec![] });
        let Command::Rcpt { domain, .. } = Command::parse("RCPT TO:<Postmaster>").unwrap() else { panic!() };
        assert_eq!(domain, None);
        let Command::Rcpt { path, .. } = Command::parse("RCPT TO:<@relay.test:bob@x.test>").unwrap() else { panic!() };
        assert_eq!(path.unwrap().to_string(), "bob@x.test");
        let Command::Rcpt { path, .. } = Command::parse("RCPT TO:<\"a>b\"@x.test>").unwrap() else { panic!() };
        assert_eq!(path.unwrap().local_part(), "\"a>b\"");
    }

    #[test]
    fn refuses_control_characters_without_echoing_them() {
        for line in ["EHLO a\0b", "EHLO \x1b[31mred", "MAIL FROM:<a@b.test>\x7f", "NOOP \u{85}", "EHLO\tx"] {
            let r = Command::parse(line).unwrap_err();
            assert_eq!((r.code, r.status.unwrap().to_string()), (501, "5.5.2".to_owned()), "{line:?}");
            assert!(!r.lines.iter().any(|l| has_control(l)), "{line:?} echoed in {r:?}");
        }
        assert!(Command::parse("EHLO caf\u{e9}.test").is_ok());
    }

    #[test]
    fn rejects_bad_syntax_with_precise_codes() {
        let code = |l: &str| Command::parse(l).unwrap_err().status.unwrap().to_string();
        assert_eq!(code("MAIL FROM:<a@@b>"), "5.1.7");
        assert_eq!(code("RCPT TO:<nodomain"), "5.1.3");
        assert_eq!(code("RCPT TO:<a@b.test>x"), "5.1.3");
        assert_eq!(code("MAIL TO:<a@b>"), "5.5.4");
        assert_eq!(code("EHLO"), "5.5.4");
        assert_eq!(code("BDAT x"), "5.5.4");
        assert_eq!(code("BDAT 10 LAST x"), "5.5.4");
        assert_eq!(code("DATA now"), "5.5.4");
        assert_eq!(Command::parse("BDAT 10 last").unwrap(), Command::Bdat { size: 10, last: true });
        assert_eq!(Command::parse("XYZZY").unwrap(), Command::Unknown("XYZZY".into()));
        assert_eq!(code("STARTTLS now"), "5.5.4");
        assert_eq!(code("AUTH"), "5.5.4");
        assert_eq!(
            Command::parse("auth plain AGJvYgBwdw==").unwrap(),
            Command::Auth { mechanism: "PLAIN".into(), initial: Some("AGJvYgBwdw==".into()) }
        );
    }
}
