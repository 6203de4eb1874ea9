//! The Sender Rewriting Scheme (SRS), as Shevek's Mail::SRS defined it and libsrs2, postsrsd and
//! Exim implement it: mail forwarded to another domain leaves with its reverse-path rewritten
//! into our SRS domain, so the destination's SPF check (RFC 7208) sees a sender we are allowed
//! to send for, and a bounce to that address can be verified and returned to the original
//! sender.
//!
//! - `SRS0=HHHH=TT=domain=local@SRSDOMAIN` for a first forward: `TT` is the day (days since the
//!   epoch, modulo 1024) in two base32 characters; `HHHH` the first `hash_len` characters of
//!   the base64 HMAC-SHA1 of `TT`, `domain` and `local`, lower-cased, under the first secret.
//! - `SRS1=HHHH=host==rest@SRSDOMAIN` when the sender is already an SRS0 address of `host`
//!   (re-forwarding): the hash covers `host` and `rest`, and reversal gives back
//!   `SRS0rest@host` for that host to reverse.
//!
//! Hashes compare case-insensitively (local parts get lower-cased on the way), every secret
//! verifies (the first one signs, so secrets can be rotated), and an SRS0 address older than
//! `max_age` days is refused.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use postern_types::{Address, ForwardPath, ReversePath};
use ring::hmac;

/// The fewest and the most characters of the hash an SRS address can keep: libsrs2's minimum,
/// and the whole base64 HMAC-SHA1 without its padding.
pub const HASH_LEN_RANGE: std::ops::RangeInclusive<usize> = 4..=27;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Why an SRS address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SrsError {
    /// Not of the SRS0/SRS1 form.
    #[error("not an SRS address")]
    NotSrs,
    /// The hash does not verify under any secret.
    #[error("bad SRS hash")]
    BadHash,
    /// The timestamp is older than `max_age` days (or from the future).
    #[error("SRS address expired")]
    Expired,
}

/// The SRS settings in force: our SRS domain, the secrets, the lifetime of an address.
#[derive(Debug, Clone)]
pub struct Srs {
    /// The domain SRS addresses are in (lower-case).
    pub domain: String,
    /// Secrets; the first signs, all verify. Never empty.
    pub secrets: Vec<Vec<u8>>,
    /// Days an SRS0 address stays valid. Default 7.
    pub max_age_days: u32,
    /// Characters of the hash kept, within [`HASH_LEN_RANGE`]. Default 8.
    pub hash_len: usize,
}

impl From<&postern_config::SrsKeys> for Srs {
    fn from(k: &postern_config::SrsKeys) -> Self {
        Self {
            domain: k.domain.clone(),
            secrets: k.secrets.clone(),
            max_age_days: k.max_age_days,
            hash_len: k.hash_len,
        }
    }
}

/// Today, in days since the Unix epoch (the SRS timestamp's clock).
pub fn today() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86400)
}

impl Srs {
    fn hash(&self, secret: &[u8], parts: &[&str]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
        let mut ctx = hmac::Context::with_key(&key);
        for p in parts {
            ctx.update(p.to_lowercase().as_bytes());
        }
        let len = self.hash_len.clamp(*HASH_LEN_RANGE.start(), *HASH_LEN_RANGE.end());
        STANDARD.encode(ctx.sign().as_ref())[..len].to_owned()
    }

    /// Whether `hash` (as found in an address, compared case-insensitively) is the full-length
    /// hash of `parts` under one of the secrets: a shorter one never verifies.
    fn verifies(&self, hash: &str, parts: &[&str]) -> bool {
        self.secrets.iter().any(|s| self.hash(s, parts).eq_ignore_ascii_case(hash))
    }

    /// Whether `address` is in our SRS domain and of the SRS form.
    pub fn is_ours(&self, address: &Address) -> bool {
        address.domain() == self.domain && srs_kind(address.local_part()).is_some()
    }

    /// The reverse-path to use when forwarding mail from `sender` on day `today` (days since
    /// the Unix epoch).
    pub fn forward(&self, sender: &Address, today: u64) -> Address {
        let local = sender.local_part();
        if let Some((kind, rest)) = srs_kind(local) {
            let host = sender.domain();
            // Already ours: keep it. Someone else's SRS0/SRS1: one SRS1 pointing at its host.
            if host == self.domain {
                return sender.clone();
            }
            let (orig_host, tail) = match kind {
                Kind::Srs0 => (host.to_owned(), rest.to_owned()),
                // SRS1=HHHH=host==rest: the SRS0 host and rest stay as they are.
                Kind::Srs1 => match rest.split_once("==") {
                    Some((h, tail)) => match h.split_once('=') {
                        Some((_, orig)) => (orig.to_owned(), tail.to_owned()),
                        None => (host.to_owned(), rest.to_owned()),
                    },
                    None => (host.to_owned(), rest.to_owned()),
                },
            };
            let hash = self.hash(&self.secrets[0], &[&orig_host, &tail]);
            return Address::new(format!("SRS1={hash}={orig_host}=={tail}"), &self.domain);
        }
        let tt = timestamp(today);
        let hash = self.hash(&self.secrets[0], &[&tt, sender.domain(), local]);
        Address::new(format!("SRS0={hash}={tt}={}={local}", sender.domain()), &self.domain)
    }

    /// The original sender of an SRS address in our domain, on day `today`.
    ///
    /// # Errors
    /// [`SrsError`]: not SRS, a hash that does not verify, or an expired SRS0 timestamp.
    pub fn reverse(&self, address: &Address, today: u64) -> Result<Address, SrsError> {
        let (kind, rest) = srs_kind(address.local_part()).ok_or(SrsError::NotSrs)?;
        match kind {
            Kind::Srs0 => {
                let mut f = rest.splitn(4, '=');
                let (Some(hash), Some(tt), Some(domain), Some(local)) = (f.next(), f.next(), f.next(), f.next()) else {
                    return Err(SrsError::NotSrs);
                };
                if !self.verifies(hash, &[tt, domain, local]) {
                    return Err(SrsError::BadHash);
                }
                let age = age_days(tt, today).ok_or(SrsError::NotSrs)?;
                if age > u64::from(self.max_age_days) {
                    return Err(SrsError::Expired);
                }
                Address::parse(&format!("{local}@{domain}")).map_err(|_| SrsError::NotSrs)
            }
            Kind::Srs1 => {
                let (head, tail) = rest.split_once("==").ok_or(SrsError::NotSrs)?;
                let (hash, host) = head.split_once('=').ok_or(SrsError::NotSrs)?;
                if !self.verifies(hash, &[host, tail]) {
                    return Err(SrsError::BadHash);
                }
                Address::parse(&format!("SRS0={tail}@{host}")).map_err(|_| SrsError::NotSrs)
            }
        }
    }
}

/// The reverse-path a forwarded copy leaves with: `Some(SRS address)` when `keys` are set, the
/// recipient is a forward (`forward_path` in one of `local_domains` or the SRS domain, sent on
/// to another domain) and the sender is neither the null sender, nor in our domains, nor
/// excluded; `None` keeps the reverse-path as it is.
pub fn forward_sender(
    keys: Option<&postern_config::SrsKeys>,
    local_domains: &[String],
    reverse_path: &ReversePath,
    forward_path: &ForwardPath,
    today: u64,
) -> Option<Address> {
    let keys = keys?;
    let sender = reverse_path.mailbox()?;
    let ours = |d: &str| local_domains.iter().any(|l| l == d) || d == keys.domain;
    let forwarded = forward_path.domain().is_some_and(ours);
    if !forwarded || ours(sender.domain()) || keys.exclude_domains.iter().any(|d| d == sender.domain()) {
        return None;
    }
    Some(Srs::from(keys).forward(sender, today))
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Srs0,
    Srs1,
}

/// `SRS0` / `SRS1` and what follows it (starting with the separator `=`, `+` or `-`, as
/// libsrs2 accepts), case-insensitively.
fn srs_kind(local: &str) -> Option<(Kind, &str)> {
    let head = local.get(..4)?;
    let kind = if head.eq_ignore_ascii_case("SRS0") {
        Kind::Srs0
    } else if head.eq_ignore_ascii_case("SRS1") {
        Kind::Srs1
    } else {
        return None;
    };
    let rest = &local[4..];
    rest.strip_prefix(['=', '+', '-']).map(|r| (kind, r))
}

/// The two-character base32 day stamp.
fn timestamp(today: u64) -> String {
    let t = (today % 1024) as usize;
    [BASE32[t >> 5] as char, BASE32[t & 31] as char].iter().collect()
}

/// Days since stamp `tt` was made, modulo the 1024-day cycle.
fn age_days(tt: &str, today: u64) -> Option<u64> {
    let b = tt.as_bytes();
    if b.len() != 2 {
        return None;
    }
    let v = |c: u8| BASE32.iter().position(|&x| x == c.to_ascii_uppercase()).map(|p| p as u64);
    let then = v(b[0])? << 5 | v(b[1])?;
    Some((today % 1024 + 1024 - then) % 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srs() -> Srs {
        Srs {
            domain: "fwd.b.test".into(),
            secrets: vec![b"new secret".to_vec(), b"old secret".to_vec()],
            max_age_days: 21,
            hash_len: 8,
        }
    }

    #[test]
    fn forward_and_reverse() {
        let s = srs();
        let sender = Address::parse("Alice@A.test").unwrap();
        let day = 20_000;
        let f = s.forward(&sender, day);
        assert_eq!(f.domain(), "fwd.b.test");
        assert!(f.local_part().starts_with("SRS0=") && f.local_part().ends_with("=a.test=Alice"), "{f}");
        assert_eq!(s.reverse(&f, day + 21).unwrap().to_string().to_lowercase(), "alice@a.test");
        // The whole hash must be there: its first four characters (libsrs2's length) do not do.
        let hash = f.local_part().split('=').nth(1).unwrap();
        assert_eq!(hash.len(), 8);
        let short = Address::parse(&f.to_string().replacen(hash, &hash[..4], 1)).unwrap();
        assert_eq!(s.reverse(&short, day), Err(SrsError::BadHash));
        // Case does not matter (local parts get lower-cased by the way).
        let lower = Address::parse(&f.to_string().to_lowercase()).unwrap();
        assert_eq!(s.reverse(&lower, day).unwrap().to_string(), "alice@a.test");
        assert_eq!(s.reverse(&f, day + 22), Err(SrsError::Expired));
        // A forged hash, and a rotated secret that still verifies.
        let forged = Address::parse(&f.to_string().replacen("SRS0=", "SRS0=x", 1)).unwrap();
        assert_eq!(s.reverse(&forged, day), Err(SrsError::BadHash));
        let mut old = srs();
        old.secrets.reverse();
        assert!(s.reverse(&old.forward(&sender, day), day).is_ok(), "every secret verifies");
        assert_eq!(s.reverse(&sender, day), Err(SrsError::NotSrs));
    }

    #[test]
    fn reforwarding_uses_srs1() {
        let other = Srs { domain: "fwd.c.test".into(), secrets: vec![b"c".to_vec()], max_age_days: 21, hash_len: 8 };
        let s = srs();
        let day = 20_000;
        let srs0 = other.forward(&Address::parse("bob@a.test").unwrap(), day);
        let srs1 = s.forward(&srs0, day);
        assert!(srs1.local_part().starts_with("SRS1=") && srs1.local_part().contains("=fwd.c.test=="), "{srs1}");
        assert_eq!(s.reverse(&srs1, day).unwrap(), srs0);
        assert_eq!(other.reverse(&srs0, day).unwrap().to_string(), "bob@a.test");
        assert_eq!(s.forward(&srs1, day), srs1, "our own SRS address is kept");
        assert_eq!(timestamp(1023), "77");
        assert_eq!(age_days(&timestamp(5), 1024 + 3), Some(1022));
    }
}
