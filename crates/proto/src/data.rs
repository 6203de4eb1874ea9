//! The DATA content decoder (RFC 5321 §4.1.1.4, §4.5.2) and the line-ending checker shared with
//! BDAT.
//!
//! Only `CRLF . CRLF` ends DATA. Every other line ending is an error: a bare LF or bare CR
//! anywhere in the content marks the message as bad (it is still read to its real end, then
//! rejected), so `<LF>.<LF>` or `<CR>.<CR>` can never end a message early. That closes the SMTP
//! smuggling class (CVE-2023-51764, CVE-2023-51765, CVE-2023-51766), where two MTAs disagree on
//! where a message ends. RFC 5321 §2.3.8 forbids bare CR and LF in SMTP.
//!
//! Dot-unstuffing: a line starting with `.` has that dot removed (§4.5.2).

/// What went wrong with a message's content, decided when its end is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentError {
    /// A bare LF or a bare CR (not part of CRLF) was seen.
    BareLineEnding,
    /// More octets than the size limit (the excess was read and discarded).
    TooBig,
    /// A line that is a lone dot once its NULs are dropped (`<CR><LF>\0.<CR><LF>`): a next
    /// hop that drops NULs would see the end of data there ([`nul_dot_line`]).
    NulDotLine,
}

/// Whether `content` (unstuffed, CRLF lines) holds a line of NULs and one dot, in any order,
/// with at least one NUL: relayed as it is, it ends the message early at a receiver that
/// drops NULs, and what follows is read there as SMTP commands (the scanners of SEC Consult and
/// smtpsmug flag it). Postern never rewrites a body, so such a message is refused like the other
/// smuggling endings.
pub fn nul_dot_line(content: &[u8]) -> bool {
    if memchr::memchr(0, content).is_none() {
        return false;
    }
    content.split(|&b| b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.contains(&0) && line.iter().filter(|&&b| b != 0).eq([b'.'].iter())
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or at the very start).
    LineStart,
    /// A line started with `.`.
    Dot,
    /// `.` then CR at line start: LF ends the message.
    DotCr,
    /// Inside a line.
    Mid,
    /// CR seen inside a line.
    Cr,
}

/// Incremental DATA decoder. Feed it bytes; it appends unstuffed content to `out` (up to
/// `max_size` octets) and reports where the terminating `CRLF.CRLF` ended.
#[derive(Debug)]
pub struct DataDecoder {
    state: State,
    max_size: usize,
    error: Option<ContentError>,
    out: Vec<u8>,
}

impl DataDecoder {
    /// A decoder that keeps at most `max_size` octets of content.
    pub fn new(max_size: usize) -> Self {
        Self { state: State::LineStart, max_size, error: None, out: Vec::new() }
    }

    /// Consumes bytes from `input`. Returns `(consumed, finished)`; when `finished`, the bytes
    /// after `consumed` belong to the next command.
    pub fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Mid => {
                    // Fast path: copy the run up to the next CR or LF.
                    match memchr::memchr2(b'\r', b'\n', &input[i..]) {
                        None => {
                            self.push(&input[i..]);
                            return (input.len(), false);
                        }
                        Some(n) => {
                            self.push(&input[i..i + n]);
                            i += n;
                            if input[i] == b'\r' {
                                self.state = State::Cr;
                            } else {
                                // A bare LF does not start a line: `<LF>.<CR><LF>` must not end DATA.
                                self.bad();
                            }
                        }
                    }
                }
                State::LineStart => match b {
                    b'.' => self.state = State::Dot,
                    b'\r' => self.state = State::Cr,
                    b'\n' => {
                        self.bad();
                        self.state = State::Mid;
                    }
                    _ => {
                        self.push(&[b]);
                        self.state = State::Mid;
                    }
                },
                State::Dot => match b {
                    b'\r' => self.state = State::DotCr,
                    b'\n' => {
                        // `<LF>.<LF>`: never an end of data.
                        self.bad();
                        self.state = State::Mid;
                    }
                    _ => {
                        self.push(&[b]);
                        self.state = State::Mid;
                    }
                },
                State::DotCr => {
                    if b == b'\n' {
                        return (i + 1, true);
                    }
                    self.bad();
                    self.push(b"\r");
                    self.state = State::Mid;
                    continue; // reprocess b in Mid
                }
                State::Cr => {
                    if b == b'\n' {
                        self.push(b"\r\n");
                        self.state = State::LineStart;
                    } else {
                        self.bad();
                        self.push(b"\r");
                        self.state = State::Mid;
                        continue;
                    }
                }
            }
            i += 1;
        }
        (input.len(), false)
    }

    fn bad(&mut self) {
        if self.error.is_none() {
            self.error = Some(ContentError::BareLineEnding);
        }
        self.out = Vec::new();
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if self.out.len() + bytes.len() > self.max_size {
            self.error = Some(ContentError::TooBig);
            self.out = Vec::new();
            return;
        }
        self.out.extend_from_slice(bytes);
    }

    /// The decoded content, or the error found, once `feed` reported the end.
    pub fn finish(self) -> Result<Vec<u8>, ContentError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}

/// Checks line endings across BDAT chunks: every CR must be followed by LF and every LF preceded
/// by CR (RFC 5321 §2.3.8; BINARYMIME is not offered, so chunks carry CRLF text).
#[derive(Debug, Default, Clone, Copy)]
pub struct LineEndings {
    after_cr: bool,
    bad: bool,
}

impl LineEndings {
    /// Checks the next chunk of content.
    pub fn check(&mut self, chunk: &[u8]) {
        for &b in chunk {
            match b {
                b'\n' if !self.after_cr => self.bad = true,
                _ if self.after_cr && b != b'\n' => self.bad = true,
                _ => {}
            }
            self.after_cr = b == b'\r';
        }
    }

    /// Whether any bare CR or LF was seen (a trailing CR at the very end counts as bare).
    pub fn is_bad(&self) -> bool {
        self.bad || self.after_cr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> (Result<Vec<u8>, ContentError>, usize) {
        let mut d = DataDecoder::new(1000);
        let (n, done) = d.feed(input);
        assert!(done, "not finished");
        (d.finish(), n)
    }

    #[test]
    fn nul_dot_lines_are_found() {
        assert!(nul_dot_line(b"a\r\n\0.\r\nMAIL FROM:<x@y>\r\n"));
        assert!(nul_dot_line(b"a\r\n.\0\r\n"));
        assert!(nul_dot_line(b"\0\0.\0"));
        assert!(!nul_dot_line(b"a\r\n.\r\n"), "no NUL: a dot line of the content is not this");
        assert!(!nul_dot_line(b"a\0b\r\n..\0\r\n\0\r\n"));
    }

    #[test]
    fn unstuffs_and_finds_end() {
        let (r, n) = decode(b"a\r\n..b\r\n.c\r\n\r\n.\r\nQUIT\r\n");
        assert_eq!(r.unwrap(), b"a\r\n.b\r\nc\r\n\r\n");
        assert_eq!(n, 17);
        let (r, _) = decode(b".\r\n");
        assert_eq!(r.unwrap(), b"");
    }

    #[test]
    fn byte_at_a_time_equals_whole() {
        let msg = b"Subject: x\r\n\r\n..dots\r\nend\r\n.\r\n";
        let mut d = DataDecoder::new(1000);
        for (i, b) in msg.iter().enumerate() {
            let (n, done) = d.feed(std::slice::from_ref(b));
            assert_eq!(n, 1);
            assert_eq!(done, i + 1 == msg.len());
        }
        assert_eq!(d.finish().unwrap(), b"Subject: x\r\n\r\n.dots\r\nend\r\n");
    }

    #[test]
    fn smuggling_does_not_end_data() {
        for attempt in [&b"a\r\n\n.\n"[..], b"a\n.\r\n", b"a\r\n\n.\r\n", b"a\r\n.\n", b"a\r.\r", b"a\r\n.\r"] {
            let mut d = DataDecoder::new(1000);
            let (_, done) = d.feed(attempt);
            assert!(!done, "{attempt:?} ended data");
            let (_, done) = d.feed(b"\r\nMAIL FROM:<x@y>\r\n.\r\n");
            assert!(done);
            assert_eq!(d.finish(), Err(ContentError::BareLineEnding), "{attempt:?}");
        }
    }

    #[test]
    fn too_big_is_read_to_the_end() {
        let mut d = DataDecoder::new(4);
        let (n, done) = d.feed(b"12345678\r\n.\r\nNOOP\r\n");
        assert!(done);
        assert_eq!(n, 13);
        assert_eq!(d.finish(), Err(ContentError::TooBig));
    }

    #[test]
    fn bdat_line_endings() {
        let mut l = LineEndings::default();
        l.check(b"a\r");
        l.check(b"\nb\r\n");
        assert!(!l.is_bad());
        l.check(b"c\nd");
        assert!(l.is_bad());
        let mut l = LineEndings::default();
        l.check(b"x\ry");
        assert!(l.is_bad());
    }
}
