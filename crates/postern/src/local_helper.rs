//! The local-delivery helper: least privilege that still delivers. With `[server] user` the
//! daemon drops root, yet a `|procmail` alias of carol must run as carol and a new
//! `/var/mail/carol` must be carol's. As OpenSMTPD's parent forks its mail delivery agents,
//! a helper forked before the drop keeps root for exactly that: it listens on
//! `{data_dir}/local.sock` (0600, the daemon's account) and forks a worker per request. The
//! worker bounds its own run time (`alarm`), reads the configuration and tables itself and
//! delivers only what they name: a command the aliases or routes name, run as the alias's
//! account or `[delivery] pipe_user`, never root; an mbox of a mailbox of the users table, at
//! the path `[delivery] mbox` gives, owned by the account of that name. So a compromised
//! daemon can ask for the deliveries the postmaster configured, with its own message bytes,
//! and nothing else: no command of its choice, no file of its choice, no root.
//!
//! The wire and the daemon's side are in [`postern_local::privileged`].

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_config::tables::{Route, Target};
use postern_config::{Config, Tables};
use postern_local::pipe::{self, PipeOutcome};
use postern_local::privileged::{Request, write_answer};
use postern_types::{Address, AddressError, ForwardPath, ReversePath};

/// Forks the helper, which binds `socket` (owned by `owner`, mode 0600) and serves until the
/// daemon dies. Returns once it listens: the socket's path, and the daemon's end of the
/// liveness channel, to keep open for the daemon's whole life. The helper ends when that end
/// closes: `PR_SET_PDEATHSIG` alone does not fire once the daemon has changed its user. Must
/// be called while the process is single-threaded and root.
///
/// # Errors
/// The fork failed, or the helper could not bind its socket (its reason).
pub(crate) fn spawn(config: &Path, data_dir: &Path, owner: (u32, u32)) -> anyhow::Result<(PathBuf, UnixStream)> {
    use std::io::{BufRead as _, BufReader, Write as _};
    let socket = data_dir.join("local.sock");
    let (ours, theirs) = UnixStream::pair()?;
    // SAFETY: single-threaded here (no runtime yet); the child leaves only through `_exit`.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error().into()),
        0 => {
            drop(ours);
            // SAFETY: prctl with constant arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            match bind(data_dir, &socket, owner) {
                Ok(listener) => {
                    let _ = (&theirs).write_all(b"ok\n");
                    serve(&listener, &theirs, config);
                }
                Err(e) => {
                    let _ = (&theirs).write_all(format!("{e}\n").as_bytes());
                }
            }
            // SAFETY: _exit never returns.
            unsafe { libc::_exit(0) }
        }
        _ => {
            drop(theirs);
            ours.set_read_timeout(Some(Duration::from_secs(30)))?;
            let mut line = String::new();
            BufReader::new(&ours).read_line(&mut line)?;
            match line.trim_end() {
                "ok" => {
                    ours.set_read_timeout(None)?;
                    Ok((socket, ours))
                }
                why => anyhow::bail!("the local-delivery helper cannot listen on {}: {why}", socket.display()),
            }
        }
    }
}

fn bind(data_dir: &Path, socket: &Path, (uid, gid): (u32, u32)) -> anyhow::Result<UnixListener> {
    crate::serve::create_data_dir(data_dir)?;
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    std::os::unix::fs::chown(socket, Some(uid), Some(gid))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts requests until the daemon's end of `alive` closes, a worker process each; reaps the
/// workers that ended.
fn serve(listener: &UnixListener, alive: &UnixStream, config: &Path) {
    use std::os::fd::AsRawFd as _;
    loop {
        let mut fds = [
            libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: alive.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfd structures, no timeout.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue;
        }
        // SAFETY: waitpid with WNOHANG on any child; no pointers kept.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        if fds[1].revents != 0 {
            // The daemon is gone (its end closed): so is the helper.
            return;
        }
        if fds[0].revents == 0 {
            continue;
        }
        let Ok((conn, _)) = listener.accept() else { continue };
        // SAFETY: the helper is single-threaded; the child leaves only through `_exit`.
        match unsafe { libc::fork() } {
            0 => {
                work(conn, config);
                // SAFETY: _exit never returns.
                unsafe { libc::_exit(0) }
            }
            -1 => {
                let why = PipeOutcome::TempFail("the local-delivery helper cannot fork".into());
                let _ = write_answer(&mut &conn, &why, "");
            }
            _ => drop(conn),
        }
    }
}

/// One request: checked against the configuration as it is on disk now, then delivered.
fn work(conn: UnixStream, config_path: &Path) {
    let Ok((config, tables)) = postern_config::load(config_path) else {
        let why = PipeOutcome::TempFail("the local-delivery helper cannot load the configuration".into());
        let _ = write_answer(&mut &conn, &why, "");
        return;
    };
    let bound = config.delivery.pipe_timeout.0.max(config.delivery.mbox_lock_timeout.0) + Duration::from_secs(60);
    // SAFETY: alarm has no preconditions; SIGALRM's default action ends this worker, so no
    // request holds a process longer than the bound, whatever it writes to.
    unsafe { libc::alarm(u32::try_from(bound.as_secs()).unwrap_or(u32::MAX)) };
    let max = usize::try_from(config.limits.max_message_size.0.saturating_mul(2)).unwrap_or(usize::MAX);
    let (outcome, output) = match Request::read(&mut &conn, max) {
        Ok((request, message)) => deliver(&config, &tables, &request, &message),
        Err(e) => (PipeOutcome::TempFail(format!("malformed request: {e}")), String::new()),
    };
    let _ = write_answer(&mut &conn, &outcome, &output);
}

fn deliver(config: &Config, tables: &Tables, request: &Request, message: &[u8]) -> (PipeOutcome, String) {
    let refuse = |why: &str| {
        tracing::warn!("local-delivery helper: refused {request:?}: {why}");
        (PipeOutcome::TempFail(format!("refused by the local-delivery helper: {why}")), String::new())
    };
    match request {
        Request::Pipe { alias, command, sender, recipient, original_recipient, extension } => {
            if !config.delivery.allow_pipes {
                return refuse("pipes are off ([delivery] allow_pipes = false)");
            }
            if !names_command(tables, alias, command) {
                return refuse("no table line names that command");
            }
            let Some(account) = pipe::account(alias).or_else(|| pipe::account(&config.delivery.pipe_user)) else {
                return refuse("no account to run the pipe as ([delivery] pipe_user)");
            };
            let Ok((sender, recipient)) = paths(sender, recipient) else { return refuse("a malformed address") };
            let Ok(original_recipient) = ForwardPath::parse(original_recipient) else {
                return refuse("a malformed forward-path");
            };
            let job = pipe::Job {
                command,
                account: &account,
                sender: &sender,
                recipient: &recipient,
                original_recipient: &original_recipient,
                extension,
                timeout: config.delivery.pipe_timeout.0,
            };
            pipe::deliver(&job, message)
        }
        Request::Mbox { mailbox, sender, recipient } => {
            if !tables.users.contains_key(mailbox.as_str()) {
                return refuse("not a mailbox of the users table");
            }
            let Some(account) = pipe::account(mailbox) else { return refuse("no account of that name") };
            let path = config.mbox_of(mailbox);
            let owner = Some((account.uid, account.gid));
            let timeout = config.delivery.mbox_lock_timeout.0;
            let Ok((sender, recipient)) = paths(sender, recipient) else { return refuse("a malformed address") };
            match postern_local::mbox::deliver(&path, owner, &sender, &recipient, message, timeout) {
                Ok(()) => (PipeOutcome::Delivered, String::new()),
                Err(e) => (PipeOutcome::TempFail(e.to_string()), String::new()),
            }
        }
    }
}

/// The request's reverse-path ("" is the null sender) and recipient, typed: the request comes
/// from the daemon, which runs as `[server] user` and is checked like any outsider.
fn paths(sender: &str, recipient: &str) -> Result<(ReversePath, Address), AddressError> {
    let sender = if sender.is_empty() { ReversePath::Null } else { ReversePath::Mailbox(Address::parse(sender)?) };
    Ok((sender, Address::parse(recipient)?))
}

/// Whether the alias `alias` (or, when empty, a `pipe:` route) names `command`.
fn names_command(tables: &Tables, alias: &str, command: &str) -> bool {
    if alias.is_empty() {
        tables.routes.values().any(|r| matches!(r, Route::Pipe(c) if c == command))
    } else {
        let targets = tables.aliases.get(&alias.to_lowercase());
        targets.is_some_and(|t| t.iter().any(|t| matches!(t, Target::Pipe(c) if c == command)))
    }
}
