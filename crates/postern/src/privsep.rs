//! Privilege separation for `[server] user`, as OpenSMTPD splits its parent from its workers:
//! before the daemon drops root, it forks a small helper that stays root and does one thing,
//! read the secret files that the configuration file names (the `[tls]` certificate and key,
//! `[[tls.sni]]` pairs, `[[dkim.key]]` keys), and hand their bytes to the unprivileged daemon
//! over a socketpair when it reloads. So `postern reload` works with certbot's root-only
//! `privkey.pem` and root-only DKIM keys while nothing that talks SMTP runs as root.
//!
//! What the helper reads is decided by the helper: it parses the configuration file itself
//! (the path fixed at start), so a compromised daemon can ask "the keys" but cannot name a
//! file. It runs no async runtime, opens no socket of its own, dies with the daemon
//! (`PR_SET_PDEATHSIG`), and stops when the socketpair closes.
//!
//! Wire format, daemon → helper: the line `keys`. Helper → daemon, per file in
//! [`postern_config::files::secret_files`] order: `ok PATH<TAB>LENGTH` then LENGTH bytes, or
//! `err PATH<TAB>MESSAGE`; then `end`. Each file is at most [`MAX_FILE`] bytes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use postern_config::FileSource;

/// The largest secret file handed over, in bytes (a PEM chain is a few KiB).
const MAX_FILE: u64 = 1024 * 1024;

/// The daemon's end of the socketpair to the helper.
#[derive(Debug)]
pub(crate) struct Helper {
    stream: Mutex<UnixStream>,
}

/// Why the helper could not be started or asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HelperError {
    /// The socketpair or the fork failed.
    #[error("cannot start the privileged helper: {0}")]
    Start(std::io::Error),
    /// The exchange broke or the answer was malformed.
    #[error("privileged helper: {0}")]
    Exchange(String),
}

impl Helper {
    /// Forks the helper. Must be called while the process is single-threaded and root (before
    /// the runtime starts). `close_in_child`: descriptors of the daemon's the helper must not
    /// keep (another helper's liveness channel, whose end must close when the daemon dies).
    ///
    /// # Errors
    /// [`HelperError::Start`].
    pub(crate) fn spawn(config: &Path, close_in_child: &[std::os::fd::RawFd]) -> Result<Self, HelperError> {
        let (ours, theirs) = UnixStream::pair().map_err(HelperError::Start)?;
        // SAFETY: the process is single-threaded here (no runtime yet), so the child may run
        // arbitrary code; it leaves only through `_exit`.
        match unsafe { libc::fork() } {
            -1 => Err(HelperError::Start(std::io::Error::last_os_error())),
            0 => {
                drop(ours);
                for fd in close_in_child {
                    // SAFETY: closing a descriptor this child inherited and never uses.
                    unsafe { libc::close(*fd) };
                }
                // SAFETY: prctl with constant arguments; _exit never returns.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    serve(theirs, config);
                    libc::_exit(0)
                }
            }
            _ => Ok(Self { stream: Mutex::new(ours) }),
        }
    }

    /// The bytes of every secret file the configuration names, read by the helper as root.
    ///
    /// # Errors
    /// [`HelperError::Exchange`]; a file the helper could not read is not an error here but
    /// an error when it is read from the result.
    pub(crate) fn fetch(&self) -> Result<Fetched, HelperError> {
        let stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        let broken = |e: std::io::Error| HelperError::Exchange(e.to_string());
        (&*stream).write_all(b"keys\n").map_err(broken)?;
        let mut reader = BufReader::new(&*stream);
        let mut files = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(broken)? == 0 {
                return Err(HelperError::Exchange("closed the connection".into()));
            }
            let line = line.trim_end_matches('\n');
            if line == "end" {
                return Ok(Fetched(files));
            }
            let bad = || HelperError::Exchange(format!("unexpected answer {line:?}"));
            let (kind, rest) = line.split_once(' ').ok_or_else(bad)?;
            let (path, value) = rest.split_once('\t').ok_or_else(bad)?;
            let entry = match kind {
                "ok" => {
                    let len: u64 = value.parse().map_err(|_| bad())?;
                    if len > MAX_FILE {
                        return Err(bad());
                    }
                    let mut bytes = vec![0; usize::try_from(len).map_err(|_| bad())?];
                    reader.read_exact(&mut bytes).map_err(broken)?;
                    Ok(bytes)
                }
                "err" => Err(HelperReadError(value.to_owned())),
                _ => return Err(bad()),
            };
            files.insert(PathBuf::from(path), entry);
        }
    }
}

/// The secret files as the helper read them.
#[derive(Debug)]
pub(crate) struct Fetched(HashMap<PathBuf, Result<Vec<u8>, HelperReadError>>);

/// The helper's error reading a file, as it sent it (one line of text: the system's error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0} (read by the privileged helper)")]
pub(crate) struct HelperReadError(String);

impl FileSource for Fetched {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        match self.0.get(path) {
            Some(Ok(bytes)) => Ok(bytes.clone()),
            Some(Err(e)) => Err(std::io::Error::other(e.clone())),
            None => Err(std::io::Error::other(
                "not named by the configuration file the privileged helper read; try the reload again",
            )),
        }
    }
}

/// The helper's loop: one answer per request line, until the daemon closes its end.
fn serve(stream: UnixStream, config: &Path) {
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
        let answer = if line.trim_end() == "keys" { answer_keys(config) } else { b"end\n".to_vec() };
        if (&stream).write_all(&answer).is_err() {
            return;
        }
        line.clear();
    }
}

fn answer_keys(config: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let paths = match postern_config::load_without_tables(config) {
        Ok(c) => postern_config::files::secret_files(&c),
        Err(_) => Vec::new(),
    };
    for path in paths {
        let name = path.to_string_lossy();
        if name.contains(['\t', '\n']) {
            continue;
        }
        let read = std::fs::File::open(&path).and_then(|f| {
            let mut bytes = Vec::new();
            f.take(MAX_FILE + 1).read_to_end(&mut bytes).map(|_| bytes)
        });
        match read {
            Ok(bytes) if bytes.len() as u64 <= MAX_FILE => {
                out.extend_from_slice(format!("ok {name}\t{}\n", bytes.len()).as_bytes());
                out.extend_from_slice(&bytes);
            }
            Ok(_) => out.extend_from_slice(format!("err {name}\tlarger than {MAX_FILE} bytes\n").as_bytes()),
            Err(e) => out.extend_from_slice(format!("err {name}\t{e}\n").as_bytes()),
        }
    }
    out.extend_from_slice(b"end\n");
    out
}
