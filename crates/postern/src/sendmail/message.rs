//! The message `sendmail` reads from standard input, made ready for submission: lines split
//! (LF or CRLF), the lone-dot rule (`-i`), recipients from the headers (`-t`), bare local names
//! qualified with `[domains] origin`, and the headers a submission lacks completed (RFC 6409
//! §8: From, Date, Message-ID). The body is never changed; only header lines are added, and an
//! unqualified From address gets its domain (RFC 6409 §8.1, as sendmail's `always_add_domain`
//! and Postfix's `append_at_myorigin` do).

use mail_parser::{HeaderName, HeaderValue, MessageParser};

/// What to submit: sender, qualified recipients and the message with CRLF line endings.
#[derive(Debug)]
pub(crate) struct Composed {
    pub(crate) sender: String,
    pub(crate) recipients: Vec<String>,
    pub(crate) message: Vec<u8>,
}

/// What the composition needs from the command line and the configuration.
pub(crate) struct Inputs<'a> {
    pub(crate) ignore_dots: bool,
    pub(crate) read_recipients: bool,
    /// `-f`, as given (qualified here).
    pub(crate) sender: Option<&'a str>,
    pub(crate) full_name: Option<&'a str>,
    pub(crate) recipients: &'a [String],
    /// The invoking user's login name.
    pub(crate) user: &'a str,
    /// `[domains] origin`.
    pub(crate) origin: &'a str,
    /// `hostname`, for the Message-ID.
    pub(crate) hostname: &'a str,
}

/// `name@origin` for a bare local name; anything with an `@` as it is. `<>` and the empty
/// string stay empty (the null sender).
pub(crate) fn qualify(address: &str, origin: &str) -> String {
    let a = address.trim().trim_start_matches('<').trim_end_matches('>');
    if a.is_empty() || a.contains('@') { a.to_owned() } else { format!("{a}@{origin}") }
}

/// Why no message could be composed from the input and the command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ComposeError {
    /// Neither arguments nor, with `-t`, the header fields name a recipient.
    #[error("no recipients: give them as arguments or use -t")]
    NoRecipients,
}

/// Builds the submission from `input`; `Err` when there is no recipient.
pub(crate) fn compose(input: &[u8], i: &Inputs<'_>) -> Result<Composed, ComposeError> {
    let lines = split_lines(input, i.ignore_dots);
    let header_end = header_end(&lines);
    let mut headers: Vec<Vec<u8>> = lines[..header_end].to_vec();
    let body = &lines[header_end..];
    let mut recipients: Vec<String> = i.recipients.iter().map(|r| qualify(r, i.origin)).collect();
    if i.read_recipients {
        let block: Vec<u8> = headers.iter().flat_map(|l| l.iter().copied().chain(*b"\r\n")).chain(*b"\r\n").collect();
        if let Some(msg) = MessageParser::default().parse_headers(&block) {
            // Every To, Cc and Bcc field, not the last of each (mail-parser's `to()` is the
            // last one): scripts that add one line per address write several (issue 26).
            let lists = msg.headers().iter().filter_map(|h| match (&h.name, &h.value) {
                (HeaderName::To | HeaderName::Cc | HeaderName::Bcc, HeaderValue::Address(list)) => Some(list),
                _ => None,
            });
            for list in lists {
                // A bare name (`To: root`) parses as a display name without an address.
                for a in list.iter() {
                    let bare = a.name().filter(|n| !n.contains(char::is_whitespace));
                    if let Some(a) = a.address().or(bare) {
                        recipients.push(qualify(a, i.origin));
                    }
                }
            }
        }
        remove_header(&mut headers, "bcc");
    }
    recipients.retain(|r| !r.is_empty());
    if recipients.is_empty() {
        return Err(ComposeError::NoRecipients);
    }
    let sender = i.sender.map_or_else(|| format!("{}@{}", i.user, i.origin), |s| qualify(s, i.origin));
    qualify_fields(&mut headers, i.origin);
    let mut added = Vec::new();
    if !has_header(&headers, "from") {
        let shown = if sender.is_empty() { format!("{}@{}", i.user, i.origin) } else { sender.clone() };
        added.push(match i.full_name {
            Some(name) => format!("From: \"{}\" <{shown}>", name.replace(['"', '\\'], "")),
            None => format!("From: {shown}"),
        });
    }
    if !has_header(&headers, "date") {
        added.push(format!("Date: {}", chrono::Local::now().to_rfc2822()));
    }
    if !has_header(&headers, "message-id") {
        let now = chrono::Utc::now().timestamp_micros();
        added.push(format!("Message-ID: <{now}.{}@{}>", std::process::id(), i.hostname));
    }
    let mut message = Vec::with_capacity(input.len() + 256);
    for l in added.iter().map(String::as_bytes).chain(headers.iter().map(Vec::as_slice)) {
        message.extend_from_slice(l);
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(b"\r\n");
    let body_start = usize::from(body.first().is_some_and(Vec::is_empty));
    for l in &body[body_start..] {
        message.extend_from_slice(l);
        message.extend_from_slice(b"\r\n");
    }
    Ok(Composed { sender, recipients, message })
}

/// The address fields (`From`, `Sender`, `Reply-To`, `To`, `Cc`) of a local submission with
/// each bare name (`root`, `Cron <root>`, `root (Cron Daemon)`) given `@origin`, as sendmail's
/// `always_add_domain` and Postfix's `append_at_myorigin` do (RFC 6409 §8.1 lets submission
/// qualify them): `To: root` must not leave the box unqualified. Addresses with a domain, and
/// anything quoted or grouped, are left exactly as they are.
fn qualify_fields(headers: &mut [Vec<u8>], origin: &str) {
    for line in headers.iter_mut() {
        let Some(field) = header_name(line) else { continue };
        if !["from", "sender", "reply-to", "to", "cc"].contains(&field.as_str()) {
            continue;
        }
        let Ok(text) = std::str::from_utf8(line) else { continue };
        let (name, value) = text.split_once(':').unwrap_or((text, ""));
        if value.contains(['"', ';', ':']) || value.trim().is_empty() {
            continue;
        }
        let items: Vec<String> = value.split(',').map(|item| qualify_item(item.trim(), origin)).collect();
        let qualified = format!("{name}: {}", items.join(", "));
        if qualified.trim_end() != text.trim_end() && !value.split(',').all(|i| i.contains('@')) {
            *line = qualified.into_bytes();
        }
    }
}

/// One mailbox of an address field, with `@origin` added to a bare name.
fn qualify_item(v: &str, origin: &str) -> String {
    if v.is_empty() || v.contains('@') {
        return v.to_owned();
    }
    match (v.rfind('<'), v.ends_with('>')) {
        (Some(open), true) => format!("{}<{}@{origin}>", &v[..open], &v[open + 1..v.len() - 1]),
        (None, false) if !v.contains(char::is_whitespace) => format!("{v}@{origin}"),
        // `root (Cron Daemon)`: an address and a comment (RFC 5322 §3.2.2).
        (None, false) if v.ends_with(')') => match v.split_once(char::is_whitespace) {
            Some((addr, comment)) if comment.trim_start().starts_with('(') => {
                format!("{addr}@{origin} {}", comment.trim())
            }
            _ => v.to_owned(),
        },
        _ => v.to_owned(),
    }
}

/// Input lines without their line endings (LF or CRLF). Without `ignore_dots`, a line with a
/// single `.` ends the message (sendmail's default).
fn split_lines(input: &[u8], ignore_dots: bool) -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for raw in input.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if !ignore_dots && line == b"." {
            return lines;
        }
        // A lone CR inside a line would be refused by SMTP servers: make it a line break.
        lines.extend(line.split(|&b| b == b'\r').map(<[u8]>::to_vec));
    }
    if input.ends_with(b"\n") {
        lines.pop();
    }
    lines
}

/// Index of the first body line: headers are the leading lines that look like `Name: value`
/// (or continue one); none when the input does not start with a header.
fn header_end(lines: &[Vec<u8>]) -> usize {
    let mut i = 0;
    while let Some(l) = lines.get(i) {
        let is_header =
            l.iter().position(|&b| b == b':').is_some_and(|c| c > 0 && l[..c].iter().all(|b| b.is_ascii_graphic()));
        let continues = i > 0 && matches!(l.first(), Some(b' ' | b'\t'));
        if !(is_header || continues) {
            break;
        }
        i += 1;
    }
    i
}

fn header_name(line: &[u8]) -> Option<String> {
    let c = line.iter().position(|&b| b == b':')?;
    Some(String::from_utf8_lossy(&line[..c]).trim().to_ascii_lowercase())
}

fn has_header(headers: &[Vec<u8>], name: &str) -> bool {
    headers.iter().any(|l| header_name(l).as_deref() == Some(name))
}

/// Removes a header and its continuation lines.
fn remove_header(headers: &mut Vec<Vec<u8>>, name: &str) {
    let mut removing = false;
    headers.retain(|l| {
        if matches!(l.first(), Some(b' ' | b'\t')) {
            return !removing;
        }
        removing = header_name(l).as_deref() == Some(name);
        !removing
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_headers_and_dots() {
        let lines = split_lines(b"Subject: x\nTo: a@b\n\nbody\n.\nafter\n", false);
        assert_eq!(lines.len(), 4);
        assert_eq!(header_end(&lines), 2);
        assert_eq!(split_lines(b"a\n.\nb\n", true).len(), 3);
        assert_eq!(header_end(&split_lines(b"just a body line\n", true)), 0);
        let mut h = split_lines(b"To: a@b\nBcc: c@d,\n e@f\nSubject: s\n", true);
        remove_header(&mut h, "bcc");
        assert_eq!(h, vec![b"To: a@b".to_vec(), b"Subject: s".to_vec()]);
    }

    fn inputs<'a>(recipients: &'a [String], read: bool) -> Inputs<'a> {
        Inputs {
            ignore_dots: true,
            read_recipients: read,
            sender: None,
            full_name: Some("CronDaemon"),
            recipients,
            user: "root",
            origin: "example.test",
            hostname: "mx.example.test",
        }
    }

    #[test]
    fn every_to_cc_and_bcc_field_counts() {
        let text =
            b"To: a@x.test\nTo: b@x.test\nCc: c@x.test\nCc: d@x.test\nBcc: e@x.test\nBcc: f@x.test\nSubject: s\n\nx\n";
        let c = compose(text, &inputs(&[], true)).unwrap();
        let mut got = c.recipients.clone();
        got.sort();
        assert_eq!(got, ["a@x.test", "b@x.test", "c@x.test", "d@x.test", "e@x.test", "f@x.test"]);
        assert!(!String::from_utf8(c.message).unwrap().to_ascii_lowercase().contains("bcc:"), "Bcc removed");
    }

    #[test]
    fn bare_names_get_the_origin() {
        let c = compose(b"Subject: cron\n\nout\n", &inputs(&["root".into()], false)).unwrap();
        assert_eq!(c.recipients, ["root@example.test"]);
        assert_eq!(c.sender, "root@example.test");
        let text = String::from_utf8(c.message).unwrap();
        assert!(text.starts_with("From: \"CronDaemon\" <root@example.test>\r\n"), "{text}");
        let c = compose(b"To: www-data, bob@other.test\nFrom: Web <www-data>\n\nx\n", &inputs(&[], true)).unwrap();
        assert_eq!(c.recipients, ["www-data@example.test", "bob@other.test"]);
        let text = String::from_utf8(c.message).unwrap();
        assert!(text.contains("\r\nFrom: Web <www-data@example.test>\r\n"), "{text}");
        // always_add_domain (issue 28): `To: root` does not leave the box unqualified.
        assert!(text.contains("\r\nTo: www-data@example.test, bob@other.test\r\n"), "{text}");
        let c = compose(b"Cc: bob\nTo: \"A, B\" <x@y.test>\n\nx\n", &inputs(&["a@b.test".into()], false)).unwrap();
        let text = String::from_utf8(c.message).unwrap();
        assert!(text.contains("\r\nCc: bob@example.test\r\n"), "{text}");
        assert!(text.contains("\r\nTo: \"A, B\" <x@y.test>\r\n"), "a quoted field is left alone: {text}");
        let c = compose(b"From: root\n\nx\n", &inputs(&["a@b.test".into()], false)).unwrap();
        assert!(String::from_utf8(c.message).unwrap().contains("From: root@example.test\r\n"));
        assert!(compose(b"Subject: x\n\nx\n", &inputs(&[], false)).is_err());
        assert_eq!(qualify("<>", "x.test"), "");
    }
}
