//! What the queue tools ask of the scheduler (`postern queue ...` over the control socket):
//! listing, statistics, flush, hold, release and delete, and their text output.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use postern_spool::{Envelope, RcptState};
use postern_types::QueueId;

use crate::{Queue, now_ms};

/// Which messages a flush applies to (sendmail `-qI`, `-qR`, `-qS`); all `None` means all.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// One message.
    pub id: Option<QueueId>,
    /// Messages with a pending recipient in this domain.
    pub recipient_domain: Option<String>,
    /// Messages whose sender is in this domain.
    pub sender_domain: Option<String>,
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

impl Filter {
    fn matches(&self, env: &Envelope) -> bool {
        self.id.is_none_or(|id| id == env.id)
            && self.sender_domain.as_deref().is_none_or(|d| domain_of(&env.reverse_path).eq_ignore_ascii_case(d))
            && self.recipient_domain.as_deref().is_none_or(|d| {
                env.recipients
                    .iter()
                    .any(|r| r.state == RcptState::Pending && domain_of(&r.address).eq_ignore_ascii_case(d))
            })
    }
}

/// One queued message as the tools see it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The envelope as last saved.
    pub envelope: Envelope,
    /// Being delivered right now.
    pub active: bool,
}

impl Queue {
    /// Every queued message, oldest first.
    pub fn snapshot(&self) -> Vec<Entry> {
        let s = self.lock();
        let mut v: Vec<Entry> =
            s.envelopes.values().map(|e| Entry { envelope: e.clone(), active: s.active.contains(&e.id) }).collect();
        v.sort_by_key(|e| e.envelope.id);
        v
    }

    /// Schedules the matching messages (not held) for immediate delivery; returns how many.
    pub fn flush(&self, filter: &Filter) -> usize {
        let mut s = self.lock();
        let now = now_ms();
        let ids: Vec<QueueId> = s
            .envelopes
            .values()
            .filter(|e| !e.held && filter.matches(e) && e.recipients.iter().any(|r| r.state == RcptState::Pending))
            .map(|e| e.id)
            .collect();
        for id in &ids {
            if let Some(env) = s.envelopes.get_mut(id) {
                for r in env.recipients.iter_mut().filter(|r| r.state == RcptState::Pending) {
                    r.next_attempt = 0;
                }
            }
            s.due.retain(|(_, i)| i != id);
            s.forced.insert(*id);
            if !s.active.contains(id) {
                s.due.insert((now, *id));
            }
        }
        drop(s);
        self.inner.wake.notify_one();
        ids.len()
    }

    /// Holds (`true`) or releases (`false`) a message, persisting the flag in its envelope.
    ///
    /// # Errors
    /// A message for the postmaster: unknown ID, or the envelope could not be saved.
    pub async fn set_held(&self, id: QueueId, held: bool) -> Result<(), String> {
        let env = {
            let mut s = self.lock();
            let env = s.envelopes.get_mut(&id).ok_or_else(|| format!("{id}: no such message in the queue"))?;
            env.held = held;
            let env = env.clone();
            s.due.retain(|(_, i)| *i != id);
            env
        };
        let spool = self.inner.spool.clone();
        let saved = env.clone();
        tokio::task::spawn_blocking(move || spool.update(&saved))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        tracing::info!("{id}: {} by the postmaster", if held { "held" } else { "released" });
        if !held {
            self.enqueue(env);
        }
        Ok(())
    }

    /// Deletes a message from the queue (no DSN).
    ///
    /// # Errors
    /// Unknown ID, a delivery in progress (try again), or a spool error.
    pub async fn delete(&self, id: QueueId) -> Result<(), String> {
        {
            let mut s = self.lock();
            if s.active.contains(&id) {
                return Err(format!("{id}: being delivered right now; try again in a moment"));
            }
            if s.envelopes.remove(&id).is_none() {
                return Err(format!("{id}: no such message in the queue"));
            }
            s.due.retain(|(_, i)| *i != id);
        }
        let spool = self.inner.spool.clone();
        tokio::task::spawn_blocking(move || spool.remove(id))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        tracing::info!("{id}: removed by the postmaster (queue delete)");
        Ok(())
    }
}

fn date(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .map_or_else(String::new, |d| d.format("%a %b %e %H:%M:%S").to_string())
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `mailq`-style listing: ID (`*` being delivered, `!` held), size, arrival, sender, then each
/// pending recipient with its last deferral reason.
pub fn format_list(entries: &[Entry]) -> String {
    if entries.is_empty() {
        return "Mail queue is empty\n".into();
    }
    let mut out = String::from("-Queue ID-------- --Size-- ----Arrival Time---- -Sender/Recipient-------\n");
    let mut bytes = 0;
    for e in entries {
        let env = &e.envelope;
        bytes += env.size;
        let mark = if env.held {
            "!"
        } else if e.active {
            "*"
        } else {
            " "
        };
        let sender = if env.reverse_path.is_empty() { "MAILER-DAEMON" } else { &env.reverse_path };
        let _ = writeln!(out, "{}{mark} {:>8} {:<20}  {sender}", env.id, env.size, date(env.arrival));
        for r in env.recipients.iter().filter(|r| r.state == RcptState::Pending) {
            if let Some(err) = &r.last_error {
                let _ = writeln!(out, "{:49}({err})", "");
            }
            let _ = writeln!(out, "{:49}{}", "", r.address);
        }
        out.push('\n');
    }
    let n = entries.len();
    let _ = writeln!(out, "-- {} KiB in {n} message{}.", bytes.div_ceil(1024), if n == 1 { "" } else { "s" });
    out
}

/// Counts and oldest age per recipient domain and per last error: "since when is mail to
/// example.com stuck?" is the OLDEST / SINCE of its line.
pub fn format_stats(entries: &[Entry]) -> String {
    #[derive(Default)]
    struct Row {
        messages: usize,
        recipients: usize,
        oldest: u64,
        error: Option<String>,
    }
    let now = now_ms() / 1000;
    let mut by_domain: BTreeMap<String, Row> = BTreeMap::new();
    let mut by_error: BTreeMap<String, Row> = BTreeMap::new();
    let (mut held, mut pending) = (0, 0);
    for e in entries {
        let env = &e.envelope;
        held += usize::from(env.held);
        let mut seen_domains = Vec::new();
        for r in env.recipients.iter().filter(|r| r.state == RcptState::Pending) {
            pending += 1;
            let d = domain_of(&r.address).to_lowercase();
            let row = by_domain.entry(d.clone()).or_insert_with(|| Row { oldest: u64::MAX, ..Row::default() });
            row.recipients += 1;
            if !seen_domains.contains(&d) {
                row.messages += 1;
                seen_domains.push(d);
            }
            if env.arrival < row.oldest {
                row.oldest = env.arrival;
                row.error.clone_from(&r.last_error);
            }
            let err = r.last_error.clone().unwrap_or_else(|| "(not tried yet)".into());
            let row = by_error.entry(err).or_insert_with(|| Row { oldest: u64::MAX, ..Row::default() });
            row.recipients += 1;
            row.oldest = row.oldest.min(env.arrival);
        }
    }
    let mut out = format!("{} message(s), {pending} pending recipient(s), {held} held\n\n", entries.len());
    out.push_str("By recipient domain (oldest first):\n");
    let _ = writeln!(
        out,
        "{:<30} {:>8} {:>10} {:>8}  {:<20}  LAST ERROR OF THE OLDEST",
        "DOMAIN", "MESSAGES", "RECIPIENTS", "OLDEST", "SINCE (UTC)"
    );
    let mut domains: Vec<_> = by_domain.into_iter().collect();
    domains.sort_by_key(|(_, r)| r.oldest);
    for (d, r) in domains {
        let since = chrono::DateTime::from_timestamp(r.oldest as i64, 0)
            .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
        let _ = writeln!(
            out,
            "{d:<30} {:>8} {:>10} {:>8}  {since:<20}  {}",
            r.messages,
            r.recipients,
            age(now.saturating_sub(r.oldest)),
            r.error.as_deref().unwrap_or("-")
        );
    }
    out.push_str("\nBy last error:\n");
    let _ = writeln!(out, "{:>10} {:>8}  ERROR", "RECIPIENTS", "OLDEST");
    let mut errors: Vec<_> = by_error.into_iter().collect();
    errors.sort_by_key(|(_, r)| r.oldest);
    for (e, r) in errors {
        let _ = writeln!(out, "{:>10} {:>8}  {e}", r.recipients, age(now.saturating_sub(r.oldest)));
    }
    out
}
