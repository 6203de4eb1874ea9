//! The import report: one entry per meaningful source line.

use std::fmt;

/// What became of one source line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Mapped: what it became in the Postern configuration or tables.
    Mapped(String),
    /// Already Postern's behaviour; nothing to write.
    Default(String),
    /// No equivalent in Postern: why, and what to do instead.
    NotMapped(String),
}

/// One source line and its fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The source's report name (`sendmail.mc`, `access`, ...).
    pub source: String,
    /// 1-based line number.
    pub line: usize,
    /// The line as written (trimmed).
    pub text: String,
    /// What became of it.
    pub fate: Fate,
}

/// Every line, in source order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The lines.
    pub lines: Vec<Line>,
    /// What changes for the box's users, one sentence each (the end of the report).
    pub changes: Vec<String>,
}

impl Report {
    pub(crate) fn add(&mut self, source: &str, line: usize, text: &str, fate: Fate) {
        self.lines.push(Line { source: source.to_owned(), line, text: text.trim().to_owned(), fate });
    }

    /// The lines that let clients relay (`[relay] trusted_networks`): each a line for the
    /// postmaster to review, since an import that widens relaying makes an open relay.
    pub fn relay_permissions(&self) -> impl Iterator<Item = &Line> {
        self.lines.iter().filter(|l| matches!(&l.fate, Fate::Mapped(m) if m.starts_with("[relay] trusted_networks")))
    }

    /// The lines with no equivalent.
    pub fn not_mapped(&self) -> impl Iterator<Item = &Line> {
        self.lines.iter().filter(|l| matches!(l.fate, Fate::NotMapped(_)))
    }
}

impl fmt::Display for Report {
    /// `source:line: text` then `    -> what it became`, `    = already Postern's default`
    /// or `    !! not mapped: why`; a summary at the end.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.lines {
            writeln!(f, "{}:{}: {}", l.source, l.line, l.text)?;
            match &l.fate {
                Fate::Mapped(what) => writeln!(f, "    -> {what}")?,
                Fate::Default(why) => writeln!(f, "    = {why}")?,
                Fate::NotMapped(why) => writeln!(f, "    !! not mapped: {why}")?,
            }
        }
        let missing = self.not_mapped().count();
        writeln!(f, "\n{} line(s) read, {missing} with no equivalent (marked !!)", self.lines.len())?;
        if !self.changes.is_empty() {
            writeln!(f, "\nWhat changes for the users of this box:")?;
            for c in &self.changes {
                writeln!(f, "  - {c}")?;
            }
        }
        let relays: Vec<&Line> = self.relay_permissions().collect();
        if !relays.is_empty() {
            writeln!(f, "\nRelay permissions written ([relay] trusted_networks): review each before going live")?;
            for l in relays {
                writeln!(f, "    {}:{}: {}", l.source, l.line, l.text)?;
            }
        }
        Ok(())
    }
}
