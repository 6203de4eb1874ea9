//! The virtual table, sendmail virtusertable syntax: `key target` per line, where key is
//! `user@domain`, `user+detail@domain` or `@domain` (catch-all), and target is a mailbox or alias
//! name, an address, `!` (deliver as addressed) or `error:...`.

use std::collections::HashMap;
use std::path::Path;

use super::{Target, entries, parse_target};
use crate::error::ConfigError;

pub(super) fn parse(path: &Path, text: &str, errors: &mut Vec<ConfigError>) -> HashMap<String, Target> {
    let mut map = HashMap::new();
    for (n, line) in entries(text) {
        let line = line.trim();
        let (key, target) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let key = key.to_lowercase();
        let target = target.trim();
        if !key.contains('@') || key.ends_with('@') {
            errors.push(ConfigError::new(path, Some(n), &key, "key must be user@domain or @domain"));
            continue;
        }
        if target.is_empty() {
            errors.push(ConfigError::new(path, Some(n), &key, "missing target"));
            continue;
        }
        let parsed = if target == "!" { Ok(Target::AsAddressed) } else { parse_target(target) };
        match parsed {
            Ok(t) => {
                if map.insert(key.clone(), t).is_some() {
                    errors.push(ConfigError::new(path, Some(n), &key, "duplicate key"));
                }
            }
            Err(e) => errors.push(ConfigError::new(path, Some(n), &key, e)),
        }
    }
    map
}
