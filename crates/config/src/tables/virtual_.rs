//! The virtual table, sendmail virtusertable syntax: `key target` per line, where key is
//! `user@domain`, `user+detail@domain` or `@domain` (catch-all), and target is a mailbox or alias
//! name, an address, `!` (deliver as addressed) or `error:...`.

use std::collections::HashMap;
use std::path::Path;

use super::{Target, address_key_error, key_target_table, parse_target};
use crate::error::ConfigError;

pub(super) fn parse(path: &Path, text: &str, errors: &mut Vec<ConfigError>) -> HashMap<String, Target> {
    key_target_table(path, text, errors, address_key_error, |target| {
        if target == "!" { Ok(Target::AsAddressed) } else { parse_target(target) }
    })
}
