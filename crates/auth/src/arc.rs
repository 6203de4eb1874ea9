//! The structure of an incoming ARC chain (RFC 8617 §4, §5.2), checked before mail-auth checks
//! its signatures: mail-auth 0.13.3 passes chains that RFC 8617 fails (issue 27), and reports
//! `neutral` or `permerror` where RFC 8617 knows only `none`, `pass` and `fail`.
//!
//! A chain fails here when:
//! - a field's tag-list is malformed, or names a tag twice (RFC 6376 §3.2);
//! - an ARC set lacks one of its three fields, has more than one of any, or the instances are
//!   not 1 to N (at most 50);
//! - a tag required by RFC 8617 §4.1 is missing;
//! - an algorithm other than `rsa-sha256` or `ed25519-sha256` is used (no `rsa-sha1`,
//!   RFC 8301);
//! - an ARC-Seal carries `h=`;
//! - an ARC-Message-Signature signs an ARC-Seal;
//! - the `cv=` values break the chain: `none` at i=1 only, `pass` above it.

use std::collections::BTreeMap;

/// What the header block says of ARC, before any signature is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Structure {
    /// No ARC field at all: `arc=none`.
    Absent,
    /// A chain of this many sets whose structure is sound; its signatures decide.
    Sound(u32),
    /// A broken chain: `arc=fail`, for this reason.
    Broken(String),
}

/// The tags of one field, or the broken chain they make.
fn tags(value: &str) -> Result<BTreeMap<String, String>, Structure> {
    let mut out = BTreeMap::new();
    for spec in value.split(';') {
        let spec = spec.trim_matches([' ', '\t', '\r', '\n']);
        if spec.is_empty() {
            continue;
        }
        let (name, v) = spec.split_once('=').ok_or_else(|| Structure::Broken(format!("{spec:?} is not a tag")))?;
        let name = name.trim_matches([' ', '\t', '\r', '\n']);
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Structure::Broken(format!("{name:?} is not a tag name")));
        }
        let v: String = v.chars().filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n')).collect();
        if out.insert(name.to_owned(), v).is_some() {
            return Err(Structure::Broken(format!("tag {name}= given twice")));
        }
    }
    Ok(out)
}

/// The unfolded fields of `message`'s header block, as (lower-case name, value).
fn fields(message: &[u8]) -> Vec<(String, String)> {
    // The header block only: this runs on every message checked, whatever its body's size.
    let end = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(message.len());
    let text = String::from_utf8_lossy(&message[..end]);
    let head = text.as_ref();
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_ascii_lowercase(), value.to_owned()));
        }
    }
    out
}

/// The structure of the ARC chain of `message` (CRLF, as received).
pub fn structure(message: &[u8]) -> Structure {
    let mut sets: BTreeMap<u32, [u32; 3]> = BTreeMap::new();
    let mut seals: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
    for (name, value) in fields(message) {
        let kind = match name.as_str() {
            "arc-seal" => 0,
            "arc-message-signature" => 1,
            "arc-authentication-results" => 2,
            _ => continue,
        };
        let instance = if kind == 2 {
            // `i=N; authserv-id; results`: only the instance tag is a tag.
            value.trim().strip_prefix("i=").and_then(|r| r.split(';').next()).map(|n| n.trim().to_owned())
        } else {
            match tags(&value) {
                Ok(t) => {
                    if let Err(why) = check_tags(kind, &t) {
                        return why;
                    }
                    let i = t.get("i").cloned();
                    if kind == 0
                        && let Some(n) = i.as_deref().and_then(|n| n.parse().ok())
                    {
                        seals.insert(n, t);
                    }
                    i
                }
                Err(why) => return why,
            }
        };
        let Some(i) = instance.and_then(|n| n.parse::<u32>().ok()).filter(|n| (1..=50).contains(n)) else {
            return Structure::Broken("an ARC field without a valid i= (1 to 50)".into());
        };
        sets.entry(i).or_default()[usize::from(kind)] += 1;
    }
    if sets.is_empty() {
        return Structure::Absent;
    }
    let n = u32::try_from(sets.len()).unwrap_or(u32::MAX);
    for (expected, (i, counts)) in (1..).zip(&sets) {
        if *i != expected || *counts != [1, 1, 1] {
            return Structure::Broken(format!("ARC set i={i} is incomplete, repeated or out of sequence"));
        }
    }
    for (i, seal) in &seals {
        let cv = seal.get("cv").map(String::as_str);
        let expected = if *i == 1 { "none" } else { "pass" };
        if cv != Some(expected) {
            return Structure::Broken(format!("ARC-Seal i={i} has cv={}", cv.unwrap_or("")));
        }
    }
    Structure::Sound(n)
}

/// The tags RFC 8617 §4.1 requires of an ARC-Seal (`kind` 0) or ARC-Message-Signature (1).
fn check_tags(kind: u8, t: &BTreeMap<String, String>) -> Result<(), Structure> {
    let field = if kind == 0 { "ARC-Seal" } else { "ARC-Message-Signature" };
    let required: &[&str] =
        if kind == 0 { &["i", "a", "b", "d", "s", "cv"] } else { &["i", "a", "b", "bh", "d", "s", "h"] };
    if let Some(missing) = required.iter().find(|r| !t.contains_key(**r)) {
        return Err(Structure::Broken(format!("{field} without {missing}=")));
    }
    let alg = t["a"].to_ascii_lowercase();
    if alg != "rsa-sha256" && alg != "ed25519-sha256" {
        return Err(Structure::Broken(format!("{field} with a={alg}")));
    }
    if kind == 0 && t.contains_key("h") {
        return Err(Structure::Broken("ARC-Seal with h=".into()));
    }
    if kind == 1 && t["h"].split(':').any(|h| h.trim().eq_ignore_ascii_case("arc-seal")) {
        return Err(Structure::Broken("ARC-Message-Signature signs an ARC-Seal".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(i: u32, cv: &str, ams_extra: &str) -> String {
        format!(
            "ARC-Seal: i={i}; a=rsa-sha256; cv={cv}; d=a.test; s=s;\r\n b=AAAA\r\nARC-Message-Signature: i={i}; a=rsa-sha256; c=relaxed/relaxed; d=a.test; s=s; h=from:subject{ams_extra}; bh=BB; b=CC\r\nARC-Authentication-Results: i={i}; mx.a.test; spf=pass\r\n"
        )
    }

    #[test]
    fn chains_are_judged_by_their_structure() {
        let msg = |sets: &str| format!("{sets}From: a@a.test\r\nSubject: s\r\n\r\nbody\r\n");
        assert_eq!(structure(msg("").as_bytes()), Structure::Absent);
        assert_eq!(structure(msg(&set(1, "none", "")).as_bytes()), Structure::Sound(1));
        let two = set(2, "pass", "") + &set(1, "none", "");
        assert_eq!(structure(msg(&two).as_bytes()), Structure::Sound(2));
        for (broken, why) in [
            (set(1, "pass", ""), "cv=pass at i=1"),
            (set(2, "pass", ""), "a gap"),
            (set(1, "none", ":arc-seal"), "AMS signs an AS"),
            (set(1, "none", "").replace("a=rsa-sha256; cv", "a=rsa-sha1; cv"), "rsa-sha1"),
            (set(1, "none", "").replace("a=rsa-sha256; cv", "cv"), "no a="),
            (set(1, "none", "").replace("d=a.test; s=s;\r\n", "d=a.test; d=b.test; s=s;\r\n"), "a duplicated tag"),
            (set(1, "none", "").replace("cv=none;", "cv=none; h=from;"), "h= in an AS"),
            (set(1, "none", "") + &set(1, "none", ""), "a repeated set"),
            (set(1, "none", "").replace("i=1; mx", "mx"), "an AAR without i="),
        ] {
            assert!(matches!(structure(msg(&broken).as_bytes()), Structure::Broken(_)), "{why}");
        }
    }
}
