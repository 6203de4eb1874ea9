//! `postern sandbox`: the systemd drop-in that opens `postern.service`'s sandbox to what the
//! configured deliveries write ([`Config::write_paths`]), and the generator mode the Debian
//! package runs at boot and at every `systemctl daemon-reload`
//! (`/usr/lib/systemd/system-generators/postern-sandbox`, systemd.generator(7)). The shipped
//! unit writes only `/var/lib/postern` and hides `/home`; mbox in `/var/mail`, Maildirs under
//! `/home` and procmail need more, and the drop-in says exactly that much.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

use postern_config::Config;

/// The drop-in's name inside `postern.service.d/`.
pub(crate) const DROP_IN: &str = "50-deliveries.conf";

/// A folder that cannot be written in a unit file.
#[derive(Debug, thiserror::Error)]
#[error(
    "{path}: a systemd unit cannot name this folder (a quote, backslash or control character); move the deliveries elsewhere"
)]
pub(crate) struct UnnamablePath {
    path: String,
}

/// The drop-in for `config`: `ReadWritePaths=` with each folder of [`Config::write_paths`]
/// (`-` prefixed: a folder missing at start does not stop the service) and `ProtectHome=no`
/// when one is under the homes.
///
/// # Errors
/// [`UnnamablePath`] for a folder whose name a unit file cannot carry.
pub(crate) fn drop_in(config: &Config) -> Result<String, UnnamablePath> {
    let w = config.write_paths();
    let mut out = format!(
        "# Written by `postern sandbox` from {}: the folders its deliveries write\n\
         # (docs/operations.md, \"The systemd sandbox\").\n[Service]\n",
        config.source.display()
    );
    for p in &w.paths {
        out.push_str(&format!("ReadWritePaths=-\"{}\"\n", unit_path(p)?));
    }
    if w.home {
        out.push_str("ProtectHome=no\n");
    }
    Ok(out)
}

/// `path` quoted for a unit file: `%` doubled (systemd's specifiers); a quote, backslash or
/// control character refused.
fn unit_path(path: &Path) -> Result<String, UnnamablePath> {
    let text = path.to_string_lossy();
    if text.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        return Err(UnnamablePath { path: text.escape_debug().to_string() });
    }
    Ok(text.replace('%', "%%"))
}

/// `postern sandbox`: prints the drop-in, or with `generator` (systemd's normal generator
/// folder) writes it to `GENERATOR/postern.service.d/50-deliveries.conf`. A generator must not
/// fail the boot: on any error it writes nothing, says why on stderr, and exits 0 (the unit's
/// `check-config` then refuses to start with the whole story).
pub(crate) fn run(config: Option<&Path>, generator: Option<&Path>) -> ExitCode {
    let Some(config) = crate::load_config(config) else {
        return if generator.is_some() { ExitCode::SUCCESS } else { ExitCode::from(2) };
    };
    let text = match drop_in(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("postern sandbox: {e}");
            return if generator.is_some() { ExitCode::SUCCESS } else { ExitCode::from(2) };
        }
    };
    let Some(dir) = generator else {
        print!("{text}");
        return ExitCode::SUCCESS;
    };
    let folder = dir.join("postern.service.d");
    if let Err(e) = std::fs::create_dir_all(&folder).and_then(|()| std::fs::write(folder.join(DROP_IN), text)) {
        eprintln!("postern sandbox: {}: {e}", folder.display());
    }
    ExitCode::SUCCESS
}

/// The folders of [`Config::write_paths`] that are read-only here, as inside a systemd sandbox
/// that does not open them: each with the warning `check-config` prints (it runs as the unit's
/// `ExecStartPre`, inside the sandbox). A missing folder is not reported.
pub(crate) fn read_only_warnings(config: &Config) -> Vec<String> {
    config
        .write_paths()
        .paths
        .iter()
        .filter(|p| read_only(p))
        .map(|p| {
            format!(
                "warning: {} is read-only here (the systemd sandbox?): deliveries there are deferred until it is \
                 writable; `postern sandbox` prints the drop-in that opens it",
                p.display()
            )
        })
        .collect()
}

/// Whether the filesystem holding `path` is mounted read-only (statvfs(3) `ST_RDONLY`).
fn read_only(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else { return false };
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `st` a buffer of the size statvfs(3) writes.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    // SAFETY: statvfs(3) filled `st` when it returned 0.
    rc == 0 && unsafe { st.assume_init() }.f_flag & libc::ST_RDONLY != 0
}
