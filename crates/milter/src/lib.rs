//! The Sendmail milter protocol, version 6, as Postfix and sendmail 8.14 speak it to filters
//! (rspamd, opendkim, SpamAssassin's and ClamAV's milters), sans-I/O: this crate turns what the
//! MTA knows into packets ([`Command::encode`]), splits the filter's byte stream into replies
//! ([`Decoder::next_response`]), and keeps the negotiated options ([`Negotiated`]: which steps the filter does
//! not want, which actions it may take), and one filter's whole conversation about a message
//! ([`conversation::Conversation`]: which steps to send, what the answers decide). The socket
//! driver lives with the SMTP session (`inbound/src/milter.rs`).
//!
//! Wire format (libmilter's `mfdef.h`): every packet is a 4-byte big-endian length, then one
//! command byte, then `length - 1` bytes of data; strings are NUL-terminated.

pub mod conversation;
pub mod edit;

use std::fmt;

/// Protocol version spoken (libmilter's `SMFI_VERSION`).
pub const VERSION: u32 = 6;

/// Largest body chunk sent in one `SMFIC_BODY` (libmilter's `MILTER_CHUNK_SIZE`).
pub const CHUNK: usize = 65_535;

/// Largest packet accepted from a filter (libmilter caps at 64 MiB; replies are small except a
/// replaced body).
pub const MAX_PACKET: usize = 64 * 1024 * 1024;

/// Actions a filter may ask for at end of message (`SMFIF_*`).
pub mod action {
    /// Add header fields.
    pub const ADD_HEADERS: u32 = 0x01;
    /// Replace the body.
    pub const CHANGE_BODY: u32 = 0x02;
    /// Add recipients.
    pub const ADD_RCPT: u32 = 0x04;
    /// Delete recipients.
    pub const DEL_RCPT: u32 = 0x08;
    /// Change or delete header fields.
    pub const CHANGE_HEADERS: u32 = 0x10;
    /// Quarantine the message.
    pub const QUARANTINE: u32 = 0x20;
    /// Change the envelope sender.
    pub const CHANGE_FROM: u32 = 0x40;
    /// Add recipients with ESMTP arguments.
    pub const ADD_RCPT_PAR: u32 = 0x80;
    /// Ask for macros per stage.
    pub const SET_SYMLIST: u32 = 0x100;
    /// Everything this client can do.
    pub const ALL: u32 = 0x1ff;
}

/// Protocol steps a filter may decline or leave unanswered (`SMFIP_*`).
pub mod step {
    /// No connect information.
    pub const NO_CONNECT: u32 = 0x1;
    /// No HELO.
    pub const NO_HELO: u32 = 0x2;
    /// No MAIL.
    pub const NO_MAIL: u32 = 0x4;
    /// No RCPT.
    pub const NO_RCPT: u32 = 0x8;
    /// No body.
    pub const NO_BODY: u32 = 0x10;
    /// No headers.
    pub const NO_HEADERS: u32 = 0x20;
    /// No end of headers.
    pub const NO_EOH: u32 = 0x40;
    /// No reply to each header.
    pub const NR_HEADER: u32 = 0x80;
    /// No DATA.
    pub const NO_DATA: u32 = 0x200;
    /// Rejected recipients too.
    pub const RCPT_REJ: u32 = 0x800;
    /// No reply to connect.
    pub const NR_CONNECT: u32 = 0x1000;
    /// No reply to HELO.
    pub const NR_HELO: u32 = 0x2000;
    /// No reply to MAIL.
    pub const NR_MAIL: u32 = 0x4000;
    /// No reply to RCPT.
    pub const NR_RCPT: u32 = 0x8000;
    /// No reply to DATA.
    pub const NR_DATA: u32 = 0x10000;
    /// No reply to end of headers.
    pub const NR_EOH: u32 = 0x40000;
    /// No reply to body chunks.
    pub const NR_BODY: u32 = 0x80000;
    /// Header values with their leading space.
    pub const HEADER_LEADING_SPACE: u32 = 0x100000;
    /// What this client offers: every step may be skipped or left unanswered.
    pub const OFFERED: u32 = 0x1fffff;
}

/// The client's address family in `SMFIC_CONNECT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    Inet,
    /// IPv6.
    Inet6,
    /// A Unix socket (local submission).
    Unix,
    /// Unknown.
    Unknown,
}

/// What the MTA sends (`SMFIC_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `O`: option negotiation: version, actions offered, steps offered.
    OptNeg { version: u32, actions: u32, steps: u32 },
    /// `D`: macros for the command with code `for_command`.
    Macros { for_command: u8, macros: Vec<(String, String)> },
    /// `C`: the client's host name, family, port and address.
    Connect { hostname: String, family: Family, port: u16, address: String },
    /// `H`: the HELO/EHLO argument.
    Helo(String),
    /// `M`: the reverse-path in angle brackets and ESMTP parameters.
    Mail(Vec<String>),
    /// `R`: a forward-path in angle brackets and ESMTP parameters.
    Rcpt(Vec<String>),
    /// `T`: DATA.
    Data,
    /// `L`: one header field, name and value.
    Header(String, String),
    /// `N`: end of headers.
    EndOfHeaders,
    /// `B`: a body chunk (at most [`CHUNK`] bytes).
    Body(Vec<u8>),
    /// `E`: end of message: the filter answers with its actions, then its verdict.
    EndOfMessage,
    /// `A`: abort this transaction (the connection stays).
    Abort,
    /// `Q`: quit.
    Quit,
}

impl Command {
    /// The command byte.
    pub fn code(&self) -> u8 {
        match self {
            Self::OptNeg { .. } => b'O',
            Self::Macros { .. } => b'D',
            Self::Connect { .. } => b'C',
            Self::Helo(_) => b'H',
            Self::Mail(_) => b'M',
            Self::Rcpt(_) => b'R',
            Self::Data => b'T',
            Self::Header(..) => b'L',
            Self::EndOfHeaders => b'N',
            Self::Body(_) => b'B',
            Self::EndOfMessage => b'E',
            Self::Abort => b'A',
            Self::Quit => b'Q',
        }
    }

    /// The packet: length, command byte, data.
    pub fn encode(&self) -> Vec<u8> {
        let mut data = Vec::new();
        let z = |d: &mut Vec<u8>, s: &str| {
            d.extend_from_slice(s.as_bytes());
            d.push(0);
        };
        match self {
            Self::OptNeg { version, actions, steps } => {
                for v in [version, actions, steps] {
                    data.extend_from_slice(&v.to_be_bytes());
                }
            }
            Self::Macros { for_command, macros } => {
                data.push(*for_command);
                for (k, v) in macros {
                    z(&mut data, k);
                    z(&mut data, v);
                }
            }
            Self::Connect { hostname, family, port, address } => {
                z(&mut data, hostname);
                let f = match family {
                    Family::Inet => b'4',
                    Family::Inet6 => b'6',
                    Family::Unix => b'L',
                    Family::Unknown => b'U',
                };
                data.push(f);
                if *family != Family::Unknown {
                    data.extend_from_slice(&port.to_be_bytes());
                    z(&mut data, address);
                }
            }
            Self::Helo(h) => z(&mut data, h),
            Self::Mail(args) | Self::Rcpt(args) => args.iter().for_each(|a| z(&mut data, a)),
            Self::Header(name, value) => {
                z(&mut data, name);
                z(&mut data, value);
            }
            Self::Body(chunk) => data.extend_from_slice(chunk),
            Self::Data | Self::EndOfHeaders | Self::EndOfMessage | Self::Abort | Self::Quit => {}
        }
        let mut out = Vec::with_capacity(data.len() + 5);
        out.extend_from_slice(&(data.len() as u32 + 1).to_be_bytes());
        out.push(self.code());
        out.extend_from_slice(&data);
        out
    }

    /// The body as [`Command::Body`] chunks of at most [`CHUNK`] bytes.
    pub fn body_chunks(body: &[u8]) -> Vec<Self> {
        body.chunks(CHUNK).map(|c| Self::Body(c.to_vec())).collect()
    }
}

/// What a filter answers (`SMFIR_*`), and the end-of-message actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `O`: the filter's version, the actions it wants, the steps it declines.
    OptNeg { version: u32, actions: u32, steps: u32 },
    /// `a`: accept the message, no more filtering of it.
    Accept,
    /// `c`: continue.
    Continue,
    /// `r`: reject (`550 5.7.1`).
    Reject,
    /// `t`: temporary failure (`451 4.7.1`).
    TempFail,
    /// `d`: accept and discard the message silently.
    Discard,
    /// `y`: reply with this SMTP reply (`550 5.7.1 text`).
    ReplyCode(String),
    /// `p`: still working (resets the timeout).
    Progress,
    /// `q`: quarantine, with a reason.
    Quarantine(String),
    /// `h`: add a header field.
    AddHeader(String, String),
    /// `m`: change the `index`-th (1-based) field of that name; an empty value deletes it.
    ChangeHeader(u32, String, String),
    /// `i`: insert a header field at `index` (0 = at the top).
    InsertHeader(u32, String, String),
    /// `e`: change the envelope sender (and ESMTP arguments).
    ChangeFrom(String, Option<String>),
    /// `+` / `2`: add a recipient (with ESMTP arguments).
    AddRcpt(String, Option<String>),
    /// `-`: delete a recipient.
    DelRcpt(String),
    /// `b`: replace the body with this chunk (several chunks concatenate).
    ReplaceBody(Vec<u8>),
}

impl Response {
    /// Whether this ends the filter's answer to a command (a verdict, not an action or
    /// progress).
    pub fn is_verdict(&self) -> bool {
        matches!(
            self,
            Self::OptNeg { .. }
                | Self::Accept
                | Self::Continue
                | Self::Reject
                | Self::TempFail
                | Self::Discard
                | Self::ReplyCode(_)
        )
    }
}

/// A reply the client cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A packet longer than the decoder's limit (at most [`MAX_PACKET`]), or of length 0.
    #[error("bad packet length {0}")]
    Length(usize),
    /// An unknown response code.
    #[error("unknown response code {0:?}")]
    Unknown(char),
    /// Data that does not fit its response code.
    #[error("malformed {0:?} response")]
    Malformed(char),
}

/// Splits the filter's byte stream into [`Response`]s.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max_packet: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self { buf: Vec::new(), max_packet: MAX_PACKET }
    }
}

impl Decoder {
    /// A decoder that refuses packets longer than `max_packet` bytes (at most
    /// [`MAX_PACKET`]): a filter's replacement body or header cannot make us buffer more
    /// than the message size limit allows.
    pub fn with_limit(max_packet: usize) -> Self {
        Self { buf: Vec::new(), max_packet: max_packet.min(MAX_PACKET) }
    }

    /// Adds bytes read from the filter.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete response, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// [`DecodeError`]: the connection must be dropped (the filter's default action applies).
    pub fn next_response(&mut self) -> Result<Option<Response>, DecodeError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len == 0 || len > self.max_packet {
            return Err(DecodeError::Length(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let packet: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
        parse(packet[0], &packet[1..]).map(Some)
    }
}

/// NUL-terminated strings of `data`.
fn strings(data: &[u8]) -> Vec<String> {
    data.split(|&b| b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

fn parse(code: u8, data: &[u8]) -> Result<Response, DecodeError> {
    let c = code as char;
    let bad = || DecodeError::Malformed(c);
    let u32_at = |i: usize| -> Result<u32, DecodeError> {
        data.get(i..i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or_else(bad)
    };
    let s = strings(data);
    let arg = |i: usize| s.get(i).cloned().ok_or_else(bad);
    let opt = |i: usize| s.get(i).filter(|v| !v.is_empty()).cloned();
    Ok(match code {
        b'O' => Response::OptNeg { version: u32_at(0)?, actions: u32_at(4)?, steps: u32_at(8)? },
        b'a' => Response::Accept,
        b'c' => Response::Continue,
        b'r' => Response::Reject,
        b't' => Response::TempFail,
        b'd' => Response::Discard,
        b'p' => Response::Progress,
        b'y' => Response::ReplyCode(arg(0)?),
        b'q' => Response::Quarantine(arg(0)?),
        b'h' => Response::AddHeader(arg(0)?, arg(1)?),
        b'm' | b'i' => {
            let index = u32_at(0)?;
            let rest = strings(&data[4..]);
            let (name, value) = (rest.first().cloned().ok_or_else(bad)?, rest.get(1).cloned().unwrap_or_default());
            if code == b'm' {
                Response::ChangeHeader(index, name, value)
            } else {
                Response::InsertHeader(index, name, value)
            }
        }
        b'e' => Response::ChangeFrom(arg(0)?, opt(1)),
        b'+' => Response::AddRcpt(arg(0)?, None),
        b'2' => Response::AddRcpt(arg(0)?, opt(1)),
        b'-' => Response::DelRcpt(arg(0)?),
        b'b' => Response::ReplaceBody(data.to_vec()),
        other => return Err(DecodeError::Unknown(other as char)),
    })
}

/// The options agreed with one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The filter's protocol version.
    pub version: u32,
    /// Actions it may take (those it asked for that we offered).
    pub actions: u32,
    /// Steps it declines or leaves unanswered (`step::*`).
    pub steps: u32,
}

impl Negotiated {
    /// From the filter's `OptNeg` reply to ours (`actions` / `steps` offered).
    ///
    /// # Errors
    /// A filter older than version 2 (no option negotiation worth the name).
    pub fn from_reply(reply: &Response, offered_actions: u32, offered_steps: u32) -> Result<Self, DecodeError> {
        let Response::OptNeg { version, actions, steps } = reply else { return Err(DecodeError::Malformed('O')) };
        if *version < 2 {
            return Err(DecodeError::Malformed('O'));
        }
        Ok(Self { version: *version, actions: actions & offered_actions, steps: steps & offered_steps })
    }

    /// Whether the filter declined step `flag` (`step::NO_*`).
    pub fn skips(&self, flag: u32) -> bool {
        self.steps & flag != 0
    }

    /// Whether the filter answers step `no_reply_flag` (`step::NR_*`); headers' `NR_HEADER`.
    pub fn replies(&self, no_reply_flag: u32) -> bool {
        self.steps & no_reply_flag == 0
    }

    /// Whether the filter may take action `flag` (`action::*`).
    pub fn may(&self, flag: u32) -> bool {
        self.actions & flag != 0
    }
}

impl fmt::Display for Negotiated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version {}, actions {:#x}, steps {:#x}", self.version, self.actions, self.steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u8, data: &[u8]) -> Vec<u8> {
        let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
        p.push(code);
        p.extend_from_slice(data);
        p
    }

    #[test]
    fn commands_encode_as_libmilter_reads_them() {
        let opt = Command::OptNeg { version: VERSION, actions: action::ALL, steps: step::OFFERED }.encode();
        assert_eq!(&opt[..5], &[0, 0, 0, 13, b'O']);
        assert_eq!(&opt[5..9], &6u32.to_be_bytes());
        let c = Command::Connect {
            hostname: "mx.test".into(),
            family: Family::Inet,
            port: 2525,
            address: "192.0.2.7".into(),
        }
        .encode();
        assert_eq!(c, packet(b'C', b"mx.test\x004\x09\xdd192.0.2.7\x00"));
        let m = Command::Macros { for_command: b'C', macros: vec![("j".into(), "mx.test".into())] }.encode();
        assert_eq!(m, packet(b'D', b"Cj\x00mx.test\x00"));
        assert_eq!(
            Command::Mail(vec!["<a@x.test>".into(), "BODY=8BITMIME".into()]).encode(),
            packet(b'M', b"<a@x.test>\x00BODY=8BITMIME\x00")
        );
        assert_eq!(Command::Header("Subject".into(), "hi".into()).encode(), packet(b'L', b"Subject\x00hi\x00"));
        assert_eq!(Command::EndOfMessage.encode(), vec![0, 0, 0, 1, b'E']);
        let big = vec![b'x'; CHUNK * 2 + 10];
        let chunks = Command::body_chunks(&big);
        assert_eq!(chunks.len(), 3);
        assert!(matches!(&chunks[2], Command::Body(b) if b.len() == 10));
    }

    #[test]
    fn responses_decode_across_partial_reads() {
        let mut stream = Vec::new();
        stream.extend(packet(b'O', &[0, 0, 0, 6, 0, 0, 0, 0x13, 0, 0, 0, 0x10]));
        stream.extend(packet(b'h', b"X-Spam\x00yes\x00"));
        stream.extend(packet(b'm', &[&2u32.to_be_bytes()[..], b"Subject\x00\x00"].concat()));
        stream.extend(packet(b'i', &[&0u32.to_be_bytes()[..], b"X-First\x00 top\x00"].concat()));
        stream.extend(packet(b'e', b"<new@x.test>\x00"));
        stream.extend(packet(b'2', b"<added@x.test>\x00NOTIFY=NEVER\x00"));
        stream.extend(packet(b'-', b"<gone@x.test>\x00"));
        stream.extend(packet(b'b', b"new body\r\n"));
        stream.extend(packet(b'y', b"554 5.7.1 spam\x00"));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for byte in stream {
            d.feed(&[byte]);
            while let Some(r) = d.next_response().unwrap() {
                got.push(r);
            }
        }
        assert_eq!(got[0], Response::OptNeg { version: 6, actions: 0x13, steps: 0x10 });
        assert_eq!(got[1], Response::AddHeader("X-Spam".into(), "yes".into()));
        assert_eq!(got[2], Response::ChangeHeader(2, "Subject".into(), String::new()));
        assert_eq!(got[3], Response::InsertHeader(0, "X-First".into(), " top".into()));
        assert_eq!(got[4], Response::ChangeFrom("<new@x.test>".into(), None));
        assert_eq!(got[5], Response::AddRcpt("<added@x.test>".into(), Some("NOTIFY=NEVER".into())));
        assert_eq!(got[6], Response::DelRcpt("<gone@x.test>".into()));
        assert_eq!(got[7], Response::ReplaceBody(b"new body\r\n".to_vec()));
        assert_eq!(got[8], Response::ReplyCode("554 5.7.1 spam".into()));
        assert!(got[8].is_verdict() && !got[1].is_verdict());
        let n = Negotiated::from_reply(&got[0], action::ADD_HEADERS | action::CHANGE_HEADERS, step::OFFERED).unwrap();
        assert!(n.may(action::ADD_HEADERS) && !n.may(action::CHANGE_BODY), "only what was offered and asked");
        assert!(n.skips(step::NO_BODY) && !n.skips(step::NO_HEADERS));
        let mut bad = Decoder::default();
        bad.feed(&[0, 0, 0, 0]);
        assert_eq!(bad.next_response(), Err(DecodeError::Length(0)));
        let mut unknown = Decoder::default();
        unknown.feed(&packet(b'Z', b""));
        assert_eq!(unknown.next_response(), Err(DecodeError::Unknown('Z')));
    }
}
