//! Rate limits (`[rate_limits]`): each `[[rate_limits.rule]]` counts messages (at MAIL FROM)
//! or accepted recipients (at RCPT TO) per client network, authenticated user or sender
//! domain in the `[store]`, so that with a shared store the limit holds across every host of
//! a cluster. Over a limit: `450 4.7.1` with the seconds to wait (RFC 3463: 4.7.1, delivery
//! not authorized, temporary), as Postfix's anvil answers; a stolen password cannot send
//! 100,000 messages an hour. A store that cannot be reached gives `451 4.7.1` or nothing, as
//! `[store] rate_limit_fail` says; never a 5xx.

use postern_proto::Refusal;
use std::net::IpAddr;

use postern_config::Config;
use postern_config::schema::{FailMode, RateCount, RateRule, RateSubject};
use postern_policy::is_trusted;
use postern_store::Rate;
use postern_types::{Address, Reply};

use crate::Context;

/// Who is sending: the client, the authenticated user, the reverse-path (`None`: null sender).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sender<'a> {
    /// The client's address.
    pub(crate) ip: IpAddr,
    /// The AUTH identity, if any.
    pub(crate) user: Option<&'a str>,
    /// The MAIL FROM address, if not the null sender.
    pub(crate) from: Option<&'a Address>,
}

/// Counts one of `what` for `sender` against every rule that counts it; the reply (its text
/// after `prefix`, e.g. `<rcpt>: `) for the first rule exceeded (`450 4.7.1`), or `451 4.7.1`
/// when the store fails and the rules fail closed. `None`: within every limit (or exempt).
pub(crate) async fn check(
    ctx: &Context,
    config: &Config,
    what: RateCount,
    sender: Sender<'_>,
    prefix: &str,
) -> Option<Reply> {
    let r = &config.rate_limits;
    if r.rule.iter().all(|rule| rule.count != what) || exempt(config, sender) {
        return None;
    }
    let now = postern_store::now_ms();
    for rule in r.rule.iter().filter(|rule| rule.count == what) {
        let Some(subject) = subject(config, rule.per, sender) else { continue };
        let key = format!("{}:{subject}", rule.label());
        match ctx.store.rate(&key, 1, rule.limit, rule.window.0, now).await {
            Ok(Rate::Allowed) => {}
            Ok(Rate::Exceeded(wait)) => return Some(exceeded(rule, &subject, wait.as_secs().max(1), prefix)),
            Err(_) if config.store.rate_limit_fail == FailMode::Closed => {
                return Some(Refusal::RateUnavailable { prefix: prefix.to_owned() }.reply());
            }
            // Fail open; the outage itself is logged once by the store.
            Err(_) => return None,
        }
    }
    None
}

fn exceeded(rule: &RateRule, subject: &str, wait: u64, prefix: &str) -> Reply {
    let described =
        format!("{}: {} {} per {}s", rule.label(), rule.limit, rule.count.as_str(), rule.window.0.as_secs());
    let refusal = Refusal::RateLimited {
        prefix: prefix.to_owned(),
        subject: subject.to_owned(),
        rule: described,
        retry_in: wait,
    };
    refusal.reply()
}

/// What `per` counts for this sender: the client network, the user or the sender domain,
/// lower-cased; `None` when the sender has none (no AUTH, the null sender).
fn subject(config: &Config, per: RateSubject, s: Sender<'_>) -> Option<String> {
    let r = &config.rate_limits;
    match per {
        RateSubject::Client => Some(postern_store::network(s.ip, r.ipv4_prefix, r.ipv6_prefix)),
        RateSubject::User => s.user.map(str::to_lowercase),
        RateSubject::SenderDomain => s.from.map(|a| a.domain().to_ascii_lowercase()),
    }
}

/// `[rate_limits]` exemptions: trusted networks (`exempt_trusted`), `exempt_networks`,
/// `exempt_users`, `exempt_domains`.
fn exempt(config: &Config, s: Sender<'_>) -> bool {
    let r = &config.rate_limits;
    (r.exempt_trusted && is_trusted(s.ip, &config.relay.trusted_networks))
        || is_trusted(s.ip, &r.exempt_networks)
        || s.user.is_some_and(|u| r.exempt_users.iter().any(|e| e.eq_ignore_ascii_case(u)))
        || s.from.is_some_and(|a| r.exempt_domains.iter().any(|d| d.eq_ignore_ascii_case(a.domain())))
}
