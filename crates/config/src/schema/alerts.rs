//! `[alerts]` and `[[alert]]`: rules the daemon checks every `interval`, with a mail to the
//! postmaster on each change of state (docs/alerts.md).

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::units::{FreeSpace, Seconds};

/// `[alerts]`: where alert mails go and how often the `[[alert]]` rules are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// Who gets the mails. Bare names (`"postmaster"`) get `@` + `[domains] origin`. When none
    /// of them is delivered on this host, the local `postmaster` gets a copy too, so that an
    /// alert about broken outbound mail still arrives. Default `["postmaster"]`.
    #[serde(default = "default_to")]
    pub to: Vec<String>,
    /// How often every rule is checked. Default `"60s"`.
    #[serde(default = "default_interval")]
    pub interval: Seconds,
    /// Our public sending address, looked up on the zones of `dnsbl` rules. Default: the first
    /// listener's address when it is a specific public one.
    #[serde(default)]
    pub ip: Option<IpAddr>,
}

impl Default for Alerts {
    fn default() -> Self {
        Self { to: default_to(), interval: default_interval(), ip: None }
    }
}

fn default_to() -> Vec<String> {
    vec!["postmaster".to_owned()]
}

fn default_interval() -> Seconds {
    Seconds(Duration::from_secs(60))
}

/// `[[alert]] kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The oldest queued message to `domain` (any domain when unset) is older than
    /// `older_than`.
    QueueAge,
    /// More than `messages` queued messages have been deferred at least once.
    Deferred,
    /// Over the last `window`, more than `percent` of the delivery attempts failed (deferred
    /// or bounced), counted once there were `min_attempts`.
    FailureRate,
    /// Our `[tls]` certificate expires within `within`.
    CertExpiry,
    /// A `[[dkim.key]]` (of `domain`, or every one) is not published in DNS as configured.
    Dkim,
    /// Our address (`[alerts] ip`) is listed on one of `zones`.
    Dnsbl,
    /// The spool's filesystem has less free space than `below`.
    SpoolFree,
}

/// One `[[alert]]` rule. Which keys apply depends on `kind`; `check-config` refuses a rule
/// without the ones its kind needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// A name for the mails, the log and `postern alerts`. Default: kind and domain.
    #[serde(default)]
    pub name: Option<String>,
    /// What is watched.
    pub kind: AlertKind,
    /// `queue_age` and `dkim`: the one domain watched. Default: all.
    #[serde(default)]
    pub domain: Option<String>,
    /// `queue_age`: the age that fires.
    #[serde(default)]
    pub older_than: Option<Seconds>,
    /// `deferred`: the count of deferred messages above which it fires.
    #[serde(default)]
    pub messages: Option<u64>,
    /// `failure_rate`: the share of failed attempts (0–100) above which it fires.
    #[serde(default)]
    pub percent: Option<f64>,
    /// `failure_rate`: the period looked at. Default `"1h"`.
    #[serde(default = "default_window")]
    pub window: Seconds,
    /// `failure_rate`: fewer attempts than this in `window` never fire. Default 10.
    #[serde(default = "default_min_attempts")]
    pub min_attempts: u64,
    /// `cert_expiry`: how long before the expiry it fires. Default `"14d"`.
    #[serde(default = "default_within")]
    pub within: Seconds,
    /// `dnsbl`: the zones to look our address up on, e.g. `["zen.spamhaus.org"]`.
    #[serde(default)]
    pub zones: Vec<String>,
    /// `spool_free`: the free space (`"1GiB"`, `"5%"`) below which it fires.
    #[serde(default)]
    pub below: Option<FreeSpace>,
    /// While firing, a reminder this often. Default `"4h"` (Alertmanager's
    /// `repeat_interval`).
    #[serde(default = "default_repeat")]
    pub repeat: Seconds,
}

fn default_window() -> Seconds {
    Seconds(Duration::from_secs(3600))
}

fn default_min_attempts() -> u64 {
    10
}

fn default_within() -> Seconds {
    Seconds(Duration::from_secs(14 * 86_400))
}

fn default_repeat() -> Seconds {
    Seconds(Duration::from_secs(4 * 3600))
}

/// A rule with what its kind needs, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// See [`AlertKind::QueueAge`].
    QueueAge {
        /// `None`: any domain.
        domain: Option<String>,
        /// The age that fires.
        older_than: Duration,
    },
    /// See [`AlertKind::Deferred`].
    Deferred {
        /// Fires above this count.
        messages: u64,
    },
    /// See [`AlertKind::FailureRate`].
    FailureRate {
        /// Fires above this share, 0–100.
        percent: f64,
        /// The period looked at.
        window: Duration,
        /// Fewer attempts never fire.
        min_attempts: u64,
    },
    /// See [`AlertKind::CertExpiry`].
    CertExpiry {
        /// How long before the expiry it fires.
        within: Duration,
    },
    /// See [`AlertKind::Dkim`].
    Dkim {
        /// `None`: every key.
        domain: Option<String>,
    },
    /// See [`AlertKind::Dnsbl`].
    Dnsbl {
        /// DNSBL zones.
        zones: Vec<String>,
    },
    /// See [`AlertKind::SpoolFree`].
    SpoolFree {
        /// Fires below this.
        below: FreeSpace,
    },
}

impl Alert {
    /// The rule, with the keys its kind needs.
    ///
    /// # Errors
    /// `(key, message)`: a key the kind needs is missing or out of range.
    pub fn rule(&self) -> Result<Rule, (&'static str, String)> {
        let kind = self.display_name_of_kind();
        let missing =
            |key: &'static str, example: &str| (key, format!("a {kind} rule needs {key}, e.g. {key} = {example}"));
        Ok(match self.kind {
            AlertKind::QueueAge => Rule::QueueAge {
                domain: self.domain.as_ref().map(|d| d.to_lowercase()),
                older_than: self.older_than.ok_or_else(|| missing("older_than", "\"1h\""))?.0,
            },
            AlertKind::Deferred => {
                Rule::Deferred { messages: self.messages.ok_or_else(|| missing("messages", "100"))? }
            }
            AlertKind::FailureRate => {
                let percent = self.percent.ok_or_else(|| missing("percent", "20.0"))?;
                if !(0.0..100.0).contains(&percent) {
                    return Err(("percent", format!("{percent} is not a share from 0 to 100")));
                }
                Rule::FailureRate { percent, window: self.window.0, min_attempts: self.min_attempts }
            }
            AlertKind::CertExpiry => Rule::CertExpiry { within: self.within.0 },
            AlertKind::Dkim => Rule::Dkim { domain: self.domain.as_ref().map(|d| d.to_lowercase()) },
            AlertKind::Dnsbl if self.zones.is_empty() => return Err(missing("zones", "[\"zen.spamhaus.org\"]")),
            AlertKind::Dnsbl => Rule::Dnsbl { zones: self.zones.iter().map(|z| z.to_lowercase()).collect() },
            AlertKind::SpoolFree => {
                Rule::SpoolFree { below: self.below.ok_or_else(|| missing("below", "\"1GiB\" or \"5%\""))? }
            }
        })
    }

    /// The kind as the configuration writes it: `queue_age`.
    fn display_name_of_kind(&self) -> &'static str {
        match self.kind {
            AlertKind::QueueAge => "queue_age",
            AlertKind::Deferred => "deferred",
            AlertKind::FailureRate => "failure_rate",
            AlertKind::CertExpiry => "cert_expiry",
            AlertKind::Dkim => "dkim",
            AlertKind::Dnsbl => "dnsbl",
            AlertKind::SpoolFree => "spool_free",
        }
    }

    /// `name`, else the kind and what it watches: `queue_age yahoo.com`.
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let kind = self.display_name_of_kind();
        match &self.domain {
            Some(d) => format!("{kind} {d}"),
            None => kind.to_owned(),
        }
    }
}
