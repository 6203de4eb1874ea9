//! The submission socket's wire format, shared by the daemon (`submit.rs`) and the `sendmail`
//! command (`sendmail/client.rs`). Both sides are this binary, so the format changes with it.
//!
//! Request: one line `submit<TAB>sender<TAB>params<TAB>rcpt<TAB>rcpt...<LF>` (sender empty for
//! the null sender `<>`; params space-separated `BODY=8BITMIME|7BIT`, `RET=FULL|HDRS`,
//! `ENVID=xtext`, `NOTIFY=...` (applies to every recipient), or empty), then the message with
//! CRLF line endings until the client shuts down its side.
//!
//! Answer: `ok QUEUEID` or `error CODE X.Y.Z text` (an SMTP reply with its RFC 3463 enhanced
//! status code), then the connection closes.

use postern_types::dsn::{Notify, is_printable_xtext};
use postern_types::{EnhancedStatus, Reply};

/// The MAIL and RCPT parameters of a local submission (RFC 6152, RFC 3461).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Params {
    /// `BODY=`: `Some(true)` for 8BITMIME, `Some(false)` for 7BIT.
    pub(crate) body_8bit: Option<bool>,
    /// `RET=`: true for FULL.
    pub(crate) ret_full: Option<bool>,
    /// `ENVID=`, xtext.
    pub(crate) envid: Option<String>,
    /// `NOTIFY=` of every recipient.
    pub(crate) notify: Option<Notify>,
}

/// One submission request's first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// The reverse-path; empty for `<>`.
    pub(crate) sender: String,
    pub(crate) params: Params,
    /// Forward-paths, fully qualified.
    pub(crate) recipients: Vec<String>,
}

impl Request {
    /// The request line, LF included.
    pub(crate) fn encode(&self) -> String {
        let p = &self.params;
        let mut params = Vec::new();
        if let Some(b) = p.body_8bit {
            params.push(format!("BODY={}", if b { "8BITMIME" } else { "7BIT" }));
        }
        if let Some(r) = p.ret_full {
            params.push(format!("RET={}", if r { "FULL" } else { "HDRS" }));
        }
        if let Some(e) = &p.envid {
            params.push(format!("ENVID={e}"));
        }
        if let Some(n) = p.notify {
            params.push(format!("NOTIFY={n}"));
        }
        format!("submit\t{}\t{}\t{}\n", self.sender, params.join(" "), self.recipients.join("\t"))
    }

    /// Parses a request line (without its LF).
    ///
    /// # Errors
    /// A `501 5.5.4` reply saying what is malformed.
    pub(crate) fn decode(line: &str) -> Result<Self, Reply> {
        let bad = |what: String| Reply::new(501, EnhancedStatus(5, 5, 4), what);
        let mut fields = line.split('\t');
        if fields.next() != Some("submit") {
            return Err(bad("bad request: expected a submit line".into()));
        }
        let sender = fields.next().ok_or_else(|| bad("no sender".into()))?.to_owned();
        let mut params = Params::default();
        for p in fields.next().ok_or_else(|| bad("no parameters".into()))?.split_whitespace() {
            let (k, v) = p.split_once('=').ok_or_else(|| bad(format!("bad parameter {p:?}")))?;
            match (k, v) {
                ("BODY", "8BITMIME") => params.body_8bit = Some(true),
                ("BODY", "7BIT") => params.body_8bit = Some(false),
                ("RET", "FULL") => params.ret_full = Some(true),
                ("RET", "HDRS") => params.ret_full = Some(false),
                ("ENVID", v) if is_printable_xtext(v) => params.envid = Some(v.to_owned()),
                ("NOTIFY", v) => {
                    params.notify = Some(Notify::parse(v).ok_or_else(|| bad(format!("bad NOTIFY {v:?}")))?)
                }
                _ => return Err(bad(format!("bad parameter {p:?}"))),
            }
        }
        let recipients: Vec<String> = fields.filter(|r| !r.is_empty()).map(str::to_owned).collect();
        if recipients.is_empty() {
            return Err(Reply::new(554, EnhancedStatus(5, 5, 1), "no recipients"));
        }
        Ok(Self { sender, params, recipients })
    }
}

/// The answer line for a submission.
pub(crate) fn encode_answer(result: &Result<String, Reply>) -> String {
    match result {
        Ok(id) => format!("ok {id}\n"),
        Err(r) => format!("error {r}\n"),
    }
}

/// Parses the daemon's answer: the queue ID, or the refusal.
///
/// # Errors
/// The daemon's reply; an unreadable answer is a `451 4.3.0`.
pub(crate) fn decode_answer(answer: &str) -> Result<String, Reply> {
    let answer = answer.trim_end();
    if let Some(id) = answer.strip_prefix("ok ") {
        return Ok(id.to_owned());
    }
    let garbled = || Reply::new(451, EnhancedStatus(4, 3, 0), format!("unexpected answer from the daemon: {answer:?}"));
    let rest = answer.strip_prefix("error ").ok_or_else(garbled)?;
    let mut words = rest.splitn(3, ' ');
    let code: u16 = words.next().and_then(|c| c.parse().ok()).filter(|c| (400..600).contains(c)).ok_or_else(garbled)?;
    let status = words.next().and_then(parse_status).ok_or_else(garbled)?;
    Err(Reply::new(code, status, words.next().unwrap_or("").to_owned()))
}

fn parse_status(s: &str) -> Option<EnhancedStatus> {
    let mut p = s.split('.');
    let st = EnhancedStatus(p.next()?.parse().ok()?, p.next()?.parse().ok()?, p.next()?.parse().ok()?);
    p.next().is_none().then_some(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let r = Request {
            sender: String::new(),
            params: Params {
                body_8bit: Some(true),
                ret_full: Some(false),
                envid: Some("a+2Bb".into()),
                notify: Some(Notify::NEVER),
            },
            recipients: vec!["a@b.test".into(), "c@d.test".into()],
        };
        let line = r.encode();
        assert_eq!(Request::decode(line.trim_end_matches('\n')), Ok(r));
        let plain =
            Request { sender: "x@y.test".into(), params: Params::default(), recipients: vec!["z@y.test".into()] };
        assert_eq!(Request::decode(plain.encode().trim_end()), Ok(plain));
        assert_eq!(Request::decode("submit\tx@y\t\t").unwrap_err().code, 554);
        assert_eq!(Request::decode("submit\tx@y\tBODY=BINARY\tz@y").unwrap_err().code, 501);
    }

    #[test]
    fn answers() {
        assert_eq!(decode_answer("ok 0001\n"), Ok("0001".into()));
        let r = Reply::new(550, EnhancedStatus(5, 1, 1), "<x@y>: User unknown");
        assert_eq!(decode_answer(&encode_answer(&Err(r.clone()))), Err(r));
        assert_eq!(decode_answer("what").unwrap_err().code, 451);
    }
}
