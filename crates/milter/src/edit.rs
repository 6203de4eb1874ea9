//! The header and body changes a filter asks for at end of message, applied to the message as
//! received (CRLF lines): the only way a message's content changes in Postern, and only because
//! the postmaster's own filter asked (libmilter's `smfi_addheader`, `smfi_chgheader`,
//! `smfi_insheader`, `smfi_replacebody`, with their indexing rules).

use crate::Response;

/// The header fields of `message` as (name, raw field with its continuation lines and CRLF),
/// and the body (after the empty line).
pub fn split(message: &[u8]) -> (Vec<(String, Vec<u8>)>, &[u8]) {
    let end = find(message, b"\r\n\r\n").map_or(message.len(), |i| i + 2);
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    for line in message[..end].split_inclusive(|&b| b == b'\n') {
        match fields.last_mut() {
            Some((_, raw)) if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') => raw.extend_from_slice(line),
            _ => {
                let name = line
                    .iter()
                    .position(|&b| b == b':')
                    .map_or(String::new(), |c| String::from_utf8_lossy(&line[..c]).trim().to_owned());
                fields.push((name, line.to_vec()));
            }
        }
    }
    let body = message.get(end + 2..).unwrap_or_default();
    (fields, body)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The value of a raw field, without the name, the colon and the leading space unless
/// `leading_space`; CRLF kept inside folded values, the last one removed.
pub fn value(raw: &[u8], leading_space: bool) -> String {
    let text = String::from_utf8_lossy(raw);
    let (_, v) = text.split_once(':').unwrap_or(("", &text));
    let v = v.strip_suffix("\r\n").unwrap_or(v);
    if leading_space { v.to_owned() } else { v.strip_prefix(' ').unwrap_or(v).to_owned() }
}

/// The field `name: value` as it goes out, CRLF-terminated. libmilter folds values with a bare
/// `\n` and a tab (sendmail turns it into CRLF): each line break becomes CRLF, an empty line
/// (which would end the header block) is dropped, and a line that does not start with
/// white space gets one, so a filter's value stays one field (RFC 5322 §2.2.3).
fn field(name: &str, value: &str) -> Vec<u8> {
    let mut lines = value.split('\n').map(|l| l.trim_end_matches('\r'));
    let first = lines.next().unwrap_or("");
    let sep = if first.starts_with([' ', '\t']) || first.is_empty() { "" } else { " " };
    let mut out = format!("{name}:{sep}{first}");
    for line in lines.filter(|l| !l.trim().is_empty()) {
        out.push_str("\r\n");
        if !line.starts_with([' ', '\t']) {
            out.push('\t');
        }
        out.push_str(line);
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Whether a filter's header action is one we can write: a field name of printable ASCII
/// without a colon (RFC 5322 §3.6.8), a value with no control character but HT, CR and LF
/// (which [`apply`] turns into folding). Anything else is the filter's error.
pub fn writable(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
        && !value.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n'))
}

/// `message` with the header and body actions among `actions` applied, in order. Other
/// responses are ignored.
pub fn apply(message: &[u8], actions: &[Response]) -> Vec<u8> {
    let (mut fields, body) = split(message);
    let mut new_body: Option<Vec<u8>> = None;
    for a in actions {
        match a {
            // At the end of the header block (libmilter: after the existing fields).
            Response::AddHeader(name, value) => fields.push((name.clone(), field(name, value))),
            // Index 0 (or 1) is the top of the header block.
            Response::InsertHeader(index, name, value) => {
                let at = (*index as usize).min(fields.len());
                fields.insert(at, (name.clone(), field(name, value)));
            }
            // The index-th (1-based) field of that name; an empty value deletes it; a missing
            // one is added (libmilter's documented behaviour).
            Response::ChangeHeader(index, name, value) => {
                let nth = fields
                    .iter()
                    .enumerate()
                    .filter(|(_, (n, _))| n.eq_ignore_ascii_case(name))
                    .nth((*index as usize).saturating_sub(1))
                    .map(|(i, _)| i);
                match (nth, value.is_empty()) {
                    (Some(i), true) => {
                        fields.remove(i);
                    }
                    (Some(i), false) => fields[i].1 = field(name, value),
                    (None, false) => fields.push((name.clone(), field(name, value))),
                    (None, true) => {}
                }
            }
            Response::ReplaceBody(chunk) => new_body.get_or_insert_with(Vec::new).extend_from_slice(chunk),
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(message.len() + 256);
    for (_, raw) in &fields {
        out.extend_from_slice(raw);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(new_body.as_deref().unwrap_or(body));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_body_actions() {
        let m = b"Received: a\r\nSubject: one\r\nX-Tag: 1\r\n\tfolded\r\nX-Tag: 2\r\n\r\nbody\r\n";
        let (fields, body) = split(m);
        assert_eq!(fields.len(), 4);
        assert_eq!(value(&fields[2].1, false), "1\r\n\tfolded");
        assert_eq!(body, b"body\r\n");
        let out = apply(
            m,
            &[
                Response::AddHeader("X-Spam".into(), "yes".into()),
                Response::InsertHeader(0, "X-First".into(), "top".into()),
                Response::ChangeHeader(2, "X-Tag".into(), String::new()),
                Response::ChangeHeader(1, "Subject".into(), "[SPAM] one".into()),
                Response::ReplaceBody(b"new ".to_vec()),
                Response::ReplaceBody(b"body\r\n".to_vec()),
            ],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "X-First: top\r\nReceived: a\r\nSubject: [SPAM] one\r\nX-Tag: 1\r\n\tfolded\r\nX-Spam: yes\r\n\r\nnew body\r\n"
        );
        assert_eq!(apply(m, &[]), m.to_vec(), "no action, no change");
    }

    #[test]
    fn a_filters_value_stays_one_field() {
        let m = b"Subject: s\r\n\r\nbody\r\n";
        let out =
            |value: &str| String::from_utf8(apply(m, &[Response::AddHeader("X-Scan".into(), value.into())])).unwrap();
        // libmilter's folding: LF TAB becomes CRLF TAB.
        assert_eq!(out("one\n\ttwo"), "Subject: s\r\nX-Scan: one\r\n\ttwo\r\n\r\nbody\r\n");
        // A line that would start a field of its own, or end the header block, cannot.
        assert_eq!(out("a\r\nBcc: x@evil.test"), "Subject: s\r\nX-Scan: a\r\n\tBcc: x@evil.test\r\n\r\nbody\r\n");
        assert_eq!(out("a\n\nbody"), "Subject: s\r\nX-Scan: a\r\n\tbody\r\n\r\nbody\r\n");
        assert!(writable("X-Scan", "a\n\tb") && !writable("X Scan", "a") && !writable("X-Scan:", "a"));
        assert!(!writable("X-Scan", "a\x00b") && !writable("X-Scan", "\x1b[2J"));
    }
}
