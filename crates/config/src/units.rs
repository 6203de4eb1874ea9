//! Human units in the configuration: sizes (`"25MiB"`, `"10MB"`, `"4096"`) and durations
//! (`"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"5d"`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// A size in bytes. Accepts an integer, or a string with suffix `B`, `KB`/`MB`/`GB` (powers of
/// 1000) or `KiB`/`MiB`/`GiB` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

/// A duration. Accepts a string: a number followed by `ms`, `s`, `m`, `h` or `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

/// Free space on a filesystem: bytes (as [`Size`]) or a percentage of its size (`"5%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeSpace {
    /// At least this many bytes.
    Bytes(u64),
    /// At least this percentage (0–100) of the filesystem's size.
    Percent(u8),
}

impl FreeSpace {
    /// The threshold in bytes on a filesystem of `total` bytes.
    pub fn bytes_of(self, total: u64) -> u64 {
        match self {
            Self::Bytes(b) => b,
            Self::Percent(p) => u64::try_from(u128::from(total) * u128::from(p) / 100).unwrap_or(u64::MAX),
        }
    }
}

impl<'de> Deserialize<'de> for FreeSpace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        let bad = |v: &str| {
            de::Error::custom(format!(
                r#"invalid free space "{v}": use a size such as "500MiB" or a percentage such as "5%""#
            ))
        };
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Self::Bytes(n)),
            Raw::Text(v) => match v.trim().strip_suffix('%') {
                Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= 100).map(Self::Percent).ok_or_else(|| bad(&v)),
                None => parse_size(&v).map(Self::Bytes).ok_or_else(|| bad(&v)),
            },
        }
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = (s[..split].parse::<u64>().ok()?, s[split..].trim());
    let mult = match unit {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    num.checked_mul(mult)
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let num = s[..split].parse::<u64>().ok()?;
    Some(match s[split..].trim() {
        "ms" => Duration::from_millis(num),
        "s" => Duration::from_secs(num),
        "m" => Duration::from_secs(num.checked_mul(60)?),
        "h" => Duration::from_secs(num.checked_mul(3600)?),
        "d" => Duration::from_secs(num.checked_mul(86400)?),
        _ => return None,
    })
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a size such as "25MiB", "10MB" or a number of bytes"#)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v).map(Size).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).ok_or_else(|| {
                    E::custom(format!(
                        r#"invalid size "{v}": use a number with B, KB, MB, GB, KiB, MiB or GiB, e.g. "25MiB""#
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Seconds).ok_or_else(|| {
            de::Error::custom(format!(r#"invalid duration "{s}": use a number with ms, s, m, h or d, e.g. "5m""#))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_size("25MiB"), Some(25 << 20));
        assert_eq!(parse_size("10MB"), Some(10_000_000));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("5 XB"), None);
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), None);
    }
}
