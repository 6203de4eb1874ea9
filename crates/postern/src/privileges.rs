//! Dropping root after the ports are bound and the files opened (`[server] user`, `group`), as
//! Postfix's and OpenSMTPD's daemons do: a compromise of the SMTP code then owns only an
//! unprivileged account.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context as _, bail};

/// Makes `data_dir` (recursively) owned by `user`, then switches the process to `user` and
/// `group` (default: the user's primary group) with no supplementary groups.
///
/// # Errors
/// Unknown user or group, not running as root, or a failed system call; the process must not
/// go on serving then.
pub(crate) fn drop_to(user: &str, group: Option<&str>, data_dir: &Path) -> anyhow::Result<()> {
    let (uid, gid) = ids_of(user, group)?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == uid {
        return Ok(());
    }
    if euid != 0 {
        bail!("[server] user = {user:?} needs postern to start as root (it runs as uid {euid})");
    }
    chown_tree(data_dir, uid, gid).with_context(|| format!("giving {} to {user}", data_dir.display()))?;
    // SAFETY: plain system calls with valid arguments; glibc applies set*id to every thread.
    unsafe {
        if libc::setgroups(1, &raw const gid) != 0 {
            return Err(std::io::Error::last_os_error()).context("setgroups");
        }
        if libc::setgid(gid) != 0 {
            return Err(std::io::Error::last_os_error()).context("setgid");
        }
        if libc::setuid(uid) != 0 {
            return Err(std::io::Error::last_os_error()).context("setuid");
        }
        if libc::setuid(0) == 0 {
            bail!("could regain root after dropping privileges");
        }
    }
    Ok(())
}

/// The uid and gid the daemon runs as for `[server] user` and `group` (default: the user's
/// primary group).
///
/// # Errors
/// Unknown user or group.
pub(crate) fn ids_of(user: &str, group: Option<&str>) -> anyhow::Result<(libc::uid_t, libc::gid_t)> {
    let (uid, primary_gid) = lookup_user(user)?;
    let gid = match group {
        Some(g) => lookup_group(g)?,
        None => primary_gid,
    };
    Ok((uid, gid))
}

fn lookup_user(name: &str) -> anyhow::Result<(libc::uid_t, libc::gid_t)> {
    let c = CString::new(name)?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; getpwnam_r is thread-safe.
    let rc = unsafe { libc::getpwnam_r(c.as_ptr(), &raw mut pwd, buf.as_mut_ptr(), buf.len(), &raw mut result) };
    if rc != 0 || result.is_null() {
        bail!("[server] user: no user {name:?} on this system (create it, e.g. `useradd --system {name}`)");
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}

pub(crate) fn lookup_group(name: &str) -> anyhow::Result<libc::gid_t> {
    let c = CString::new(name)?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result = std::ptr::null_mut();
    // SAFETY: as in lookup_user.
    let rc = unsafe { libc::getgrnam_r(c.as_ptr(), &raw mut grp, buf.as_mut_ptr(), buf.len(), &raw mut result) };
    if rc != 0 || result.is_null() {
        bail!("[server] group: no group {name:?} on this system");
    }
    Ok(grp.gr_gid)
}

/// `lchown -R uid:gid path`, without following symbolic links. A folder already owned by
/// `uid:gid` is taken as done (everything in it was made by the daemon after an earlier drop),
/// so a large mail store is walked once, on the first start with `user` set.
fn chown_tree(path: &Path, uid: libc::uid_t, gid: libc::gid_t) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.uid() == uid && meta.gid() == gid && meta.is_dir() {
        return Ok(());
    }
    // The sockets were just made with the owners they need (`submit_group`); the daemon keeps
    // their listening descriptors whoever owns the files.
    if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
        return Ok(());
    }
    let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}
