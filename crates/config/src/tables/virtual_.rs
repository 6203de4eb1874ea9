//! The virtual table, sendmail virtusertable syntax: `key target` per line, where key is
//! `user@domain`, `user+detail@domain`, `user+*@domain` (any detail), `user++@domain` (an
//! empty detail) or `@domain` (catch-all), and target is a mailbox or alias name, an address,
//! `!` (deliver as addressed), `error:...`, or a template with `%1` (the user part), `%2` (the
//! detail) and `%3` (`+detail`), as in sendmail's cf/README.

use crate::error::{ValueError, invalid};
use std::collections::HashMap;
use std::path::Path;

use super::{Target, Template, parse_target};
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

fn parse_virtual_target(target: &str) -> Result<Target, ValueError> {
    if target == "!" {
        return Ok(Target::AsAddressed);
    }
    if !target.contains('%') {
        return match parse_target(target)? {
            Target::Pipe(_) => {
                Err(invalid!("{target:?}: pipes go in the aliases; point this entry at an alias that pipes"))
            }
            t => Ok(t),
        };
    }
    Template::parse(target).map(Target::Template).map_err(|e| invalid!("{target:?}: {e}"))
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
        let Target::Template(t) = &map["@example.org"] else { panic!("a template") };
        assert_eq!(t.substitute("alice", None).unwrap().to_string(), "alice@example.test");
        let Target::Template(t) = &map["bob+*@example.test"] else { panic!("a template") };
        assert_eq!(t.substitute("bob", Some(('+', "lists"))).unwrap(), Target::Name("bob-lists".into()));
    }

    /// A client's local part is hostile: whatever it holds (a pipe, a file, an include, an
    /// error, quotes, separators), a substitution yields an address or a name, never anything
    /// a table line alone may say.
    #[test]
    fn no_local_part_makes_a_template_a_pipe_file_include_or_error() {
        let templates: Vec<Template> = ["%1@example.test", "%1", "x-%1%3", "%2@e.test", "%1.%2"]
            .iter()
            .map(|t| Template::parse(t).unwrap())
            .collect();
        let hostile = [
            "\"|id >/tmp/x #\"",
            "|id",
            "/etc/passwd",
            ":include:/etc/shadow",
            "error:5.1.1:550 x",
            "\"error:nouser\"",
            "a\tb",
            "\"a b\"@evil.test",
            "%1%2%3",
        ];
        for t in &templates {
            for user in hostile {
                for detail in [None, Some(('+', "|x")), Some(('+', "error:4.0.0:451 y"))] {
                    match t.substitute(user, detail) {
                        Ok(Target::Address(_) | Target::Name(_)) | Err(_) => {}
                        Ok(other) => panic!("{t} with {user:?}: {other:?}"),
                    }
                }
            }
        }
        for bad in
            ["|/usr/bin/procmail %1", "\"|cat %1\"", "/var/mail/%1", ":include:%1", "error:nouser %1", "%1@%2.test"]
        {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
