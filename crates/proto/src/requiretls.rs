//! The `TLS-Required` header field (RFC 8689 §3, §4.2.2): `TLS-Required: No` asks that
//! recipient-side TLS policies (MTA-STS, DANE) not stop delivery of this message. The field is
//! read only; it stays in the message as written.

/// Whether the header section of `message` (up to the first empty line) has
/// `TLS-Required: No` (name and value case-insensitive, folding and spaces ignored).
pub fn tls_required_no(message: &[u8]) -> bool {
    let mut value: Option<Vec<u8>> = None;
    let mut found = false;
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if continuation {
            if let Some(v) = value.as_mut() {
                v.extend_from_slice(line);
            }
            continue;
        }
        found |= value.take().is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"no"));
        if line.is_empty() {
            break;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':')
            && line[..colon].trim_ascii_end().eq_ignore_ascii_case(b"TLS-Required")
        {
            value = Some(line[colon + 1..].to_vec());
        }
    }
    found || value.is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"no"))
}

#[cfg(test)]
mod tests {
    use super::tls_required_no;

    #[test]
    fn only_no_in_the_header_section_counts() {
        assert!(tls_required_no(b"From: a@b.test\r\nTLS-Required: No\r\n\r\nbody\r\n"));
        assert!(tls_required_no(b"tls-required:no\r\nSubject: s\r\n\r\n"));
        assert!(tls_required_no(b"TLS-Required:\r\n  NO \r\n\r\n"), "folded");
        assert!(tls_required_no(b"TLS-Required: No"), "no body, no final CRLF");
        assert!(!tls_required_no(b"TLS-Required: Yes\r\n\r\n"));
        assert!(!tls_required_no(b"Subject: x\r\n\r\nTLS-Required: No\r\n"), "body");
        assert!(!tls_required_no(b"X-TLS-Required: No\r\n\r\n"));
        assert!(!tls_required_no(b"TLS-Required: Now\r\n\r\n"));
    }
}
