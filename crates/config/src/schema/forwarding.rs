//! `[forwarding]`: SRS for forwarded mail.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::units::Seconds;

/// `[forwarding]`: the Sender Rewriting Scheme for mail that aliases and the virtual table
/// forward to other domains (`policy::srs`). Off without `srs_domain`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forwarding {
    /// The domain SRS addresses are in (`SRS0=HHHH=TT=domain=local@SRS_DOMAIN`). Its MX must be
    /// this server, and its SPF must allow the addresses this server sends from. Default: none
    /// (forwarded mail keeps its reverse-path, and may fail SPF at the destination).
    #[serde(default)]
    pub srs_domain: Option<String>,
    /// A file of secrets, one per line (`#` comments): the first signs, every one verifies, so
    /// a new secret goes on the first line and the old one below it until addresses made with it
    /// have expired. Keep it 0640 root:postern. Required with `srs_domain`.
    #[serde(default)]
    pub srs_secret_file: Option<PathBuf>,
    /// How long an SRS address stays valid for bounces. Default `"21d"` (postsrsd's).
    #[serde(default = "default_srs_max_age")]
    pub srs_max_age: Seconds,
    /// Sender domains whose mail is forwarded without rewriting (besides `[domains] local`).
    #[serde(default)]
    pub srs_exclude_domains: Vec<String>,
}

impl Default for Forwarding {
    fn default() -> Self {
        Self {
            srs_domain: None,
            srs_secret_file: None,
            srs_max_age: default_srs_max_age(),
            srs_exclude_domains: Vec::new(),
        }
    }
}

fn default_srs_max_age() -> Seconds {
    Seconds(Duration::from_secs(21 * 86400))
}
