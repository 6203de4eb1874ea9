//! `postern user add NAME` / `postern user passwd NAME`: write an `{ARGON2ID}` password hash
//! into the users table (Dovecot passwd-file format), reading the password without echo from
//! the terminal, or as one line from standard input when that is not a terminal (scripts).
//! The file is replaced atomically, other lines and extra fields kept; a running daemon is
//! asked to reload.

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

/// Why `postern user` could not do what it was asked; nothing was changed.
#[derive(Debug, thiserror::Error)]
enum UserError {
    #[error("cannot create the users table {path}: {source}")]
    CreateTable { path: std::path::PathBuf, source: std::io::Error },
    #[error("reading the password{from}: {source}")]
    Read { from: &'static str, source: std::io::Error },
    #[error("empty password on stdin")]
    EmptyOnStdin,
    #[error("empty password; nothing changed")]
    Empty,
    #[error("the passwords differ; nothing changed")]
    Differ,
}

/// The first `user add` on a new server: the users table the configuration names is created
/// empty (mode 0600) when it does not exist, so that the configuration loads.
fn create_missing_table(config: &Path) -> Result<(), UserError> {
    let Ok(c) = postern_config::load_without_tables(config) else { return Ok(()) };
    let Some(table) = c.tables.users.filter(|t| !t.exists()) else { return Ok(()) };
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&table)
        .map(|_| eprintln!("postern: created the users table {}", table.display()))
        .map_err(|source| UserError::CreateTable { path: table.clone(), source })
}

/// `postern user ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Add a mailbox with a password to the users table.
    Add {
        /// Mailbox (login) name, without @.
        name: String,
    },
    /// Set the password of an existing mailbox.
    Passwd {
        /// Mailbox (login) name.
        name: String,
    },
}

pub(crate) fn run(config: Option<&Path>, cmd: &UserCommand) -> ExitCode {
    if let (Some(path), UserCommand::Add { .. }) = (config, cmd)
        && let Err(e) = create_missing_table(path)
    {
        eprintln!("postern: {e}");
        return ExitCode::FAILURE;
    }
    let Some(config) = crate::load_config(config) else { return ExitCode::from(2) };
    let Some(table) = config.tables.users.clone() else {
        eprintln!("postern: no users table: set [tables] users = \"users\" in {}", config.source.display());
        return ExitCode::from(2);
    };
    let (name, adding) = match cmd {
        UserCommand::Add { name } => (name.to_lowercase(), true),
        UserCommand::Passwd { name } => (name.to_lowercase(), false),
    };
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '@' || c == ':') {
        eprintln!("postern: {name:?} is not a mailbox name (no spaces, @ or :)");
        return ExitCode::from(2);
    }
    let text = match std::fs::read_to_string(&table) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && adding => String::new(),
        Err(e) => {
            eprintln!("postern: cannot read {}: {e}", table.display());
            return ExitCode::FAILURE;
        }
    };
    let exists = text.lines().any(|l| entry_name(l).as_deref() == Some(name.as_str()));
    if adding && exists {
        eprintln!("postern: {name} is already in {}; use `postern user passwd {name}`", table.display());
        return ExitCode::FAILURE;
    }
    if !adding && !exists {
        eprintln!("postern: {name} is not in {}; use `postern user add {name}`", table.display());
        return ExitCode::FAILURE;
    }
    let password = match read_password(&name) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("postern: {e}");
            return ExitCode::FAILURE;
        }
    };
    let hash = match postern_policy::credentials::hash(password.as_bytes()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("postern: {e}");
            return ExitCode::FAILURE;
        }
    };
    let new_text = if adding {
        let mut t = text;
        if !t.is_empty() && !t.ends_with('\n') {
            t.push('\n');
        }
        t.push_str(&format!("{name}:{hash}\n"));
        t
    } else {
        set_hash(&text, &name, &hash)
    };
    if let Err(e) = replace_file(&table, new_text.as_bytes()) {
        eprintln!("postern: writing {}: {e}", table.display());
        return ExitCode::FAILURE;
    }
    println!("{} {name} in {}", if adding { "added" } else { "password changed for" }, table.display());
    // Tell a running daemon; without one, the next start reads the table anyway.
    let socket = config.control_socket();
    match UnixStream::connect(&socket) {
        Ok(stream) => crate::queue_cli::exchange(stream, &socket, "reload"),
        Err(_) => {
            println!("(the daemon is not running; the change applies when it starts)");
            ExitCode::SUCCESS
        }
    }
}

/// The lower-cased name of a users-table line, `None` for comments and blank lines.
fn entry_name(line: &str) -> Option<String> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    Some(t.split(':').next().unwrap_or("").trim().to_lowercase())
}

/// `text` with the hash field of `name`'s line replaced, every other field and line kept.
fn set_hash(text: &str, name: &str, hash: &str) -> String {
    let mut out = String::with_capacity(text.len() + hash.len());
    for line in text.split_inclusive('\n') {
        if entry_name(line).as_deref() == Some(name) {
            let body = line.trim_end_matches(['\r', '\n']);
            let ending = &line[body.len()..];
            let mut fields: Vec<&str> = body.splitn(3, ':').collect();
            if fields.len() < 2 {
                fields.push(hash);
            } else {
                fields[1] = hash;
            }
            out.push_str(&fields.join(":"));
            out.push_str(if ending.is_empty() { "\n" } else { ending });
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Reads the password: twice without echo from a terminal, else one line from stdin.
fn read_password(name: &str) -> Result<String, UserError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).map_err(|source| UserError::Read { from: " from stdin", source })?;
        let p = line.trim_end_matches(['\r', '\n']).to_owned();
        return if p.is_empty() { Err(UserError::EmptyOnStdin) } else { Ok(p) };
    }
    let first = prompt(&format!("Password for {name}: "))?;
    if first.is_empty() {
        return Err(UserError::Empty);
    }
    let second = prompt("Again: ")?;
    if first != second {
        return Err(UserError::Differ);
    }
    Ok(first)
}

/// Prompts on stderr and reads a line from the terminal on stdin with echo off.
fn prompt(text: &str) -> Result<String, UserError> {
    eprint!("{text}");
    let _ = std::io::stderr().flush();
    // SAFETY: termios calls on fd 0 with a zeroed struct filled in by tcgetattr.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let have = unsafe { libc::tcgetattr(0, &raw mut saved) } == 0;
    if have {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw const quiet) };
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if have {
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw const saved) };
    }
    read.map_err(|source| UserError::Read { from: "", source })?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Writes `bytes` to a temporary file beside `path` (same mode, owner and group, so that a
/// `users` file 0640 root:postern stays readable by the daemon; 0640 for a new table), fsyncs
/// it and renames it over `path`.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let old = std::fs::metadata(path).ok();
    let mode = old.as_ref().map_or(0o640, |m| m.permissions().mode() & 0o7777);
    let tmp = path.with_extension("postern-tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    if let Some(m) = &old {
        std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_keeps_other_fields_and_lines() {
        let t = "# users\nalice:{SHA512-CRYPT}$6$x$y:1000:1000::/home/alice\nbob\n";
        let out = set_hash(t, "alice", "{ARGON2ID}new");
        assert_eq!(out, "# users\nalice:{ARGON2ID}new:1000:1000::/home/alice\nbob\n");
        assert_eq!(set_hash(t, "bob", "H"), "# users\nalice:{SHA512-CRYPT}$6$x$y:1000:1000::/home/alice\nbob:H\n");
    }
}
