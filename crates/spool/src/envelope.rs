//! The envelope file, `queue/ID.env`: TOML a postmaster can read, versioned by `version`.
//!
//! ```toml
//! version = 1
//! id = "00062A1B2C3D4E5F"
//! arrival = 1795000000            # seconds since the Unix epoch
//! client_ip = "192.0.2.7"
//! helo = "mail.sender.test"
//! reverse_path = "alice@sender.test"   # "" is the null sender <>
//! body_8bit = false
//! smtputf8 = false
//! size = 1234                     # bytes of the message file
//! warned = true                   # a "delayed" DSN was sent; absent means false
//! held = true                     # held by `postern queue hold`; absent means false
//! ret = "hdrs"                    # RET= of MAIL (RFC 3461), when given
//! envid = "..."                   # ENVID= of MAIL (xtext), when given
//! require_tls = true              # REQUIRETLS of MAIL (RFC 8689); absent means false
//! tls_optional = true             # the header says TLS-Required: No (RFC 8689 §3)
//!
//! [[recipient]]
//! forward_path = "team@example.test"   # as given in RCPT TO
//! address = "bob@example.test"         # final recipient after aliases
//! mailbox = "bob"                      # local mailbox; absent for remote recipients
//! pipe = "/usr/bin/procmail"           # for a `|command` alias: the command
//! state = "pending"                    # pending | delivered | failed
//! attempts = 0
//! flushed = 0                          # of those, asked for by `queue flush`; absent = 0
//! next_attempt = 0                     # epoch seconds; 0 = now
//! last_error = "..."                   # last failure as one line, if any
//! [recipient.last_result]              # the same, typed: code, status = [4, 4, 1], text,
//!                                      # remote_host, tls
//! notify = "SUCCESS,FAILURE"           # NOTIFY= of RCPT (RFC 3461), when given
//! orcpt = "rfc822;team@example.test"   # ORCPT= of RCPT (xtext), when given
//! ```

use postern_types::QueueId;
use serde::{Deserialize, Serialize};

/// The format version written by this code.
pub const VERSION: u32 = 1;

/// A queued message's envelope and per-recipient delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Format version; files with a newer version are refused (moved to `corrupt/`).
    pub version: u32,
    /// The queue ID.
    #[serde(with = "queue_id")]
    pub id: QueueId,
    /// Arrival time, seconds since the Unix epoch.
    pub arrival: u64,
    /// The client's IP address.
    pub client_ip: String,
    /// The HELO/EHLO name.
    pub helo: String,
    /// MAIL FROM address; empty for the null sender.
    pub reverse_path: String,
    /// BODY=8BITMIME was given.
    pub body_8bit: bool,
    /// SMTPUTF8 was given.
    pub smtputf8: bool,
    /// Size of the message file in bytes (trace header included).
    pub size: u64,
    /// A "delayed" DSN was sent (`[queue] warn_after`); absent means false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warned: bool,
    /// Held by the postmaster (`postern queue hold`): not delivered until released.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// `RET=` of MAIL (RFC 3461 §4.3): `"full"` or `"hdrs"`; absent when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    /// `ENVID=` of MAIL (RFC 3461 §4.4), xtext as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// Received with `REQUIRETLS` (RFC 8689 §4.1): delivered only over a validated TLS path to
    /// a peer that offers REQUIRETLS, else bounced with 5.7.30. Absent means false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_tls: bool,
    /// The message says `TLS-Required: No` (RFC 8689 §3, without REQUIRETLS): the recipient's
    /// MTA-STS policy does not stop its delivery. Absent means false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_optional: bool,
    /// Maildir++ folder (e.g. `.Junk`) that local deliveries of this message go to: set when a
    /// DMARC `p=quarantine` failure was accepted (`[authentication] dmarc_quarantine`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
    /// One entry per destination.
    #[serde(rename = "recipient")]
    pub recipients: Vec<Recipient>,
}

/// One destination of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// The address given in RCPT TO.
    pub forward_path: String,
    /// The final recipient address (after aliases and the virtual table).
    pub address: String,
    /// The local mailbox, or `None` for remote delivery. For a pipe, the alias that named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    /// The command the message is piped to (`|command` in the aliases), when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipe: Option<String>,
    /// Delivery state.
    pub state: RcptState,
    /// Delivery attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// Of those, attempts the postmaster asked for (`postern queue flush`): they do not count
    /// towards the retry backoff. Absent means 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub flushed: u32,
    /// Earliest next attempt, seconds since the epoch (0: as soon as possible).
    #[serde(default)]
    pub next_attempt: u64,
    /// The last failure as one line (`451 4.4.1 text`), for `queue list` and the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// `NOTIFY=` of RCPT (RFC 3461 §4.1), e.g. `"SUCCESS,FAILURE"` or `"NEVER"`; absent means
    /// failure and delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// `ORCPT=` of RCPT (RFC 3461 §4.2), `addr-type;xtext` as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
    /// The last failure, typed (a TOML sub-table, so it comes last): what DSNs and reports use (absent in envelopes written before
    /// it existed, which then report `4.0.0`/`5.0.0` and no Remote-MTA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<LastResult>,
}

/// `RET=` (RFC 3461 §4.3): what a failure DSN returns of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ret {
    /// The whole message.
    Full,
    /// Its headers only.
    Hdrs,
}

impl Ret {
    /// The MAIL parameter value: `FULL` or `HDRS`.
    pub fn param(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Hdrs => "HDRS",
        }
    }
}

/// A recipient's last failed attempt: the reply, who gave it, and over what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastResult {
    /// The reply code (RFC 5321 §4.2.1), e.g. 451.
    pub code: u16,
    /// The enhanced status code (RFC 3463) as `[class, subject, detail]`, e.g. `[4, 4, 1]`.
    pub status: [u16; 3],
    /// The reply text.
    pub text: String,
    /// The host that answered, when one did (a DSN's Remote-MTA, RFC 3464 §2.3.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_host: Option<String>,
    /// The TLS protection of that connection, e.g. `TLSv1.3`; absent without TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
}

impl LastResult {
    /// The enhanced status code.
    pub fn status(&self) -> postern_types::EnhancedStatus {
        let [c, s, d] = self.status;
        postern_types::EnhancedStatus(u8::try_from(c).unwrap_or(4), s, d)
    }
}

impl Recipient {
    /// A pending recipient for `destination`, given in RCPT TO (or on the command line) as
    /// `forward_path`, with no DSN parameters.
    pub fn new(forward_path: String, destination: &postern_types::Destination) -> Self {
        let (address, mailbox, pipe) = match destination {
            postern_types::Destination::Mailbox { name, address } => (address.to_string(), Some(name.clone()), None),
            postern_types::Destination::Remote(a) => (a.to_string(), None, None),
            postern_types::Destination::Pipe { command, name, address } => {
                (address.to_string(), Some(name.clone()), Some(command.clone()))
            }
        };
        Self {
            forward_path,
            address,
            mailbox,
            pipe,
            state: RcptState::Pending,
            attempts: 0,
            flushed: 0,
            next_attempt: 0,
            last_error: None,
            last_result: None,
            notify: None,
            orcpt: None,
        }
    }

    /// The NOTIFY in force (RFC 3461 §4.1 default: failure and delay).
    pub fn notify(&self) -> postern_types::dsn::Notify {
        self.notify
            .as_deref()
            .and_then(postern_types::dsn::Notify::parse)
            .unwrap_or(postern_types::dsn::Notify::DEFAULT)
    }
}

/// Where a recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptState {
    /// Not yet delivered (never tried, or deferred).
    Pending,
    /// Delivered; final.
    Delivered,
    /// Failed permanently; final.
    Failed,
}

impl Envelope {
    /// A new envelope of the current version for a message arriving now under `id`, with no
    /// flags or DSN parameters set.
    pub fn new(
        id: QueueId,
        client_ip: String,
        helo: String,
        reverse_path: String,
        size: u64,
        recipients: Vec<Recipient>,
    ) -> Self {
        Self {
            version: VERSION,
            id,
            arrival: id.arrival_secs(),
            client_ip,
            helo,
            reverse_path,
            body_8bit: false,
            smtputf8: false,
            size,
            warned: false,
            held: false,
            ret: None,
            envid: None,
            require_tls: false,
            tls_optional: false,
            quarantine: None,
            recipients,
        }
    }

    /// The TOML text written to disk.
    pub fn to_text(&self) -> String {
        let body = toml::to_string(self).expect("an envelope always serializes");
        format!("# Postern envelope, see docs/spool.md\n{body}")
    }

    /// Parses an envelope file's text.
    ///
    /// # Errors
    /// A message when the TOML is invalid or the version is unknown.
    pub fn from_text(text: &str) -> Result<Self, String> {
        let env: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        if env.version != VERSION {
            return Err(format!("unsupported envelope version {}", env.version));
        }
        Ok(env)
    }

    /// Whether every recipient is delivered or failed.
    pub fn is_finished(&self) -> bool {
        self.recipients.iter().all(|r| r.state != RcptState::Pending)
    }
}

mod queue_id {
    use postern_types::QueueId;
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(id: &QueueId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<QueueId, D::Error> {
        let s = String::deserialize(d)?;
        QueueId::parse(&s).ok_or_else(|| de::Error::custom(format!("bad queue ID {s:?}")))
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
