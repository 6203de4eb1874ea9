//! sendmail(8)'s command line, parsed by hand: its flags (`-oem`, `-B8BITMIME`, `-q30m`,
//! `-qRdomain`) do not fit an argument parser's conventions. Pure: argv in, [`Invocation`] or a
//! [`UsageError`] naming the flag out.
//!
//! Flags follow sendmail 8.14's man page; as with getopt(3) on glibc, options may follow the
//! recipients, and `--` ends them. Options that take a value accept it attached (`-fuser`) or
//! as the next word (`-f user`).

use std::ffi::OsString;
use std::path::PathBuf;

use postern_types::dsn::{Notify, is_printable_xtext};

/// What the command was asked to do (`-b` mode, `-q`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `-bm` (default): read a message from standard input and queue it.
    Deliver,
    /// `-bs`: an SMTP session on standard input and output, as a local submission.
    Smtp,
    /// `-bp`, `mailq`: list the queue.
    List,
    /// `-bi`, `newaliases`: check the tables, then have the daemon reload them.
    Rebuild,
    /// `-bv`: print where each recipient would go; send nothing.
    Verify,
    /// `-bt`: the address test: addresses on standard input, an explanation for each.
    AddressTest,
    /// `-q`, `-qI`, `-qR`, `-qS`: deliver the queue (or part of it) now.
    Flush(Flush),
    /// `-q30m`: a queue run interval, which the daemon does not need.
    QueueInterval(String),
    /// `--help`.
    Help,
}

/// The filter of a `-q` run (sendmail's `-qI`, `-qR`, `-qS`: substrings there; here a queue
/// ID and domains, which is what they are used for).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Flush {
    /// `-qIID`.
    pub(crate) id: Option<String>,
    /// `-qRdomain`: recipient domain.
    pub(crate) recipient_domain: Option<String>,
    /// `-qSdomain`: sender domain.
    pub(crate) sender_domain: Option<String>,
}

/// `-oe`: how errors in the submission itself are reported (sendmail's ErrorMode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ErrorMode {
    /// `-oep` (default), `-oew`: print to standard error, exit non-zero.
    #[default]
    Print,
    /// `-oeq`: exit status only.
    Quiet,
    /// `-oem`: mail the error back to the sender, and exit non-zero.
    Mail,
    /// `-oee`: mail the error back and exit 0 when that worked.
    MailExitZero,
}

/// `-B`: the body type (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// `-B7BIT`.
    SevenBit,
    /// `-B8BITMIME`.
    EightBitMime,
}

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invocation {
    pub(crate) mode: Mode,
    /// `--config FILE` or `-C FILE`.
    pub(crate) config: Option<PathBuf>,
    /// `-t`: recipients from To, Cc, Bcc.
    pub(crate) read_recipients: bool,
    /// `-i`, `-oi`: a lone `.` line does not end the message.
    pub(crate) ignore_dots: bool,
    /// `-f`, `-r`: the envelope sender (reverse-path).
    pub(crate) sender: Option<String>,
    /// `-F`: the full name for a From header added when missing.
    pub(crate) full_name: Option<String>,
    /// `-B`.
    pub(crate) body: Option<Body>,
    /// `-oe`.
    pub(crate) errors: ErrorMode,
    /// `-N` (RFC 3461 NOTIFY).
    pub(crate) notify: Option<Notify>,
    /// `-R full|hdrs` (RFC 3461 RET): true for full.
    pub(crate) ret_full: Option<bool>,
    /// `-V` (RFC 3461 ENVID), xtext.
    pub(crate) envid: Option<String>,
    /// `-v`.
    pub(crate) verbose: bool,
    /// Recipient arguments, as given.
    pub(crate) recipients: Vec<String>,
}

impl Default for Invocation {
    fn default() -> Self {
        Self {
            mode: Mode::Deliver,
            config: None,
            read_recipients: false,
            ignore_dots: false,
            sender: None,
            full_name: None,
            body: None,
            errors: ErrorMode::Print,
            notify: None,
            ret_full: None,
            envid: None,
            verbose: false,
            recipients: Vec::new(),
        }
    }
}

/// A flag the command does not know or a value it cannot use; displayed as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} (see `sendmail --help`)")]
pub(crate) struct UsageError(String);

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// Parses sendmail's arguments (without the program name).
///
/// # Errors
/// An unknown flag, a missing or bad value, naming the flag.
pub(crate) fn parse(args: &[OsString]) -> Result<Invocation, UsageError> {
    let mut inv = Invocation::default();
    let mut words = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(word) = words.next() {
        if word == "--" {
            inv.recipients.extend(words.by_ref());
            break;
        }
        if word == "--help" {
            inv.mode = Mode::Help;
            continue;
        }
        if let Some(path) = word.strip_prefix("--config=") {
            inv.config = Some(path.into());
            continue;
        }
        if word == "--config" {
            inv.config = Some(words.next().ok_or_else(|| usage("--config needs a file"))?.into());
            continue;
        }
        let Some(flag) = word.strip_prefix('-').filter(|f| !f.is_empty()) else {
            inv.recipients.push(word);
            continue;
        };
        let (letter, rest) = flag.split_at(flag.chars().next().map_or(0, char::len_utf8));
        let mut value = |name: &str| -> Result<String, UsageError> {
            if rest.is_empty() {
                words.next().ok_or_else(|| usage(format!("-{name} needs a value")))
            } else {
                Ok(rest.to_owned())
            }
        };
        match letter {
            "t" | "i" | "v" | "U" | "m" if rest.is_empty() => match letter {
                "t" => inv.read_recipients = true,
                "i" => inv.ignore_dots = true,
                "v" => inv.verbose = true,
                // -U (initial user submission) and -m (me too) change nothing here.
                _ => {}
            },
            "f" | "r" => inv.sender = Some(value(letter)?),
            "F" => inv.full_name = Some(value("F")?),
            "C" => inv.config = Some(value("C")?.into()),
            "B" => inv.body = Some(body(&value("B")?)?),
            "N" => {
                let v = value("N")?;
                inv.notify = Some(
                    Notify::parse(&v)
                        .ok_or_else(|| usage(format!("-N {v}: use never, or a list of success, failure, delay")))?,
                );
            }
            "R" => {
                inv.ret_full = Some(match value("R")?.to_ascii_lowercase().as_str() {
                    "full" => true,
                    "hdrs" => false,
                    v => return Err(usage(format!("-R {v}: use full or hdrs"))),
                });
            }
            "V" => {
                let v = value("V")?;
                if v.is_empty() || v.len() > 100 || !is_printable_xtext(&v) {
                    return Err(usage(format!("-V {v}: an envelope ID is up to 100 characters of xtext")));
                }
                inv.envid = Some(v);
            }
            // -L tag (syslog tag) and -h N (hop count) are accepted and have no effect.
            "L" | "h" => {
                value(letter)?;
            }
            "o" => option(&mut inv, rest)?,
            "b" => inv.mode = mode(rest)?,
            "q" => inv.mode = queue_run(rest)?,
            _ => return Err(usage(format!("unknown option -{flag}"))),
        }
    }
    Ok(inv)
}

fn body(v: &str) -> Result<Body, UsageError> {
    match v.to_ascii_uppercase().as_str() {
        "8BITMIME" => Ok(Body::EightBitMime),
        "7BIT" => Ok(Body::SevenBit),
        _ => Err(usage(format!("-B {v}: use 8BITMIME or 7BIT"))),
    }
}

/// `-oX...`: the options of sendmail.cf's single-letter form that programs pass.
fn option(inv: &mut Invocation, o: &str) -> Result<(), UsageError> {
    match o {
        "i" => inv.ignore_dots = true,
        "ep" | "ew" => inv.errors = ErrorMode::Print,
        "eq" => inv.errors = ErrorMode::Quiet,
        "em" => inv.errors = ErrorMode::Mail,
        "ee" => inv.errors = ErrorMode::MailExitZero,
        // Delivery modes: Postern always commits durably, then delivers in the background
        // (as Postfix's sendmail does for every -od).
        "di" | "db" | "dq" | "dd" | "m" => {}
        _ => return Err(usage(format!("unknown option -o{o}"))),
    }
    Ok(())
}

fn mode(m: &str) -> Result<Mode, UsageError> {
    Ok(match m {
        "m" => Mode::Deliver,
        "s" => Mode::Smtp,
        "p" => Mode::List,
        "i" => Mode::Rebuild,
        "v" => Mode::Verify,
        "t" => Mode::AddressTest,
        "d" | "D" => return Err(usage(format!("-b{m}: run the daemon with `postern serve`"))),
        _ => return Err(usage(format!("unknown mode -b{m}"))),
    })
}

/// `-q[I|R|S]VALUE` or `-qDURATION`.
fn queue_run(q: &str) -> Result<Mode, UsageError> {
    let mut flush = Flush::default();
    let non_empty = |v: &str, what: &str| {
        if v.is_empty() {
            Err(usage(format!("-q{what} needs a value, e.g. -q{what}example.org")))
        } else {
            Ok(v.to_owned())
        }
    };
    if q.is_empty() || q == "f" {
        return Ok(Mode::Flush(flush));
    }
    if let Some(v) = q.strip_prefix('I') {
        flush.id = Some(non_empty(v, "I")?);
    } else if let Some(v) = q.strip_prefix('R') {
        flush.recipient_domain = Some(non_empty(v, "R")?.trim_start_matches('@').to_owned());
    } else if let Some(v) = q.strip_prefix('S') {
        flush.sender_domain = Some(non_empty(v, "S")?.trim_start_matches('@').to_owned());
    } else if q.trim_end_matches(['s', 'm', 'h', 'd', 'w']).chars().all(|c| c.is_ascii_digit()) {
        return Ok(Mode::QueueInterval(q.to_owned()));
    } else {
        return Err(usage(format!("unknown queue option -q{q}")));
    }
    Ok(Mode::Flush(flush))
}

/// The `--help` text.
pub(crate) const HELP: &str = "\
usage: sendmail [options] [recipient ...]      (Postern's sendmail)
  -t            recipients from To, Cc and Bcc (Bcc is removed)
  -i, -oi       a line with a single dot does not end the message
  -f ADDR, -r ADDR  envelope sender;   -F NAME  full name for an added From header
  -B 8BITMIME|7BIT  body type;   -N never|success,failure,delay;   -R full|hdrs;   -V ENVID
  -oep -oeq -oem -oee  errors: print, quiet, mail back, mail back and exit 0
  -odi -odb -odq  accepted: mail is always queued durably, then delivered
  -bm (default) -bs (SMTP on stdin/stdout) -bp (= mailq) -bi (= newaliases)
  -bv (where would it go)  -bt (address test: addresses on stdin)
  -q, -qI ID, -qR DOMAIN, -qS DOMAIN   deliver the queue now
  -C FILE, --config FILE  configuration (default $POSTERN_CONFIG, else /etc/postern/postern.toml)
Exit codes (sysexits): 0 queued, 64 usage, 65 bad message, 67 unknown user, 75 try again.
";

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Invocation, UsageError> {
        parse(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn debian_callers() {
        // Debian cron.
        let cron = p(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]).unwrap();
        assert_eq!(cron.full_name.as_deref(), Some("CronDaemon"));
        assert!(cron.ignore_dots);
        assert_eq!(cron.body, Some(Body::EightBitMime));
        assert_eq!(cron.errors, ErrorMode::Mail);
        assert_eq!(cron.recipients, ["root"]);
        // PHP mail(), s-nail.
        let php = p(&["-t", "-i"]).unwrap();
        assert!(php.read_recipients && php.ignore_dots && php.recipients.is_empty());
        let mailx = p(&["-oi", "-f", "me@x.test", "--", "-odd-name@x.test"]).unwrap();
        assert_eq!(mailx.sender.as_deref(), Some("me@x.test"));
        assert_eq!(mailx.recipients, ["-odd-name@x.test"]);
        assert_eq!(p(&["-bs"]).unwrap().mode, Mode::Smtp);
    }

    #[test]
    fn modes_and_queue_runs() {
        assert_eq!(p(&["-bp"]).unwrap().mode, Mode::List);
        assert_eq!(p(&["-bi"]).unwrap().mode, Mode::Rebuild);
        assert_eq!(p(&["-bv", "a@b.test"]).unwrap().mode, Mode::Verify);
        assert_eq!(p(&["-bt"]).unwrap().mode, Mode::AddressTest);
        assert_eq!(p(&["-q"]).unwrap().mode, Mode::Flush(Flush::default()));
        assert_eq!(p(&["-q30m"]).unwrap().mode, Mode::QueueInterval("30m".into()));
        let Mode::Flush(f) = p(&["-qRyahoo.com"]).unwrap().mode else { panic!() };
        assert_eq!(f.recipient_domain.as_deref(), Some("yahoo.com"));
        let Mode::Flush(f) = p(&["-qI0001"]).unwrap().mode else { panic!() };
        assert_eq!(f.id.as_deref(), Some("0001"));
        let Mode::Flush(f) = p(&["-qS@example.org"]).unwrap().mode else { panic!() };
        assert_eq!(f.sender_domain.as_deref(), Some("example.org"));
    }

    #[test]
    fn dsn_flags() {
        let i = p(&["-N", "success,failure", "-R", "hdrs", "-Vabc+2B", "x@y.test"]).unwrap();
        assert_eq!(i.notify, Some(Notify { success: true, failure: true, delay: false }));
        assert_eq!(i.ret_full, Some(false));
        assert_eq!(i.envid.as_deref(), Some("abc+2B"));
        assert_eq!(p(&["-Nnever"]).unwrap().notify, Some(Notify::NEVER));
    }

    #[test]
    fn errors_name_the_flag() {
        for (args, needle) in [
            (&["-X", "log"][..], "-X"),
            (&["-oQ/var/spool"][..], "-oQ/var/spool"),
            (&["-B", "binary"][..], "-B binary"),
            (&["-bd"][..], "postern serve"),
            (&["-bz"][..], "-bz"),
            (&["-qXfoo"][..], "-qXfoo"),
            (&["-f"][..], "-f needs a value"),
            (&["-N", "always"][..], "-N always"),
            (&["-tx"][..], "-tx"),
        ] {
            let e = p(args).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
