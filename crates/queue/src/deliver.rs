//! One delivery attempt of one message: every due local recipient, then the envelope saved (or
//! the message removed when every recipient is final). Runs on a blocking thread.

use std::time::Duration;

use postern_config::Config;
use postern_spool::{Envelope, RcptState, Spool};

use crate::now_ms;

/// Attempts the due local recipients of `env`. Returns the saved envelope, `None` when the
/// message was finished and removed. A spool error is logged and the envelope is returned
/// unchanged in memory, so that delivered recipients are only retried if their state could not
/// be saved (the one window where a crash or I/O error can duplicate a delivery).
pub(crate) fn attempt(spool: &Spool, config: &Config, mut env: Envelope) -> Option<Envelope> {
    let id = env.id;
    let message = match spool.read_message(id) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("{id}: cannot read queued message: {e}");
            let retry = (now_ms() / 1000) + config.queue.min_backoff.0.as_secs();
            for r in env.recipients.iter_mut().filter(|r| r.state == RcptState::Pending && r.mailbox.is_some()) {
                r.next_attempt = retry;
            }
            return Some(env);
        }
    };
    let now_s = now_ms() / 1000;
    let mut changed = false;
    for r in &mut env.recipients {
        let Some(mailbox) = r.mailbox.clone() else { continue };
        if r.state != RcptState::Pending || r.next_attempt > now_s {
            continue;
        }
        changed = true;
        r.attempts += 1;
        let maildir = config.maildir_of(&mailbox);
        let shared = spool.shared_sync_for(&maildir);
        let shared = shared.as_ref().map(|f| f as &dyn Fn() -> std::io::Result<()>);
        let result =
            postern_local::deliver(&maildir, &config.hostname, &env.reverse_path, &r.address, &message, shared);
        let delay = (now_ms() as f64 / 1000.0) - (id.arrival_micros() as f64 / 1e6);
        let orig = if r.forward_path == r.address { String::new() } else { format!(", orig_to=<{}>", r.forward_path) };
        match result {
            Ok(path) => {
                r.state = RcptState::Delivered;
                r.last_error = None;
                let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                tracing::info!(
                    "{id}: to=<{}>{orig}, relay=local, mailbox={mailbox}, delay={delay:.2}, dsn=2.0.0, status=sent (delivered to maildir as {file})",
                    r.address
                );
            }
            Err(e) => {
                let wait = backoff(config, r.attempts);
                r.next_attempt = now_s + wait.as_secs();
                r.last_error = Some(format!("4.3.0 {e}"));
                tracing::warn!(
                    "{id}: to=<{}>{orig}, relay=local, mailbox={mailbox}, delay={delay:.2}, dsn=4.3.0, status=deferred ({e}), retry in {}s",
                    r.address,
                    wait.as_secs()
                );
            }
        }
    }
    if env.is_finished() {
        match spool.remove(id) {
            Ok(()) => tracing::info!("{id}: removed"),
            Err(e) => {
                // Save the final state so that a restart does not deliver again.
                tracing::error!("{id}: delivered but cannot remove from spool: {e}");
                let _ = spool.update(&env);
            }
        }
        return None;
    }
    if changed && let Err(e) = spool.update(&env) {
        tracing::error!("{id}: cannot save delivery state: {e}");
    }
    Some(env)
}

/// `min_backoff · 2^(attempts-1)`, at most `max_backoff`.
fn backoff(config: &Config, attempts: u32) -> Duration {
    let min = config.queue.min_backoff.0;
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
    min.saturating_mul(factor).min(config.queue.max_backoff.0)
}
