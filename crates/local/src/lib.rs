//! Local delivery to Maildir (<https://cr.yp.to/proto/maildir.html>). This crate owns writing one
//! message into one mailbox safely: a unique name in `tmp/`, the data fsynced, a rename into
//! `new/`, and `new/` fsynced, so that a delivered message survives a power cut and a reader
//! never sees half a message.
//!
//! Files are stored with LF line endings, the Maildir convention that Dovecot, Courier and mutt
//! expect: the spool keeps CRLF as received and every CRLF becomes LF here. The SMTP session
//! refuses bare CR and LF, so the conversion is exact and reversible.
//!
//! `Return-Path` and `Delivered-To` (RFC 5321 §4.4, Postfix/qmail practice) are prepended at
//! delivery; the rest of the message is written exactly as queued.

pub mod mbox;
pub mod pipe;
pub mod privileged;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use postern_types::{Address, ReversePath};

/// A failed delivery. Every local failure (disk full, permissions, a path that is not a folder)
/// is temporary: the message stays queued and is retried, never dropped.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct DeliveryError {
    /// What was being done: `create`, `write`, `fsync`, `rename`.
    pub op: &'static str,
    /// The file or folder involved.
    pub path: PathBuf,
    /// The OS error.
    pub source: io::Error,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Delivers one message into the Maildir at `root` (created with `tmp/`, `new/`, `cur/`, mode
/// 0700, when missing).
///
/// `return_path` is the message's reverse-path (the null sender included), `delivered_to` the
/// final recipient address, `message` the queued message with CRLF endings.
/// Returns the path of the file in `new/`.
///
/// `shared_sync`, when given, replaces the file fsync and the `new/` fsync: it must make every
/// write and rename on the Maildir's filesystem durable (the spool's group-commit `syncfs`, so
/// that concurrent deliveries share one flush). Without it each is fsynced on its own.
///
/// # Errors
/// [`DeliveryError`] naming the failing operation; a partially written `tmp/` file is removed.
pub fn deliver(
    root: &Path,
    hostname: &str,
    return_path: &ReversePath,
    delivered_to: &Address,
    message: &[u8],
    shared_sync: Option<&dyn Fn() -> io::Result<()>>,
) -> Result<PathBuf, DeliveryError> {
    let err = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| DeliveryError { op, path, source }
    };
    let (tmp, new) = (root.join("tmp"), root.join("new"));
    for d in [root.to_path_buf(), tmp.clone(), new.clone(), root.join("cur")] {
        if !d.is_dir() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(&d).map_err(err("create", &d))?;
        }
    }
    let head = format!("Return-Path: {return_path}\nDelivered-To: {delivered_to}\n");
    // S= is the size of the file as stored (Dovecot's quota and fast size lookups use it).
    let stored = head.len() + message.len() - memchr::memmem::find_iter(message, b"\r\n").count();
    let name = unique_name(hostname, stored);
    let tmp_file = tmp.join(&name);
    let write = || -> Result<(), DeliveryError> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_file)
            .map_err(err("create", &tmp_file))?;
        let mut w = BufWriter::with_capacity(64 * 1024, f);
        w.write_all(head.as_bytes()).map_err(err("write", &tmp_file))?;
        write_lf(&mut w, message).map_err(err("write", &tmp_file))?;
        let f = w.into_inner().map_err(|e| e.into_error()).map_err(err("write", &tmp_file))?;
        match shared_sync {
            Some(sync) => sync().map_err(err("sync", &tmp_file)),
            None => f.sync_all().map_err(err("fsync", &tmp_file)),
        }
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp_file);
        return Err(e);
    }
    postern_types::failpoint::hit("maildir::tmp-written");
    let dest = new.join(&name);
    if let Err(e) = fs::rename(&tmp_file, &dest) {
        let _ = fs::remove_file(&tmp_file);
        return Err(err("rename", &tmp_file)(e));
    }
    match shared_sync {
        Some(sync) => sync().map_err(err("sync", &new))?,
        None => File::open(&new).and_then(|d| d.sync_all()).map_err(err("fsync", &new))?,
    }
    postern_types::failpoint::hit("maildir::delivered");
    Ok(dest)
}

/// Removes the `tmp/` files of the Maildir at `root` (and of its Maildir++ folders, `.Name/tmp/`)
/// that an earlier Postern process on `hostname` left when it died mid-delivery: names of our
/// form ([`unique_name`]) with another process's pid. Other programs' files (Dovecot writes
/// into `tmp/` too) and this process's own are left alone. A missing Maildir is no error.
/// Returns the paths removed.
///
/// # Errors
/// A folder that cannot be read or a file that cannot be removed.
pub fn clean_tmp(root: &Path, hostname: &str) -> io::Result<Vec<PathBuf>> {
    let host = format!(".{},S=", hostname.replace('/', "\\057").replace(':', "\\072"));
    let mut folders = vec![root.join("tmp")];
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                folders.push(e.path().join("tmp"));
            }
        }
    }
    let mut removed = Vec::new();
    for tmp in folders {
        let entries = match fs::read_dir(&tmp) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(&host) && written_by_another_process(&name) {
                fs::remove_file(e.path())?;
                removed.push(e.path());
            }
        }
    }
    Ok(removed)
}

/// Whether a name of our form (`…P{pid}Q{n}.…`) carries a pid other than ours.
fn written_by_another_process(name: &str) -> bool {
    let Some((_, rest)) = name.split_once(".M") else { return false };
    let Some((_, rest)) = rest.split_once('P') else { return false };
    let Some((pid, _)) = rest.split_once('Q') else { return false };
    pid.parse::<u32>().is_ok_and(|pid| pid != std::process::id())
}

/// Writes `message` with every CRLF turned into LF.
pub(crate) fn write_lf(w: &mut impl Write, message: &[u8]) -> io::Result<()> {
    let mut start = 0;
    for i in memchr::memmem::find_iter(message, b"\r\n") {
        w.write_all(&message[start..i])?;
        w.write_all(b"\n")?;
        start = i + 2;
    }
    w.write_all(&message[start..])
}

/// `SECONDS.MmicrosPpidQcounter.HOST,S=size`: unique per the Maildir spec's modern form, the
/// host name with `/` and `:` escaped as `\057` and `\072`.
fn unique_name(hostname: &str, size: usize) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let host = hostname.replace('/', "\\057").replace(':', "\\072");
    format!("{}.M{}P{}Q{n}.{host},S={size}", now.as_secs(), now.subsec_micros(), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reverse-path from text ("" is the null sender), for the tests.
    pub(crate) fn rp(s: &str) -> ReversePath {
        if s.is_empty() { ReversePath::Null } else { ReversePath::Mailbox(Address::parse(s).unwrap()) }
    }

    /// An address from text, for the tests.
    pub(crate) fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn delivers_with_lf_and_trace_headers() {
        let root = std::env::temp_dir().join(format!("postern-maildir-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let p = deliver(&root, "mx.test", &rp("a@b.test"), &addr("bob@x.test"), b"Subject: hi\r\n\r\nbody\r\n", None)
            .unwrap();
        assert!(p.starts_with(root.join("new")));
        let size = fs::metadata(&p).unwrap().len();
        assert!(p.to_string_lossy().ends_with(&format!(",S={size}")), "{p:?}");
        assert_eq!(fs::read(&p).unwrap(), b"Return-Path: <a@b.test>\nDelivered-To: bob@x.test\nSubject: hi\n\nbody\n");
        assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        let synced = std::cell::Cell::new(0);
        let count = || {
            synced.set(synced.get() + 1);
            Ok(())
        };
        let q = deliver(&root, "mx.test", &rp(""), &addr("bob@x.test"), b"x", Some(&count)).unwrap();
        assert_eq!(synced.get(), 2, "data before the rename, the rename after");
        assert_ne!(p, q);
        // A file where the Maildir should be is a (temporary) error, not a panic.
        let blocked = root.join("blocked");
        fs::write(&blocked, b"").unwrap();
        let e = deliver(&blocked, "mx.test", &rp(""), &addr("b@x.test"), b"x", None).unwrap_err();
        assert_eq!(e.op, "create");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn clean_tmp_removes_only_what_a_dead_postern_left() {
        let root = std::env::temp_dir().join(format!("postern-cleantmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for d in ["tmp", "new", ".Junk/tmp"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let dead = "1700000000.M1P999999999Q3.mx.test,S=10";
        let ours = unique_name("mx.test", 10);
        let dovecot = "1700000000.M1P42.mx.test";
        let other_host = "1700000000.M1P999999999Q3.other.test,S=10";
        for f in [dead, &ours, dovecot, other_host] {
            fs::write(root.join("tmp").join(f), b"x").unwrap();
        }
        fs::write(root.join(".Junk/tmp").join(dead), b"x").unwrap();
        let removed = clean_tmp(&root, "mx.test").unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        let left: Vec<_> = fs::read_dir(root.join("tmp")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(clean_tmp(&root.join("missing"), "mx.test").unwrap().is_empty());
        fs::remove_dir_all(&root).unwrap();
    }
}
