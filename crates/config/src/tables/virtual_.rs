//! The virtual table, sendmail virtusertable syntax: `key target` per line, where key is
//! `user@domain`, `user+detail@domain`, `user+*@domain` (any detail), `user++@domain` (an
//! empty detail) or `@domain` (catch-all), and target is a mailbox or alias name, an address,
//! `!` (deliver as addressed), `error:...`, or a template with `%1` (the user part), `%2` (the
//! detail) and `%3` (`+detail`), as in sendmail's cf/README.

use std::collections::HashMap;
use std::path::Path;

use super::{Target, parse_target};
use crate::error::ConfigError;

type Parsed = (HashMap<String, Target>, HashMap<String, usize>);

pub(super) fn parse(path: &Path, text: &str, errors: &mut Vec<ConfigError>) -> Parsed {
    super::key_target_table(path, text, errors, key_error, parse_virtual_target)
}

fn key_error(key: &str) -> Option<&'static str> {
    if let Some(e) = super::address_key_error(key) {
        return Some(e);
    }
    let local = key.rsplit_once('@').map_or("", |(l, _)| l);
    let wild = local.find('*');
    match wild {
        Some(i) if !(local.ends_with("+*") && i == local.len() - 1 && local.len() > 2) => {
            Some("`*` stands only in user+*@domain (any detail)")
        }
        _ => None,
    }
}

fn parse_virtual_target(target: &str) -> Result<Target, String> {
    if target == "!" {
        return Ok(Target::AsAddressed);
    }
    if !target.contains('%') {
        return match parse_target(target)? {
            Target::Pipe(_) => {
                Err(format!("{target:?}: pipes go in the aliases; point this entry at an alias that pipes"))
            }
            t => Ok(t),
        };
    }
    let bad = target.match_indices('%').any(|(i, _)| !matches!(target.as_bytes().get(i + 1), Some(b'1'..=b'3')));
    if bad {
        return Err(format!("{target:?}: only %1 (user), %2 (detail) and %3 (+detail) can be substituted"));
    }
    // Check the shape with a sample user and detail, so that a broken template fails at load.
    let template = Target::Template(target.to_lowercase());
    template.substitute("user", Some(('+', "detail"))).map_err(|e| format!("{target:?}: {e}"))?;
    Ok(template)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_templates() {
        let mut errors = Vec::new();
        let text = "@example.org %1@example.test\nbob+*@example.test bob-%2\nbob++@example.test bob\nx*@e.test y\n@t.test %9\n";
        let (map, lines) = parse(Path::new("virtual"), text, &mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].to_string().contains("virtual:4: x*@e.test"), "{}", errors[0]);
        assert!(errors[1].to_string().contains("%9"), "{}", errors[1]);
        assert_eq!(lines["bob+*@example.test"], 2);
        let t = &map["@example.org"];
        assert_eq!(t.substitute("alice", None).unwrap().to_string(), "alice@example.test");
        let t = &map["bob+*@example.test"];
        assert_eq!(t.substitute("bob", Some(('+', "lists"))).unwrap(), Target::Name("bob-lists".into()));
    }
}
