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
