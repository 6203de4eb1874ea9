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

use std::net::IpAddr;

pub use postern_types::dsn::Ret;
use postern_types::dsn::{Notify, Orcpt};
use postern_types::{Address, Destination, ForwardPath, QueueId, ReversePath};
use serde::{Deserialize, Serialize};

/// The format version written by this code.
pub const VERSION: u32 = 1;

/// A queued message's envelope and per-recipient delivery state, typed: what the file's
/// strings mean is decided once, when it is read ([`Envelope::from_text`]), and written back
/// in the same format ([`Envelope::to_text`]; the `file` module holds the on-disk shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "file::EnvelopeFile", into = "file::EnvelopeFile")]
pub struct Envelope {
    /// Format version; files with a newer version are refused (moved to `corrupt/`).
    pub version: u32,
    /// The queue ID.
    pub id: QueueId,
    /// Arrival time, seconds since the Unix epoch.
    pub arrival: u64,
    /// The client's IP address (127.0.0.1 for mail made on the host).
    pub client_ip: IpAddr,
    /// The HELO/EHLO name.
    pub helo: String,
    /// MAIL FROM: an address, or the null sender.
    pub reverse_path: ReversePath,
    /// BODY=8BITMIME was given.
    pub body_8bit: bool,
    /// SMTPUTF8 was given.
    pub smtputf8: bool,
    /// Size of the message file in bytes (trace header included).
    pub size: u64,
    /// A "delayed" DSN was sent (`[queue] warn_after`).
    pub warned: bool,
    /// Held by the postmaster (`postern queue hold`): not delivered until released.
    pub held: bool,
    /// `RET=` of MAIL (RFC 3461 §4.3), when given.
    pub ret: Option<Ret>,
    /// `ENVID=` of MAIL (RFC 3461 §4.4), xtext as given.
    pub envid: Option<String>,
    /// Received with `REQUIRETLS` (RFC 8689 §4.1): delivered only over a validated TLS path to
    /// a peer that offers REQUIRETLS, else bounced with 5.7.30.
    pub require_tls: bool,
    /// The message says `TLS-Required: No` (RFC 8689 §3, without REQUIRETLS): the recipient's
    /// MTA-STS policy does not stop its delivery.
    pub tls_optional: bool,
    /// Maildir++ folder (e.g. `.Junk`) that local deliveries of this message go to: set when a
    /// DMARC `p=quarantine` failure was accepted (`[authentication] dmarc_quarantine`).
    pub quarantine: Option<String>,
    /// One entry per destination.
    pub recipients: Vec<Recipient>,
}

/// One destination of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The forward-path given in RCPT TO (or on the `sendmail` command line).
    pub forward_path: ForwardPath,
    /// Where it goes, as resolved at arrival (aliases, virtual table, routes): a mailbox, a
    /// pipe, or a remote address.
    pub destination: Destination,
    /// Delivery state.
    pub state: RcptState,
    /// Delivery attempts made.
    pub attempts: u32,
    /// Of those, attempts the postmaster asked for (`postern queue flush`): they do not count
    /// towards the retry backoff.
    pub flushed: u32,
    /// Earliest next attempt, seconds since the epoch (0: as soon as possible).
    pub next_attempt: u64,
    /// The last failure as one line (`451 4.4.1 text`), for `queue list` and the log.
    pub last_error: Option<String>,
    /// `NOTIFY=` of RCPT (RFC 3461 §4.1), when given; [`Recipient::notify`] is the one in force.
    pub notify: Option<Notify>,
    /// `ORCPT=` of RCPT (RFC 3461 §4.2), as given.
    pub orcpt: Option<Orcpt>,
    /// The last failure, typed: what DSNs and reports use (absent in envelopes written before
    /// it existed, which then report `4.0.0`/`5.0.0` and no Remote-MTA).
    pub last_result: Option<LastResult>,
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
    pub fn new(forward_path: ForwardPath, destination: Destination) -> Self {
        Self {
            forward_path,
            destination,
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
    pub fn notify(&self) -> Notify {
        self.notify.unwrap_or(Notify::DEFAULT)
    }

    /// The final recipient address (after aliases and the virtual table).
    pub fn address(&self) -> &Address {
        match &self.destination {
            Destination::Mailbox { address, .. } | Destination::Remote(address) | Destination::Pipe { address, .. } => {
                address
            }
        }
    }

    /// The remote address this recipient is delivered to, or `None` for a local one.
    pub fn remote(&self) -> Option<&Address> {
        match &self.destination {
            Destination::Remote(a) => Some(a),
            Destination::Mailbox { .. } | Destination::Pipe { .. } => None,
        }
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
        client_ip: IpAddr,
        helo: String,
        reverse_path: ReversePath,
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
    /// [`EnvelopeError::Toml`] when the TOML is invalid or a value does not check (an address,
    /// an IP, a NOTIFY value); [`EnvelopeError::Version`] for an unknown version.
    pub fn from_text(text: &str) -> Result<Self, EnvelopeError> {
        let env: Self = toml::from_str(text)?;
        if env.version != VERSION {
            return Err(EnvelopeError::Version(env.version));
        }
        Ok(env)
    }

    /// Whether every recipient is delivered or failed.
    pub fn is_finished(&self) -> bool {
        self.recipients.iter().all(|r| r.state != RcptState::Pending)
    }
}

/// Why an envelope cannot be read: its queue file is corrupt (moved aside by recovery, reported
/// by the queue tools).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not TOML of the envelope's shape, or a value in it does not check.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// A version this code does not know.
    #[error("unsupported envelope version {0}")]
    Version(u32),
    /// The queue file's first line (`Postern-Envelope: LENGTH`) or its length is wrong.
    #[error("queue file: {0}")]
    QueueFile(&'static str),
    /// Neither the queue file nor an `ID.env` beside it holds an envelope.
    #[error("no envelope (neither in the file nor beside it)")]
    Missing,
    /// A reused queue file whose move a power cut undid: it holds another message.
    #[error("the queue file holds another message")]
    OtherMessage,
}

/// A value of the envelope file that does not check, for [`EnvelopeError::Toml`].
#[derive(Debug, thiserror::Error)]
#[error("{field} {value:?}: {reason}")]
struct FieldError {
    field: &'static str,
    value: String,
    reason: String,
}

impl FieldError {
    fn new(field: &'static str, value: &str, reason: impl ToString) -> Self {
        Self { field, value: value.to_owned(), reason: reason.to_string() }
    }
}

/// The file's shape: the format of `docs/spool.md`, unchanged by the typing above. Reading
/// checks every string once; an envelope that does not check is corrupt.
mod file {
    use std::net::IpAddr;

    use postern_types::dsn::{Notify, Orcpt};
    use postern_types::{Address, Destination, ForwardPath, QueueId, ReversePath};
    use serde::{Deserialize, Serialize};

    use super::{FieldError, LastResult, RcptState, Ret};

    /// `ret = "full"` or `"hdrs"`.
    #[derive(Clone, Copy, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum RetFile {
        Full,
        Hdrs,
    }

    impl From<RetFile> for Ret {
        fn from(r: RetFile) -> Self {
            match r {
                RetFile::Full => Self::Full,
                RetFile::Hdrs => Self::Hdrs,
            }
        }
    }

    impl From<Ret> for RetFile {
        fn from(r: Ret) -> Self {
            match r {
                Ret::Full => Self::Full,
                Ret::Hdrs => Self::Hdrs,
            }
        }
    }

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct EnvelopeFile {
        version: u32,
        #[serde(with = "queue_id")]
        id: QueueId,
        arrival: u64,
        client_ip: String,
        helo: String,
        reverse_path: String,
        body_8bit: bool,
        smtputf8: bool,
        size: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        warned: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        held: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ret: Option<RetFile>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        envid: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        require_tls: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tls_optional: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quarantine: Option<String>,
        #[serde(rename = "recipient")]
        recipients: Vec<RecipientFile>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RecipientFile {
        forward_path: String,
        address: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mailbox: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pipe: Option<String>,
        state: RcptState,
        #[serde(default)]
        attempts: u32,
        #[serde(default, skip_serializing_if = "is_zero")]
        flushed: u32,
        #[serde(default)]
        next_attempt: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notify: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        orcpt: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_result: Option<LastResult>,
    }

    impl TryFrom<EnvelopeFile> for super::Envelope {
        type Error = FieldError;

        fn try_from(f: EnvelopeFile) -> Result<Self, FieldError> {
            let client_ip: IpAddr = f.client_ip.parse().map_err(|e| FieldError::new("client_ip", &f.client_ip, e))?;
            let reverse_path = match f.reverse_path.as_str() {
                "" => ReversePath::Null,
                text => {
                    ReversePath::Mailbox(Address::parse(text).map_err(|e| FieldError::new("reverse_path", text, e))?)
                }
            };
            let recipients = f.recipients.into_iter().map(super::Recipient::try_from).collect::<Result<_, _>>()?;
            Ok(Self {
                version: f.version,
                id: f.id,
                arrival: f.arrival,
                client_ip,
                helo: f.helo,
                reverse_path,
                body_8bit: f.body_8bit,
                smtputf8: f.smtputf8,
                size: f.size,
                warned: f.warned,
                held: f.held,
                ret: f.ret.map(Ret::from),
                envid: f.envid,
                require_tls: f.require_tls,
                tls_optional: f.tls_optional,
                quarantine: f.quarantine,
                recipients,
            })
        }
    }

    impl From<super::Envelope> for EnvelopeFile {
        fn from(e: super::Envelope) -> Self {
            Self {
                version: e.version,
                id: e.id,
                arrival: e.arrival,
                client_ip: e.client_ip.to_string(),
                helo: e.helo,
                reverse_path: e.reverse_path.mailbox().map(ToString::to_string).unwrap_or_default(),
                body_8bit: e.body_8bit,
                smtputf8: e.smtputf8,
                size: e.size,
                warned: e.warned,
                held: e.held,
                ret: e.ret.map(RetFile::from),
                envid: e.envid,
                require_tls: e.require_tls,
                tls_optional: e.tls_optional,
                quarantine: e.quarantine,
                recipients: e.recipients.into_iter().map(RecipientFile::from).collect(),
            }
        }
    }

    impl TryFrom<RecipientFile> for super::Recipient {
        type Error = FieldError;

        fn try_from(f: RecipientFile) -> Result<Self, FieldError> {
            let forward_path =
                ForwardPath::parse(&f.forward_path).map_err(|e| FieldError::new("forward_path", &f.forward_path, e))?;
            let address = Address::parse(&f.address).map_err(|e| FieldError::new("address", &f.address, e))?;
            let destination = match (f.pipe, f.mailbox) {
                (Some(command), name) => Destination::Pipe { command, name: name.unwrap_or_default(), address },
                (None, Some(name)) => Destination::Mailbox { name, address },
                (None, None) => Destination::Remote(address),
            };
            let notify = match f.notify {
                Some(n) => Some(Notify::parse(&n).ok_or_else(|| FieldError::new("notify", &n, "not a NOTIFY value"))?),
                None => None,
            };
            Ok(Self {
                forward_path,
                destination,
                state: f.state,
                attempts: f.attempts,
                flushed: f.flushed,
                next_attempt: f.next_attempt,
                last_error: f.last_error,
                notify,
                orcpt: match f.orcpt {
                    Some(o) => {
                        Some(Orcpt::parse(&o).ok_or_else(|| FieldError::new("orcpt", &o, "not an ORCPT value"))?)
                    }
                    None => None,
                },
                last_result: f.last_result,
            })
        }
    }

    impl From<super::Recipient> for RecipientFile {
        fn from(r: super::Recipient) -> Self {
            let (address, mailbox, pipe) = match r.destination {
                Destination::Mailbox { name, address } => (address, Some(name), None),
                Destination::Remote(address) => (address, None, None),
                Destination::Pipe { command, name, address } => (address, Some(name), Some(command)),
            };
            Self {
                forward_path: r.forward_path.to_string(),
                address: address.to_string(),
                mailbox,
                pipe,
                state: r.state,
                attempts: r.attempts,
                flushed: r.flushed,
                next_attempt: r.next_attempt,
                last_error: r.last_error,
                notify: r.notify.map(|n| n.to_string()),
                orcpt: r.orcpt.map(|o| o.to_string()),
                last_result: r.last_result,
            }
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
}
