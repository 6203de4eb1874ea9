//! The durable spool. This crate owns the commit protocol that makes `250 Ok: queued as ID`
//! true, the envelope format, and crash recovery. The scheduler never touches files; it calls
//! this crate.
//!
//! ## Layout (under `{data_dir}/spool/`)
//! - `incoming/ID.msg`, `incoming/ID.env`: staging; anything here at start is an unacknowledged
//!   transaction and is deleted.
//! - `queue/ID.msg`: the message as received, trace header prepended, CRLF line endings. Never
//!   changed after commit.
//! - `queue/ID.env`: the envelope ([`Envelope`], TOML, versioned), rewritten atomically as
//!   recipients are delivered. Its presence is what makes a message queued.
//! - `corrupt/`: envelopes that cannot be read are moved here at start, never deleted.
//!
//! ## Commit protocol ([`Spool::commit`])
//! 1. Write `incoming/ID.msg` and `incoming/ID.env` and make their data durable: with
//!    [`SyncMode::Syncfs`] (default) one `syncfs(2)` shared by every concurrent commit (group
//!    commit, [`SharedSync`]); with [`SyncMode::Fsync`] an fsync of each file.
//! 2. Rename the message, then the envelope, into `queue/`. Nothing is renamed before its bytes
//!    are on disk, so a crash can never leave a queued file with missing data.
//! 3. fsync `queue/`, shared by concurrent commits.
//! 4. Only then may the session reply 250.
//!
//! A crash before step 3 completes may leave `queue/ID.msg` without its envelope (deleted at
//! start), or an envelope whose message rename was lost (moved to `corrupt/`, though no 250 was
//! sent for it). Envelope updates use temp file, fsync, rename, fsync directory. Removal deletes
//! the envelope first, then the message, without an fsync (see [`Spool::remove`]).

mod envelope;
mod shared_sync;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use envelope::{Envelope, RcptState, Recipient, VERSION as ENVELOPE_VERSION};
use postern_types::QueueId;
pub use shared_sync::{SharedSync, SyncOp};

/// A spool operation failed; the session answers 451 4.3.0, the scheduler retries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    /// An envelope could not be parsed.
    #[error("envelope {path}: {message}")]
    Envelope { path: PathBuf, message: String },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SpoolError {
    let path = path.to_path_buf();
    move |source| SpoolError::Io { op, path, source }
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
        for d in [&incoming, &queue, &corrupt] {
            fs::create_dir_all(d).map_err(io_err("create", d))?;
        }
        for entry in fs::read_dir(&incoming).map_err(io_err("read", &incoming))? {
            let path = entry.map_err(io_err("read", &incoming))?.path();
            tracing::info!("spool: removing unacknowledged staged file {}", path.display());
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
        let queue_sync = SharedSync::open(&queue, SyncOp::FsyncDir).map_err(io_err("open", &queue))?;
        let data_sync = SharedSync::open(&incoming, SyncOp::Syncfs).map_err(io_err("open", &incoming))?;
        let device = std::os::unix::fs::MetadataExt::dev(&fs::metadata(&incoming).map_err(io_err("stat", &incoming))?);
        Ok(Self { incoming, queue, corrupt, mode, data_sync, queue_sync, device })
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

    /// Path of a queued message file.
    pub fn message_path(&self, id: QueueId) -> PathBuf {
        self.queue.join(format!("{id}.msg"))
    }

    fn envelope_path(&self, id: QueueId) -> PathBuf {
        self.queue.join(format!("{id}.env"))
    }

    /// Durably queues a message: `trace` (the Received header) followed by `message`, and its
    /// envelope. Returns only when both are on disk (see the commit protocol above).
    ///
    /// # Errors
    /// [`SpoolError::Io`]; staged files are removed, nothing is queued.
    pub fn commit(&self, env: &Envelope, trace: &[u8], message: &[u8]) -> Result<(), SpoolError> {
        let id = env.id;
        let staged_msg = self.incoming.join(format!("{id}.msg"));
        let staged_env = self.incoming.join(format!("{id}.env"));
        let result = (|| {
            let fsync = self.mode == SyncMode::Fsync;
            write_file(&staged_msg, &[trace, message], fsync)?;
            write_file(&staged_env, &[env.to_text().as_bytes()], fsync)?;
            if !fsync {
                self.data_sync.sync().map_err(io_err("syncfs", &self.incoming))?;
            }
            fs::rename(&staged_msg, self.message_path(id)).map_err(io_err("rename", &staged_msg))?;
            fs::rename(&staged_env, self.envelope_path(id)).map_err(io_err("rename", &staged_env))?;
            self.queue_sync.sync().map_err(io_err("fsync", &self.queue))
        })();
        if result.is_err() {
            for p in [&staged_msg, &staged_env, &self.envelope_path(id), &self.message_path(id)] {
                let _ = fs::remove_file(p);
            }
        }
        result
    }

    /// Atomically replaces a queued message's envelope (temp file, fsync, rename, fsync dir).
    ///
    /// # Errors
    /// [`SpoolError::Io`]; the previous envelope stays in place.
    pub fn update(&self, env: &Envelope) -> Result<(), SpoolError> {
        let tmp = self.queue.join(format!("{}.env.tmp", env.id));
        write_file(&tmp, &[env.to_text().as_bytes()], true)?;
        let dest = self.envelope_path(env.id);
        fs::rename(&tmp, &dest).map_err(io_err("rename", &tmp))?;
        self.queue_sync.sync().map_err(io_err("fsync", &self.queue))
    }

    /// Removes a finished message: envelope first, then the message file.
    ///
    /// The removal is not fsynced (as in Postfix): `kill -9` cannot undo an unlink, and after a
    /// power cut within the filesystem's commit interval the envelope may come back, so its
    /// recipients are delivered a second time. A duplicate, never a loss; in exchange every
    /// delivered message costs one directory sync less.
    ///
    /// # Errors
    /// [`SpoolError::Io`].
    pub fn remove(&self, id: QueueId) -> Result<(), SpoolError> {
        let env = self.envelope_path(id);
        fs::remove_file(&env).map_err(io_err("remove", &env))?;
        let msg = self.message_path(id);
        fs::remove_file(&msg).map_err(io_err("remove", &msg))
    }

    /// Reads a queued message (trace header included).
    ///
    /// # Errors
    /// [`SpoolError::Io`].
    pub fn read_message(&self, id: QueueId) -> Result<Vec<u8>, SpoolError> {
        let p = self.message_path(id);
        fs::read(&p).map_err(io_err("read", &p))
    }

    /// Lists every queued envelope, repairing what an interrupted commit or removal left:
    /// message files without an envelope are deleted, envelopes without a message or that cannot
    /// be parsed are moved to `corrupt/`.
    ///
    /// # Errors
    /// [`SpoolError::Io`] when the queue folder cannot be read.
    pub fn recover(&self) -> Result<Vec<Envelope>, SpoolError> {
        let mut envelopes = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for entry in fs::read_dir(&self.queue).map_err(io_err("read", &self.queue))? {
            let entry = entry.map_err(io_err("read", &self.queue))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        for name in &names {
            let path = self.queue.join(name);
            if name.ends_with(".env.tmp") {
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            } else if let Some(stem) = name.strip_suffix(".msg") {
                if !names.iter().any(|n| n.strip_suffix(".env") == Some(stem)) {
                    tracing::warn!("spool: removing message without envelope {}", path.display());
                    fs::remove_file(&path).map_err(io_err("remove", &path))?;
                }
            } else if let Some(stem) = name.strip_suffix(".env") {
                let text = fs::read_to_string(&path).map_err(io_err("read", &path))?;
                let has_msg = names.iter().any(|n| n.strip_suffix(".msg") == Some(stem));
                match Envelope::from_text(&text) {
                    Ok(env) if has_msg => envelopes.push(env),
                    parsed => {
                        let why = parsed.err().unwrap_or_else(|| "no message file".into());
                        tracing::error!("spool: moving {} to corrupt/: {why}", path.display());
                        let dest = self.corrupt.join(name);
                        fs::rename(&path, &dest).map_err(io_err("rename", &path))?;
                    }
                }
            }
        }
        self.queue_sync.sync().map_err(io_err("fsync", &self.queue))?;
        Ok(envelopes)
    }
}

/// Creates `path` with the concatenation of `parts`, fsynced when `fsync`.
fn write_file(path: &Path, parts: &[&[u8]], fsync: bool) -> Result<(), SpoolError> {
    let mut f: File = OpenOptions::new().write(true).create_new(true).open(path).map_err(io_err("create", path))?;
    for p in parts {
        f.write_all(p).map_err(io_err("write", path))?;
    }
    if fsync {
        f.sync_all().map_err(io_err("fsync", path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
