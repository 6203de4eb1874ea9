//! Next-hop selection (RFC 5321 §5.1): routes table and smarthost first, then the MX records of
//! the domain by preference (equal preferences shuffled), the implicit MX (the domain's own
//! address) when there is none, and the null MX (RFC 7505) as an immediate permanent failure.

use std::net::IpAddr;

use postern_config::schema::IpVersion;
use postern_config::{Route, Tables, parse_relay};
use postern_dns::{Answer, Resolver};
use postern_types::ReversePath;
use postern_types::{EnhancedStatus, Reply};

use crate::Outcome;

/// Where to look for the hosts of a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Domain whose MX is looked up, or the host itself.
    pub name: String,
    /// Look up MX records of `name` (false: `name` is the host, sendmail's `[brackets]`).
    pub mx_lookup: bool,
    /// TCP port.
    pub port: u16,
}

/// The target for mail from `sender` to `domain`: the sender route (smarttable), else the
/// domain's route (most specific wins), else the smarthost, else the domain's MX.
pub fn target_for(
    domain: &str,
    sender: &ReversePath,
    tables: &Tables,
    smarthost: Option<&str>,
    default_port: u16,
) -> Target {
    let relay = match (tables.sender_route_for(sender), tables.route_for(domain)) {
        (Some(r), _) => Some(r.clone()),
        (None, Some(Route::Relay(r))) => Some(r.clone()),
        _ => smarthost.and_then(|s| parse_relay(s).ok()),
    };
    match relay {
        Some(r) => Target { name: r.host, mx_lookup: r.mx_lookup, port: r.port.unwrap_or(default_port) },
        None => Target { name: domain.to_owned(), mx_lookup: true, port: default_port },
    }
}

/// A host to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Host name (or IP literal).
    pub name: String,
    /// TCP port.
    pub port: u16,
    /// What DANE says of it (filled in when the destination looks for DANE).
    pub dane: crate::dane::HostDane,
}

/// The hosts to try for `target`, in order.
///
/// # Errors
/// The outcome for every recipient when there is nowhere to go: null MX → `556 5.1.10`
/// (RFC 7505 §3), an MX lookup that failed temporarily → `451 4.4.3`.
pub async fn hosts<R: Resolver>(resolver: &R, target: &Target) -> Result<Vec<Host>, Outcome> {
    let host = |name: String| Host { name, port: target.port, dane: crate::dane::HostDane::None };
    if !target.mx_lookup || target.name.parse::<IpAddr>().is_ok() {
        return Ok(vec![host(target.name.clone())]);
    }
    match resolver.mx(&target.name).await {
        Answer::Found(mx) => {
            if mx.iter().any(|m| m.exchange.is_empty()) {
                return Err(Outcome::PermFail(Reply::new(
                    556,
                    EnhancedStatus(5, 1, 10),
                    format!("domain {} accepts no mail (null MX)", target.name),
                )));
            }
            let mut mx: Vec<(u16, String)> = mx.into_iter().map(|m| (m.preference, m.exchange)).collect();
            order_mx(&mut mx, seed());
            Ok(mx.into_iter().map(|(_, h)| host(h)).collect())
        }
        // No MX: the domain itself is the implicit MX (RFC 5321 §5.1).
        Answer::NotFound => Ok(vec![host(target.name.clone())]),
        Answer::TempFail(e) => {
            Err(Outcome::temp(EnhancedStatus(4, 4, 3), format!("DNS lookup of MX for {} failed: {e}", target.name)))
        }
    }
}

/// Sorts by preference and shuffles hosts of equal preference (RFC 5321 §5.1) with `seed`.
pub fn order_mx(mx: &mut [(u16, String)], mut seed: u64) {
    mx.sort_by_key(|m| m.0);
    let mut start = 0;
    while start < mx.len() {
        let end = start + mx[start..].iter().take_while(|m| m.0 == mx[start].0).count();
        // Fisher-Yates over the group.
        for i in (start + 1..end).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let j = start + (seed % (i - start + 1) as u64) as usize;
            mx.swap(i, j);
        }
        start = end;
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    t | 1
}

/// The addresses of `host` in the order `version` asks for.
///
/// # Errors
/// `TempFail` when a lookup failed temporarily and nothing was found; `PermFail` (5.4.4, as
/// Postfix) when the host has no address at all.
pub async fn addresses<R: Resolver>(resolver: &R, host: &str, version: IpVersion) -> Result<Vec<IpAddr>, Outcome> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let (v4, v6) = match version {
        IpVersion::Ipv4 => (resolver.ipv4(host).await, Answer::NotFound),
        IpVersion::Ipv6 => (Answer::NotFound, resolver.ipv6(host).await),
        IpVersion::Any | IpVersion::PreferIpv4 => tokio::join!(resolver.ipv4(host), resolver.ipv6(host)),
    };
    let temp = [&v4, &v6].iter().find_map(|a| match a {
        Answer::TempFail(e) => Some(e.clone()),
        _ => None,
    });
    let list = |a: Answer<Vec<IpAddr>>| match a {
        Answer::Found(v) => v,
        _ => Vec::new(),
    };
    let ordered = order_addresses(list(v4), list(v6), version);
    if !ordered.is_empty() {
        return Ok(ordered);
    }
    Err(match temp {
        Some(e) => Outcome::temp(EnhancedStatus(4, 4, 3), format!("DNS lookup of {host} failed: {e}")),
        None => Outcome::PermFail(Reply::new(550, EnhancedStatus(5, 4, 4), format!("host {host} has no address"))),
    })
}

/// `any`: IPv6 and IPv4 interleaved, IPv6 first, so that a broken family costs one connect
/// timeout, not all of them. `prefer-ipv4`: all IPv4, then IPv6.
pub fn order_addresses(v4: Vec<IpAddr>, v6: Vec<IpAddr>, version: IpVersion) -> Vec<IpAddr> {
    match version {
        IpVersion::Ipv4 => v4,
        IpVersion::Ipv6 => v6,
        IpVersion::PreferIpv4 => v4.into_iter().chain(v6).collect(),
        IpVersion::Any => {
            let mut out = Vec::with_capacity(v4.len() + v6.len());
            let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
            loop {
                match (a.next(), b.next()) {
                    (None, None) => break out,
                    (x, y) => out.extend(x.into_iter().chain(y)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mx_order_sorts_and_shuffles_equal_preferences() {
        let mut seen_first = std::collections::HashSet::new();
        for seed in 1..200u64 {
            let mut mx = vec![(20, "b".to_owned()), (10, "a".to_owned()), (20, "c".to_owned()), (30, "d".to_owned())];
            order_mx(&mut mx, seed * 7919);
            assert_eq!(mx[0].1, "a");
            assert_eq!(mx[3].1, "d");
            seen_first.insert(mx[1].1.clone());
        }
        assert_eq!(seen_first.len(), 2, "equal preferences must be shuffled");
    }

    #[test]
    fn address_order() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let v4 = vec![ip("192.0.2.1"), ip("192.0.2.2")];
        let v6 = vec![ip("2001:db8::1")];
        assert_eq!(
            order_addresses(v4.clone(), v6.clone(), IpVersion::Any),
            [ip("2001:db8::1"), ip("192.0.2.1"), ip("192.0.2.2")]
        );
        assert_eq!(
            order_addresses(v4.clone(), v6.clone(), IpVersion::PreferIpv4),
            [ip("192.0.2.1"), ip("192.0.2.2"), ip("2001:db8::1")]
        );
        assert_eq!(order_addresses(v4.clone(), v6.clone(), IpVersion::Ipv6), [ip("2001:db8::1")]);
        assert_eq!(order_addresses(v4, vec![], IpVersion::Ipv6), Vec::<IpAddr>::new());
    }

    #[test]
    fn targets_follow_routes_then_smarthost_then_mx() {
        let mut t = Tables::default();
        t.routes.insert("b.test".into(), Route::Relay(parse_relay("relay:[127.0.0.1]:2526").unwrap()));
        let target = |domain: &str, sender: &str, t: &Tables, smarthost| {
            let sender =
                postern_types::Address::parse(sender).map_or(ReversePath::Null, postern_types::ReversePath::Mailbox);
            target_for(domain, &sender, t, smarthost, 25)
        };
        assert_eq!(
            target("b.test", "a@x.test", &t, None),
            Target { name: "127.0.0.1".into(), mx_lookup: false, port: 2526 }
        );
        let relay = Target { name: "relay.test".into(), mx_lookup: true, port: 587 };
        assert_eq!(target("c.test", "", &t, Some("relay.test:587")), relay);
        assert_eq!(target("c.test", "", &t, None), Target { name: "c.test".into(), mx_lookup: true, port: 25 });
        // Sender routes (smarttable) come first.
        t.sender_routes.insert("@capture.test".into(), parse_relay("relay:[127.0.0.9]").unwrap());
        assert_eq!(target("b.test", "s@capture.test", &t, None).name, "127.0.0.9");
    }
}
