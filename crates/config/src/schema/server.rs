//! `[server]` (process-wide limits) and `[timeouts]` (how long the server waits for clients).

use std::time::Duration;

use serde::Deserialize;

use super::five_minutes;
use crate::units::Seconds;

/// `[server]`: process-wide limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Concurrent SMTP sessions in total; more get 421 4.7.0. Default 500.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Slots beyond `max_connections` for client addresses with no session open, so that a
    /// flood from addresses that already have sessions does not lock everyone else out.
    /// Default: a tenth of `max_connections`, at least 1.
    #[serde(default)]
    pub new_client_reserve: Option<usize>,
    /// Concurrent SMTP sessions per client IP; more get 421 4.7.0. Default 20.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// On SIGTERM, how long a session receiving a message may take to finish. Default `"10s"`.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Seconds,
    /// Failures (failed AUTH attempts, mail to forged SRS addresses) from one client network
    /// (see `ban_prefix_ipv4`, `ban_prefix_ipv6`), each within `ban_time` of the one before,
    /// before that network is banned: its connections get 421 4.7.0 until `ban_time` has
    /// passed. Default 5.
    #[serde(default = "default_auth_failures_before_ban")]
    pub auth_failures_before_ban: usize,
    /// How long a ban lasts. Default `"10m"`.
    #[serde(default = "default_ban_time")]
    pub ban_time: Seconds,
    /// The IPv4 network counted as one client for bans, in prefix bits (0–32). Default 24.
    #[serde(default = "default_ban_prefix_ipv4")]
    pub ban_prefix_ipv4: u8,
    /// The IPv6 network counted as one client for bans, in prefix bits (0–128). Default 64:
    /// one host usually holds a whole /64.
    #[serde(default = "default_ban_prefix_ipv6")]
    pub ban_prefix_ipv6: u8,
    /// The unprivileged user the daemon runs as once its ports are bound and its files open
    /// (`setuid(2)`, needs a start as root). Default: none (stay as started; a warning is
    /// logged when that is root).
    #[serde(default)]
    pub user: Option<String>,
    /// The group to run as. Default: the primary group of `user`.
    #[serde(default)]
    pub group: Option<String>,
    /// Restricts `sendmail` to the members of this group: `submit.sock` becomes 0660 with
    /// this group (Postfix's `postdrop`). Default: none, every local account may send (0666).
    #[serde(default)]
    pub submit_group: Option<String>,
    /// Password checks (Argon2, 19 MiB each) run at once; more AUTH attempts wait for a turn.
    /// Default 2. Bounds the memory a flood of AUTH attempts can take.
    #[serde(default = "default_auth_concurrency")]
    pub auth_concurrency: usize,
    /// How long an AUTH attempt waits for a turn before it is answered `454 4.7.0`. Default
    /// `"10s"`.
    #[serde(default = "default_auth_wait")]
    pub auth_wait: Seconds,
}

impl Server {
    /// The network `ip` is counted in for bans (`ban_prefix_ipv4`, `ban_prefix_ipv6`).
    pub fn ban_network(&self, ip: std::net::IpAddr) -> std::net::IpAddr {
        postern_types::net::client_network(ip, self.ban_prefix_ipv4, self.ban_prefix_ipv6)
    }

    /// How a ban network is written: `192.0.2.0/24`, `2001:db8::/64`.
    pub fn ban_label(&self, network: std::net::IpAddr) -> String {
        let bits = if network.is_ipv4() { self.ban_prefix_ipv4.min(32) } else { self.ban_prefix_ipv6.min(128) };
        format!("{network}/{bits}")
    }

    /// `new_client_reserve`, or its default (a tenth of `max_connections`, at least 1).
    pub fn new_client_reserve(&self) -> usize {
        self.new_client_reserve.unwrap_or((self.max_connections / 10).max(1))
    }
}

fn default_auth_concurrency() -> usize {
    2
}
fn default_auth_wait() -> Seconds {
    Seconds(Duration::from_secs(10))
}

fn default_auth_failures_before_ban() -> usize {
    5
}
fn default_ban_prefix_ipv4() -> u8 {
    24
}
fn default_ban_prefix_ipv6() -> u8 {
    64
}
fn default_ban_time() -> Seconds {
    Seconds(Duration::from_secs(600))
}

/// `[timeouts]`: how long the server waits for the client's next command, per stage (like
/// sendmail's `confTO_*`). RFC 5321 §4.5.3.2.7 asks for at least 5 minutes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Waiting for HELO/EHLO after the greeting. Default `"5m"`.
    #[serde(default = "five_minutes")]
    pub helo: Seconds,
    /// Waiting for MAIL (or any command outside a transaction). Default `"5m"`.
    #[serde(default = "five_minutes")]
    pub mail: Seconds,
    /// Waiting for RCPT/DATA inside a transaction. Default `"5m"`.
    #[serde(default = "five_minutes")]
    pub rcpt: Seconds,
    /// Waiting for each block of DATA/BDAT content. Default `"5m"`.
    #[serde(default = "five_minutes")]
    pub data_block: Seconds,
    /// The slowest DATA/BDAT content accepted, in bytes per second: the content must be
    /// complete by `data_block` plus its size at this rate after it started, whatever each read
    /// brings (Postfix's `smtpd_min_data_rate`). Default 500; 0 turns it off.
    #[serde(default = "default_data_min_rate")]
    pub data_min_rate: u64,
}

fn default_data_min_rate() -> u64 {
    500
}

fn default_max_connections() -> usize {
    500
}
fn default_max_connections_per_ip() -> usize {
    20
}
fn default_shutdown_grace() -> Seconds {
    Seconds(Duration::from_secs(10))
}
