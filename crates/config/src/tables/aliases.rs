//! The aliases table, aliases(5) syntax: `name: target, target, ...`. A line starting with white
//! space continues the previous entry. Targets are names (aliases or mailboxes), addresses,
//! `error:...`, `"|command"` (a pipe, with `[delivery] allow_pipes`) and `:include:/path` (a file
//! of targets, one or more per line, read with the table); files as targets are refused.

use crate::error::{ValueError, invalid};
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
        for t in split_targets(targets) {
            if let Some(list) = t.strip_prefix(":include:") {
                include(Path::new(list.trim()), &mut parsed).unwrap_or_else(|e| {
                    errors.push(ConfigError::new(path, Some(n), &name, e));
                });
                continue;
            }
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

/// The comma-separated targets of an aliases(5) entry, trimmed, empty ones dropped; commas
/// inside double quotes (a pipe's command) do not split.
pub fn split_targets(targets: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in targets.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(targets[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(targets[start..].trim());
    out.retain(|t| !t.is_empty());
    out
}

/// The targets of an `:include:` file (sendmail's mailing-list files): comma-separated, any
/// number per line, `#` comments.
fn include(list: &Path, out: &mut Vec<Target>) -> Result<(), ValueError> {
    let text = std::fs::read_to_string(list).map_err(|e| format!(":include:{}: {e}", list.display()))?;
    for (n, line) in entries(&text) {
        for t in split_targets(line) {
            if t.starts_with(":include:") {
                return Err(invalid!("{}:{n}: nested :include: is not supported", list.display()));
            }
            out.push(parse_target(t).map_err(|e| format!("{}:{n}: {e}", list.display()))?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_and_includes() {
        let dir = std::env::temp_dir().join(format!("postern-aliases-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let list = dir.join("list");
        std::fs::write(&list, "# members\nalice, bob@x.test\ncarol\n").unwrap();
        let text = format!("proc: \"|/usr/bin/procmail -a a,b\", archive\nlist: :include:{}\n", list.display());
        let mut errors = Vec::new();
        let (map, _) = parse(Path::new("aliases"), &text, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(map["proc"], [Target::Pipe("/usr/bin/procmail -a a,b".into()), Target::Name("archive".into())]);
        assert_eq!(map["list"].len(), 3);
        let (_, _) = parse(Path::new("aliases"), "bad: :include:/nonexistent/list\n", &mut errors);
        assert!(errors[0].to_string().contains("aliases:1: bad: :include:/nonexistent/list"), "{errors:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
