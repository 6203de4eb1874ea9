//! Taking one reading of a rule: the queue, the attempt counters, the certificate file, DNS
//! and the spool's filesystem.

use std::fmt::Write as _;
use std::net::IpAddr;

use postern_config::schema::Rule;
use postern_inbound::Context;
use postern_inbound::screen::{Listing, ip_listing};

use super::state::{AttemptHistory, Reading};
use crate::dns_check::Verdict;

/// Measures `rule` at `now` (Unix seconds).
pub(crate) async fn read(ctx: &Context, rule: &Rule, history: &AttemptHistory, now: u64) -> Reading {
    match rule {
        Rule::QueueAge { domain, older_than } => queue_age(ctx, domain.as_deref(), older_than.as_secs(), now),
        Rule::Deferred { messages } => {
            let s = ctx.queue.summary();
            let text = format!("{} message(s) deferred, of {} queued (threshold {messages})", s.deferred, s.messages);
            if s.deferred > *messages { Reading::Firing(text) } else { Reading::Ok(text) }
        }
        Rule::FailureRate { percent, window, min_attempts } => {
            let (attempts, failed) = history.over(now, *window);
            let share = if attempts == 0 { 0.0 } else { failed as f64 * 100.0 / attempts as f64 };
            let text = format!(
                "{failed} of {attempts} delivery attempt(s) failed in the last {} ({share:.1}%, threshold {percent}%)",
                age(window.as_secs())
            );
            if attempts >= *min_attempts && share > *percent { Reading::Firing(text) } else { Reading::Ok(text) }
        }
        Rule::CertExpiry { within } => cert_expiry(ctx, within.as_secs(), now),
        Rule::Dkim { domain } => dkim(ctx, domain.as_deref()).await,
        Rule::Dnsbl { zones } => dnsbl(ctx, zones).await,
        Rule::SpoolFree { below } => match ctx.spool.free_space() {
            Ok((free, total)) => {
                let need = below.bytes_of(total);
                let text =
                    format!("{} free of {} on the spool's filesystem (threshold {})", mib(free), mib(total), mib(need));
                if free < need { Reading::Firing(text) } else { Reading::Ok(text) }
            }
            Err(e) => Reading::Unknown(format!("statvfs of the spool: {e}")),
        },
    }
}

fn queue_age(ctx: &Context, domain: Option<&str>, limit: u64, now: u64) -> Reading {
    let summary = ctx.queue.summary();
    let oldest =
        summary.domains.iter().filter(|d| domain.is_none_or(|want| d.domain == want)).min_by_key(|d| d.oldest_arrival);
    let Some(d) = oldest else {
        return Reading::Ok(format!("nothing queued to {}", domain.unwrap_or("any domain")));
    };
    let waited = now.saturating_sub(d.oldest_arrival);
    let since = chrono::DateTime::from_timestamp(i64::try_from(d.oldest_arrival).unwrap_or(0), 0)
        .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string());
    let text = format!(
        "the oldest message to {} has waited {} (since {since}), {} recipient(s) pending there (threshold {})",
        d.domain,
        age(waited),
        d.recipients,
        age(limit)
    );
    if waited > limit { Reading::Firing(text) } else { Reading::Ok(text) }
}

fn cert_expiry(ctx: &Context, within: u64, now: u64) -> Reading {
    let config = ctx.live.config();
    let Some(cert) = &config.tls.cert else { return Reading::Unknown("no [tls] cert configured".into()) };
    match postern_inbound::tls::read_leaf(cert) {
        Ok(leaf) => {
            let left = leaf.not_after - i64::try_from(now).unwrap_or(i64::MAX);
            let text = format!(
                "the certificate {} ({}) expires in {} (threshold {})",
                cert.display(),
                leaf.subject,
                if left < 0 { "the past: it has expired".to_owned() } else { age(left.unsigned_abs()) },
                age(within)
            );
            if left < i64::try_from(within).unwrap_or(i64::MAX) { Reading::Firing(text) } else { Reading::Ok(text) }
        }
        Err(e) => Reading::Unknown(e.to_string()),
    }
}

async fn dkim(ctx: &Context, domain: Option<&str>) -> Reading {
    let config = ctx.live.config();
    let keys: Vec<_> = config.dkim.key.iter().filter(|k| domain.is_none_or(|d| k.domain == d)).collect();
    if keys.is_empty() {
        return Reading::Unknown(format!("no [[dkim.key]] for {}", domain.unwrap_or("any domain")));
    }
    let (mut text, mut bad, mut unknown) = (String::new(), false, false);
    for k in keys {
        let verdict = crate::dns_check::dkim(&*ctx.resolver, &k.domain, &k.selector, &k.private_key).await;
        let (tag, line) = match &verdict {
            Verdict::Ok(t) => ("ok", t),
            Verdict::Fail(t) => ("FAIL", t),
            Verdict::Temp(t) => ("TEMP", t),
        };
        bad |= matches!(verdict, Verdict::Fail(_));
        unknown |= matches!(verdict, Verdict::Temp(_));
        let _ = writeln!(text, "{tag} {line}");
    }
    let text = text.trim_end().to_owned();
    if bad {
        Reading::Firing(text)
    } else if unknown {
        Reading::Unknown(text)
    } else {
        Reading::Ok(text)
    }
}

/// Our public sending address: `[alerts] ip`, else the first specific public listener address.
pub(crate) fn our_ip(config: &postern_config::Config) -> Option<IpAddr> {
    config
        .alerts
        .ip
        .or_else(|| config.listener.iter().map(|l| l.address.ip()).find(|ip| !ip.is_unspecified() && !ip.is_loopback()))
}

async fn dnsbl(ctx: &Context, zones: &[String]) -> Reading {
    let config = ctx.live.config();
    let Some(ip) = our_ip(&config) else {
        return Reading::Unknown("set [alerts] ip: the listeners bind no specific public address".into());
    };
    let (mut listed, mut temp) = (Vec::new(), Vec::new());
    for zone in zones {
        match ip_listing(&*ctx.resolver, zone, ip).await {
            Listing::Listed { zone, code } => listed.push(format!("{zone} ({code})")),
            Listing::Clear(_) => {}
            Listing::Temp(e) => temp.push(e),
        }
    }
    if !listed.is_empty() {
        Reading::Firing(format!("{ip} is listed on {}", listed.join(", ")))
    } else if !temp.is_empty() {
        Reading::Unknown(format!("DNSBL lookups of {ip} failed: {}", temp.join("; ")))
    } else {
        Reading::Ok(format!("{ip} is listed on none of {}", zones.join(", ")))
    }
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub(crate) fn age(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / (1024 * 1024))
}
