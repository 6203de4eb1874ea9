//! What the queue tools ask of the scheduler (`postern queue ...` over the control socket):
//! listing, statistics, flush, hold, release and delete, and their text output.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use postern_spool::{CorruptFile, Envelope, RcptState, SpoolError};
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

impl Filter {
    fn sender_matches(&self, env: &Envelope) -> bool {
        self.sender_domain
            .as_deref()
            .is_none_or(|d| env.reverse_path.mailbox().is_some_and(|a| a.domain().eq_ignore_ascii_case(d)))
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
    /// Hands every queued message to `each`, oldest first, read from the spool one at a time
    /// (a queue of any size costs one envelope of memory). Blocking: call it from
    /// `spawn_blocking`. Unreadable queue files come as `Err`.
    ///
    /// # Errors
    /// The queue folder cannot be read.
    pub fn each_entry(&self, mut each: impl FnMut(Result<Entry, CorruptFile>)) -> Result<(), SpoolError> {
        self.inner.spool.each_envelope(|found| {
            each(found.map(|envelope| {
                let active = self.lock().index.is_active(envelope.id);
                Entry { envelope, active }
            }));
        })
    }

    /// The envelope of one queued message, from the spool.
    ///
    /// # Errors
    /// Unknown ID, or the spool failed.
    pub async fn entry(&self, id: QueueId) -> Result<Entry, ControlError> {
        if !self.lock().index.contains(id) {
            return Err(ControlError::NoSuchMessage(id));
        }
        let spool = self.inner.spool.clone();
        let envelope = tokio::task::spawn_blocking(move || spool.read_envelope(id)).await??;
        Ok(Entry { active: self.lock().index.is_active(id), envelope })
    }

    /// `postern queue stats`: per destination domain from the index, with the last error of
    /// each domain's oldest message read from the spool.
    pub async fn stats(&self) -> String {
        let (messages, _, held, domains) = self.lock().index.summary();
        let spool = self.inner.spool.clone();
        let rows = tokio::task::spawn_blocking(move || {
            domains
                .into_iter()
                .enumerate()
                .map(|(n, d)| {
                    // The first STATS_ERRORS domains (oldest first) get their last error.
                    let env = (n < STATS_ERRORS).then(|| spool.read_envelope(d.oldest.1).ok()).flatten();
                    let error = env.and_then(|e| {
                        e.recipients
                            .into_iter()
                            .find(|r| {
                                r.state == RcptState::Pending && r.address().domain().eq_ignore_ascii_case(&d.domain)
                            })
                            .and_then(|r| r.last_error)
                    });
                    Row { domain: d.domain, messages: d.messages, recipients: d.recipients, oldest: d.oldest.0, error }
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        render_stats(messages, held, rows)
    }

    /// Schedules the matching messages (not held) for immediate delivery; returns how many.
    /// A sender-domain filter reads the candidates' envelopes from the spool.
    pub async fn flush(&self, filter: &Filter) -> usize {
        let now = u32::try_from(now_ms() / 1000).unwrap_or(u32::MAX);
        let mut ids = self.lock().index.ids_where(|id, domains, held| {
            !held
                && !domains.is_empty()
                && filter.id.is_none_or(|want| want == id)
                && filter.recipient_domain.as_deref().is_none_or(|d| domains.iter().any(|x| x.eq_ignore_ascii_case(d)))
        });
        if filter.sender_domain.is_some() {
            let (spool, f) = (self.inner.spool.clone(), filter.clone());
            ids = tokio::task::spawn_blocking(move || {
                ids.into_iter().filter(|id| spool.read_envelope(*id).is_ok_and(|e| f.sender_matches(&e))).collect()
            })
            .await
            .unwrap_or_default();
        }
        let mut s = self.lock();
        let n = ids.iter().filter(|id| s.index.force(**id, now)).count();
        drop(s);
        self.inner.wake.notify_one();
        n
    }

    /// Holds (`true`) or releases (`false`) a message, persisting the flag in its envelope.
    ///
    /// # Errors
    /// A message for the postmaster: unknown ID, or the envelope could not be saved.
    pub async fn set_held(&self, id: QueueId, held: bool) -> Result<(), ControlError> {
        let mut env = self.entry(id).await?.envelope;
        env.held = held;
        {
            let mut s = self.lock();
            // The next attempt reads the envelope saved here, not one kept from its arrival.
            s.take_fresh(id);
            if held {
                s.index.hold(id);
            }
        }
        let spool = self.inner.spool.clone();
        let saved = env.clone();
        tokio::task::spawn_blocking(move || spool.update(&saved)).await??;
        tracing::info!("{id}: {} by the postmaster", if held { "held" } else { "released" });
        let runs = self.runs_by_itself(&env);
        self.lock().index.put(&env, runs);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Deletes a message from the queue (no DSN).
    ///
    /// # Errors
    /// Unknown ID, a delivery in progress (try again), or a spool error.
    pub async fn delete(&self, id: QueueId) -> Result<(), ControlError> {
        {
            let mut s = self.lock();
            if s.index.is_active(id) {
                return Err(ControlError::BeingDelivered(id));
            }
            if !s.index.contains(id) {
                return Err(ControlError::NoSuchMessage(id));
            }
            s.index.remove(id);
            s.take_fresh(id);
        }
        let spool = self.inner.spool.clone();
        tokio::task::spawn_blocking(move || spool.remove(id)).await??;
        tracing::info!("{id}: removed by the postmaster (queue delete)");
        Ok(())
    }
}

/// Why a queue tool's request on one message failed; the text is what the postmaster reads.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No message of this ID is queued.
    #[error("{0}: no such message in the queue")]
    NoSuchMessage(QueueId),
    /// The message is being delivered; the request may be made again in a moment.
    #[error("{0}: being delivered right now; try again in a moment")]
    BeingDelivered(QueueId),
    /// The spool could not be read or written.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The blocking task that did the work died.
    #[error("the spool task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// How many domains of `queue stats` (oldest first) get the last error of their oldest
/// message: one envelope read each.
const STATS_ERRORS: usize = 200;

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

/// The first line of the `mailq`-style listing.
pub const LIST_HEADER: &str = "-Queue ID-------- --Size-- ----Arrival Time---- -Sender/Recipient-------\n";

/// One message of the listing: ID (`*` being delivered, `!` held), size, arrival, sender,
/// then each pending recipient with its last deferral reason.
pub fn format_entry(e: &Entry) -> String {
    let mut out = String::new();
    let env = &e.envelope;
    let mark = if env.held {
        "!"
    } else if e.active {
        "*"
    } else {
        " "
    };
    let sender = env.reverse_path.mailbox().map_or_else(|| "MAILER-DAEMON".to_owned(), ToString::to_string);
    let _ = writeln!(out, "{}{mark} {:>8} {:<20}  {sender}", env.id, env.size, date(env.arrival));
    for r in env.recipients.iter().filter(|r| r.state == RcptState::Pending) {
        if let Some(err) = &r.last_error {
            let _ = writeln!(out, "{:49}({err})", "");
        }
        let _ = writeln!(out, "{:49}{}", "", r.address());
    }
    out.push('\n');
    out
}

/// The last line of the listing, after `n` messages of `bytes` in all.
pub fn list_footer(n: usize, bytes: u64) -> String {
    if n == 0 {
        return "Mail queue is empty\n".into();
    }
    format!("-- {} KiB in {n} message{}.\n", bytes.div_ceil(1024), if n == 1 { "" } else { "s" })
}

/// The whole `mailq`-style listing of `entries`.
pub fn format_list(entries: &[Entry]) -> String {
    if entries.is_empty() {
        return list_footer(0, 0);
    }
    let mut out = String::from(LIST_HEADER);
    for e in entries {
        out.push_str(&format_entry(e));
    }
    out.push_str(&list_footer(entries.len(), entries.iter().map(|e| e.envelope.size).sum()));
    out
}

/// One destination domain of `queue stats`.
#[derive(Debug, Default)]
struct Row {
    domain: String,
    messages: u64,
    recipients: u64,
    /// Arrival of the oldest, Unix seconds.
    oldest: u64,
    /// The last error of the oldest message's recipient there.
    error: Option<String>,
}

/// Counts and oldest age per recipient domain and per last error, from `entries` (the
/// daemon is down): "since when is mail to example.com stuck?" is the OLDEST / SINCE of its
/// line.
pub fn format_stats(entries: &[Entry]) -> String {
    let mut by_domain: BTreeMap<String, Row> = BTreeMap::new();
    for e in entries {
        let env = &e.envelope;
        let mut seen_domains = Vec::new();
        for r in env.recipients.iter().filter(|r| r.state == RcptState::Pending) {
            let d = r.address().domain().to_owned();
            let row = by_domain.entry(d.clone()).or_insert_with(|| Row { oldest: u64::MAX, ..Row::default() });
            row.domain.clone_from(&d);
            row.recipients += 1;
            if !seen_domains.contains(&d) {
                row.messages += 1;
                seen_domains.push(d);
            }
            if env.arrival < row.oldest {
                row.oldest = env.arrival;
                row.error.clone_from(&r.last_error);
            }
        }
    }
    let held = entries.iter().filter(|e| e.envelope.held).count() as u64;
    let mut rows: Vec<Row> = by_domain.into_values().collect();
    rows.sort_by_key(|r| r.oldest);
    render_stats(entries.len() as u64, held, rows)
}

/// The text of `queue stats`: a line of totals, the domains oldest first, then the domains
/// grouped by the last error of their oldest message.
fn render_stats(messages: u64, held: u64, rows: Vec<Row>) -> String {
    let now = now_ms() / 1000;
    let pending: u64 = rows.iter().map(|r| r.recipients).sum();
    let mut out = format!("{messages} message(s), {pending} pending recipient(s), {held} held\n\n");
    out.push_str("By recipient domain (oldest first):\n");
    let _ = writeln!(
        out,
        "{:<30} {:>8} {:>10} {:>8}  {:<20}  LAST ERROR OF THE OLDEST",
        "DOMAIN", "MESSAGES", "RECIPIENTS", "OLDEST", "SINCE (UTC)"
    );
    let mut by_error: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for r in &rows {
        let since = chrono::DateTime::from_timestamp(r.oldest as i64, 0)
            .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
        let _ = writeln!(
            out,
            "{:<30} {:>8} {:>10} {:>8}  {since:<20}  {}",
            r.domain,
            r.messages,
            r.recipients,
            age(now.saturating_sub(r.oldest)),
            r.error.as_deref().unwrap_or("-")
        );
        let e = by_error.entry(r.error.clone().unwrap_or_else(|| "(not tried yet)".into())).or_insert((0, u64::MAX));
        e.0 += r.recipients;
        e.1 = e.1.min(r.oldest);
    }
    out.push_str("\nBy last error (of each domain's oldest message):\n");
    let _ = writeln!(out, "{:>10} {:>8}  ERROR", "RECIPIENTS", "OLDEST");
    let mut errors: Vec<_> = by_error.into_iter().collect();
    errors.sort_by_key(|(_, (_, oldest))| *oldest);
    for (e, (recipients, oldest)) in errors {
        let _ = writeln!(out, "{recipients:>10} {:>8}  {e}", age(now.saturating_sub(oldest)));
    }
    out
}
