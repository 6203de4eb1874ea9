//! `[delivery]`: how local mailboxes are written (Maildir, mbox, LMTP) and pipes.

use serde::Deserialize;

use super::five_minutes;
use crate::units::Seconds;

/// `[delivery]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// Maildir root per mailbox; `{data_dir}` and `{mailbox}` are substituted.
    /// Default `"{data_dir}/mail/{mailbox}"`.
    #[serde(default = "default_maildir")]
    pub maildir: String,
    /// Characters that separate a sub-address: `user+detail@domain` (Postfix's
    /// `recipient_delimiter`). Empty turns sub-addressing off. Default `"+"`.
    #[serde(default = "default_separator")]
    pub subaddress_separator: String,
    /// How mailboxes are written: `"maildir"` (default), `"mbox"` (one file per mailbox,
    /// locked as Debian's mail.local locks it, for mutt and mail(1) on the box) or `"lmtp"`
    /// (handed to the mailbox server at `lmtp`, RFC 2033).
    #[serde(default)]
    pub local: LocalTransport,
    /// The LMTP server of `local = "lmtp"`: `"unix:/run/dovecot/lmtp"` (default) or
    /// `"[127.0.0.1]:24"`. Recipients are given as `mailbox@domain`.
    #[serde(default = "default_lmtp")]
    pub lmtp: crate::tables::LmtpServer,
    /// Let aliases and routes pipe messages to commands (`name: "|/usr/bin/procmail"`,
    /// `example.org pipe:command`); without it such a configuration is refused. Off by default:
    /// a command runs for every message from anyone. Commands run as the alias's Unix account
    /// when one exists (and is not root), else as `pipe_user`; never as root. Default `false`.
    #[serde(default)]
    pub allow_pipes: bool,
    /// The account pipes run as when the alias is not a Unix account. Default `"nobody"`.
    #[serde(default = "default_pipe_user")]
    pub pipe_user: String,
    /// How long a piped command may run; then it is killed and the delivery retried. Default
    /// `"5m"`.
    #[serde(default = "five_minutes")]
    pub pipe_timeout: Seconds,
    /// The mbox file per mailbox; `{mailbox}` is substituted. Default `"/var/mail/{mailbox}"`
    /// (Debian's `/var/mail` is root:mail 2775: run Postern with `[server] group = "mail"`).
    #[serde(default = "default_mbox")]
    pub mbox: String,
    /// How long an mbox delivery waits for the dotlock and the fcntl lock of the mailbox (held
    /// by mutt, mail(1) or another delivery) before it gives up and retries later, seconds.
    /// Default `"30s"` (procmail's `LOCKTIMEOUT` is 17 minutes for a stale lock; a mail reader
    /// holds the lock for a moment while it rewrites the file).
    #[serde(default = "default_mbox_lock_timeout")]
    pub mbox_lock_timeout: Seconds,
}

/// `[delivery] local`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalTransport {
    /// Maildir: one file per message.
    #[default]
    Maildir,
    /// mbox: one file per mailbox.
    Mbox,
    /// LMTP (RFC 2033) to a mailbox server, e.g. Dovecot: `[delivery] lmtp`.
    Lmtp,
}

fn default_lmtp() -> crate::tables::LmtpServer {
    crate::tables::LmtpServer::Unix("/run/dovecot/lmtp".into())
}

fn default_pipe_user() -> String {
    "nobody".into()
}

fn default_mbox_lock_timeout() -> Seconds {
    Seconds(std::time::Duration::from_secs(30))
}

fn default_mbox() -> String {
    "/var/mail/{mailbox}".into()
}

fn default_maildir() -> String {
    "{data_dir}/mail/{mailbox}".into()
}

fn default_separator() -> String {
    "+".into()
}
