//! `[dkim]` (signing what leaves), `[authentication]` (checking what arrives) and
//! `[dmarc_reports]` and `[tls_reports]`.

use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use super::yes;

/// `[authentication] spf_at`: the SMTP stage at which an SPF result refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpfAt {
    /// After DATA, with DKIM and DMARC known.
    #[default]
    Data,
    /// At MAIL FROM.
    Mail,
}

/// `[dmarc_reports]` and `[tls_reports]`: the daily reports Postern sends.
///
/// `[dmarc_reports]`: DMARC aggregate reports (RFC 7489 §7.2). When enabled, the results of
/// `[authentication]` checks are recorded (in `{data_dir}/dmarc.redb`) for every From domain
/// that publishes DMARC, and once a day, shortly after midnight UTC, the previous day's reports
/// are queued to each domain's `rua` addresses (also `postern dmarc report --send`).
///
/// `[tls_reports]`: SMTP TLS reports (RFC 8460). When enabled, the outcome of every outbound
/// TLS negotiation is recorded (in `{data_dir}/tlsrpt.redb`) per recipient domain, policy and
/// result, and the previous day's reports are queued the same way to the `mailto:` addresses
/// of each domain's `_smtp._tls` record (also `postern tls-rpt report --send`).
///
/// Both are DKIM-signed when a `[[dkim.key]]` signs `email`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reports {
    /// Record and send reports. Default `false`.
    #[serde(default)]
    pub enabled: bool,
    /// `org_name` (DMARC) or `organization-name` (TLS-RPT) in the reports. Default: `hostname`.
    #[serde(default)]
    pub org_name: Option<String>,
    /// Sender of the reports, and their `email` (DMARC) or `contact-info` (TLS-RPT). Default:
    /// `postmaster@` + `hostname`.
    #[serde(default)]
    pub email: Option<String>,
}

/// `[dkim]` and its `[[dkim.key]]` entries: DKIM signing (RFC 6376, RFC 8463 Ed25519) of mail
/// relayed for trusted networks, authenticated users and the `sendmail` command; never of mail
/// that only arrives for local delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dkim {
    /// Signing keys; several for one domain (e.g. RSA and Ed25519) give several signatures.
    #[serde(default)]
    pub key: Vec<DkimKey>,
    /// Which From addresses are signed (opendkim's SigningTable): patterns like
    /// `"*@example.org"`, `"*@*.example.org"`, `"alice@example.org"`. A matching message is
    /// signed with every key whose `domain` is the From domain, else its closest parent domain
    /// with a key. Default: every From address in a domain with a key.
    #[serde(default)]
    pub sign: Option<Vec<String>>,
    /// When a message that should be signed cannot be: `"tempfail"` (default; the client gets
    /// `451 4.3.0` and retries, nothing leaves unsigned) or `"send-unsigned"` (logged).
    #[serde(default)]
    pub on_error: DkimOnError,
    /// Clients whose mail is signed when it leaves this host although they are neither in
    /// `[relay] trusted_networks` nor authenticated (opendkim's `InternalHosts`): mail from
    /// them to an alias that forwards elsewhere, say. Grants no relaying. Default: none.
    #[serde(default)]
    pub sign_networks: Vec<IpNet>,
}

/// One `[[dkim.key]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKey {
    /// The signing domain, `d=`.
    pub domain: String,
    /// The selector, `s=`: the key is published at `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// PEM file: RSA (2048 bits or more; PKCS#1 or PKCS#8) or Ed25519 (PKCS#8), as
    /// `postern dkim keygen` or openssl write them.
    pub private_key: PathBuf,
}

/// `[dkim] on_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DkimOnError {
    /// Refuse with 451 4.3.0.
    #[default]
    Tempfail,
    /// Send without a signature, with a log line.
    SendUnsigned,
}

/// `[authentication]`: what Postern checks on mail from the outside (untrusted, not
/// authenticated clients on `mx` listeners) and what it does with each result.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    /// Run SPF, DKIM, DMARC and ARC on incoming mail and add `Authentication-Results` and
    /// `Received-SPF`. Default `true`.
    #[serde(default = "yes")]
    pub verify: bool,
    /// SPF `fail` (the domain says the client may not send for it): `"reject"` (default, 550
    /// 5.7.23), `"tag"` (accept, results in the header), `"accept"`.
    #[serde(default = "reject")]
    pub spf_fail: Action,
    /// SPF `softfail` (`~all`): `"accept"` (default), `"tag"`, `"reject"`.
    #[serde(default = "accept")]
    pub spf_softfail: Action,
    /// When a refusing SPF result refuses: `"data"` (default: after the message, once DMARC is
    /// known, as RFC 7489 §10.1 advises, so that mail passing DMARC through DKIM, e.g.
    /// forwarded mail, is not lost to an early SPF rejection), or `"mail"`: at MAIL FROM, before
    /// the message is sent (as Postfix with policyd-spf does), saving the bandwidth.
    #[serde(default)]
    pub spf_at: SpfAt,
    /// DMARC failure with `p=reject`: `"reject"` (default, 550 5.7.1), `"quarantine"`,
    /// `"accept"`.
    #[serde(default = "reject")]
    pub dmarc_reject: Action,
    /// DMARC failure with `p=quarantine`: `"quarantine"` (default: accepted with
    /// `X-Postern-Quarantine` and delivered to the `quarantine_folder`), `"accept"`, `"reject"`.
    #[serde(default = "quarantine")]
    pub dmarc_quarantine: Action,
    /// Maildir folder for quarantined mail, Maildir++ style. Default `".Junk"`.
    #[serde(default = "default_junk")]
    pub quarantine_folder: String,
    /// When DNS fails temporarily (timeout, SERVFAIL) and a result could have led to a
    /// rejection: `"defer"` (default, 451 4.4.3) or `"accept"`.
    #[serde(default = "defer")]
    pub temperror: Action,
    /// Sender domains whose failures are never acted on: their results are only recorded (a
    /// sender's broken SPF record must not cost us its mail). An RFC 5321.MailFrom domain listed
    /// here waives the SPF actions, an RFC 5322.From domain the DMARC actions.
    #[serde(default)]
    pub exempt_domains: Vec<String>,
    /// Client networks whose mail is not checked at all.
    #[serde(default)]
    pub exempt_networks: Vec<IpNet>,
    /// Forwarders whose ARC seal is trusted (RFC 8617 §7.2, as Gmail and Microsoft do): when the
    /// incoming ARC chain validates (`cv=pass`) and its last seal is by one of these domains,
    /// a DMARC failure is not acted on (forwarding broke SPF and DKIM, the forwarder saw them
    /// pass). Default: none.
    #[serde(default)]
    pub arc_trusted_sealers: Vec<String>,
}

/// What to do with a check result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Refuse with a 5xx.
    Reject,
    /// Refuse with a 4xx.
    Defer,
    /// Accept, deliver to the quarantine folder with a marker header.
    Quarantine,
    /// Accept; the result is in Authentication-Results.
    Tag,
    /// Accept.
    Accept,
}

fn reject() -> Action {
    Action::Reject
}
fn accept() -> Action {
    Action::Accept
}
fn quarantine() -> Action {
    Action::Quarantine
}
fn defer() -> Action {
    Action::Defer
}
fn default_junk() -> String {
    ".Junk".into()
}
