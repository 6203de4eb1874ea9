//! Delivery to a command (`|command` in the aliases), as Postfix's pipe(8) and local(8) do it:
//! the command runs under `/bin/sh -c` as an unprivileged account (never as root), with the
//! message on its standard input (`Return-Path` and `Delivered-To` first, LF line endings), the
//! environment Postfix's local(8) gives it (`SENDER`, `RECIPIENT`, `ORIGINAL_RECIPIENT`, `USER`,
//! `EXTENSION`, `DOMAIN`, `LOCAL`, `HOME`, `SHELL`, `PATH`), and a time limit. Its exit status
//! decides, per sysexits(3) as Postfix's `sys_exits` table maps it: 0 delivered; 75
//! (EX_TEMPFAIL), 71 (EX_OSERR), 74 (EX_IOERR), 78 (EX_CONFIG), a signal or the time limit:
//! retried; any other status: bounced. The first [`OUTPUT_LIMIT`] bytes the command prints go to
//! the log and the DSN.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use postern_types::{Address, ForwardPath, ReversePath};

/// Bytes of the command's output kept for the log (never for the DSN: a command's output does
/// not leave the host).
pub const OUTPUT_LIMIT: usize = 2048;

/// An unprivileged account to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name (`$USER`).
    pub name: String,
    /// Numeric user ID (never 0).
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Home directory (`$HOME`, the working directory).
    pub home: String,
}

/// What the command is run for.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    /// The command line, run with `/bin/sh -c`.
    pub command: &'a str,
    /// Who runs it.
    pub account: &'a Account,
    /// The message's reverse-path (`$SENDER`: empty for the null sender).
    pub sender: &'a ReversePath,
    /// The final recipient address.
    pub recipient: &'a Address,
    /// The forward-path as given in RCPT TO.
    pub original_recipient: &'a ForwardPath,
    /// The sub-address of the recipient (`lists` of `bob+lists`), or empty.
    pub extension: &'a str,
    /// The time limit.
    pub timeout: Duration,
}

/// The result of a pipe delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipeOutcome {
    /// Exit status 0.
    Delivered,
    /// Retry later: the reason (exit status or signal).
    TempFail(String),
    /// Bounce: the exit status and its sysexits name.
    PermFail {
        /// The exit status.
        status: i32,
        /// The reason text.
        text: String,
    },
}

/// The `getpwnam(3)` entry of `name`, if it exists and is not root.
pub fn account(name: &str) -> Option<Account> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: zeroed passwd is a valid out-parameter; the buffer outlives the call and the
    // strings are copied before it is dropped.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result = std::ptr::null_mut();
        let rc = libc::getpwnam_r(c.as_ptr(), &raw mut pwd, buf.as_mut_ptr(), buf.len(), &raw mut result);
        if rc != 0 || result.is_null() || pwd.pw_uid == 0 {
            return None;
        }
        let home = std::ffi::CStr::from_ptr(pwd.pw_dir).to_string_lossy().into_owned();
        Some(Account { name: name.to_owned(), uid: pwd.pw_uid, gid: pwd.pw_gid, home })
    }
}

/// Runs `job` with `message` (CRLF, as queued) on its standard input. Returns the outcome,
/// whose text names the exit status or signal only, and apart from it the first
/// [`OUTPUT_LIMIT`] bytes of what the command wrote (stdout, then stderr), for the log: the
/// outcome's text reaches the sender in a DSN, and a command's output (the files it read, the
/// programs it ran) must not.
pub fn deliver(job: &Job<'_>, message: &[u8]) -> (PipeOutcome, String) {
    if job.account.uid == 0 {
        return (PipeOutcome::TempFail("refusing to run a pipe as root".into()), String::new());
    }
    let sender = job.sender.mailbox().map(ToString::to_string).unwrap_or_default();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(job.command)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("SHELL", "/bin/sh")
        .env("HOME", &job.account.home)
        .env("USER", &job.account.name)
        .env("LOGNAME", &job.account.name)
        .env("SENDER", &sender)
        .env("RECIPIENT", job.recipient.to_string())
        .env("ORIGINAL_RECIPIENT", job.original_recipient.to_string())
        .env("EXTENSION", job.extension)
        .env("DOMAIN", job.recipient.domain())
        .env("LOCAL", job.recipient.local_part())
        .current_dir(if std::path::Path::new(&job.account.home).is_dir() { &job.account.home } else { "/" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills whatever the shell started too.
        .process_group(0);
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // std drops the supplementary groups when it sets the uid as root.
        cmd.uid(job.account.uid).gid(job.account.gid);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (PipeOutcome::TempFail(format!("cannot run {:?}: {e}", job.command)), String::new()),
    };
    let mut input = format!("Return-Path: {}\nDelivered-To: {}\n", job.sender, job.recipient).into_bytes();
    crate::write_lf(&mut input, message).expect("writing to a Vec cannot fail");
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        // A command that exits without reading all its input gets EPIPE: not our error.
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(&input);
        }
    });
    let output = collect_output(&mut child);
    let status = wait(&mut child, job.timeout);
    let _ = writer.join();
    let said = output.join().unwrap_or_default().trim().to_owned();
    let outcome = match status {
        None => PipeOutcome::TempFail(format!("command timed out after {}s", job.timeout.as_secs())),
        Some(Err(signal)) => PipeOutcome::TempFail(format!("command killed by signal {signal}")),
        Some(Ok(0)) => PipeOutcome::Delivered,
        Some(Ok(code @ (71 | 74 | 75 | 78))) => {
            PipeOutcome::TempFail(format!("command exit status {code} ({})", sysexit_name(code)))
        }
        Some(Ok(code)) => {
            PipeOutcome::PermFail { status: code, text: format!("command exit status {code} ({})", sysexit_name(code)) }
        }
    };
    (outcome, said)
}

/// Reads up to [`OUTPUT_LIMIT`] bytes of the child's stdout and stderr, in a thread.
fn collect_output(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    let (out, err) = (child.stdout.take(), child.stderr.take());
    std::thread::spawn(move || {
        let mut text = Vec::new();
        for mut stream in
            [out.map(|s| Box::new(s) as Box<dyn Read + Send>), err.map(|s| Box::new(s) as _)].into_iter().flatten()
        {
            let mut buf = Vec::new();
            let _ = stream.read_to_end(&mut buf);
            text.extend(buf.into_iter().take(OUTPUT_LIMIT.saturating_sub(text.len())));
        }
        String::from_utf8_lossy(&text).replace('\n', " ")
    })
}

/// The exit code (`Ok`) or signal (`Err`), or `None` when `timeout` passed (the process group
/// is then killed).
fn wait(child: &mut std::process::Child, timeout: Duration) -> Option<Result<i32, i32>> {
    use std::os::unix::process::ExitStatusExt as _;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s.code().ok_or_else(|| s.signal().unwrap_or(0))),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                // SAFETY: kill(2) on the child's process group (its pid, set by process_group).
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The sysexits(3) name of `code`.
fn sysexit_name(code: i32) -> &'static str {
    match code {
        64 => "EX_USAGE",
        65 => "EX_DATAERR",
        66 => "EX_NOINPUT",
        67 => "EX_NOUSER",
        68 => "EX_NOHOST",
        69 => "EX_UNAVAILABLE",
        70 => "EX_SOFTWARE",
        71 => "EX_OSERR",
        72 => "EX_OSFILE",
        73 => "EX_CANTCREAT",
        74 => "EX_IOERR",
        75 => "EX_TEMPFAIL",
        76 => "EX_PROTOCOL",
        77 => "EX_NOPERM",
        78 => "EX_CONFIG",
        _ => "unknown",
    }
}

/// The enhanced status code for a bounced pipe (RFC 3463), after Postfix's `sys_exits` table.
pub fn status_of(code: i32) -> (u8, u16, u16) {
    match code {
        67 => (5, 1, 1),
        68 => (5, 1, 2),
        65 => (5, 6, 0),
        73 => (5, 2, 0),
        76 => (5, 5, 0),
        77 => (5, 7, 0),
        _ => (5, 3, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody() -> Account {
        account("nobody").unwrap_or(Account { name: "nobody".into(), uid: 65534, gid: 65534, home: "/".into() })
    }

    fn job<'a>(command: &'a str, account: &'a Account) -> Job<'a> {
        static SENDER: std::sync::LazyLock<ReversePath> =
            std::sync::LazyLock::new(|| ReversePath::Mailbox(Address::new("a", "x.test")));
        static RECIPIENT: std::sync::LazyLock<Address> = std::sync::LazyLock::new(|| Address::new("bob", "y.test"));
        static ORIGINAL: std::sync::LazyLock<ForwardPath> =
            std::sync::LazyLock::new(|| ForwardPath::Mailbox(Address::new("team", "y.test")));
        Job {
            command,
            account,
            sender: &SENDER,
            recipient: &RECIPIENT,
            original_recipient: &ORIGINAL,
            extension: "",
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn exit_codes_environment_and_timeout() {
        let acct = nobody();
        assert_eq!(deliver(&job("cat >/dev/null", &acct), b"Subject: x\r\n\r\nx\r\n").0, PipeOutcome::Delivered);
        assert!(
            matches!(deliver(&job("exit 75", &acct), b"x\r\n").0, PipeOutcome::TempFail(t) if t.contains("EX_TEMPFAIL"))
        );
        // The output is for the log; the outcome (what a DSN carries) names the status only.
        let (bounced, output) = deliver(&job("echo no such user >&2; id; exit 67", &acct), b"x\r\n");
        assert_eq!(bounced, PipeOutcome::PermFail { status: 67, text: "command exit status 67 (EX_NOUSER)".into() });
        assert!(output.starts_with("uid=") && output.ends_with("no such user"), "{output}");
        assert_eq!(status_of(67), (5, 1, 1));
        let env = deliver(
            &job(
                r#"test "$SENDER $RECIPIENT $ORIGINAL_RECIPIENT $DOMAIN $LOCAL" = "a@x.test bob@y.test team@y.test y.test bob" || exit 65"#,
                &acct,
            ),
            b"x\r\n",
        );
        assert_eq!(env.0, PipeOutcome::Delivered);
        let slow = Job { timeout: Duration::from_millis(200), ..job("sleep 5", &acct) };
        assert!(matches!(deliver(&slow, b"x\r\n").0, PipeOutcome::TempFail(t) if t.contains("timed out")));
        let root = Account { uid: 0, ..acct.clone() };
        assert!(matches!(deliver(&job("true", &root), b"x\r\n").0, PipeOutcome::TempFail(t) if t.contains("root")));
        assert!(account("root").is_none(), "root is never an account to run as");
    }
}
