//! One delivery attempt of one message: every due recipient (local ones to Maildir, remote ones
//! through outbound delivery, one transaction per domain), then the envelope saved, or the
//! message removed when every recipient is final.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use postern_config::Config;
use postern_outbound::{Message, Outcome};
use postern_spool::{Envelope, RcptState, Recipient, Spool};

use crate::{Inner, now_ms};

/// Attempts the due recipients of `env`. Returns the saved envelope, `None` when the message
/// was finished and removed. The envelope is saved after every attempt, so a recipient is
/// delivered again only if a crash falls between its delivery and that save.
pub(crate) async fn attempt(inner: Arc<Inner>, mut env: Envelope) -> Option<Envelope> {
    let config = inner.live.config();
    let tables = inner.live.tables();
    let id = env.id;
    let spool = inner.spool.clone();
    let message = match tokio::task::spawn_blocking(move || spool.read_message(id)).await {
        Ok(Ok(m)) => Arc::new(m),
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
                Ok(Ok(_)) => unreachable!(),
            };
            tracing::error!("{id}: cannot read queued message: {why}");
            let retry = (now_ms() / 1000) + config.queue.min_backoff.0.as_secs();
            for r in env.recipients.iter_mut().filter(|r| r.state == RcptState::Pending) {
                r.next_attempt = retry;
            }
            return Some(env);
        }
    };
    let now_s = now_ms() / 1000;
    let due = |r: &Recipient| r.state == RcptState::Pending && r.next_attempt <= now_s;
    let any_local = env.recipients.iter().any(|r| due(r) && r.mailbox.is_some());
    if any_local {
        let (spool, cfg, msg) = (inner.spool.clone(), config.clone(), message.clone());
        let joined = tokio::task::spawn_blocking(move || {
            local(&spool, &cfg, &mut env, &msg, now_s);
            env
        })
        .await;
        match joined {
            Ok(e) => env = e,
            Err(e) => {
                tracing::error!("{id}: local delivery task failed: {e}");
                return None;
            }
        }
    }
    // Remote recipients, grouped by domain: one transaction per domain.
    let mut by_domain: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in env.recipients.iter().enumerate() {
        if due(r) && r.mailbox.is_none() {
            let domain = r.address.rsplit_once('@').map_or("", |(_, d)| d).to_lowercase();
            by_domain.entry(domain).or_default().push(i);
        }
    }
    if !by_domain.is_empty() {
        let msg = Message {
            id: id.to_string(),
            reverse_path: env.reverse_path.clone(),
            body_8bit: env.body_8bit,
            smtputf8: env.smtputf8,
            data: message.clone(),
        };
        for (domain, indexes) in by_domain {
            let rcpts: Vec<String> = indexes.iter().map(|&i| env.recipients[i].address.clone()).collect();
            let results = postern_outbound::deliver(&*inner.resolver, &config, &tables, &domain, &rcpts, &msg).await;
            for (&i, result) in indexes.iter().zip(results) {
                let r = &mut env.recipients[i];
                record(&config, id, r, &result.relay, result.outcome, now_s);
            }
        }
    }
    let spool = inner.spool.clone();
    tokio::task::spawn_blocking(move || save(&spool, env)).await.unwrap_or_else(|e| {
        tracing::error!("{id}: saving delivery state failed: {e}");
        None
    })
}

/// Local recipients: Maildir delivery on this (blocking) thread.
fn local(spool: &Spool, config: &Config, env: &mut Envelope, message: &[u8], now_s: u64) {
    let id = env.id;
    let reverse_path = env.reverse_path.clone();
    for r in &mut env.recipients {
        let Some(mailbox) = r.mailbox.clone() else { continue };
        if r.state != RcptState::Pending || r.next_attempt > now_s {
            continue;
        }
        let maildir = config.maildir_of(&mailbox);
        let shared = spool.shared_sync_for(&maildir);
        let shared = shared.as_ref().map(|f| f as &dyn Fn() -> std::io::Result<()>);
        let result = postern_local::deliver(&maildir, &config.hostname, &reverse_path, &r.address, message, shared);
        let relay = format!("local, mailbox={mailbox}");
        let outcome = match result {
            Ok(path) => {
                let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                Outcome::Delivered(postern_types::Reply::new(
                    250,
                    postern_types::EnhancedStatus(2, 0, 0),
                    format!("delivered to maildir as {file}"),
                ))
            }
            Err(e) => Outcome::temp(postern_types::EnhancedStatus(4, 3, 0), e.to_string()),
        };
        record(config, id, r, &relay, outcome, now_s);
    }
}

/// Applies one outcome to a recipient and logs it (one line per delivery attempt).
fn record(config: &Config, id: postern_types::QueueId, r: &mut Recipient, relay: &str, outcome: Outcome, now_s: u64) {
    r.attempts += 1;
    let delay = (now_ms() as f64 / 1000.0) - (id.arrival_micros() as f64 / 1e6);
    let orig = if r.forward_path == r.address { String::new() } else { format!(", orig_to=<{}>", r.forward_path) };
    let reply = outcome.reply();
    let dsn = reply.status.map_or_else(|| format!("{}.0.0", reply.code / 100), |s| s.to_string());
    let text = reply.to_string();
    let head = format!("{id}: to=<{}>{orig}, relay={relay}, delay={delay:.2}, dsn={dsn}", r.address);
    match outcome {
        Outcome::Delivered(_) => {
            r.state = RcptState::Delivered;
            r.last_error = None;
            tracing::info!("{head}, status=sent ({text})");
        }
        Outcome::TempFail(_) => {
            let wait = backoff(config, r.attempts);
            r.next_attempt = now_s + wait.as_secs();
            r.last_error = Some(text.clone());
            tracing::warn!("{head}, status=deferred ({text}), retry in {}s", wait.as_secs());
        }
        Outcome::PermFail(_) => {
            r.state = RcptState::Failed;
            r.last_error = Some(text.clone());
            tracing::warn!("{head}, status=bounced ({text})");
        }
    }
}

/// Saves the envelope, or removes the message when every recipient is final.
fn save(spool: &Spool, env: Envelope) -> Option<Envelope> {
    let id = env.id;
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
    if let Err(e) = spool.update(&env) {
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
