//! Address classes that decide where Postern may connect or what it may believe.

use std::net::IpAddr;

/// Whether `ip` is a public unicast address: not private (RFC 1918), shared (RFC 6598),
/// loopback, link-local, unspecified, broadcast, multicast, documentation (RFC 5737, RFC 3849),
/// unique-local (RFC 4193), or an IPv4-mapped IPv6 address of one of those.
pub fn is_public_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            !(v.is_private()
                || v.is_loopback()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.is_multicast()
                || v.is_documentation()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (64..128).contains(&o[1])))
        }
        IpAddr::V6(v) => {
            if let Some(v4) = v.to_ipv4_mapped() {
                return is_public_unicast(IpAddr::V4(v4));
            }
            let s = v.segments();
            !(v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// The network of `ip` that is counted as one client: the first `v4_prefix` bits of an IPv4
/// address (an IPv4-mapped IPv6 address counts as IPv4), the first `v6_prefix` bits of an IPv6
/// one, the rest zero. A prefix past the address length keeps every bit. One IPv6 host usually
/// holds a whole /64 (RFC 4291 §2.5.1), so counting per address would let it try without end.
pub fn client_network(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v) => {
            let bits = u32::from(v4_prefix.min(32));
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            IpAddr::V4((u32::from(v) & mask).into())
        }
        IpAddr::V6(v) => {
            let bits = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6((u128::from(v) & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_networks() {
        let net = |s: &str, a, b| client_network(s.parse().unwrap(), a, b).to_string();
        assert_eq!(net("192.0.2.77", 24, 64), "192.0.2.0");
        assert_eq!(net("192.0.2.77", 32, 64), "192.0.2.77");
        assert_eq!(net("192.0.2.77", 0, 64), "0.0.0.0");
        assert_eq!(net("::ffff:192.0.2.77", 24, 64), "192.0.2.0");
        assert_eq!(net("2001:db8:1:2:3:4:5:6", 24, 64), "2001:db8:1:2::");
        assert_eq!(net("2001:db8:1:2:3:4:5:6", 24, 128), "2001:db8:1:2:3:4:5:6");
        assert_eq!(net("2001:db8:1:2:3:4:5:6", 24, 48), "2001:db8:1::");
    }

    #[test]
    fn public_and_not() {
        for ip in [
            "192.0.2.1",
            "10.0.0.1",
            "172.16.5.5",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "ff02::1",
        ] {
            assert!(!is_public_unicast(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2a00:1450::1", "::ffff:8.8.8.8"] {
            assert!(is_public_unicast(ip.parse().unwrap()), "{ip}");
        }
    }
}
