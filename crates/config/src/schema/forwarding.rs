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
    /// How long an SRS address stays valid for bounces. Default `"7d"`: a bounce comes within
    /// the sender's queue lifetime (5 days by default), and a shorter window shortens the life
    /// of an address an attacker guessed.
    #[serde(default = "default_srs_max_age")]
    pub srs_max_age: Seconds,
    /// Characters of the base64 HMAC kept in an SRS address, 4 to 27. Default 8: a guess then
    /// costs about 2^40 tries (the hash is compared case-insensitively, as libsrs2 does, since
    /// some MTAs lower-case addresses), where libsrs2's 4 cost 2^20, which a client found on
    /// loopback in seconds.
    #[serde(default = "default_srs_hash_length")]
    pub srs_hash_length: usize,
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
            srs_hash_length: default_srs_hash_length(),
            srs_exclude_domains: Vec::new(),
        }
    }
}

fn default_srs_max_age() -> Seconds {
    Seconds(Duration::from_secs(7 * 86400))
}

fn default_srs_hash_length() -> usize {
    8
}
