//! `postern import sendmail`: reads what a sendmail 8.14 + opendkim postmaster has (the
//! `sendmail.mc`, `/etc/mail`'s tables, `/etc/aliases`, opendkim's configuration and tables)
//! and writes a Postern configuration with tables in the same syntax, plus a report that
//! names every source line, what it became, and what has no equivalent and why.
//!
//! Pure: the caller reads the files into a [`Sources`] and writes the [`Imported`] result; this
//! crate never touches the filesystem. One module per source: `mc` (the m4 macros), `tables`
//! (local-host-names, relay-domains, access, virtusertable, aliases, mailertable,
//! genericstable), `opendkim`; `draft` renders the configuration.

mod draft;
mod mc;
mod opendkim;
mod report;
mod tables;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use draft::Draft;
pub use mc::alias_file;
pub use opendkim::referenced_tables;
pub use report::{Fate, Line, Report};

/// The source files, by the name the report uses for them (`sendmail.mc`, `access`,
/// `aliases`, `opendkim.conf`, ...), with their text. Missing files are simply absent.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// File name in the report → (path it was read from, text).
    pub files: BTreeMap<String, (PathBuf, String)>,
    /// Local accounts (`/etc/passwd`): login names with a uid of 1000 to 59999, which sendmail
    /// delivered to as local mailboxes.
    pub accounts: Vec<String>,
    /// System accounts (`/etc/passwd`, uid 1 to 999: www-data, backup, ...), which sendmail
    /// delivered to too (cron's mail to them): aliased to root unless the aliases name them.
    pub system_accounts: Vec<String>,
}

impl Sources {
    /// The text of source `name`, if it was read.
    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        self.files.get(name).map(|(_, t)| t.as_str())
    }
}

/// The result: `postern.toml`, the tables to write beside it, and the report.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The configuration text.
    pub config: String,
    /// Table files: name (in the output folder) → text.
    pub tables: BTreeMap<String, String>,
    /// Every source line and what became of it.
    pub report: Report,
}

/// Imports `sources`.
pub fn import(sources: &Sources) -> Imported {
    let mut draft = Draft::default();
    let mut report = Report::default();
    mc::import(sources, &mut draft, &mut report);
    tables::import(sources, &mut draft, &mut report);
    opendkim::import(sources, &mut draft, &mut report);
    draft.finish(sources, &mut report);
    Imported { config: draft.render(), tables: draft.tables.clone(), report }
}

/// Splits a table line into key and value at the first run of white space (makemap's format);
/// `None` for comments and blank lines.
pub(crate) fn key_value(line: &str) -> Option<(&str, &str)> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    Some(t.split_once(char::is_whitespace).map_or((t, ""), |(k, v)| (k, v.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(files: &[(&str, &str)]) -> Sources {
        let files = files.iter().map(|(n, t)| ((*n).to_owned(), (PathBuf::from(n), (*t).to_owned()))).collect();
        Sources { files, accounts: Vec::new(), system_accounts: Vec::new() }
    }

    /// Issue 26, finding 15: the hosts opendkim signs for are not hosts sendmail relayed for.
    #[test]
    fn signing_hosts_get_signing_not_relaying() {
        let out = import(&sources(&[
            ("opendkim.conf", "InternalHosts refile:/etc/opendkim/TrustedHosts\n"),
            ("InternalHosts", "192.168.1.0/24\n"),
            ("KeyTable", "mail._domainkey.example.org example.org:mail:/k\n"),
        ]));
        let config: toml::Value = toml::from_str(&out.config).unwrap();
        let trusted = config["relay"]["trusted_networks"].as_array().unwrap();
        assert!(!trusted.iter().any(|n| n.as_str() == Some("192.168.1.0/24")), "{}", out.config);
        assert_eq!(config["dkim"]["sign_networks"].as_array().unwrap()[0].as_str(), Some("192.168.1.0/24"));
        assert!(out.report.relay_permissions().next().is_none(), "no relay permission written");
        // A relay permission from sendmail's own access table is kept, and listed for review.
        let out = import(&sources(&[("access", "Connect:192.168.1 RELAY\n")]));
        let listed: Vec<_> = out.report.relay_permissions().map(|l| l.text.clone()).collect();
        assert_eq!(listed, ["Connect:192.168.1 RELAY"]);
        assert!(
            out.report.to_string().contains("review each before going live\n    access:1: Connect:192.168.1 RELAY")
        );
    }

    /// Issue 28, point 4: what the import reported as having no equivalent, or wrote twice.
    #[test]
    fn delivery_mode_dnsbl_and_contained_networks() {
        let out = import(&sources(&[
            ("sendmail.mc", "define(`confDELIVERY_MODE', `q')dnl\nFEATURE(`dnsbl', `zen.spamhaus.org')dnl\n"),
            ("access", "Connect:localhost RELAY\nConnect:127.0.0.1 RELAY\n"),
        ]));
        let config: toml::Value = toml::from_str(&out.config).unwrap();
        assert_eq!(config["queue"]["mode"].as_str(), Some("queue-only"), "{}", out.config);
        assert_eq!(config["policy"]["dnsbl_zones"][0].as_str(), Some("zen.spamhaus.org"), "{}", out.config);
        let trusted: Vec<&str> =
            config["relay"]["trusted_networks"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
        assert_eq!(trusted, ["127.0.0.0/8", "::1/128"], "127.0.0.1/32 is inside 127.0.0.0/8");
        assert_eq!(out.report.not_mapped().count(), 0, "{}", out.report);
    }
}
