//! `[[milter]]`: content filters over the Sendmail milter protocol, before the 250.

use std::time::Duration;

use serde::Deserialize;

use super::{Role, five_minutes};
use crate::units::Seconds;

/// One `[[milter]]`: a filter consulted at the end of DATA, before the message is accepted
/// (Postfix's `smtpd_milters`): a refusal is the reply to DATA and nothing is queued.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Milter {
    /// A name for the log. Default: the address.
    #[serde(default)]
    pub name: Option<String>,
    /// `"inet:127.0.0.1:11332"` or `"unix:/run/rspamd/milter.sock"` (sendmail's forms).
    pub address: String,
    /// Connecting to the filter. Default `"10s"`.
    #[serde(default = "default_milter_connect")]
    pub connect_timeout: Seconds,
    /// Each reply, but for end of message. Default `"30s"`.
    #[serde(default = "default_milter_command")]
    pub command_timeout: Seconds,
    /// The reply to end of message (the filter's scan). Default `"5m"`.
    #[serde(default = "five_minutes")]
    pub eom_timeout: Seconds,
    /// When the filter is unreachable, times out or breaks the protocol: `"tempfail"` (default,
    /// sendmail's `F=T`: `451 4.7.1`, the client retries), `"accept"` (as if it were not
    /// there) or `"reject"` (`550 5.7.1`).
    #[serde(default)]
    pub default_action: MilterDefault,
    /// The listener roles whose mail it filters. Default: all.
    #[serde(default = "all_roles")]
    pub roles: Vec<Role>,
    /// Macros to send besides the standard ones, `name = "value"` (e.g. `{daemon_name}`).
    #[serde(default)]
    pub macros: std::collections::BTreeMap<String, String>,
}

/// `[[milter]] default_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MilterDefault {
    /// `451 4.7.1`.
    #[default]
    Tempfail,
    /// Go on without the filter.
    Accept,
    /// `550 5.7.1`.
    Reject,
}

fn default_milter_connect() -> Seconds {
    Seconds(Duration::from_secs(10))
}
fn default_milter_command() -> Seconds {
    Seconds(Duration::from_secs(30))
}
fn all_roles() -> Vec<Role> {
    vec![Role::Mx, Role::Submission, Role::Submissions]
}
