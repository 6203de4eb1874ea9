//! The relay decision: who may send mail through us to domains that are not ours.
//!
//! In this version only clients in `[relay] trusted_networks` may relay (sendmail's "relay from
//! localhost"); authenticated submission comes with the TLS issue. Everyone else may only send
//! to local domains (`550 5.7.1 Relaying denied` otherwise, see [`crate::recipients`]).

use std::net::IpAddr;

use ipnet::IpNet;

/// Whether `client` is inside one of `trusted` (IPv4-mapped IPv6 clients are compared as IPv4).
pub fn is_trusted(client: IpAddr, trusted: &[IpNet]) -> bool {
    let client = match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
        v4 => v4,
    };
    trusted.iter().any(|n| n.contains(&client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_networks() {
        let nets: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
        assert!(is_trusted("127.0.0.5".parse().unwrap(), &nets));
        assert!(is_trusted("::ffff:127.0.0.1".parse().unwrap(), &nets));
        assert!(is_trusted("2001:db8::1".parse().unwrap(), &nets));
        assert!(!is_trusted("192.0.2.1".parse().unwrap(), &nets));
        assert!(!is_trusted("::1".parse().unwrap(), &nets));
        assert!(!is_trusted("127.0.0.1".parse().unwrap(), &[]));
    }
}
