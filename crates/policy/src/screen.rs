//! Client screening before DATA (issue: anti-spam), the pure parts: network lists with
//! O(log n) lookups, the shape of a HELO name, generic-looking reverse DNS names, and the replies
//! that explain each refusal (RFC 7372 codes where one fits). The DNS lookups and their order
//! live in the inbound driver.

use std::net::IpAddr;

use ipnet::IpNet;
use postern_types::{EnhancedStatus, Reply};

/// A set of networks, IPv4 and IPv6, as sorted, merged ranges: lookup is a binary search, memory
/// is 8 bytes per IPv4 range and 32 per IPv6 range.
#[derive(Debug, Clone, Default)]
pub struct IpList {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpList {
    /// The list of `nets`.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for n in nets {
            match n {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Self { v4: merge(v4), v6: merge(v6) }
    }

    /// Parses one network per line (`192.0.2.0/24`, `2001:db8::/32`, or a bare address); `#`
    /// starts a comment, and a line may carry text after the network (as published lists do).
    ///
    /// # Errors
    /// `(line number, text)` of the first line that is not a network.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut nets = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split(['#', ';']).next().unwrap_or("").trim();
            let Some(word) = line.split_whitespace().next() else { continue };
            let net = word
                .parse::<IpNet>()
                .or_else(|_| word.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| (i + 1, word.to_owned()))?;
            nets.push(net);
        }
        Ok(Self::new(nets))
    }

    /// Whether `ip` is in one of the networks (IPv4-mapped IPv6 is looked up as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => find(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => find(&self.v4, u32::from(v4)),
                None => find(&self.v6, u128::from(v6)),
            },
        }
    }

    /// The union of two lists.
    pub fn union(a: Self, b: Self) -> Self {
        let mut v4 = a.v4;
        v4.extend(b.v4);
        let mut v6 = a.v6;
        v6.extend(b.v6);
        Self { v4: merge(v4), v6: merge(v6) }
    }

    /// Ranges held (after merging).
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Bytes the ranges occupy (8 per IPv4 range, 32 per IPv6 range).
    pub fn heap_bytes(&self) -> usize {
        self.v4.capacity() * std::mem::size_of::<(u32, u32)>()
            + self.v6.capacity() * std::mem::size_of::<(u128, u128)>()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn merge<T: Ord + Copy + num_like::Succ>(mut v: Vec<(T, T)>) -> Vec<(T, T)> {
    v.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1.succ() => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out.shrink_to_fit();
    out
}

fn find<T: Ord + Copy>(v: &[(T, T)], x: T) -> bool {
    let i = v.partition_point(|(start, _)| *start <= x);
    i > 0 && v[i - 1].1 >= x
}

mod num_like {
    pub(super) trait Succ {
        fn succ(self) -> Self;
    }
    impl Succ for u32 {
        fn succ(self) -> Self {
            self.saturating_add(1)
        }
    }
    impl Succ for u128 {
        fn succ(self) -> Self {
            self.saturating_add(1)
        }
    }
}

/// What a HELO/EHLO argument is (RFC 5321 §4.1.1.1, §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeloShape {
    /// A fully qualified domain name (at least two labels, letters/digits/hyphens).
    Fqdn(String),
    /// An address literal, `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
    Literal(IpAddr),
    /// One label, `localhost`, or not a name at all.
    Invalid,
}

/// Classifies a HELO argument.
pub fn helo_shape(helo: &str) -> HeloShape {
    if let Some(inner) = helo.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let addr = inner.strip_prefix("IPv6:").or_else(|| inner.strip_prefix("ipv6:")).unwrap_or(inner);
        return addr.parse().map_or(HeloShape::Invalid, HeloShape::Literal);
    }
    let name = helo.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let tld_ok = labels.last().is_some_and(|t| t.bytes().any(|b| b.is_ascii_alphabetic()));
    if labels.len() >= 2 && labels.iter().all(label_ok) && tld_ok && name != "localhost.localdomain" {
        HeloShape::Fqdn(name)
    } else {
        HeloShape::Invalid
    }
}

/// Words that mark a reverse DNS name as a consumer or dynamic pool (Postfix's
/// `reject_unknown_reverse_client_hostname` users keep such lists; these are the common ones).
pub const GENERIC_WORDS: [&str; 12] =
    ["dynamic", "dyn", "dsl", "pool", "dhcp", "ppp", "cable", "dial", "dialup", "broadband", "customer", "unassigned"];

/// The registered domain of a host name (one label below its public suffix, by the Public
/// Suffix List: `mx1.example.co.uk` → `example.co.uk`), lower case; the name itself when it
/// has none (a bare public suffix, or a name the list does not know).
pub fn registered_domain(name: &str) -> String {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    psl::domain_str(&name).map_or_else(|| name.clone(), str::to_owned)
}

/// Whether `name` (a PTR of `ip`) looks generic: it contains the address's digits (in order,
/// dotted, dashed or run together, in either direction) or one of `words` as a whole label part.
pub fn generic_ptr(name: &str, ip: IpAddr, words: &[String]) -> bool {
    let name = name.to_ascii_lowercase();
    if let IpAddr::V4(v4) = ip {
        let o = v4.octets().map(|b| b.to_string());
        let rev = [o[3].clone(), o[2].clone(), o[1].clone(), o[0].clone()];
        for parts in [&o, &rev] {
            for sep in ["-", ".", "x", ""] {
                let joined = parts.join(sep);
                if sep.is_empty() && joined.len() < 8 {
                    continue;
                }
                if name.contains(&joined) {
                    return true;
                }
            }
        }
    }
    name.split(['.', '-', '_']).any(|part| {
        let letters = part.trim_end_matches(|c: char| c.is_ascii_digit());
        words.iter().any(|w| w == part || w == letters)
    })
}

/// The reply for a refused check: `code` 5xx (reject) or 4xx (defer), with the enhanced code
/// of RFC 7372 where one exists.
pub fn refusal(temporary: bool, status: (u16, u16), text: String) -> Reply {
    if temporary {
        Reply::new(450, EnhancedStatus(4, status.0, status.1), text)
    } else {
        Reply::new(550, EnhancedStatus(5, status.0, status.1), text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_domains_follow_the_public_suffix_list() {
        assert_eq!(registered_domain("mx1.mail.Example.org."), "example.org");
        assert_eq!(registered_domain("mx.example.co.uk"), "example.co.uk");
        assert_ne!(registered_domain("a.one.co.uk"), registered_domain("b.two.co.uk"));
        // Names under an unlisted top-level domain: the default rule `*`.
        assert_eq!(registered_domain("good.policy.test"), "policy.test");
    }

    #[test]
    fn lists_merge_and_find() {
        let l =
            IpList::parse("# comment\n192.0.2.0/25\n192.0.2.128/25 ; adjacent\n10.0.0.1\n2001:db8::/32 spam source\n")
                .unwrap();
        assert_eq!(l.len(), 3, "two /25 merge into one range");
        assert!(l.contains("192.0.2.200".parse().unwrap()));
        assert!(l.contains("10.0.0.1".parse().unwrap()));
        assert!(!l.contains("10.0.0.2".parse().unwrap()));
        assert!(l.contains("2001:db8::99".parse().unwrap()));
        assert!(l.contains("::ffff:192.0.2.1".parse().unwrap()));
        assert!(!l.contains("2001:db9::1".parse().unwrap()));
        assert_eq!(IpList::parse("ok 192.0.2.0/24\n").unwrap_err(), (1, "ok".to_owned()));
    }

    #[test]
    fn helo_shapes() {
        assert_eq!(helo_shape("mail.example.org"), HeloShape::Fqdn("mail.example.org".into()));
        assert_eq!(helo_shape("[192.0.2.1]"), HeloShape::Literal("192.0.2.1".parse().unwrap()));
        assert_eq!(helo_shape("[IPv6:2001:db8::1]"), HeloShape::Literal("2001:db8::1".parse().unwrap()));
        for bad in ["localhost", "bare", "localhost.localdomain", "a..b", "-x.example", "192.0.2.1", "[nope]"] {
            assert_eq!(helo_shape(bad), HeloShape::Invalid, "{bad}");
        }
    }

    #[test]
    fn generic_names() {
        let words: Vec<String> = GENERIC_WORDS.iter().map(|s| (*s).to_owned()).collect();
        let ip: IpAddr = "198.51.100.23".parse().unwrap();
        assert!(generic_ptr("198-51-100-23.isp.example", ip, &words));
        assert!(generic_ptr("23.100.51.198.in.example", ip, &words));
        assert!(generic_ptr("host.dynamic.isp.example", ip, &words));
        assert!(generic_ptr("dsl42.isp.example", ip, &words));
        assert!(!generic_ptr("mail.example.org", ip, &words));
        assert!(!generic_ptr("mx23.example.org", ip, &words));
    }
}
