//! The client side of SMTP, sans I/O: reply parsing, EHLO capabilities, the commands of one
//! transaction, dot-stuffing, and the RFC 6152 / RFC 6531 rules for peers that lack 8BITMIME or
//! SMTPUTF8, and the conversation itself ([`session::Session`]). The drivers in `outbound`
//! perform the I/O.

pub mod session;

use postern_types::dsn::Ret;
use postern_types::{EnhancedStatus, Reply, ReversePath, printable};

/// Incremental reply parser: feed bytes, take complete (possibly multi-line) replies.
#[derive(Debug, Default)]
pub struct ReplyParser {
    buf: Vec<u8>,
    lines: Vec<String>,
}

/// The peer sent something that is not an SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed reply line: {0:?}")]
pub struct MalformedReply(pub String);

/// Longest reply line accepted from a peer (RFC 5321 §4.5.3.1.5 says 512; we allow more).
const MAX_REPLY_LINE: usize = 4096;

impl ReplyParser {
    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete reply, if one has arrived.
    ///
    /// # Errors
    /// [`MalformedReply`] for a line that is not `NNN[ -]text` with a first digit of 2 to 5
    /// (RFC 5321 §4.2.1: no other class exists, and taking `061` for a success would lose the
    /// message), a continuation line whose code differs from the first line's (§4.2.1: every
    /// line of a reply carries the same code), or a line that is too long.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, MalformedReply> {
        loop {
            let Some(lf) = memchr::memchr(b'\n', &self.buf) else {
                if self.buf.len() > MAX_REPLY_LINE {
                    return Err(MalformedReply(String::from_utf8_lossy(&self.buf[..80]).into_owned()));
                }
                return Ok(None);
            };
            let raw: Vec<u8> = self.buf.drain(..=lf).collect();
            let line = printable(String::from_utf8_lossy(&raw).trim_end_matches(['\r', '\n'])).into_owned();
            let b = line.as_bytes();
            let code_ok = b.len() >= 3 && (b'2'..=b'5').contains(&b[0]) && b[1..3].iter().all(u8::is_ascii_digit);
            let sep = b.get(3).copied();
            let same_code = self.lines.first().is_none_or(|first| first.as_bytes()[..3] == b[..3.min(b.len())]);
            if !code_ok || !matches!(sep, None | Some(b' ' | b'-')) || !same_code {
                self.lines.clear();
                return Err(MalformedReply(line));
            }
            self.lines.push(line);
            if sep == Some(b'-') {
                continue;
            }
            let lines = std::mem::take(&mut self.lines);
            return Ok(Some(parse_lines(&lines)));
        }
    }
}

/// Builds a [`Reply`] from its lines, taking the enhanced status code from the last line when
/// present (RFC 2034 §4).
fn parse_lines(lines: &[String]) -> Reply {
    let code: u16 = lines[0][..3].parse().unwrap_or(0);
    let texts: Vec<&str> = lines.iter().map(|l| l.get(4..).unwrap_or("")).collect();
    let status = texts.last().and_then(|t| parse_status(t.split(' ').next().unwrap_or(""), code));
    let strip = |t: &str| -> String {
        match status {
            Some(s) => t.strip_prefix(&s.to_string()).map_or(t, str::trim_start).to_owned(),
            None => t.to_owned(),
        }
    };
    Reply { code, status, lines: texts.iter().map(|t| strip(t)).collect() }
}

/// `X.Y.Z` whose class matches the reply code's first digit.
fn parse_status(s: &str, code: u16) -> Option<EnhancedStatus> {
    let mut it = s.split('.');
    let c: u8 = it.next()?.parse().ok()?;
    let sub: u16 = it.next()?.parse().ok()?;
    let det: u16 = it.next()?.parse().ok()?;
    (it.next().is_none() && u16::from(c) == code / 100).then_some(EnhancedStatus(c, sub, det))
}

/// What the peer announced in its EHLO reply (RFC 5321 §4.1.1.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870) and its limit in bytes; `Some(0)` when SIZE is offered without a limit.
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// CHUNKING (RFC 3030).
    pub chunking: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// REQUIRETLS (RFC 8689 §2).
    pub requiretls: bool,
}

impl Capabilities {
    /// Parses a 250 reply to EHLO (the first line is the greeting, not a keyword).
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut c = Self::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let Some(kw) = words.next() else { continue };
            match kw.to_ascii_uppercase().as_str() {
                "PIPELINING" => c.pipelining = true,
                "SIZE" => c.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => c.eight_bit_mime = true,
                "SMTPUTF8" => c.smtputf8 = true,
                "STARTTLS" => c.starttls = true,
                "ENHANCEDSTATUSCODES" => c.enhanced_status_codes = true,
                "CHUNKING" => c.chunking = true,
                "DSN" => c.dsn = true,
                "REQUIRETLS" => c.requiretls = true,
                _ => {}
            }
        }
        c
    }
}

/// What Postern knows about the message it is about to send.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// The reverse-path (the null sender included).
    pub reverse_path: &'a ReversePath,
    /// Message size in bytes.
    pub size: u64,
    /// The message was received with BODY=8BITMIME.
    pub body_8bit: bool,
    /// The message needs SMTPUTF8 (received with it).
    pub smtputf8: bool,
    /// `RET=` to pass on to a DSN-capable peer.
    pub ret: Option<Ret>,
    /// `ENVID=` (xtext) to pass on to a DSN-capable peer.
    pub envid: Option<&'a str>,
    /// The message was received with REQUIRETLS (RFC 8689): the peer must offer it too.
    pub require_tls: bool,
}

/// Why a message cannot be sent to this peer as it is; each is permanent for this peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsendable {
    /// The peer's SIZE limit is below the message size (RFC 1870 §6: 552 5.3.4).
    TooBig { limit: u64 },
    /// The message needs SMTPUTF8 and the peer lacks it (RFC 6531 §3.7.4.1: 5.6.7).
    NeedsSmtpUtf8,
    /// The message needs REQUIRETLS and the peer lacks it (RFC 8689 §4.2.1: 5.7.30).
    NeedsRequireTls,
}

impl Unsendable {
    /// The failure as a reply, for logs and DSNs.
    pub fn reply(&self) -> Reply {
        match self {
            Self::TooBig { limit } => Reply::new(
                552,
                EnhancedStatus(5, 3, 4),
                format!("message too big for the remote server (limit {limit} bytes)"),
            ),
            Self::NeedsSmtpUtf8 => Reply::new(553, EnhancedStatus(5, 6, 7), "remote server does not support SMTPUTF8"),
            Self::NeedsRequireTls => Reply::new(
                550,
                EnhancedStatus(5, 7, 30),
                "REQUIRETLS support required: the remote server does not offer REQUIRETLS",
            ),
        }
    }
}

/// The MAIL FROM command for `msg` to a peer with `caps`.
///
/// SIZE is declared when the peer has SIZE; BODY=8BITMIME when the message is 8-bit and the peer
/// has 8BITMIME. An 8-bit message to a peer without 8BITMIME is sent as it is (RFC 6152 §3 lets a
/// relay do so rather than bounce; converting it would rewrite the body, which Postern never
/// does). SMTPUTF8 and REQUIRETLS (RFC 8689 §4.2.1) are required of the peer when the message
/// needs them.
///
/// # Errors
/// [`Unsendable`] when the peer cannot take the message.
pub fn mail_command(msg: &Outgoing<'_>, caps: &Capabilities) -> Result<String, Unsendable> {
    if let Some(limit) = caps.size.filter(|&l| l > 0 && msg.size > l) {
        return Err(Unsendable::TooBig { limit });
    }
    if msg.smtputf8 && !caps.smtputf8 {
        return Err(Unsendable::NeedsSmtpUtf8);
    }
    if msg.require_tls && !caps.requiretls {
        return Err(Unsendable::NeedsRequireTls);
    }
    let mut cmd = format!("MAIL FROM:{}", msg.reverse_path);
    if caps.size.is_some() {
        cmd.push_str(&format!(" SIZE={}", msg.size));
    }
    if msg.body_8bit && caps.eight_bit_mime {
        cmd.push_str(" BODY=8BITMIME");
    }
    if msg.smtputf8 {
        cmd.push_str(" SMTPUTF8");
    }
    if msg.require_tls {
        cmd.push_str(" REQUIRETLS");
    }
    // RFC 3461 §5.2: DSN parameters are passed on only to peers that offer DSN.
    if caps.dsn {
        if let Some(ret) = msg.ret {
            cmd.push_str(&format!(" RET={}", ret.param()));
        }
        if let Some(envid) = msg.envid {
            cmd.push_str(&format!(" ENVID={envid}"));
        }
    }
    cmd.push_str("\r\n");
    Ok(cmd)
}

/// `message` (CRLF line endings) in the DATA wire form: lines starting with `.` get another
/// `.`, a final CRLF is added when missing, then `.` CRLF (RFC 5321 §4.5.2).
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    DotStuffed::new(message, usize::MAX).flatten().collect()
}

/// Dot-stuffing of a message read in pieces of any size (a queue file streamed to a peer):
/// [`Stuffer::push`] each piece, then [`Stuffer::finish`]; the bytes are those of
/// [`dot_stuff`] over the whole message (RFC 5321 §4.5.2).
#[derive(Debug, Clone, Default)]
pub struct Stuffer {
    /// The last byte pushed did not end a line.
    mid_line: bool,
    /// The last two bytes pushed.
    last: [u8; 2],
    /// Bytes were pushed.
    sent: bool,
}

impl Stuffer {
    /// Appends `piece` to `out`, a dot added before every line that starts with one.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        let mut dots = Vec::new();
        self.dots(piece, &mut dots);
        let mut from = 0;
        for dot in dots {
            out.extend_from_slice(&piece[from..dot]);
            out.push(b'.');
            from = dot;
        }
        out.extend_from_slice(&piece[from..]);
    }

    /// Takes `piece` in: appends to `at` the offsets in `piece` before which a dot goes (a line
    /// that starts with one, RFC 5321 §4.5.2), without copying it; the caller writes the
    /// piece's runs between them, a `.` written at each offset.
    pub fn dots(&mut self, piece: &[u8], at: &mut Vec<usize>) {
        let mut start = 0;
        while start < piece.len() {
            if !self.mid_line && piece[start] == b'.' {
                at.push(start);
            }
            let end = memchr::memchr(b'\n', &piece[start..]).map_or(piece.len(), |i| start + i + 1);
            self.mid_line = piece[end - 1] != b'\n';
            start = end;
        }
        for &b in piece.iter().rev().take(2).rev() {
            self.last = [self.last[1], b];
            self.sent = true;
        }
    }

    /// Appends the end: a CRLF when the message did not end with one, then `.` CRLF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.sent && self.last != *b"\r\n" {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// The message as sent after DATA ([`dot_stuff`]), in pieces: `chunk` bytes of the message
/// each (the last fewer), with their stuffing dots and, on the last, the end marker; a delivery
/// holds one piece at a time instead of a whole stuffed copy of the message.
#[derive(Debug, Clone)]
pub struct DotStuffed<'a> {
    rest: &'a [u8],
    chunk: usize,
    stuffer: Stuffer,
    done: bool,
}

impl<'a> DotStuffed<'a> {
    /// The pieces of `message`, each of about `chunk` bytes (at least 1).
    #[must_use]
    pub fn new(message: &'a [u8], chunk: usize) -> Self {
        Self { rest: message, chunk: chunk.max(1), stuffer: Stuffer::default(), done: false }
    }
}

impl Iterator for DotStuffed<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let (piece, rest) = self.rest.split_at(self.chunk.min(self.rest.len()));
        self.rest = rest;
        let mut out = Vec::with_capacity(piece.len() + piece.len() / 64 + 5);
        self.stuffer.push(piece, &mut out);
        if self.rest.is_empty() {
            self.stuffer.finish(&mut out);
            self.done = true;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_in_a_remote_reply_are_written_out() {
        let mut p = ReplyParser::default();
        p.feed(b"550-5.1.1 evil\x1b[2J\x07 text\r\n550 5.1.1 bare\rCR and\ttab\r\n");
        let r = p.next_reply().unwrap().unwrap();
        assert_eq!(r.lines, ["evil\\x1B[2J\\x07 text", "bare\\x0DCR and\ttab"]);
        assert_eq!(r.status, Some(EnhancedStatus(5, 1, 1)));
    }

    #[test]
    fn refuses_codes_outside_2xx_to_5xx_and_mixed_multiline_codes() {
        // Both found by fuzzing (fuzz/regressions/reply/).
        for bytes in [&b"061 jh\r\n"[..], b"721 CIL\r\n", b"250-first\r\n550 last\r\n"] {
            let mut p = ReplyParser::default();
            p.feed(bytes);
            assert!(p.next_reply().is_err(), "{:?}", String::from_utf8_lossy(bytes));
        }
        let mut p = ReplyParser::default();
        p.feed(b"250-first\r\n250 last\r\n");
        assert_eq!(p.next_reply().unwrap().unwrap().code, 250);
    }

    #[test]
    fn parses_replies_incrementally() {
        let mut p = ReplyParser::default();
        p.feed(b"250-mx.test Hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n");
        assert_eq!(p.next_reply().unwrap(), None);
        p.feed(b"250 8BITMIME\r\n550 5.1.1 <x@y>: unknown\r\n");
        let ehlo = p.next_reply().unwrap().unwrap();
        assert_eq!(ehlo.code, 250);
        let caps = Capabilities::from_ehlo(&ehlo);
        assert!(caps.pipelining && caps.eight_bit_mime && !caps.smtputf8);
        assert_eq!(caps.size, Some(1000));
        let r = p.next_reply().unwrap().unwrap();
        assert_eq!((r.code, r.status), (550, Some(EnhancedStatus(5, 1, 1))));
        assert_eq!(r.lines[0], "<x@y>: unknown");
        p.feed(b"garbage\r\n");
        assert!(p.next_reply().is_err());
        // A status code of the wrong class is text, not a status.
        let mut p = ReplyParser::default();
        p.feed(b"451 5.1.1 odd\r\n");
        assert_eq!(p.next_reply().unwrap().unwrap().status, None);
    }

    /// The pieces of any size make the same bytes as the whole, and as the plain rule does.
    #[test]
    fn dot_stuffing_in_pieces_is_the_same_bytes() {
        fn reference(message: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            for line in message.split_inclusive(|b| *b == b'\n') {
                if line.starts_with(b".") {
                    out.push(b'.');
                }
                out.extend_from_slice(line);
            }
            if !out.is_empty() && !out.ends_with(b"\r\n") {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b".\r\n");
            out
        }
        let messages: [&[u8]; 7] = [
            b"",
            b"x",
            b".\r\n",
            b"a\r\n.b\r\n..c\r\nd",
            b"line\r",
            b"\r\n\r\n.\r\n",
            b"Subject: s\r\n\r\n.hidden\r\nlong line without end .dot",
        ];
        for m in messages {
            let whole = dot_stuff(m);
            assert_eq!(whole, reference(m), "{m:?}");
            for chunk in [1, 2, 3, 5, 8, 64] {
                let pieces: Vec<Vec<u8>> = DotStuffed::new(m, chunk).collect();
                assert_eq!(pieces.concat(), whole, "{m:?} in pieces of {chunk}");
                assert!(pieces.iter().all(|p| p.len() <= chunk + 6), "{m:?} {chunk}: {pieces:?}");
            }
        }
    }

    /// A message pushed in pieces of any size makes the bytes of the whole.
    #[test]
    fn a_stuffer_fed_pieces_makes_the_same_bytes() {
        let messages: [&[u8]; 6] =
            [b"", b".", b"a\r\n.b\r\n..c\r\nd", b"line\r", b"\r\n\r\n.\r\n", b"Subject: s\r\n\r\n.hidden\r\nend ."];
        for m in messages {
            for size in [1, 2, 3, 5, 64] {
                let mut stuffer = Stuffer::default();
                let mut out = Vec::new();
                for piece in m.chunks(size) {
                    stuffer.push(piece, &mut out);
                }
                stuffer.finish(&mut out);
                assert_eq!(out, dot_stuff(m), "{m:?} in pieces of {size}");
                // The same, written as runs between the dots.
                let (mut stuffer, mut out, mut at) = (Stuffer::default(), Vec::new(), Vec::new());
                for piece in m.chunks(size) {
                    at.clear();
                    stuffer.dots(piece, &mut at);
                    let mut from = 0;
                    for &dot in &at {
                        out.extend_from_slice(&piece[from..dot]);
                        out.push(b'.');
                        from = dot;
                    }
                    out.extend_from_slice(&piece[from..]);
                }
                stuffer.finish(&mut out);
                assert_eq!(out, dot_stuff(m), "{m:?} as runs in pieces of {size}");
            }
        }
    }

    #[test]
    fn mail_command_follows_capabilities() {
        let sender = ReversePath::Mailbox(postern_types::Address::parse("a@b.test").unwrap());
        let msg = Outgoing {
            reverse_path: &sender,
            size: 500,
            body_8bit: true,
            smtputf8: false,
            ret: Some(Ret::Hdrs),
            envid: Some("x1"),
            require_tls: false,
        };
        let all = Capabilities { size: Some(1000), eight_bit_mime: true, smtputf8: true, ..Default::default() };
        assert_eq!(mail_command(&msg, &all).unwrap(), "MAIL FROM:<a@b.test> SIZE=500 BODY=8BITMIME\r\n");
        assert_eq!(mail_command(&msg, &Capabilities::default()).unwrap(), "MAIL FROM:<a@b.test>\r\n");
        let small = Capabilities { size: Some(100), ..Default::default() };
        assert_eq!(mail_command(&msg, &small), Err(Unsendable::TooBig { limit: 100 }));
        let utf8 = Outgoing { smtputf8: true, ..msg };
        assert_eq!(mail_command(&utf8, &Capabilities::default()), Err(Unsendable::NeedsSmtpUtf8));
        assert!(mail_command(&utf8, &all).unwrap().ends_with(" SMTPUTF8\r\n"));
        let strict = Outgoing { require_tls: true, ..msg.clone() };
        assert_eq!(mail_command(&strict, &all), Err(Unsendable::NeedsRequireTls));
        let rt = Capabilities { requiretls: true, ..Default::default() };
        assert_eq!(mail_command(&strict, &rt).unwrap(), "MAIL FROM:<a@b.test> REQUIRETLS\r\n");
        assert_eq!(Unsendable::NeedsRequireTls.reply().status, Some(EnhancedStatus(5, 7, 30)));
        let dsn = Capabilities { dsn: true, ..Default::default() };
        assert_eq!(mail_command(&msg, &dsn).unwrap(), "MAIL FROM:<a@b.test> RET=HDRS ENVID=x1\r\n");
    }

    #[test]
    fn dot_stuffing_round_trips_with_the_server_decoder() {
        for msg in [&b"a\r\n.b\r\n..c\r\n.\r\n"[..], b"no final newline", b"", b".\r\n"] {
            let wire = dot_stuff(msg);
            let mut d = crate::data::DataDecoder::new(1 << 20);
            let (n, done) = d.feed(&wire);
            assert!(done && n == wire.len(), "{msg:?}");
            let mut want = msg.to_vec();
            if !want.is_empty() && !want.ends_with(b"\r\n") {
                want.extend_from_slice(b"\r\n");
            }
            assert_eq!(d.finish().unwrap(), want);
        }
    }
}
