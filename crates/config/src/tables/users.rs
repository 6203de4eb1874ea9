//! The users table: one mailbox per line, `name[:password-hash[:more fields]]`. Extra
//! colon-separated fields (Dovecot passwd-file's uid, gid, home...) are ignored, so one file can
//! serve Dovecot and Postern.

use std::collections::HashMap;
use std::path::Path;

use super::entries;
use crate::error::ConfigError;

pub(super) fn parse(path: &Path, text: &str, errors: &mut Vec<ConfigError>) -> HashMap<String, Option<String>> {
    let mut users = HashMap::new();
    for (n, line) in entries(text) {
        let mut fields = line.trim().splitn(3, ':');
        let name = fields.next().unwrap_or("").trim().to_lowercase();
        let hash = fields.next().map(str::trim).filter(|h| !h.is_empty()).map(str::to_owned);
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '@') {
            errors.push(ConfigError::new(
                path,
                Some(n),
                &name,
                "a mailbox name must be non-empty, without spaces or @",
            ));
        } else if users.insert(name.clone(), hash).is_some() {
            errors.push(ConfigError::new(path, Some(n), &name, "duplicate mailbox"));
        }
    }
    users
}
