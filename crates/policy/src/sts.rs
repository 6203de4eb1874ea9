//! MTA-STS records and policies (RFC 8461), sans I/O (the fetching and caching are
//! `postern_outbound::sts`): the `_mta-sts` TXT record (§3.1), the
//! policy file (§3.2) and the matching of MX host names against its `mx` patterns (§4.1).

use serde::{Deserialize, Serialize};

/// The longest `max_age` a policy may ask for (RFC 8461 §3.2: about a year), seconds.
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// The `_mta-sts.DOMAIN` TXT record: `v=STSv1; id=20160831085700Z;` (RFC 8461 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The policy's id: 1 to 32 letters and digits; a new id means a new policy.
    pub id: String,
}

/// Why an MTA-STS record or policy is invalid (RFC 8461 §3.1, §3.2); TLS reporting calls it
/// `sts-policy-invalid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StsError {
    /// Not exactly one TXT record starts with `v=STSv1`.
    #[error("{0} TXT records start with v=STSv1 (one is needed)")]
    RecordCount(usize),
    /// The record has no `id`.
    #[error("no id in {0:?}")]
    NoId(String),
    /// The `id` is not 1 to 32 letters and digits.
    #[error("invalid id {0:?}")]
    BadId(String),
    /// A policy line is not `key: value`.
    #[error("line {0:?} is not key: value")]
    Line(String),
    /// An unknown mode.
    #[error("mode {0:?}: use enforce, testing or none")]
    Mode(String),
    /// `max_age` is not a number.
    #[error("max_age {0:?} is not a number")]
    MaxAge(String),
    /// A required key is missing (`version: STSv1`, `mode`, `max_age`, an `mx`).
    #[error("no {0}")]
    Missing(&'static str),
}

impl Record {
    /// The record among `txts` (the TXT strings of `_mta-sts.DOMAIN`): exactly one must start
    /// with `v=STSv1`.
    ///
    /// # Errors
    /// None or several such records, or one without a valid `id`.
    pub fn find(txts: &[String]) -> Result<Self, StsError> {
        let ours: Vec<&String> = txts.iter().filter(|t| t.trim_start().starts_with("v=STSv1")).collect();
        let [text] = ours.as_slice() else {
            return Err(StsError::RecordCount(ours.len()));
        };
        let id = text
            .split(';')
            .map(str::trim)
            .find_map(|f| f.strip_prefix("id="))
            .ok_or_else(|| StsError::NoId((*text).clone()))?;
        let ok = (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric());
        if ok { Ok(Self { id: id.to_owned() }) } else { Err(StsError::BadId(id.to_owned())) }
    }
}

/// What a policy asks of senders (RFC 8461 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deliver only to matching MX hosts over verified TLS.
    Enforce,
    /// Deliver anyway; report what would have failed.
    Testing,
    /// No policy.
    None,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Enforce => "enforce",
            Self::Testing => "testing",
            Self::None => "none",
        })
    }
}

/// A policy file (`https://mta-sts.DOMAIN/.well-known/mta-sts.txt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The mode.
    pub mode: Mode,
    /// MX host patterns: `mx.example.test` or `*.example.test` (one label).
    pub mx: Vec<String>,
    /// How long the policy may be cached, seconds.
    pub max_age: u64,
}

impl Policy {
    /// The policy as the lines of a policy file (RFC 8460 §4.4 `policy-string`).
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec!["version: STSv1".to_owned(), format!("mode: {}", self.mode)];
        lines.extend(self.mx.iter().map(|m| format!("mx: {m}")));
        lines.push(format!("max_age: {}", self.max_age));
        lines
    }

    /// Parses a policy file: `key: value` lines (CRLF or LF), `version: STSv1`, `mode`,
    /// `max_age`, and at least one `mx` unless the mode is `none` (RFC 8461 §3.2). Unknown keys
    /// are ignored, as the RFC asks.
    ///
    /// # Errors
    /// What is missing or invalid.
    pub fn parse(text: &str) -> Result<Self, StsError> {
        let (mut version, mut mode, mut max_age, mut mx) = (None, None, None, Vec::new());
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                if line.trim().is_empty() {
                    continue;
                }
                return Err(StsError::Line(line.to_owned()));
            };
            let value = value.trim();
            match key.trim() {
                "version" => version = Some(value.to_owned()),
                "mode" => {
                    mode = Some(match value {
                        "enforce" => Mode::Enforce,
                        "testing" => Mode::Testing,
                        "none" => Mode::None,
                        _ => return Err(StsError::Mode(value.to_owned())),
                    });
                }
                "max_age" => {
                    let n: u64 = value.parse().map_err(|_| StsError::MaxAge(value.to_owned()))?;
                    max_age = Some(n.min(MAX_AGE_LIMIT));
                }
                "mx" => mx.push(value.trim_end_matches('.').to_ascii_lowercase()),
                _ => {}
            }
        }
        if version.as_deref() != Some("STSv1") {
            return Err(StsError::Missing("version: STSv1"));
        }
        let mode = mode.ok_or(StsError::Missing("mode"))?;
        let max_age = max_age.ok_or(StsError::Missing("max_age"))?;
        if mx.is_empty() && mode != Mode::None {
            return Err(StsError::Missing("mx pattern"));
        }
        Ok(Self { mode, mx, max_age })
    }

    /// Whether the MX host `host` matches one of the `mx` patterns (RFC 8461 §4.1): equal
    /// ignoring case and a final dot, or `*.` standing for exactly one leftmost label.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|p| match p.strip_prefix("*.") {
            Some(parent) => host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => *p == host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_need_one_version_and_an_id() {
        let r = |t: &[&str]| Record::find(&t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(r(&["v=STSv1; id=20160831085700Z;"]).unwrap().id, "20160831085700Z");
        assert_eq!(r(&["v=spf1 -all", "v=STSv1;id=abc"]).unwrap().id, "abc");
        assert!(r(&[]).is_err());
        assert!(r(&["v=STSv1; id=1", "v=STSv1; id=2"]).is_err());
        assert!(r(&["v=STSv1; id=has-dash"]).is_err());
        assert!(r(&["v=STSv1;"]).is_err());
    }

    #[test]
    fn policies_parse_as_rfc_8461_section_3_2_shows() {
        let p = Policy::parse("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n").unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604_800);
        assert!(p.matches("mail.example.com") && p.matches("MAIL.example.com."));
        assert!(p.matches("mx1.example.net") && !p.matches("a.b.example.net") && !p.matches("example.net"));
        assert!(!p.matches("evil.example.com"));
        assert!(Policy::parse("version: STSv1\nmode: testing\nmax_age: 1\n").is_err(), "mx needed");
        assert!(Policy::parse("version: STSv1\nmode: none\nmax_age: 1\n").is_ok());
        assert!(Policy::parse("mode: enforce\nmx: a\nmax_age: 1\n").is_err(), "version needed");
        assert!(Policy::parse("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n").is_err());
        assert_eq!(Policy::parse("version: STSv1\nmode: none\nmax_age: 99999999999\n").unwrap().max_age, MAX_AGE_LIMIT);
    }
}
