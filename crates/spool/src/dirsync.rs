//! Group commit for directory fsyncs.
//!
//! A rename is durable once its directory is fsynced. When many sessions commit at once, one
//! fsync started after all their renames covers them all: callers that arrive while an fsync is
//! running wait for the next one, which a single caller performs for everybody. This keeps the
//! durability rule (nobody returns before an fsync that began after its rename) while the number
//! of directory fsyncs per second stays bounded by the disk, not by the number of sessions.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Condvar, Mutex};

/// A directory whose fsyncs are shared between concurrent callers.
#[derive(Debug)]
pub struct DirSync {
    dir: File,
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

impl DirSync {
    /// Opens the directory `path`.
    ///
    /// # Errors
    /// When it cannot be opened.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self { dir: File::open(path)?, state: Mutex::default(), done: Condvar::new() })
    }

    /// Returns once an fsync of the directory that started after this call has succeeded.
    ///
    /// # Errors
    /// The fsync's error.
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
            let result = self.dir.sync_all();
            st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.running = false;
            match result {
                Ok(()) => st.synced = covers,
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
