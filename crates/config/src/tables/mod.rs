//! The table files, in the syntax sendmail users already have so that migration is a copy:
//! `users` (one mailbox per line), `aliases` (aliases(5)) and `virtual` (virtusertable).
//!
//! Common rules: `#` starts a comment line, blank lines are ignored, names and domains compare
//! case-insensitively (they are stored lower-cased). Errors name the table file, the line and
//! the entry's key.

mod aliases;
mod routes;
pub(crate) mod users;
mod virtual_;

pub use aliases::split_targets;
pub use routes::{BadLmtpServer, LmtpServer, Relay, Route, is_lmtp_server, parse_relay};
pub use users::{Scheme, parse_password_hash};

use crate::error::{ValueError, invalid};
use std::collections::HashMap;
use std::path::Path;

use postern_types::{Address, EnhancedStatus, Reply, ReversePath};

use crate::error::ConfigError;
use crate::schema::TablePaths;

/// The table files of `[tables]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// `users`: mailboxes and password hashes.
    Users,
    /// `aliases`: aliases(5).
    Aliases,
    /// `virtual`: virtusertable.
    Virtual,
    /// `routes`: next hop per recipient domain.
    Routes,
    /// `sender_routes`: next hop per sender.
    SenderRoutes,
    /// `senders`: which logins may use which sender addresses.
    Senders,
    /// `tls_policy`: how much TLS delivery to a domain requires.
    TlsPolicy,
}

/// What a table entry points to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A local name: an alias or a mailbox.
    Name(String),
    /// An address (local domains are resolved again, others forwarded).
    Address(Address),
    /// `!` in the virtual table: deliver as addressed, ignoring catch-alls.
    AsAddressed,
    /// `error:...`: refuse at RCPT with this reply.
    Error(Reply),
    /// `|command` in the aliases: pipe the message to it (needs `[delivery] allow_pipes`).
    Pipe(String),
    /// A virtual-table target with sendmail's substitutions (`%1@example.test`): see
    /// [`Template`].
    Template(Template),
}

impl std::fmt::Display for Target {
    /// The target as written in a table: `name`, `user@domain`, `!`, `error:X.Y.Z:text` or the
    /// template.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Address(a) => write!(f, "{a}"),
            Self::AsAddressed => f.write_str("!"),
            Self::Error(r) => write!(f, "{}", error_form(r)),
            Self::Template(t) => write!(f, "{t}"),
            Self::Pipe(c) => write!(f, "\"|{c}\""),
        }
    }
}

/// A refusal in the table form that parses back to it: `error:X.Y.Z:NNN text`.
pub fn error_form(r: &Reply) -> String {
    let status = r.status.map_or_else(|| format!("{}.0.0", r.code / 100), |s| s.to_string());
    format!("error:{status}:{} {}", r.code, r.lines.join(" "))
}

/// A virtual-table template, sendmail's substitutions (cf/README, "virtusertable"): a local
/// part with `%1` (the user part of the address looked up), `%2` (its detail, the sub-address
/// without the separator) and `%3` (the separator and detail, `+detail`, or nothing), and an
/// optional domain, both fixed when the table is read.
///
/// A substitution puts the client's text into the local part only, so it yields an address
/// (with a domain) or a mailbox or alias name (without), nothing else: never a pipe, a file, an
/// include or an error, whatever the client sent. Pipes and the rest come only from table
/// lines (the template itself may not be one either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    local: String,
    domain: Option<String>,
}

impl Template {
    /// Reads a template as written in the virtual table (`%1@example.test`, `bob-%2`).
    ///
    /// # Errors
    /// Not an address or a name (`|command`, a file, `:include:`, `error:`), a `%` other than
    /// `%1`–`%3`, or a substitution in the domain.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let t = text.trim();
        if ["|", "\"|", "/", ":include:", "error:"].iter().any(|p| t.starts_with(p)) {
            return Err("a template can only be an address or a name (pipes go in the aliases)".into());
        }
        let bad = t.match_indices('%').any(|(i, _)| !matches!(t.as_bytes().get(i + 1), Some(b'1'..=b'3')));
        if bad {
            return Err("only %1 (user), %2 (detail) and %3 (+detail) can be substituted".into());
        }
        let (local, domain) = match t.rsplit_once('@') {
            Some((l, d)) => (l, Some(d.to_lowercase())),
            None => (t, None),
        };
        if domain.as_deref().is_some_and(|d| d.contains('%')) {
            return Err("substitutions go in the user part only".into());
        }
        if local.is_empty() || local.contains(char::is_whitespace) {
            return Err("not a name or an address".into());
        }
        let template = Self { local: local.to_lowercase(), domain };
        // The shape, with a sample user and detail, so that a broken template fails at load.
        template.substitute("user", Some(('+', "detail")))?;
        Ok(template)
    }

    /// The address or name this template stands for, given the user part, the detail and the
    /// separator of the address looked up: `%1` → `user`, `%2` → `detail`, `%3` → `+detail`
    /// (empty without a detail). Returns [`Target::Address`] or [`Target::Name`] only.
    ///
    /// # Errors
    /// With a domain, the substituted text is not a valid address (RFC 5321 §4.1.2).
    pub fn substitute(&self, user: &str, detail: Option<(char, &str)>) -> Result<Target, ValueError> {
        let (d, sd) = detail.map_or((String::new(), String::new()), |(sep, d)| (d.to_owned(), format!("{sep}{d}")));
        let local = self.local.replace("%1", user).replace("%2", &d).replace("%3", &sd);
        match &self.domain {
            Some(domain) => {
                let address = Address::new(local, domain);
                Address::parse(&address.to_string()).map_err(|e| format!("{address}: {e}"))?;
                Ok(Target::Address(address))
            }
            None => Ok(Target::Name(local.to_lowercase())),
        }
    }
}

impl std::fmt::Display for Template {
    /// As written in the table: `%1@example.test`, `bob-%2`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.local)?;
        match &self.domain {
            Some(d) => write!(f, "@{d}"),
            None => Ok(()),
        }
    }
}

/// The loaded tables. Empty when a table is not configured.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    /// Mailbox names (lower-cased) → password hash, if any.
    pub users: HashMap<String, Option<String>>,
    /// Alias names (lower-cased) → targets.
    pub aliases: HashMap<String, Vec<Target>>,
    /// Virtual keys (`user@domain`, `user+detail@domain`, `@domain`; lower-cased) → target.
    pub virtual_: HashMap<String, Target>,
    /// Route keys (`domain` or `.suffix`, lower-cased) → route.
    pub routes: HashMap<String, Route>,
    /// Sender route keys (`user@domain` or `@domain`, lower-cased) → relay.
    pub sender_routes: HashMap<String, Relay>,
    /// Sender grants (`user@domain` or `@domain`, lower-cased) → logins that may use them as
    /// envelope sender and From address (Postfix's `smtpd_sender_login_maps`).
    pub senders: HashMap<String, Vec<String>>,
    /// TLS policy keys (`domain` or `.suffix`, lower-cased) → level.
    pub tls_policy: HashMap<String, crate::schema::TlsLevel>,
    /// The line each entry was read from, per table (for `postern route`).
    pub lines: TableLines,
    /// `[forwarding]` SRS settings with their secrets, when `srs_domain` is set.
    pub srs: Option<SrsKeys>,
}

/// The SRS domain, secrets (the first signs, all verify) and lifetime (`[forwarding]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrsKeys {
    /// The SRS domain, lower-case.
    pub domain: String,
    /// The secrets, in file order; never empty.
    pub secrets: Vec<Vec<u8>>,
    /// Days an SRS address stays valid.
    pub max_age_days: u32,
    /// Characters of the hash kept (4 to 27).
    pub hash_len: usize,
    /// Sender domains not rewritten (lower-case), besides the local ones.
    pub exclude_domains: Vec<String>,
}

impl SrsKeys {
    /// Reads the secrets of `f`; `None` when SRS is off.
    ///
    /// # Errors
    /// An unreadable or empty secrets file, naming it.
    pub fn load(f: &crate::schema::Forwarding) -> Result<Option<Self>, ConfigError> {
        let (Some(domain), Some(path)) = (&f.srs_domain, &f.srs_secret_file) else { return Ok(None) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, None, "forwarding.srs_secret_file", format!("cannot read: {e}")))?;
        let secrets: Vec<Vec<u8>> = entries(&text).map(|(_, l)| l.trim().as_bytes().to_vec()).collect();
        if secrets.is_empty() {
            return Err(ConfigError::new(path, None, "forwarding.srs_secret_file", "no secret in the file"));
        }
        Ok(Some(Self {
            domain: domain.clone(),
            secrets,
            max_age_days: u32::try_from(f.srs_max_age.0.as_secs() / 86400).unwrap_or(u32::MAX),
            hash_len: f.srs_hash_length,
            exclude_domains: f.srs_exclude_domains.iter().map(|d| d.to_lowercase()).collect(),
        }))
    }
}

/// Where each table entry was read: key → 1-based line number.
#[derive(Debug, Clone, Default)]
pub struct TableLines {
    /// Of `virtual_`.
    pub virtual_: HashMap<String, usize>,
    /// Of `aliases`.
    pub aliases: HashMap<String, usize>,
    /// Of `routes`.
    pub routes: HashMap<String, usize>,
    /// Of `sender_routes`.
    pub sender_routes: HashMap<String, usize>,
    /// Of `tls_policy`.
    pub tls_policy: HashMap<String, usize>,
}

impl Tables {
    /// Reads the configured table files.
    ///
    /// # Errors
    /// Every bad line of every table, and unreadable files.
    pub fn load(paths: &TablePaths) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut t = Self::default();
        let kinds = [
            (&paths.users, TableKind::Users),
            (&paths.aliases, TableKind::Aliases),
            (&paths.virtual_, TableKind::Virtual),
            (&paths.routes, TableKind::Routes),
            (&paths.sender_routes, TableKind::SenderRoutes),
            (&paths.senders, TableKind::Senders),
            (&paths.tls_policy, TableKind::TlsPolicy),
        ];
        for (path, kind) in kinds {
            if let Some(p) = path
                && let Some(text) = read(p, &mut errors)
            {
                t.parse_into(kind, p, &text, &mut errors);
            }
        }
        if errors.is_empty() { Ok(t) } else { Err(errors) }
    }

    /// Parses `text` as the table `kind` read from `path` into `self`, replacing that table;
    /// bad lines become `errors` (file, line, key). Reads no file (a fuzz target).
    pub fn parse_into(&mut self, kind: TableKind, path: &Path, text: &str, errors: &mut Vec<ConfigError>) {
        match kind {
            TableKind::Users => self.users = users::parse(path, text, errors),
            TableKind::Aliases => (self.aliases, self.lines.aliases) = aliases::parse(path, text, errors),
            TableKind::Virtual => (self.virtual_, self.lines.virtual_) = virtual_::parse(path, text, errors),
            TableKind::Routes => (self.routes, self.lines.routes) = routes::parse(path, text, errors),
            TableKind::SenderRoutes => {
                (self.sender_routes, self.lines.sender_routes) = routes::parse_sender(path, text, errors);
            }
            TableKind::Senders => {
                self.senders = key_target_table(path, text, errors, address_key_error, parse_logins).0;
            }
            TableKind::TlsPolicy => {
                (self.tls_policy, self.lines.tls_policy) =
                    key_target_table(path, text, errors, |_| None, crate::schema::TlsLevel::parse);
            }
        }
    }

    /// The logins granted the sender address `address` by the senders table: the exact address,
    /// else `@domain`. `None` when the table has no entry for it.
    pub fn sender_logins(&self, address: &str) -> Option<&[String]> {
        let address = address.to_lowercase();
        let (_, domain) = address.rsplit_once('@')?;
        self.senders.get(&address).or_else(|| self.senders.get(&format!("@{domain}"))).map(Vec::as_slice)
    }

    /// One error per alias with a `|command` target and per `pipe:` route, for a
    /// configuration without `[delivery] allow_pipes` (file and line from those tables).
    pub fn pipe_errors(&self, aliases: Option<&Path>, routes: Option<&Path>) -> Vec<ConfigError> {
        const OFF: &str = "pipes to commands are off: set [delivery] allow_pipes = true to run them";
        let mut errors = self.alias_pipe_errors(aliases.unwrap_or(Path::new("aliases")), OFF);
        let mut keys: Vec<&String> =
            self.routes.iter().filter(|(_, r)| matches!(r, Route::Pipe(_))).map(|(k, _)| k).collect();
        keys.sort();
        let path = routes.unwrap_or(Path::new("routes"));
        errors.extend(keys.into_iter().map(|k| ConfigError::new(path, self.lines.routes.get(k).copied(), k, OFF)));
        errors
    }

    fn alias_pipe_errors(&self, path: &Path, off: &str) -> Vec<ConfigError> {
        let mut names: Vec<&String> = self
            .aliases
            .iter()
            .filter(|(_, targets)| targets.iter().any(|t| matches!(t, Target::Pipe(_))))
            .map(|(name, _)| name)
            .collect();
        names.sort();
        names.into_iter().map(|name| ConfigError::new(path, self.lines.aliases.get(name).copied(), name, off)).collect()
    }

    /// The sender route for the reverse-path `sender`: the exact address, else `@domain`
    /// (sendmail smarttable; keys are lower-cased). `None` for the null sender or no match.
    pub fn sender_route_for(&self, sender: &ReversePath) -> Option<&Relay> {
        self.sender_route_entry(sender).map(|(_, r)| r)
    }

    /// As [`Tables::sender_route_for`], with the key that matched.
    pub fn sender_route_entry(&self, sender: &ReversePath) -> Option<(String, &Relay)> {
        let a = sender.mailbox()?;
        let exact = format!("{}@{}", a.local_part().to_lowercase(), a.domain());
        let at_domain = format!("@{}", a.domain());
        [exact, at_domain].into_iter().find_map(|k| self.sender_routes.get(&k).map(|r| (k, r)))
    }

    /// The route for `domain` (lower-case): the exact key, else the longest matching `.suffix`
    /// (sendmail mailertable: the most specific entry wins, whatever the order of lines).
    pub fn route_for(&self, domain: &str) -> Option<&Route> {
        self.route_entry(domain).map(|(_, r)| r)
    }

    /// As [`Tables::route_for`], with the key that matched.
    pub fn route_entry<'k>(&self, domain: &'k str) -> Option<(&'k str, &Route)> {
        most_specific(&self.routes, domain)
    }

    /// The TLS level for mail to `domain` (the `tls_policy` table, most specific key, as
    /// routes) with its key; `None`: no entry (opportunistic, `may`).
    pub fn tls_policy_entry<'k>(&self, domain: &'k str) -> Option<(&'k str, crate::schema::TlsLevel)> {
        most_specific(&self.tls_policy, domain).map(|(k, l)| (k, *l))
    }
}

/// The entry of `map` for `domain` itself, else for its most specific `.suffix`.
fn most_specific<'m, 'k, T>(map: &'m HashMap<String, T>, domain: &'k str) -> Option<(&'k str, &'m T)> {
    if let Some(r) = map.get(domain) {
        return Some((domain, r));
    }
    let mut rest = domain;
    while let Some(i) = rest.find('.') {
        if let Some(r) = map.get(&rest[i..]) {
            return Some((&rest[i..], r));
        }
        rest = &rest[i + 1..];
    }
    None
}

fn read(path: &Path, errors: &mut Vec<ConfigError>) -> Option<String> {
    std::fs::read_to_string(path)
        .map_err(|e| errors.push(ConfigError::new(path, None, "", format!("cannot read table: {e}"))))
        .ok()
}

/// Lines that carry entries: `(1-based line number, text)`, comments and blanks skipped.
fn entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    })
}

/// A table of `key target` lines (virtual, routes, sender routes): keys are lower-cased,
/// `key_error` says what is wrong with a key (`None`: nothing), `parse` turns a non-empty target
/// into its value. Bad lines and duplicate keys become errors naming the line and key.
fn key_target_table<T>(
    path: &Path,
    text: &str,
    errors: &mut Vec<ConfigError>,
    key_error: fn(&str) -> Option<&'static str>,
    parse: impl Fn(&str) -> Result<T, ValueError>,
) -> (HashMap<String, T>, HashMap<String, usize>) {
    let mut map = HashMap::new();
    let mut lines = HashMap::new();
    for (n, line) in entries(text) {
        let line = line.trim();
        let (key, target) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let (key, target) = (key.to_lowercase(), target.trim());
        let parsed = match key_error(&key) {
            Some(e) => Err(e.into()),
            None if target.is_empty() => Err("missing target".into()),
            None => parse(target),
        };
        match parsed {
            Ok(value) => {
                if map.insert(key.clone(), value).is_some() {
                    errors.push(ConfigError::new(path, Some(n), &key, "duplicate key"));
                }
                lines.insert(key, n);
            }
            Err(e) => errors.push(ConfigError::new(path, Some(n), &key, e)),
        }
    }
    (map, lines)
}

/// `None` for `user@domain` or `@domain`.
fn address_key_error(key: &str) -> Option<&'static str> {
    (!key.contains('@') || key.ends_with('@')).then_some("key must be user@domain or @domain")
}

/// `login, login2` or `login login2`: the logins of a senders table line.
fn parse_logins(s: &str) -> Result<Vec<String>, ValueError> {
    let logins: Vec<String> = s.split([',', ' ', '\t']).filter(|l| !l.is_empty()).map(str::to_lowercase).collect();
    match logins.iter().find(|l| l.contains('@')) {
        Some(l) => Err(invalid!("{l:?}: a login is a users-table name, without @")),
        None => Ok(logins),
    }
}

/// Parses a target shared by aliases and virtual: `error:...`, an address, or a name.
fn parse_target(s: &str) -> Result<Target, ValueError> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("error:") {
        return parse_error(rest).map(Target::Error);
    }
    let unquoted = s.trim_matches('"');
    if let Some(command) = unquoted.strip_prefix('|') {
        if command.trim().is_empty() {
            return Err(invalid!("{s:?}: a pipe needs a command"));
        }
        return Ok(Target::Pipe(command.trim().to_owned()));
    }
    if s.starts_with('/') || s.starts_with(":include:") {
        return Err(invalid!("{s:?}: files are not supported (deliver to a mailbox), and :include: only in aliases"));
    }
    if s.contains('@') {
        let a = s.trim_start_matches('<').trim_end_matches('>');
        return Address::parse(a).map(Target::Address).map_err(|e| invalid!("{s:?}: {e}"));
    }
    if s.is_empty() || s.contains(char::is_whitespace) {
        return Err(invalid!("{s:?} is not a name or an address"));
    }
    Ok(Target::Name(s.to_lowercase()))
}

/// sendmail's error mailer forms:
/// `nouser TEXT` (550 5.1.1), `nohost TEXT` (550 5.1.2), `unavailable TEXT` (550 5.0.0),
/// `tempfail TEXT` (451 4.0.0), `X.Y.Z:TEXT` and `X.Y.Z:NNN TEXT` (code from the class unless
/// given: 550 for 5, 451 for 4).
fn parse_error(rest: &str) -> Result<Reply, ValueError> {
    let named = |word: &str, code, status, default: &str| {
        rest.strip_prefix(word).map(|t| {
            let t = t.trim();
            Reply::new(code, status, if t.is_empty() { default } else { t })
        })
    };
    if let Some(r) = named("nouser", 550, EnhancedStatus(5, 1, 1), "User unknown")
        .or_else(|| named("nohost", 550, EnhancedStatus(5, 1, 2), "Host unknown"))
        .or_else(|| named("unavailable", 550, EnhancedStatus(5, 0, 0), "Service unavailable"))
        .or_else(|| named("tempfail", 451, EnhancedStatus(4, 0, 0), "Temporary failure"))
    {
        return Ok(r);
    }
    let (status, text) =
        rest.split_once(':').ok_or_else(|| format!("error:{rest}: use error:nouser TEXT or error:5.7.1:TEXT"))?;
    let parts: Vec<&str> = status.split('.').collect();
    let parsed = match parts.as_slice() {
        [c, s, d] => match (c.parse::<u8>(), s.parse::<u16>(), d.parse::<u16>()) {
            (Ok(c @ (4 | 5)), Ok(s), Ok(d)) => Some(EnhancedStatus(c, s, d)),
            _ => None,
        },
        _ => None,
    };
    let status = parsed.ok_or_else(|| format!("error:{rest}: {status:?} is not an enhanced status code like 5.7.1"))?;
    let text = text.trim();
    let (code, text) = match text.split_once(' ') {
        Some((c, t)) if c.len() == 3 && c.parse::<u16>().is_ok_and(|c| c / 100 == u16::from(status.0)) => {
            (c.parse().unwrap_or(550), t.trim())
        }
        _ => (if status.0 == 5 { 550 } else { 451 }, text),
    };
    Ok(Reply::new(code, status, if text.is_empty() { "Rejected" } else { text }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_forms() {
        let r = parse_error("nouser User unknown").unwrap();
        assert_eq!((r.code, r.status.unwrap().to_string(), r.lines[0].as_str()), (550, "5.1.1".into(), "User unknown"));
        let r = parse_error("5.7.1:Go away").unwrap();
        assert_eq!((r.code, r.status.unwrap().to_string()), (550, "5.7.1".into()));
        let r = parse_error("4.7.1:450 Later").unwrap();
        assert_eq!((r.code, r.lines[0].as_str()), (450, "Later"));
        assert!(parse_error("9.9:x").is_err());
        assert!(parse_error("whatever").is_err());
    }
}
