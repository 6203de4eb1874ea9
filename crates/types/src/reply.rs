//! SMTP replies (RFC 5321 §4.2) carrying enhanced status codes (RFC 3463, RFC 2034).

use std::fmt;

/// An enhanced mail system status code `class.subject.detail` (RFC 3463 §2), e.g. `5.1.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus(pub u8, pub u16, pub u16);

impl EnhancedStatus {
    /// Whether the class is 2 (success).
    pub fn is_success(self) -> bool {
        self.0 == 2
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply: a three-digit code, an optional enhanced status code and one or more text
/// lines. Encoded with `-` continuation on all but the last line (RFC 5321 §4.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code, 200..=599.
    pub code: u16,
    /// The enhanced status code shown after the reply code on every line (RFC 2034 §4).
    pub status: Option<EnhancedStatus>,
    /// Text lines, without CRLF; never empty.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply `code status text`.
    pub fn new(code: u16, status: EnhancedStatus, text: impl Into<String>) -> Self {
        Self { code, status: Some(status), lines: vec![text.into()] }
    }

    /// A one-line reply without enhanced status (greeting, EHLO, 354).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Self { code, status: None, lines: vec![text.into()] }
    }

    /// 4xx: the client should retry later.
    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: the client must not retry this as it is.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// Appends the wire form (with CRLFs) to `out`. Each line's text goes through
    /// [`printable`], so no text (a milter's, a remote server's, a table's) can end a reply
    /// early or add one: the client reads exactly one reply.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let n = self.lines.len();
        for (i, line) in self.lines.iter().enumerate() {
            let line = printable(line);
            let sep = if i + 1 == n { ' ' } else { '-' };
            let text = match self.status {
                Some(s) => format!("{}{sep}{s} {line}\r\n", self.code),
                None => format!("{}{sep}{line}\r\n", self.code),
            };
            out.extend_from_slice(text.as_bytes());
        }
    }
}

impl fmt::Display for Reply {
    /// The reply on one line, for logs: `550 5.1.1 text`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(s) = self.status {
            write!(f, " {s}")?;
        }
        write!(f, " {}", printable(&self.lines.join(" / ")))
    }
}

/// `line` with every control character but HT (CR, LF, ESC, BEL, NUL, DEL) written as `\xHH`:
/// a reply's text is `textstring` (RFC 5321 §4.2: HT and printable characters). Text from
/// outside (a remote server's reply, a milter's) goes on into replies, logs, `postern queue`
/// and DSNs, where a control could split a reply or a field or rewrite a terminal (issue 26,
/// findings 10 and 11).
pub fn printable(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if c.is_control() && c != '\t' {
            out.push_str(&format!("\\x{:02X}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_multiline() {
        let mut r = Reply::plain(250, "mx.test");
        r.lines.push("PIPELINING".into());
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(out, b"250-mx.test\r\n250 PIPELINING\r\n");
        let mut out = Vec::new();
        Reply::new(550, EnhancedStatus(5, 1, 1), "no").encode(&mut out);
        assert_eq!(out, b"550 5.1.1 no\r\n");
    }

    #[test]
    fn no_text_makes_a_second_reply() {
        let mut out = Vec::new();
        Reply::new(550, EnhancedStatus(5, 7, 1), "a\r\n250 2.0.0 ok\x1b[2J\tb").encode(&mut out);
        assert_eq!(out, b"550 5.7.1 a\\x0D\\x0A250 2.0.0 ok\\x1B[2J\tb\r\n");
        let r = Reply::new(451, EnhancedStatus(4, 0, 0), "x\ny");
        assert_eq!(r.to_string(), "451 4.0.0 x\\x0Ay");
    }
}
