//! `postern sendmail` (also when invoked as `sendmail`): the sendmail(8) command line that cron,
//! mailx and PHP use. Reads the message from standard input, completes its headers (RFC 6409
//! §8: Date, Message-ID, From when missing), and hands it to the running daemon over the
//! submission socket, which queues it durably before answering.
//!
//! Exit codes follow sysexits(3) as sendmail's do: 0 queued, 64 usage, 65 bad message,
//! 67 unknown recipient, 75 daemon unreachable or temporary failure (try again; nothing was
//! queued, the caller still has the message).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mail_parser::MessageParser;

/// sendmail-compatible submission.
#[derive(Debug, Parser)]
#[command(name = "sendmail", about = "Queue a message read from standard input (sendmail compatible)")]
pub(crate) struct SendmailArgs {
    /// Read recipients from the To, Cc and Bcc headers (Bcc is then removed).
    #[arg(short = 't')]
    read_recipients: bool,
    /// A line with a single dot does not end the message.
    #[arg(short = 'i')]
    ignore_dots: bool,
    /// Envelope sender (reverse-path); default: your user name at the first local domain.
    #[arg(short = 'f')]
    sender: Option<String>,
    /// Your full name, for a From header added when the message has none.
    #[arg(short = 'F')]
    full_name: Option<String>,
    /// sendmail options such as -oi (same as -i) or -odi (ignored).
    #[arg(short = 'o')]
    options: Vec<String>,
    /// Configuration file of the daemon (default: $POSTERN_CONFIG, else the embedded default).
    #[arg(long, env = "POSTERN_CONFIG")]
    config: Option<PathBuf>,
    /// Recipients.
    recipients: Vec<String>,
}

const EX_DATAERR: u8 = 65;
const EX_NOUSER: u8 = 67;
const EX_TEMPFAIL: u8 = 75;

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("sendmail: {msg}");
    ExitCode::from(code)
}

/// Runs the command.
pub(crate) fn run(args: &SendmailArgs) -> ExitCode {
    let Some(config) = crate::load_config(args.config.as_deref()) else { return ExitCode::from(EX_TEMPFAIL) };
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().take(config.limits.max_message_size.0 + 1).read_to_end(&mut input) {
        return fail(EX_TEMPFAIL, &format!("reading standard input: {e}"));
    }
    if input.len() as u64 > config.limits.max_message_size.0 {
        return fail(
            EX_DATAERR,
            &format!("message larger than the limit of {} bytes", config.limits.max_message_size.0),
        );
    }
    let ignore_dots = args.ignore_dots || args.options.iter().any(|o| o == "i");
    let lines = split_lines(&input, ignore_dots);
    let header_end = header_end(&lines);
    let mut headers: Vec<Vec<u8>> = lines[..header_end].to_vec();
    let body: Vec<Vec<u8>> = lines[header_end..].to_vec();

    let mut recipients = args.recipients.clone();
    if args.read_recipients {
        let block: Vec<u8> = headers.iter().flat_map(|l| l.iter().copied().chain(*b"\r\n")).chain(*b"\r\n").collect();
        if let Some(msg) = MessageParser::default().parse_headers(&block) {
            for list in [msg.to(), msg.cc(), msg.bcc()].into_iter().flatten() {
                recipients.extend(list.iter().filter_map(|a| a.address()).map(str::to_owned));
            }
        }
        remove_header(&mut headers, "bcc");
    }
    if recipients.is_empty() {
        return fail(64, "no recipients: give them as arguments or use -t");
    }
    let user = login_name();
    let domain = config.domains.local.first().cloned().unwrap_or_else(|| config.hostname.clone());
    let sender = args.sender.clone().unwrap_or_else(|| format!("{user}@{domain}"));
    // RFC 6409 §8.1-8.3: complete what a submission lacks.
    let mut added = Vec::new();
    if !has_header(&headers, "from") {
        let from = match &args.full_name {
            Some(name) => format!("From: \"{}\" <{sender}>", name.replace('"', "")),
            None => format!("From: {sender}"),
        };
        added.push(from.into_bytes());
    }
    if !has_header(&headers, "date") {
        added.push(format!("Date: {}", chrono::Local::now().to_rfc2822()).into_bytes());
    }
    if !has_header(&headers, "message-id") {
        let now = chrono::Utc::now().timestamp_micros();
        added.push(format!("Message-ID: <{now}.{}@{}>", std::process::id(), config.hostname).into_bytes());
    }
    let mut message = Vec::with_capacity(input.len() + 256);
    for l in added.iter().chain(&headers) {
        message.extend_from_slice(l);
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(b"\r\n");
    let body_start = usize::from(body.first().is_some_and(Vec::is_empty));
    for l in &body[body_start..] {
        message.extend_from_slice(l);
        message.extend_from_slice(b"\r\n");
    }

    let socket = config.submit_socket();
    let mut stream = match UnixStream::connect(&socket) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                EX_TEMPFAIL,
                &format!(
                    "cannot reach the Postern daemon at {} ({e}); is `postern serve` running? The message was not queued.",
                    socket.display()
                ),
            );
        }
    };
    let head = format!("submit\t{sender}\t{}\n", recipients.join("\t"));
    let mut answer = String::new();
    let io = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&message))
        .and_then(|()| stream.shutdown(std::net::Shutdown::Write))
        .and_then(|()| stream.read_to_string(&mut answer).map(|_| ()));
    if let Err(e) = io {
        return fail(EX_TEMPFAIL, &format!("talking to the daemon: {e}; the message was not queued"));
    }
    match answer.trim_end().split_once(' ') {
        Some(("ok", _)) => ExitCode::SUCCESS,
        _ => {
            let text = answer.trim_end().strip_prefix("error: ").unwrap_or(answer.trim_end());
            let code = if text.contains(" 5.1.") {
                EX_NOUSER
            } else if text.contains("(4.") {
                EX_TEMPFAIL
            } else {
                EX_DATAERR
            };
            fail(code, &format!("{text}; the message was not queued"))
        }
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

/// The invoking user's login name (getpwuid of the real uid; $USER as a fallback).
fn login_name() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy the name at once.
    let from_passwd = unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if pw.is_null() { None } else { std::ffi::CStr::from_ptr((*pw).pw_name).to_str().ok().map(str::to_owned) }
    };
    from_passwd.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "nobody".into())
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
}
