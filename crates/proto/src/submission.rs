//! Message submission fix-ups (RFC 6409 §8): a submission server adds the `Date` (§8.3) and
//! `Message-ID` (§8.4) header fields a client left out. They are prepended; nothing the client
//! wrote is changed or moved, so signatures and attachments stay intact.

/// Whether the header section of `message` (up to the first empty line) has a field `name`
/// (case-insensitive, without the colon).
pub fn has_header(message: &[u8], name: &str) -> bool {
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return false;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':')
            && line[..colon].trim_ascii_end().eq_ignore_ascii_case(name.as_bytes())
        {
            return true;
        }
    }
    false
}

/// The header fields to prepend to a submitted `message`: `Date: {date}` and
/// `Message-ID: <{unique}@{hostname}>` when missing, each ending in CRLF; empty when both are
/// present. `date` is an RFC 5322 date-time; `unique` must be unique per message (the queue ID).
pub fn missing_headers(message: &[u8], hostname: &str, unique: &str, date: &str) -> String {
    let mut out = String::new();
    if !has_header(message, "Date") {
        out.push_str(&format!("Date: {date}\r\n"));
    }
    if !has_header(message, "Message-ID") {
        out.push_str(&format!("Message-ID: <{unique}@{hostname}>\r\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_only_what_is_missing() {
        let m = b"From: a@b.test\r\nmessage-id : <x@y>\r\n\r\nDate: not a header\r\n";
        assert!(has_header(m, "Message-ID"));
        assert!(!has_header(m, "Date"));
        assert_eq!(missing_headers(m, "mx.test", "ID1", "D"), "Date: D\r\n");
        assert_eq!(missing_headers(b"\r\nbody", "mx.test", "ID1", "D"), "Date: D\r\nMessage-ID: <ID1@mx.test>\r\n");
    }
}
