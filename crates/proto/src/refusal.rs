//! The refusals the driver finds outside the state machine (the client's network, the store,
//! the spool, the message's author fields), typed: the driver says *why*, and the reply (code,
//! enhanced status from RFC 3463, the text a postmaster greps for) is made here, beside the
//! session's own replies ([`crate::replies`]). A check of another crate that decides with a
//! reply of its own (a milter's, the DMARC decision, a screening or recipient verdict) passes
//! it on as [`Refusal::Decided`].

use std::net::IpAddr;

use postern_types::{Address, EnhancedStatus as S, Reply};

/// Why the driver refuses a connection, a command or a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A check of another crate decided, with its reply.
    Decided(Reply),
    /// `[policy] block_networks` lists the client: 554 5.7.1 at connect.
    Blocked(IpAddr),
    /// A DNS check of the client could not be made and `[policy] dns_temperror = "defer"`:
    /// 451 4.4.3.
    DnsTempFail {
        /// The check (`dnsbl`, `reverse_dns`, ...).
        check: String,
    },
    /// Too many failed AUTHs (or mail to forged SRS addresses) from the client's network,
    /// `[server] ban_prefix_ipv4`/`ipv6` wide: 421 4.7.0, and the session ends.
    Banned {
        /// Our host name, first in a 421's text (RFC 5321 §4.2).
        hostname: String,
        /// The network, as the log names it (`192.0.2.0/24`).
        network: String,
    },
    /// The connection limits (`[server] max_connections`, or per client address with
    /// `from`): 421 4.7.0.
    TooManyConnections {
        /// Our host name, first in a 421's text (RFC 5321 §4.2).
        hostname: String,
        /// The client, when its own limit was reached.
        from: Option<IpAddr>,
    },
    /// Greylisting: the triplet is not yet allowed (451 4.7.1, RFC 6647).
    Greylisted {
        /// The forward-path.
        recipient: Address,
        /// Seconds until a retry is allowed.
        retry_in: u64,
    },
    /// Greylisting cannot be checked and `[store] greylist_fail = "closed"` (451 4.7.1).
    GreylistUnavailable {
        /// The forward-path.
        recipient: Address,
    },
    /// A `[rate_limits]` rule is exceeded: 450 4.7.1 naming the rule.
    RateLimited {
        /// `<rcpt>: ` at RCPT, empty at MAIL.
        prefix: String,
        /// What is counted: the client network, the user or the sender domain.
        subject: String,
        /// The rule as configured: its label, limit, what it counts and its window.
        rule: String,
        /// Seconds until the rule allows one more.
        retry_in: u64,
    },
    /// Rate limits cannot be checked and `[store] rate_limit_fail = "closed"` (451 4.7.1).
    RateUnavailable {
        /// `<rcpt>: ` at RCPT, empty at MAIL.
        prefix: String,
    },
    /// `[spool] min_free` is not left on the spool's file system: 452 4.3.1 (RFC 5321
    /// §4.5.3.1.10's insufficient system storage).
    LowSpace,
    /// The spool commit failed: 451 4.3.0, nothing was queued.
    QueueWrite,
    /// DKIM signing failed under `[dkim] on_error = "tempfail"`: 451 4.3.0.
    SigningFailed,
    /// Mail from outside with more than one `From:` field (RFC 5322 §3.6; RFC 7489 §6.6.1):
    /// 550 5.7.1.
    SeveralFrom(usize),
    /// An authenticated submission whose author fields are not the login's (RFC 6409 §6.1):
    /// 550 5.7.1 saying which.
    ForeignAuthor(String),
}

impl Refusal {
    /// The reply to send.
    #[must_use]
    pub fn reply(&self) -> Reply {
        match self {
            Self::Decided(r) => r.clone(),
            Self::Blocked(ip) => Reply::new(554, S(5, 7, 1), format!("Client host [{ip}] blocked by local policy")),
            Self::DnsTempFail { check } => Reply::new(
                451,
                S(4, 4, 3),
                format!("Temporary DNS failure while checking {check} for you, try again later"),
            ),
            Self::Banned { hostname, network } => {
                Reply::new(421, S(4, 7, 0), format!("{hostname} Error: too many failures from {network}, try later"))
            }
            Self::TooManyConnections { hostname, from: None } => {
                Reply::new(421, S(4, 7, 0), format!("{hostname} Error: too many connections"))
            }
            Self::TooManyConnections { hostname, from: Some(ip) } => {
                Reply::new(421, S(4, 7, 0), format!("{hostname} Error: too many connections from {ip}"))
            }
            Self::Greylisted { recipient, retry_in } => Reply::new(
                451,
                S(4, 7, 1),
                format!("<{recipient}>: Greylisted, please try again in {retry_in} seconds"),
            ),
            Self::GreylistUnavailable { recipient } => {
                Reply::new(451, S(4, 7, 1), format!("<{recipient}>: Greylisting unavailable, try again later"))
            }
            Self::RateLimited { prefix, subject, rule, retry_in } => Reply::new(
                450,
                S(4, 7, 1),
                format!("{prefix}Rate limit exceeded for {subject} ({rule}), try again in {retry_in} seconds"),
            ),
            Self::RateUnavailable { prefix } => {
                Reply::new(451, S(4, 7, 1), format!("{prefix}Rate limits cannot be checked now, try again later"))
            }
            Self::LowSpace => Reply::new(452, S(4, 3, 1), "Insufficient system storage, try again later"),
            Self::QueueWrite => Reply::new(451, S(4, 3, 0), "Error: queue file write error, try again later"),
            Self::SigningFailed => Reply::new(451, S(4, 3, 0), "Error: cannot sign the message, try again later"),
            Self::SeveralFrom(n) => {
                Reply::new(550, S(5, 7, 1), format!("{n} From: fields; a message has exactly one (RFC 5322 3.6)"))
            }
            Self::ForeignAuthor(what) => Reply::new(550, S(5, 7, 1), what.clone()),
        }
    }
}

impl std::fmt::Display for Refusal {
    /// The reply, as the log shows it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.reply().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Temporary refusals are 4xx with a 4.x.x status, permanent ones 5xx with 5.x.x, and a
    /// 421 starts with our name (RFC 5321 §4.2, RFC 3463).
    #[test]
    fn every_refusal_has_a_consistent_code_and_status() {
        let bob = Address::new("bob", "b.test");
        let all = [
            Refusal::Blocked([192, 0, 2, 1].into()),
            Refusal::DnsTempFail { check: "dnsbl".into() },
            Refusal::Banned { hostname: "mx.test".into(), network: "192.0.2.0/24".into() },
            Refusal::TooManyConnections { hostname: "mx.test".into(), from: Some([192, 0, 2, 1].into()) },
            Refusal::Greylisted { recipient: bob.clone(), retry_in: 60 },
            Refusal::GreylistUnavailable { recipient: bob },
            Refusal::RateLimited { prefix: String::new(), subject: "x".into(), rule: "r".into(), retry_in: 1 },
            Refusal::RateUnavailable { prefix: String::new() },
            Refusal::LowSpace,
            Refusal::QueueWrite,
            Refusal::SigningFailed,
            Refusal::SeveralFrom(2),
            Refusal::ForeignAuthor("From: <x@y.test> is not yours".into()),
        ];
        for r in all {
            let reply = r.reply();
            let status = reply.status.expect("an enhanced status");
            assert_eq!(u16::from(status.0), reply.code / 100, "{r:?}");
            assert!(matches!(reply.code / 100, 4 | 5), "{r:?}");
        }
        let banned = Refusal::Banned { hostname: "mx.test".into(), network: "n".into() }.reply();
        assert!(banned.lines[0].starts_with("mx.test "));
    }
}
