//! Dialog scripts (`tests/dialogs/*.dialog`): SMTP conversations as data.
//!
//! ```text
//! # comment
//! source 127.0.0.2        connect from this loopback address (first line only)
//! S: 220                  read one reply; its last line must start with "220"
//! S~ 5.5.2                read one reply; its text must contain "5.5.2"
//! C: EHLO client.test     send the line + CRLF (consecutive C lines are pipelined)
//! C! hi\n.\n              send raw bytes after unescaping \r \n \t \0 \\ (no CRLF added)
//! EOF                     the server must close the connection
//! ```
//!
//! `{BIG}` stands for 1,048,577 `x` (one more than the fixture's size limit), `{LONG}` for 3,000.

use super::smtp::Client;

/// Runs `script` against 127.0.0.1:`port`; panics with the line at fault.
pub fn run(name: &str, script: &str, port: u16) {
    let mut lines = script.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#')).peekable();
    let mut source = "127.0.0.1".to_owned();
    if let Some((_, l)) = lines.peek()
        && let Some(s) = l.strip_prefix("source ")
    {
        source = s.trim().to_owned();
        lines.next();
    }
    let (mut client, greeting) = Client::connect_from(&source, port);
    let mut pending_greeting = Some(greeting);
    for (n, line) in lines {
        let at = format!("{name}:{}", n + 1);
        // Placeholders for lines too long to write out.
        let line = &line.replace("{BIG}", &"x".repeat(1_048_577)).replace("{LONG}", &"x".repeat(3000));
        if let Some(cmd) = line.strip_prefix("C: ").or((line == "C:").then_some("")) {
            client.send(format!("{cmd}\r\n").as_bytes());
        } else if let Some(raw) = line.strip_prefix("C! ") {
            client.send(&unescape(raw));
        } else if let Some(expect) = line.strip_prefix("S: ") {
            let r = pending_greeting
                .take()
                .or_else(|| client.read_reply())
                .unwrap_or_else(|| panic!("{at}: connection closed, expected {expect:?}"));
            let last = r.text.trim_end().lines().last().unwrap_or("");
            assert!(last.starts_with(expect.trim_end()), "{at}: expected reply starting {expect:?}, got {:?}", r.text);
        } else if let Some(expect) = line.strip_prefix("S~ ") {
            let r = pending_greeting
                .take()
                .or_else(|| client.read_reply())
                .unwrap_or_else(|| panic!("{at}: connection closed, expected {expect:?}"));
            assert!(r.text.contains(expect.trim_end()), "{at}: expected reply containing {expect:?}, got {:?}", r.text);
        } else if line.trim() == "EOF" {
            if let Some(r) = client.read_reply() {
                panic!("{at}: expected the connection to close, got {:?}", r.text);
            }
        } else {
            panic!("{at}: unknown dialog line {line:?}");
        }
    }
}

fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('r') => out.push(b'\r'),
                Some('n') => out.push(b'\n'),
                Some('t') => out.push(b'\t'),
                Some('0') => out.push(0),
                Some('\\') => out.push(b'\\'),
                other => panic!("bad escape \\{other:?}"),
            }
        } else {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    out
}
