//! The durable spool. This crate owns the commit protocol that makes `250 Ok: queued as ID`
//! true, the envelope format, and crash recovery. The scheduler never touches files; it calls
//! this crate.
//!
//! ## Layout (under `{data_dir}/spool/`)
//! - `incoming/ID.msg`: staging; anything here at start is an unacknowledged transaction and is
//!   deleted.
//! - `queue/ID.msg`, the queue file: one line `Postern-Envelope: N` (N bytes follow), the
//!   envelope as it was at commit ([`Envelope`], TOML, versioned), then the message as received
//!   (trace header prepended, CRLF line endings). Never changed after commit; its presence is
//!   what makes a message queued. One file per message, as Postfix's queue files: a message
//!   delivered at its first attempt costs one create, one rename and one unlink.
//! - `queue/ID.env`: the envelope's current state once an attempt changed it (a deferral, a
//!   hold), rewritten atomically; it takes precedence over the copy in the queue file.
//! - `corrupt/`: queue files whose envelope cannot be read are moved here at start, never
//!   deleted.
//! - `free/N`: spent queue files kept for reuse (at most [`FREE_FILES`], each at most
//!   [`FREE_FILE_MAX`] bytes). A commit overwrites one and renames it into `queue/` instead of
//!   creating a file, and a removal renames the queue file here instead of unlinking it: on
//!   ext4 the allocation of a new inode, which skips every inode freed in the last seconds,
//!   was the largest cost of a relayed message. Nothing in `free/` is queued.
//!
//! Queue files of the earlier layout (the message alone in `ID.msg`, the envelope always in
//! `ID.env`) are still read: a file without the `Postern-Envelope:` line is all message.
//!
//! ## Commit protocol ([`Spool::commit`])
//! 1. Write `incoming/ID.msg` (or overwrite a file of `free/` and cut it to length) and make
//!    its data durable: with [`SyncMode::Syncfs`] (default)
//!    one `syncfs(2)` shared by every concurrent commit (group commit, [`SharedSync`]); with
//!    [`SyncMode::Fsync`] an fsync of the file.
//! 2. Rename it into `queue/`. Nothing is renamed before its bytes are on disk, so a crash can
//!    never leave a queued file with missing data.
//! 3. fsync `queue/`, shared by concurrent commits.
//! 4. Only then may the session reply 250.
//!
//! A crash before step 3 completes leaves a staged file (deleted at start) or a queue file whose
//! rename reached the disk: queued, and delivered, though the client got no 250 and may send it
//! again (a duplicate, never a loss). Envelope updates use temp file, fsync, rename, fsync
//! directory. Removal deletes (or moves to `free/`) the queue file, then deletes the envelope,
//! without an fsync (see [`Spool::remove`]).
//!
//! A reused file is only renamed into `queue/` after the data sync of step 1, which also
//! makes the earlier removal that put it in `free/` durable (`syncfs` and the ext4 `fsync`
//! commit the whole journal). As a second guard, [`Spool::read_message`] refuses a queue file
//! whose envelope names another queue ID.

mod envelope;
mod shared_sync;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

pub use envelope::{Envelope, EnvelopeError, LastResult, RcptState, Recipient, Ret, VERSION as ENVELOPE_VERSION};
use postern_types::QueueId;
use postern_types::failpoint;
pub use shared_sync::{SharedSync, SyncOp};

/// A spool operation failed; the session answers 451 4.3.0, the scheduler retries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    /// An envelope could not be read: the queue file is corrupt.
    #[error("envelope {path}: {source}")]
    Envelope { path: PathBuf, source: EnvelopeError },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SpoolError {
    let path = path.to_path_buf();
    move |source| SpoolError::Io { op, path, source }
}

/// A queued message in its queue file ([`Spool::locate_message`]): `len` bytes from byte
/// `offset` of `path`. The queue file never changes after its commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFile {
    /// The queue file.
    pub path: PathBuf,
    /// Where the message starts, bytes.
    pub offset: u64,
    /// The message's length, bytes.
    pub len: u64,
}

/// One message for [`Spool::commit_batch`]: its envelope, the trace header fields to put
/// before it, and the message as received.
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    pub envelope: &'a Envelope,
    pub trace: &'a [u8],
    pub message: &'a [u8],
}

/// How staged data is made durable before the rename into `queue/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// One `syncfs(2)` covers all concurrent commits: fastest under load, but it also flushes
    /// whatever else is dirty on the same filesystem.
    Syncfs,
    /// `fsync(2)` of each staged file: independent of other writers on the filesystem.
    Fsync,
}

/// The spool rooted at one folder. Cheap to share behind an `Arc`; all methods block (call them
/// from `spawn_blocking`).
#[derive(Debug)]
pub struct Spool {
    incoming: PathBuf,
    queue: PathBuf,
    corrupt: PathBuf,
    free: PathBuf,
    /// Names (numbers) of the files in `free/`, and the next number to give.
    free_files: std::sync::Mutex<(Vec<u64>, u64)>,
    mode: SyncMode,
    data_sync: SharedSync,
    queue_sync: SharedSync,
    /// The device of the spool's filesystem (what `syncfs` flushes).
    device: u64,
}

impl Spool {
    /// Opens (creating if needed) the spool under `root` and deletes staged files left by an
    /// interrupted transaction.
    ///
    /// # Errors
    /// [`SpoolError::Io`] when the folders cannot be created or read.
    pub fn open(root: &Path, mode: SyncMode) -> Result<Self, SpoolError> {
        let incoming = root.join("incoming");
        let queue = root.join("queue");
        let corrupt = root.join("corrupt");
        let free = root.join("free");
        // Mail is nobody else's business: the spool and its folders are 0700 (older versions
        // left them 0755), its files 0600.
        for d in [root, &incoming, &queue, &corrupt, &free] {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(d).map_err(io_err("create", d))?;
            fs::set_permissions(d, fs::Permissions::from_mode(0o700)).map_err(io_err("chmod", d))?;
        }
        let free_files = std::sync::Mutex::new(scan_free(&free)?);
        for entry in fs::read_dir(&incoming).map_err(io_err("read", &incoming))? {
            let path = entry.map_err(io_err("read", &incoming))?.path();
            tracing::info!("spool: removing unacknowledged staged file {}", path.display());
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
        let queue_sync = SharedSync::open(&queue, SyncOp::FsyncDir).map_err(io_err("open", &queue))?;
        let data_sync = SharedSync::open(&incoming, SyncOp::Syncfs).map_err(io_err("open", &incoming))?;
        let device = std::os::unix::fs::MetadataExt::dev(&fs::metadata(&incoming).map_err(io_err("stat", &incoming))?);
        Ok(Self { incoming, queue, corrupt, free, free_files, mode, data_sync, queue_sync, device })
    }

    /// With [`SyncMode::Syncfs`], a group-commit flush of the spool's filesystem for other
    /// writers on it (Maildir delivery); `None` in [`SyncMode::Fsync`] mode or when `path` is on
    /// another filesystem.
    pub fn shared_sync_for(&self, path: &Path) -> Option<impl Fn() -> io::Result<()> + '_> {
        use std::os::unix::fs::MetadataExt;
        if self.mode != SyncMode::Syncfs {
            return None;
        }
        // The nearest existing ancestor tells the filesystem a path will be created on.
        let device = path.ancestors().find_map(|p| fs::metadata(p).ok())?.dev();
        (device == self.device).then_some(|| self.data_sync.sync())
    }

    /// The space of the spool's filesystem as `(available, total)` bytes, as an unprivileged
    /// process sees it (`statvfs(3)`: `f_bavail` and `f_blocks` times `f_frsize`).
    ///
    /// # Errors
    /// `statvfs` failed.
    pub fn free_space(&self) -> io::Result<(u64, u64)> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.queue.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: `path` is a valid C string; `stat` is plain data written by statvfs.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &raw mut stat) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let unit = stat.f_frsize;
        Ok((stat.f_bavail.saturating_mul(unit), stat.f_blocks.saturating_mul(unit)))
    }

    /// Path of a queued message file.
    pub fn message_path(&self, id: QueueId) -> PathBuf {
        self.queue.join(format!("{id}.msg"))
    }

    fn envelope_path(&self, id: QueueId) -> PathBuf {
        self.queue.join(format!("{id}.env"))
    }

    /// Durably queues a message: one queue file holding the envelope, `trace` (the Received
    /// header) and `message`. Returns only when it is on disk (see the commit protocol above).
    ///
    /// # Errors
    /// [`SpoolError::Io`]; the staged file is removed, nothing is queued.
    pub fn commit(&self, env: &Envelope, trace: &[u8], message: &[u8]) -> Result<(), SpoolError> {
        self.commit_batch(&[Commit { envelope: env, trace, message }]).pop().unwrap_or(Ok(()))
    }

    /// Durably queues several messages at once, as [`Spool::commit`] each, with one data sync
    /// and one sync of `queue/` for them all (group commit from one thread). Returns one result
    /// per message, in order.
    ///
    /// # Errors
    /// Per message, as [`Spool::commit`]: a failed one is not queued, the others are.
    pub fn commit_batch(&self, batch: &[Commit<'_>]) -> Vec<Result<(), SpoolError>> {
        let fsync = self.mode == SyncMode::Fsync;
        let (staged, mut results): (Vec<PathBuf>, Vec<Result<(), SpoolError>>) =
            batch.iter().map(|c| self.stage(c, fsync)).unzip();
        failpoint::hit("spool::staged");
        if !fsync && results.iter().any(Result::is_ok) {
            sync_all_or_fail(&mut results, || self.data_sync.sync(), "syncfs", &self.incoming);
        }
        failpoint::hit("spool::data-synced");
        for ((c, path), r) in batch.iter().zip(&staged).zip(results.iter_mut()) {
            if r.is_ok() {
                *r = fs::rename(path, self.message_path(c.envelope.id)).map_err(io_err("rename", path));
            }
        }
        failpoint::hit("spool::renamed");
        if results.iter().any(Result::is_ok) {
            sync_all_or_fail(&mut results, || self.queue_sync.sync(), "fsync", &self.queue);
        }
        failpoint::hit("spool::queue-synced");
        for ((c, path), r) in batch.iter().zip(&staged).zip(&results) {
            if r.is_err() {
                for p in [path, &self.message_path(c.envelope.id)] {
                    let _ = fs::remove_file(p);
                }
            }
        }
        results
    }

    /// Writes the file of `c` (a reused one from `free/`, else `incoming/ID.msg`), fsynced
    /// when `fsync`; returns its path and whether that worked.
    fn stage(&self, c: &Commit<'_>, fsync: bool) -> (PathBuf, Result<(), SpoolError>) {
        let envelope = c.envelope.to_text();
        let header = format!("{ENVELOPE_HEADER}{}\n", envelope.len());
        let parts = [header.as_bytes(), envelope.as_bytes(), c.trace, c.message];
        match self.take_free() {
            Some(n) => {
                let path = self.free.join(n.to_string());
                let written = overwrite_file(&path, &parts, fsync);
                (path, written)
            }
            None => {
                let path = self.incoming.join(format!("{}.msg", c.envelope.id));
                let written = write_file(&path, &parts, fsync);
                (path, written)
            }
        }
    }

    /// Atomically replaces a queued message's envelope (temp file, fsync, rename, fsync dir).
    ///
    /// # Errors
    /// [`SpoolError::Io`]; the previous envelope stays in place.
    pub fn update(&self, env: &Envelope) -> Result<(), SpoolError> {
        let tmp = self.queue.join(format!("{}.env.tmp", env.id));
        write_file(&tmp, &[env.to_text().as_bytes()], true)?;
        failpoint::hit("spool::envelope-written");
        let dest = self.envelope_path(env.id);
        fs::rename(&tmp, &dest).map_err(io_err("rename", &tmp))?;
        failpoint::hit("spool::envelope-renamed");
        self.queue_sync.sync().map_err(io_err("fsync", &self.queue))
    }

    /// Records delivery progress in a queued message's envelope without flushing it: the same
    /// atomic replacement as [`Spool::update`] (temp file, rename) but no fsync, so that a
    /// `kill -9` right after a delivery does not repeat it (the page cache survives a killed
    /// process). After a power cut the older envelope may come back: a duplicate, never a
    /// loss, as with [`Spool::remove`].
    ///
    /// # Errors
    /// [`SpoolError::Io`]; the previous envelope stays in place.
    pub fn record_progress(&self, env: &Envelope) -> Result<(), SpoolError> {
        let tmp = self.queue.join(format!("{}.env.tmp", env.id));
        write_file(&tmp, &[env.to_text().as_bytes()], false)?;
        let dest = self.envelope_path(env.id);
        fs::rename(&tmp, &dest).map_err(io_err("rename", &tmp))
    }

    /// Removes a finished message: the queue file first, then the envelope file if an update
    /// wrote one (an envelope left alone by a crash in between is deleted at start).
    ///
    /// The removal is not fsynced (as in Postfix): `kill -9` cannot undo an unlink, and after a
    /// power cut within the filesystem's commit interval the queue file may come back, so its
    /// recipients are delivered a second time. A duplicate, never a loss; in exchange every
    /// delivered message costs one directory sync less.
    ///
    /// # Errors
    /// [`SpoolError::Io`].
    pub fn remove(&self, id: QueueId) -> Result<(), SpoolError> {
        let msg = self.message_path(id);
        self.free_or_unlink(&msg)?;
        let env = self.envelope_path(id);
        match fs::remove_file(&env) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &env)(e)),
            _ => Ok(()),
        }
    }

    /// Moves the spent queue file `msg` to `free/` when there is room and it is small enough
    /// to be worth keeping; else unlinks it.
    fn free_or_unlink(&self, msg: &Path) -> Result<(), SpoolError> {
        let mut free = self.free_files.lock().unwrap_or_else(|e| e.into_inner());
        let small = || fs::symlink_metadata(msg).is_ok_and(|m| m.len() <= FREE_FILE_MAX);
        if free.0.len() < FREE_FILES && small() {
            let n = free.1;
            let to = self.free.join(n.to_string());
            match fs::rename(msg, &to) {
                Ok(()) => {
                    free.1 += 1;
                    free.0.push(n);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(io_err("remove", msg)(e)),
                // (Anything else: unlinked as before.)
                Err(_) => {}
            }
        }
        drop(free);
        fs::remove_file(msg).map_err(io_err("remove", msg))
    }

    /// A file of `free/` to overwrite, if any.
    fn take_free(&self) -> Option<u64> {
        self.free_files.lock().unwrap_or_else(|e| e.into_inner()).0.pop()
    }

    /// Reads a queued message (trace header included, the queue file's envelope not).
    ///
    /// # Errors
    /// [`SpoolError::Io`]; [`SpoolError::Envelope`] when the queue file's first line is broken.
    pub fn read_message(&self, id: QueueId) -> Result<Vec<u8>, SpoolError> {
        let p = self.message_path(id);
        let mut file = fs::read(&p).map_err(io_err("read", &p))?;
        let (envelope, start) = match split_queue_file(&file) {
            Ok(split) => split,
            Err(source) => return Err(SpoolError::Envelope { path: p, source }),
        };
        // A reused file (free/) whose move out of queue/ a power cut undid holds another
        // message: never deliver it under this ID.
        if let Some(text) = envelope
            && Envelope::from_text(text).is_ok_and(|e| e.id != id)
        {
            return Err(SpoolError::Envelope { path: p, source: EnvelopeError::OtherMessage });
        }
        file.drain(..start);
        Ok(file)
    }

    /// Where a queued message's bytes lie in its queue file (trace header included, the
    /// envelope not), without reading them: delivery streams them from there.
    ///
    /// # Errors
    /// As [`Spool::read_message`].
    pub fn locate_message(&self, id: QueueId) -> Result<MessageFile, SpoolError> {
        let path = self.message_path(id);
        let head = read_head(&path).map_err(io_err("read", &path))?;
        let (envelope, start) = match split_queue_file(&head) {
            Ok(split) => split,
            Err(source) => return Err(SpoolError::Envelope { path, source }),
        };
        if let Some(text) = envelope
            && Envelope::from_text(text).is_ok_and(|e| e.id != id)
        {
            return Err(SpoolError::Envelope { path, source: EnvelopeError::OtherMessage });
        }
        let size = fs::metadata(&path).map_err(io_err("stat", &path))?.len();
        let offset = start as u64;
        Ok(MessageFile { len: size.saturating_sub(offset), path, offset })
    }

    /// Lists every queued envelope, repairing what an interrupted commit or removal left, as
    /// [`Spool::recover_each`] does.
    ///
    /// # Errors
    /// [`SpoolError::Io`] when the queue folder cannot be read.
    pub fn recover(&self) -> Result<Vec<Envelope>, SpoolError> {
        let mut envelopes = Vec::new();
        self.recover_each(None, |env| {
            envelopes.push(env);
            true
        })?;
        Ok(envelopes)
    }

    /// Hands every queued envelope to `found`, in ID order, one at a time (memory does not
    /// grow with the queue but for 16 bytes per file name while the folder is read), and
    /// repairs what an interrupted commit or removal left: envelope files without a queue file
    /// (a removal cut short) and unfinished updates are deleted; queue files whose envelope
    /// cannot be read are moved to `corrupt/`. With `before`, messages with that ID or a later
    /// one (queued since the daemon started) are left alone. Stops when `found` returns
    /// `false`. Returns how many were found.
    ///
    /// # Errors
    /// [`SpoolError::Io`] when the queue folder cannot be read.
    pub fn recover_each(
        &self,
        before: Option<QueueId>,
        mut found: impl FnMut(Envelope) -> bool,
    ) -> Result<usize, SpoolError> {
        let mut n = 0;
        scan_queue(&self.queue, |id, queued| {
            if before.is_some_and(|b| id >= b) {
                return Ok(true);
            }
            match queued {
                Queued::Envelope(env) => {
                    n += 1;
                    failpoint::delay("spool::recovered-one");
                    return Ok(found(*env));
                }
                Queued::Leftover(name) => {
                    let path = self.queue.join(&name);
                    tracing::info!("spool: removing {} (left by an interrupted update or removal)", path.display());
                    fs::remove_file(&path).map_err(io_err("remove", &path))?;
                }
                Queued::Corrupt(why) => {
                    let name = format!("{id}.msg");
                    let path = self.queue.join(&name);
                    tracing::error!("spool: moving {} to corrupt/: {why}", path.display());
                    fs::rename(&path, self.corrupt.join(&name)).map_err(io_err("rename", &path))?;
                    let env = self.envelope_path(id);
                    if env.exists() {
                        fs::rename(&env, self.corrupt.join(format!("{id}.env"))).map_err(io_err("rename", &env))?;
                    }
                }
            }
            Ok(true)
        })?;
        self.queue_sync.sync().map_err(io_err("fsync", &self.queue))?;
        Ok(n)
    }

    /// As [`each_envelope`] over this spool's queue.
    ///
    /// # Errors
    /// [`SpoolError::Io`] when the queue folder cannot be read.
    pub fn each_envelope(&self, f: impl FnMut(Result<Envelope, CorruptFile>)) -> Result<(), SpoolError> {
        each_envelope(&self.queue, f)
    }

    /// The current envelope of a queued message: `ID.env` when an update wrote one, else the
    /// copy in the queue file (read up to the message only).
    ///
    /// # Errors
    /// [`SpoolError::Io`] (`NotFound` when the message is no longer queued);
    /// [`SpoolError::Envelope`] when it cannot be parsed.
    pub fn read_envelope(&self, id: QueueId) -> Result<Envelope, SpoolError> {
        current_envelope(&self.queue, id, self.envelope_path(id).exists())
    }
}

/// `queue/ID.env` if `has_env`, else the envelope in `queue/ID.msg`.
fn current_envelope(queue: &Path, id: QueueId, has_env: bool) -> Result<Envelope, SpoolError> {
    let bad = |path: PathBuf| move |source: EnvelopeError| SpoolError::Envelope { path, source };
    if has_env {
        let p = queue.join(format!("{id}.env"));
        let text = fs::read_to_string(&p).map_err(io_err("read", &p))?;
        return Envelope::from_text(&text).map_err(bad(p));
    }
    let p = queue.join(format!("{id}.msg"));
    let head = read_head(&p).map_err(io_err("read", &p))?;
    match split_queue_file(&head) {
        Ok((Some(text), _)) => Envelope::from_text(text).map_err(bad(p)),
        Ok((None, _)) => Err(bad(p)(EnvelopeError::Missing)),
        Err(e) => Err(bad(p)(e)),
    }
}

/// The first line of a queue file; the envelope's length in bytes follows.
const ENVELOPE_HEADER: &str = "Postern-Envelope: ";

/// Splits a queue file: its envelope text (`None` for a file of the earlier layout, all
/// message) and the offset where the message starts.
fn split_queue_file(file: &[u8]) -> Result<(Option<&str>, usize), EnvelopeError> {
    let bad = EnvelopeError::QueueFile;
    let Some(rest) = file.strip_prefix(ENVELOPE_HEADER.as_bytes()) else { return Ok((None, 0)) };
    let eol = rest.iter().position(|b| *b == b'\n').ok_or(bad("no end to the first line"))?;
    let len: usize = std::str::from_utf8(&rest[..eol])
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .ok_or(bad("the first line is not Postern-Envelope: LENGTH"))?;
    let start = ENVELOPE_HEADER.len() + eol + 1;
    let end = start.checked_add(len).filter(|end| *end <= file.len()).ok_or(bad("shorter than its envelope"))?;
    let text = std::str::from_utf8(&file[start..end]).map_err(|_| bad("the envelope is not UTF-8"))?;
    Ok((Some(text), end))
}

/// The first line of the queue file at `path` and the envelope it announces, without the
/// message: recovery reads only this much of each file, however large the messages.
fn read_head(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::{BufRead, BufReader, Read};
    let mut reader = BufReader::new(File::open(path)?);
    let mut head = Vec::new();
    // A first line longer than this is not ours (the split reports it).
    reader.by_ref().take(64).read_until(b'\n', &mut head)?;
    let announced = head
        .strip_prefix(ENVELOPE_HEADER.as_bytes())
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .and_then(|n| n.trim().parse::<u64>().ok());
    if let Some(len) = announced {
        // An envelope is a few hundred bytes per recipient; the bound only guards a corrupt line.
        reader.take(len.min(64 << 20)).read_to_end(&mut head)?;
    }
    Ok(head)
}

/// A queue file whose envelope cannot be read, as the queue tools report it: `PATH: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct CorruptFile {
    /// The queue file.
    pub path: PathBuf,
    /// Why its envelope cannot be read.
    pub source: EnvelopeError,
}

/// What one queued ID in `queue/` holds.
enum Queued {
    /// A queued message's current envelope.
    Envelope(Box<Envelope>),
    /// This file name: an envelope file without its queue file, or an update's temporary file.
    Leftover(String),
    /// A queue file whose envelope cannot be read.
    Corrupt(EnvelopeError),
}

/// Which file of an ID a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Msg,
    Env,
    Tmp,
}

/// Reads the queue folder, calling `each` per queued ID in ID order with its current envelope
/// (the `ID.env` file if there is one, else the copy in the queue file), and per leftover,
/// until `each` returns `false`. Names that are not ours are skipped. Only the IDs are held
/// while the folder is read.
fn scan_queue(
    queue: &Path,
    mut each: impl FnMut(QueueId, Queued) -> Result<bool, SpoolError>,
) -> Result<(), SpoolError> {
    let mut names: Vec<(QueueId, Kind)> = Vec::new();
    for entry in fs::read_dir(queue).map_err(io_err("read", queue))? {
        let entry = entry.map_err(io_err("read", queue))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let (stem, kind) = if let Some(s) = name.strip_suffix(".env.tmp") {
            (s, Kind::Tmp)
        } else if let Some(s) = name.strip_suffix(".env") {
            (s, Kind::Env)
        } else if let Some(s) = name.strip_suffix(".msg") {
            (s, Kind::Msg)
        } else {
            continue;
        };
        if let Some(id) = QueueId::parse(stem) {
            names.push((id, kind));
        }
    }
    names.sort_unstable();
    for (i, &(id, kind)) in names.iter().enumerate() {
        let has = |k: Kind| names.get(i + 1).is_some_and(|&n| n == (id, k)) || (i > 0 && names[i - 1] == (id, k));
        let go_on = match kind {
            Kind::Tmp => each(id, Queued::Leftover(format!("{id}.env.tmp")))?,
            Kind::Env if !has(Kind::Msg) => each(id, Queued::Leftover(format!("{id}.env")))?,
            Kind::Env => true,
            Kind::Msg => {
                let queued = match current_envelope(queue, id, has(Kind::Env)) {
                    Ok(env) => Queued::Envelope(Box::new(env)),
                    Err(SpoolError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => continue,
                    Err(SpoolError::Envelope { source, .. }) => Queued::Corrupt(source),
                    Err(e) => return Err(e),
                };
                each(id, queued)?
            }
        };
        if !go_on {
            break;
        }
    }
    Ok(())
}

/// The current envelopes of the messages queued under `root` (a spool folder), read-only and
/// without repairing anything, for the queue tools while the daemon is down. Unreadable queue
/// files come back as [`CorruptFile`].
///
/// # Errors
/// [`SpoolError::Io`] when the queue folder cannot be read.
pub fn read_envelopes(root: &Path) -> Result<Vec<Result<Envelope, CorruptFile>>, SpoolError> {
    let mut out = Vec::new();
    each_envelope(&root.join("queue"), |e| out.push(e))?;
    Ok(out)
}

/// Hands the current envelope of each message queued in the folder `queue` to `f`, in ID
/// order, one at a time, read-only: the queue tools stream a queue of any size this way.
/// Unreadable queue files come as [`CorruptFile`].
///
/// # Errors
/// [`SpoolError::Io`] when the folder cannot be read.
pub fn each_envelope(queue: &Path, mut f: impl FnMut(Result<Envelope, CorruptFile>)) -> Result<(), SpoolError> {
    scan_queue(queue, |id, q| {
        match q {
            Queued::Envelope(e) => f(Ok(*e)),
            Queued::Corrupt(source) => f(Err(CorruptFile { path: queue.join(format!("{id}.msg")), source })),
            Queued::Leftover(_) => {}
        }
        Ok(true)
    })
}

/// Runs `sync` (`op` of `path`, for the error); when it fails, every message still `Ok` in
/// `results` fails with a copy of its error.
fn sync_all_or_fail(
    results: &mut [Result<(), SpoolError>],
    sync: impl FnOnce() -> io::Result<()>,
    op: &'static str,
    path: &Path,
) {
    if let Err(e) = sync() {
        for r in results.iter_mut().filter(|r| r.is_ok()) {
            *r = Err(SpoolError::Io { op, path: path.to_path_buf(), source: io::Error::new(e.kind(), e.to_string()) });
        }
    }
}

/// The numbers of the files in `free/` (anything else there is deleted) and the next number.
fn scan_free(free: &Path) -> Result<(Vec<u64>, u64), SpoolError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(free).map_err(io_err("read", free))? {
        let entry = entry.map_err(io_err("read", free))?;
        match entry.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
            Some(n) if names.len() < FREE_FILES => names.push(n),
            _ => {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
    }
    let next = names.iter().max().map_or(0, |n| n + 1);
    Ok((names, next))
}

/// At most this many spent queue files wait in `free/` for reuse.
pub const FREE_FILES: usize = 1024;
/// A spent queue file larger than this (bytes) is unlinked, not kept for reuse.
pub const FREE_FILE_MAX: u64 = 256 << 10;

/// Overwrites the existing file `path` with the concatenation of `parts` and cuts it to that
/// length, fsynced when `fsync`: no new inode, and blocks reused where they fit.
fn overwrite_file(path: &Path, parts: &[&[u8]], fsync: bool) -> Result<(), SpoolError> {
    let mut f: File = OpenOptions::new().write(true).open(path).map_err(io_err("open", path))?;
    // (A file freed by an older version may be 0644.)
    f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_err("chmod", path))?;
    write_parts(&mut f, path, parts)?;
    let len: usize = parts.iter().map(|p| p.len()).sum();
    f.set_len(len as u64).map_err(io_err("truncate", path))?;
    if fsync {
        f.sync_all().map_err(io_err("fsync", path))?;
    }
    Ok(())
}

/// Creates `path` with the concatenation of `parts`, fsynced when `fsync`.
fn write_file(path: &Path, parts: &[&[u8]], fsync: bool) -> Result<(), SpoolError> {
    let mut f: File =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io_err("create", path))?;
    write_parts(&mut f, path, parts)?;
    if fsync {
        f.sync_all().map_err(io_err("fsync", path))?;
    }
    Ok(())
}

/// Writes the concatenation of `parts` to `f` (one `writev(2)` when it takes them all).
fn write_parts(f: &mut File, path: &Path, parts: &[&[u8]]) -> Result<(), SpoolError> {
    let mut slices: Vec<io::IoSlice<'_>> =
        parts.iter().filter(|p| !p.is_empty()).map(|p| io::IoSlice::new(p)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match f.write_vectored(rest) {
            Ok(0) => return Err(io_err("write", path)(io::ErrorKind::WriteZero.into())),
            Ok(n) => io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("write", path)(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
