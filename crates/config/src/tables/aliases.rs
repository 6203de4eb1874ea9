//! The aliases table, aliases(5) syntax: `name: target, target, ...`. A line starting with white
//! space continues the previous entry. Targets are names (aliases or mailboxes), addresses or
//! `error:...`; pipes, files and `:include:` are refused with an error.

use std::collections::HashMap;
use std::path::Path;

use super::{Target, entries, parse_target};
use crate::error::ConfigError;

pub(super) fn parse(
    path: &Path,
    text: &str,
    errors: &mut Vec<ConfigError>,
) -> (HashMap<String, Vec<Target>>, HashMap<String, usize>) {
    // Join continuation lines first, remembering where each entry started.
    let mut logical: Vec<(usize, String)> = Vec::new();
    for (n, line) in entries(text) {
        match logical.last_mut() {
            Some((_, prev)) if line.starts_with([' ', '\t']) => {
                prev.push(' ');
                prev.push_str(line.trim());
            }
            _ => logical.push((n, line.trim().to_owned())),
        }
    }
    let mut aliases = HashMap::new();
    let mut lines = HashMap::new();
    for (n, entry) in logical {
        let Some((name, targets)) = entry.split_once(':') else {
            errors.push(ConfigError::new(
                path,
                Some(n),
                entry.split_whitespace().next().unwrap_or(""),
                "expected `name: target, ...`",
            ));
            continue;
        };
        let name = name.trim().to_lowercase();
        let mut parsed = Vec::new();
        for t in targets.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match parse_target(t) {
                Ok(t) => parsed.push(t),
                Err(e) => errors.push(ConfigError::new(path, Some(n), &name, e)),
            }
        }
        if parsed.is_empty() {
            errors.push(ConfigError::new(path, Some(n), &name, "alias has no targets"));
        } else if aliases.insert(name.clone(), parsed).is_some() {
            errors.push(ConfigError::new(path, Some(n), &name, "duplicate alias"));
        }
        lines.insert(name, n);
    }
    (aliases, lines)
}
