//! Configuration errors that say where: file, line and key.

use std::fmt;
use std::path::{Path, PathBuf};

/// One configuration problem. Displays as `FILE:LINE: KEY: MESSAGE` (line omitted when unknown),
/// the form `postern check-config` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file at fault (the TOML file, or a table file).
    pub file: PathBuf,
    /// 1-based line number, when known.
    pub line: Option<usize>,
    /// The key at fault: a dotted TOML key (`limits.max_message_size`) or a table entry's key.
    pub key: String,
    /// What is wrong and, where possible, what would be right.
    pub message: String,
}

impl ConfigError {
    /// A new error.
    pub fn new(file: &Path, line: Option<usize>, key: &str, message: impl Into<String>) -> Self {
        Self { file: file.to_path_buf(), line, key: key.to_owned(), message: message.into() }
    }

    /// Converts a TOML parse/type error, recovering the line and the dotted key from its span.
    pub(crate) fn from_toml(file: &Path, text: &str, e: &toml::de::Error) -> Self {
        let message = e.message().trim().to_owned();
        let Some(span) = e.span() else { return Self::new(file, None, "", message) };
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        let key = key_at_line(text, line);
        Self::new(file, Some(line), &key, message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The dotted key defined on 1-based `line`: the nearest `[table]` / `[[table]]` header above it
/// joined with the key before `=` on that line (or the header itself when the line is one).
pub(crate) fn key_at_line(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(this) = lines.get(line.saturating_sub(1)) else { return String::new() };
    let header = |l: &str| {
        let t = l.trim();
        t.starts_with('[').then(|| t.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
    };
    if let Some(h) = header(this) {
        return h;
    }
    let key = this.split('=').next().unwrap_or("").trim().trim_matches('"').to_owned();
    let table = lines[..line - 1].iter().rev().find_map(|l| header(l));
    match table {
        Some(t) if !key.is_empty() => format!("{t}.{key}"),
        _ => key,
    }
}

/// 1-based line on which `section.key` is assigned in `text`, if it can be found.
pub(crate) fn line_of_key(text: &str, dotted: &str) -> Option<usize> {
    (1..=text.lines().count()).find(|&l| key_at_line(text, l) == dotted)
}

/// The line of the `n`th (from 0) occurrence of `dotted`: the `n`th table of an array of
/// tables (`[[alert]]`).
pub(crate) fn nth_line_of_key(text: &str, dotted: &str, n: usize) -> Option<usize> {
    (1..=text.lines().count()).filter(|&l| key_at_line(text, l) == dotted).nth(n)
}

/// What is wrong with one value of the configuration or one line of a table; a [`ConfigError`]
/// adds the file, line and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

impl From<String> for ValueError {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for ValueError {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<ValueError> for String {
    fn from(e: ValueError) -> Self {
        e.0
    }
}

/// A [`ValueError`] from `format!` arguments.
macro_rules! invalid {
    ($($t:tt)*) => {
        $crate::error::ValueError(format!($($t)*))
    };
}
pub(crate) use invalid;
