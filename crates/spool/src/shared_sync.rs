//! Group commit: one sync shared by every caller that needs it at the same time.
//!
//! A write or rename is durable once a sync that *began after it* has completed. When many
//! sessions commit at once, one sync started after all their writes covers them all: callers
//! that arrive while a sync is running wait for the next one, which a single caller performs for
//! everybody. This keeps the durability rule while the number of syncs per second is bounded by
//! the disk, not by the number of sessions.
//!
//! Two operations are shared this way: `fsync` of a directory (renames in it become durable) and
//! `syncfs(2)` of the filesystem (every written file on it becomes durable, in one journal
//! commit instead of one per file).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Condvar, Mutex};

/// What a [`SharedSync`] performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOp {
    /// `fsync(2)` of the directory: makes the renames in it durable.
    FsyncDir,
    /// `syncfs(2)` of the filesystem holding the directory: makes every write on it durable.
    Syncfs,
}

/// A sync operation shared between concurrent callers.
#[derive(Debug)]
pub struct SharedSync {
    dir: File,
    op: SyncOp,
    state: Mutex<SyncState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Tickets handed out: a caller's ticket is covered by an fsync that started after it.
    requested: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    running: bool,
}

impl SharedSync {
    /// Opens the directory `path`, the target of `op`.
    ///
    /// # Errors
    /// When it cannot be opened.
    pub fn open(path: &Path, op: SyncOp) -> io::Result<Self> {
        Ok(Self { dir: File::open(path)?, op, state: Mutex::default(), done: Condvar::new() })
    }

    fn perform(&self) -> io::Result<()> {
        match self.op {
            SyncOp::FsyncDir => self.dir.sync_all(),
            // SAFETY: syncfs on a descriptor we own; it reports write-back errors (Linux ≥ 5.8).
            SyncOp::Syncfs => match unsafe { libc::syncfs(self.dir.as_raw_fd()) } {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            },
        }
    }

    /// Returns once a sync that started after this call has succeeded.
    ///
    /// # Errors
    /// The sync's error.
    pub fn sync(&self) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.requested += 1;
        let ticket = st.requested;
        loop {
            if st.synced >= ticket {
                return Ok(());
            }
            if st.running {
                st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.running = true;
            let covers = st.requested;
            drop(st);
            let started = std::time::Instant::now();
            let result = self.perform();
            let took = started.elapsed().as_secs_f64();
            st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.running = false;
            match result {
                Ok(()) => {
                    let op = if self.op == SyncOp::Syncfs { "syncfs" } else { "fsync-dir" };
                    postern_metrics::metrics().spool_sync(op, took, covers - st.synced);
                    st.synced = covers;
                }
                Err(e) => {
                    // Only this caller learns of the failure directly; the others retry the fsync.
                    self.done.notify_all();
                    return Err(e);
                }
            }
            self.done.notify_all();
        }
    }
}
