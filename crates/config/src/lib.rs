//! Postern's configuration. This crate owns the TOML schema ([`schema`]: every key, its
//! default and its meaning), human units ([`units`]: `"25MiB"`, `"5m"`), the plain-text tables in
//! sendmail's syntax ([`tables`]: users, aliases, virtual), and validation whose errors name the
//! file, the line and the key at fault ([`ConfigError`]).
//!
//! Loading is pure apart from reading the files; the result is an immutable [`Config`] that the
//! daemon shares behind an `Arc` and replaces on reload.

mod error;
pub mod files;
mod live;
pub mod schema;
pub mod tables;
pub mod units;

use std::path::{Path, PathBuf};

pub use error::ConfigError;
pub use files::{Disk, FileSource};
pub use live::Live;
pub use schema::{Config, Listener, Role};
pub use tables::{LmtpServer, Relay, Route, SrsKeys, TableKind, Tables, Target, Template, error_form, parse_relay};

/// The embedded development default used by `postern serve` without `--config`: one mx listener
/// on `127.0.0.1:2525`, local domain `localhost`, data under `./postern-data`, and the single
/// mailbox `postmaster`.
pub const DEV_DEFAULT: &str = r#"# Postern's embedded development default (see docs/configuration.md).
hostname = "localhost"
data_dir = "postern-data"

[[listener]]
address = "127.0.0.1:2525"
role = "mx"

[domains]
local = ["localhost"]
"#;

/// Where every command looks for the configuration when neither `--config` nor
/// `$POSTERN_CONFIG` names one (the `sendmail`, `mailq` and `newaliases` names included, since
/// cron and PHP pass neither).
pub const DEFAULT_PATH: &str = "/etc/postern/postern.toml";

/// The configuration file to use: `explicit` (`--config` or `$POSTERN_CONFIG`), else
/// [`DEFAULT_PATH`] when it exists, else `None` (the embedded development default).
pub fn find(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("POSTERN_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let default = Path::new(DEFAULT_PATH);
    default.exists().then(|| default.to_path_buf())
}

/// Loads and validates the configuration file at `path`, then its tables.
///
/// Relative paths in the file (`data_dir`, `[tables]`) are resolved against the file's folder.
///
/// # Errors
/// Every problem found, each with file, line (when known) and key. A TOML syntax or type error
/// stops parsing, so it is reported alone.
pub fn load(path: &Path) -> Result<(Config, Tables), Vec<ConfigError>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![ConfigError::new(path, None, "", format!("cannot read configuration file: {e}"))])?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str(&text, path, &base)
}

/// The configuration file at `path` alone, without reading its tables (so that `postern user
/// add` can create a users table that does not exist yet).
///
/// # Errors
/// As [`load`], less the table errors.
pub fn load_without_tables(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![ConfigError::new(path, None, "", format!("cannot read configuration file: {e}"))])?;
    let mut config: Config = toml::from_str(&text).map_err(|e| vec![ConfigError::from_toml(path, &text, &e)])?;
    config.source = path.to_path_buf();
    config.resolve_paths(path.parent().unwrap_or(Path::new("")));
    let errors = config.validate(&text);
    if errors.is_empty() { Ok(config) } else { Err(errors) }
}

/// The embedded development default; relative paths are resolved against the current directory.
pub fn dev_default() -> (Config, Tables) {
    load_str(DEV_DEFAULT, Path::new("<embedded default>"), Path::new(""))
        .expect("the embedded default configuration is valid")
}

/// The configuration in `text` (as if read from `file`, relative paths resolved against
/// `base`) and the errors of its validation, reading no file: the pure part of [`load_str`]
/// (and a fuzz target).
///
/// # Errors
/// The TOML syntax or type error, with file, line and key.
pub fn parse_str(text: &str, file: &Path, base: &Path) -> Result<(Config, Vec<ConfigError>), Vec<ConfigError>> {
    let mut config: Config = toml::from_str(text).map_err(|e| vec![ConfigError::from_toml(file, text, &e)])?;
    config.source = file.to_path_buf();
    config.resolve_paths(base);
    let errors = config.validate(text);
    Ok((config, errors))
}

/// Parses `text` as if read from `file`, resolving relative paths against `base`.
///
/// # Errors
/// As [`load`].
pub fn load_str(text: &str, file: &Path, base: &Path) -> Result<(Config, Tables), Vec<ConfigError>> {
    let (config, mut errors) = parse_str(text, file, base)?;
    let mut tables = Tables::load(&config.tables).unwrap_or_else(|mut e| {
        errors.append(&mut e);
        Tables::default()
    });
    if !config.delivery.allow_pipes {
        errors.extend(tables.pipe_errors(config.tables.aliases.as_deref(), config.tables.routes.as_deref()));
    }
    match tables::SrsKeys::load(&config.forwarding) {
        Ok(srs) => tables.srs = srs,
        Err(e) => errors.push(e),
    }
    if errors.is_empty() { Ok((config, tables)) } else { Err(errors) }
}

/// `path` made absolute against `base` when relative.
fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
}
