//! Crash points: named places in the durability steps (staging write, data sync, rename into
//! the queue, queue-folder sync, envelope update, Maildir `tmp/` write, `tmp/` → `new/`, a
//! remote `250` before its state is saved, LMTP and pipe results) where the crash tests make
//! the process die as `kill -9` would.
//!
//! Built only with the `failpoints` feature (the `fail` crate's registry); without it [`hit`]
//! is an empty function. Armed with `FAILPOINTS=NAME=return` in the environment of
//! `postern serve` (several: `A=return;B=return`); [`setup`] reads it at start.

/// Every crash point, in the order a message meets them (docs/hardening.md).
pub const CRASH_POINTS: &[&str] = &[
    "spool::staged",
    "spool::data-synced",
    "spool::renamed",
    "spool::queue-synced",
    "spool::envelope-written",
    "spool::envelope-renamed",
    "maildir::tmp-written",
    "maildir::delivered",
    "queue::remote-delivered",
    "queue::lmtp-delivered",
    "queue::pipe-delivered",
];

/// Delay points: places the tests slow down or hold, to act while something is in progress,
/// e.g. a restart while the queue is still being recovered. `FAILPOINTS=NAME=sleep(MS)` sleeps
/// there; `FAILPOINTS=NAME=return(PATH)` holds there until the file PATH exists (the test
/// creates it to release the hold), so that a test orders events without racing a clock.
pub const DELAY_POINTS: &[&str] = &["spool::recovered-one"];

/// Sleeps or holds here when delay point `name` is armed (see [`DELAY_POINTS`]; with the
/// `failpoints` feature, otherwise nothing). Call it only from a thread that may block.
#[inline]
pub fn delay(name: &'static str) {
    debug_assert!(DELAY_POINTS.contains(&name), "unknown delay point {name}");
    #[cfg(feature = "failpoints")]
    if let Some(Some(release)) = fail::eval(name, |arg| arg) {
        eprintln!("delay point {name}: held until {release} exists");
        while !std::path::Path::new(&release).exists() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Reads `FAILPOINTS` (with the `failpoints` feature; otherwise nothing).
pub fn setup() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}

/// Dies here with SIGKILL when crash point `name` is armed (with the `failpoints` feature;
/// otherwise nothing).
#[inline]
pub fn hit(name: &'static str) {
    debug_assert!(CRASH_POINTS.contains(&name), "unknown crash point {name}");
    #[cfg(feature = "failpoints")]
    if fail::eval(name, |_| ()).is_some() {
        eprintln!("crash point {name}: SIGKILL");
        // SAFETY: kill(2) on our own pid has no memory effects.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
