//! Delivery to an mbox file (`/var/mail/USER`), for users who read mail with mutt or mail(1) on
//! the box, locked the way Debian's mail.local and procmail lock it so that they, the readers
//! and Postern never interleave:
//!
//! 1. a dotlock `FILE.lock` (created with `O_EXCL`; one older than [`STALE_LOCK`] is taken as
//!    left by a crash and removed), then
//! 2. an `fcntl` write lock on the whole file,
//!
//! both within `timeout` (the delivery is retried later otherwise). The message is appended as
//! a `From SENDER DATE` line, `Return-Path` and `Delivered-To`, the message with LF endings and
//! mboxrd quoting (a line matching `>*From ` gets one more `>`, so that [`unquote`] restores it
//! exactly), and an empty line; then the file is fsynced. On any error the file is truncated
//! back to its length before, so a failed delivery leaves no partial message.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use postern_types::{Address, ReversePath};

use crate::DeliveryError;

/// A dotlock older than this is stale (procmail's default is 17 minutes; mail.local 5).
pub const STALE_LOCK: Duration = Duration::from_secs(300);

fn err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DeliveryError {
    let path = path.to_path_buf();
    move |source| DeliveryError { op, path, source }
}

/// The dotlock of `path`, removed when dropped.
struct DotLock(PathBuf);

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn dotlock(path: &Path, deadline: Instant) -> Result<DotLock, DeliveryError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock = PathBuf::from(name);
    loop {
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&lock) {
            Ok(_) => return Ok(DotLock(lock)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let age = std::fs::metadata(&lock).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
                if age.is_some_and(|a| a > STALE_LOCK) {
                    let _ = std::fs::remove_file(&lock);
                    continue;
                }
                if Instant::now() >= deadline {
                    return Err(err("dotlock", &lock)(io::Error::new(io::ErrorKind::TimedOut, "locked")));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(err("dotlock", &lock)(e)),
        }
    }
}

/// Takes (`lock`) or releases an `fcntl` write lock on the whole of `f`, waiting until
/// `deadline`.
fn fcntl_lock(f: &File, path: &Path, lock: bool, deadline: Instant) -> Result<(), DeliveryError> {
    // SAFETY: a zeroed flock is a valid argument; the fd is open for the call.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = if lock { libc::F_WRLCK } else { libc::F_UNLCK } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    loop {
        // An open-file-description lock: it conflicts with the POSIX locks of mutt and
        // mail.local, and also between two deliveries of this process (POSIX locks would not).
        // SAFETY: as above.
        if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &raw const fl) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        let busy = matches!(e.raw_os_error(), Some(libc::EACCES | libc::EAGAIN));
        if !busy || Instant::now() >= deadline {
            return Err(err("lock", path)(e));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Appends one message to the mbox at `path` (created mode 0600 when missing, its folder 0700
/// when that is missing too). `owner` (uid, gid) is the recipient's account: run as root, a
/// new mbox is given to it, and an existing one must be its (or ours from an earlier version,
/// then given to it), with one link only, so that nobody can hard-link another file there.
///
/// # Errors
/// [`DeliveryError`] naming the step (`dotlock`, `lock`, `open`, `write`, `fsync`); the file is
/// left as it was.
pub fn deliver(
    path: &Path,
    owner: Option<(u32, u32)>,
    return_path: &ReversePath,
    delivered_to: &Address,
    message: &[u8],
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let deadline = Instant::now() + timeout;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err("create", dir))?;
    }
    let _dot = dotlock(path, deadline)?;
    let mut f = open_regular(path, owner)?;
    fcntl_lock(&f, path, true, deadline)?;
    let before = f.metadata().map_err(err("stat", path))?.len();
    let written = append(&mut f, return_path, delivered_to, message).map_err(err("write", path));
    let result = written.and_then(|()| f.sync_all().map_err(err("fsync", path)));
    if result.is_err() {
        let _ = f.set_len(before);
        let _ = f.sync_all();
    }
    let _ = fcntl_lock(&f, path, false, deadline);
    result
}

/// Opens (or creates, mode 0600) the mbox at `path` for appending, only when it is a regular
/// file: a symbolic link in its place is not followed (`O_NOFOLLOW`), and a FIFO or a device
/// is refused at once instead of blocking the delivery for ever (`O_NONBLOCK`, then `fstat`),
/// so that whoever can write in the mail folder cannot point a delivery elsewhere (issue 26).
/// Ownership as [`deliver`] says.
fn open_regular(path: &Path, owner: Option<(u32, u32)>) -> Result<File, DeliveryError> {
    use std::os::unix::fs::MetadataExt as _;
    let open = |create: bool| {
        OpenOptions::new()
            .append(true)
            .create_new(create)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
    };
    let (f, created) = match open(false) {
        Ok(f) => (f, false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (open(true).map_err(err("create", path))?, true),
        Err(e) => return Err(err("open", path)(e)),
    };
    let meta = f.metadata().map_err(err("stat", path))?;
    if !meta.file_type().is_file() {
        return Err(err("open", path)(io::Error::other("not a regular file")));
    }
    if meta.nlink() != 1 {
        return Err(err("open", path)(io::Error::other("has other hard links")));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if let Some((uid, gid)) = owner.filter(|_| euid == 0) {
        if created || meta.uid() == euid {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(err("chown", path))?;
        } else if meta.uid() != uid {
            return Err(err("open", path)(io::Error::other(format!("owned by uid {}, not the recipient", meta.uid()))));
        }
    }
    Ok(f)
}

fn append(f: &mut File, return_path: &ReversePath, delivered_to: &Address, message: &[u8]) -> io::Result<()> {
    let sender = return_path.mailbox().map_or_else(|| "MAILER-DAEMON".to_owned(), ToString::to_string);
    let date = ctime(SystemTime::now());
    let mut out = Vec::with_capacity(message.len() + 256);
    out.extend_from_slice(
        format!("From {sender} {date}\nReturn-Path: {return_path}\nDelivered-To: {delivered_to}\n").as_bytes(),
    );
    quote_into(&mut out, message);
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
    f.write_all(&out)
}

/// The message with LF endings and mboxrd quoting of `>*From ` lines.
fn quote_into(out: &mut Vec<u8>, message: &[u8]) {
    let mut lf = Vec::with_capacity(message.len());
    crate::write_lf(&mut lf, message).expect("writing to a Vec cannot fail");
    for line in lf.split_inclusive(|&b| b == b'\n') {
        let unquoted = line.iter().position(|&b| b != b'>').map_or(&line[line.len()..], |i| &line[i..]);
        if unquoted.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
}

/// Undoes the mboxrd quoting of one message's lines (for tests and readers): `>From ` →
/// `From `, `>>From ` → `>From `.
pub fn unquote(text: &str) -> String {
    text.lines()
        .map(|l| {
            let rest = l.trim_start_matches('>');
            if l.starts_with('>') && rest.starts_with("From ") { &l[1..] } else { l }
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `Tue Dec  1 19:56:51 2026`, the asctime form mbox `From ` lines carry (UTC).
fn ctime(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86400, secs % 86400);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let names = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{weekday} {} {day:>2} {:02}:{:02}:{:02} {year}",
        names[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`deliver`] from `from` to `to` (addresses as text), waiting up to `secs` seconds.
    fn put(
        path: &Path,
        owner: Option<(u32, u32)>,
        from: &str,
        to: &str,
        body: &[u8],
        secs: u64,
    ) -> Result<(), DeliveryError> {
        let (from, to) = (crate::tests::rp(from), crate::tests::addr(to));
        deliver(path, owner, &from, &to, body, Duration::from_secs(secs))
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("postern-mbox-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A symbolic link or a FIFO where the mbox should be: refused at once, nothing written
    /// through it, the delivery not blocked.
    #[test]
    fn only_a_regular_file_is_delivered_to() {
        let dir = tmp("regular");
        let target = dir.join("elsewhere");
        std::fs::write(&target, "").unwrap();
        let link = dir.join("linked");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = put(&link, None, "a@x.test", "b@y.test", b"Subject: s\r\n\r\nx\r\n", 1);
        assert!(e.is_err(), "a symbolic link was followed");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "", "written through the link");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = put(&fifo, None, "a@x.test", "b@y.test", b"Subject: s\r\n\r\nx\r\n", 1);
        assert!(e.is_err(), "a FIFO was opened for delivery");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 26, finding 14: run as root, a new mbox is the recipient's (0600); a file with
    /// another hard link is not written to, whoever linked it there.
    #[test]
    fn a_new_mbox_is_the_recipients_and_a_hard_link_is_refused() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let dir = tmp("owner");
        let mbox = dir.join("carol");
        put(&mbox, Some((4242, 4243)), "a@x.test", "carol@y.test", b"Subject: s\r\n\r\nx\r\n", 1).unwrap();
        let meta = std::fs::metadata(&mbox).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!((meta.uid(), meta.gid()), (4242, 4243));
        }
        let secret = dir.join("secret");
        std::fs::write(&secret, "secret\n").unwrap();
        std::fs::hard_link(&secret, dir.join("dave")).unwrap();
        let e = put(&dir.join("dave"), None, "a@x.test", "dave@y.test", b"Subject: s\r\n\r\nx\r\n", 1);
        assert!(e.is_err(), "written through a hard link");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn from_quoting_round_trips() {
        let dir = tmp("quote");
        let mbox = dir.join("alice");
        let body = "Subject: q\r\n\r\nFrom here\r\n>From there\r\n>>From afar\r\nFromage\r\n";
        put(&mbox, None, "bob@x.test", "alice@y.test", body.as_bytes(), 5).unwrap();
        let text = std::fs::read_to_string(&mbox).unwrap();
        assert!(text.starts_with("From bob@x.test "), "{text}");
        assert!(text.contains("\n>From here\n>>From there\n>>>From afar\nFromage\n\n"), "{text}");
        let message = text.split_once('\n').unwrap().1;
        assert!(unquote(message).contains("\nFrom here\n>From there\n>>From afar\nFromage\n"));
        assert_eq!(ctime(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_155_011)), "Tue Dec  1 19:56:51 2026");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_deliveries_and_a_reader_holding_the_lock() {
        let dir = tmp("concurrent");
        let mbox = dir.join("bob");
        // A reader (mutt) holds both locks for a while: deliveries wait, none is lost.
        let reader = {
            let mbox = mbox.clone();
            let deadline = Instant::now() + Duration::from_secs(5);
            let dot = dotlock(&mbox, deadline).unwrap();
            let f = OpenOptions::new().append(true).create(true).open(&mbox).unwrap();
            fcntl_lock(&f, &mbox, true, deadline).unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                fcntl_lock(&f, &mbox, false, deadline).unwrap();
                drop(dot);
            })
        };
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let mbox = mbox.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let m = format!("Subject: {w}-{i}\r\n\r\nline one of {w}-{i}\r\nline two of {w}-{i}\r\n");
                        put(&mbox, None, "a@x.test", "bob@y.test", m.as_bytes(), 20).unwrap();
                    }
                })
            })
            .collect();
        reader.join().unwrap();
        for w in writers {
            w.join().unwrap();
        }
        let text = std::fs::read_to_string(&mbox).unwrap();
        let messages: Vec<&str> = text.split("\nFrom a@x.test ").collect();
        assert_eq!(messages.len(), 50, "every message once");
        for w in 0..2 {
            for i in 0..25 {
                let whole = format!("Subject: {w}-{i}\n\nline one of {w}-{i}\nline two of {w}-{i}\n\n");
                assert_eq!(text.matches(&whole).count(), 1, "{w}-{i} intact, not interleaved");
            }
        }
        assert!(!dir.join("bob.lock").exists(), "the dotlock is gone");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
