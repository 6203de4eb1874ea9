//! The scheduler's index, without I/O: what it keeps of each queued message is a few dozen
//! bytes (due time, arrival, destination, pending count, flags), as OpenSMTPD's scheduler
//! keeps only `scheduler_info`; envelopes stay in the spool and are read when an attempt
//! starts. Due messages wait in one ready list per destination domain, taken in turn (round
//! robin), so that one destination with a huge backlog does not starve the others.
//!
//! Retry times live in a timing wheel keyed by the second: a message whose time changes gets
//! a new entry and the stale one is skipped when its second comes (lazy deletion), so a
//! reschedule never searches.

use std::collections::{BTreeMap, HashMap, VecDeque};

use postern_spool::{Envelope, RcptState};
use postern_types::QueueId;

/// No attempt scheduled (held, queue-only, or nothing pending).
const NEVER: u32 = u32::MAX;

/// Held by the postmaster.
const HELD: u8 = 1;
/// Tried at least once (a deferral).
const DEFERRED: u8 = 2;
/// Being delivered now.
const ACTIVE: u8 = 4;
/// In a ready list.
const READY: u8 = 8;
/// The next attempt was asked for by the postmaster (`flush`).
const FORCED: u8 = 16;
/// Pending recipients in several domains (their counts are in `Index::multi`).
const MULTI: u8 = 32;

/// What the index keeps of one message: 16 bytes.
#[derive(Debug, Clone, Copy)]
struct Meta {
    /// Next attempt, Unix seconds, or [`NEVER`].
    due: u32,
    /// Arrival, Unix seconds.
    arrival: u32,
    /// The (first) destination domain of its pending recipients, interned.
    domain: u32,
    /// Pending recipients.
    pending: u16,
    flags: u8,
}

/// One destination in figures (see [`Index::summary`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DomainFigures {
    pub(crate) domain: String,
    pub(crate) messages: u64,
    pub(crate) recipients: u64,
    /// Arrival of its oldest message, Unix seconds, and that message.
    pub(crate) oldest: (u64, QueueId),
}

/// Domain names by number: a destination costs its name once, not once per message.
#[derive(Debug, Default)]
struct Interner {
    names: Vec<Box<str>>,
    ids: HashMap<Box<str>, u32>,
}

impl Interner {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }
}

/// The domain of `address` as written (compare it ignoring case).
pub(crate) fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

/// Every queued message, by ID.
#[derive(Debug, Default)]
pub(crate) struct Index {
    metas: HashMap<QueueId, Meta>,
    multi: HashMap<QueueId, Box<[(u32, u16)]>>,
    domains: Interner,
    /// IDs by due second (stale entries are skipped).
    wheel: BTreeMap<u32, Vec<QueueId>>,
    /// Due messages per destination, and the destinations with any, in turn.
    ready: HashMap<u32, VecDeque<QueueId>>,
    turns: VecDeque<u32>,
    active: usize,
}

impl Index {
    /// Messages indexed.
    pub(crate) fn len(&self) -> usize {
        self.metas.len()
    }

    /// Whether `id` is indexed.
    pub(crate) fn contains(&self, id: QueueId) -> bool {
        self.metas.contains_key(&id)
    }

    /// Messages being delivered now.
    pub(crate) fn active(&self) -> usize {
        self.active
    }

    /// Whether `id` is being delivered now.
    pub(crate) fn is_active(&self, id: QueueId) -> bool {
        self.metas.get(&id).is_some_and(|m| m.flags & ACTIVE != 0)
    }

    /// Indexes `env` (new, recovered, released, or back from an attempt), scheduled at its
    /// earliest pending recipient's time when `runs` (not held, not queue-only).
    pub(crate) fn put(&mut self, env: &Envelope, runs: bool) {
        let mut counts: Vec<(u32, u16)> = Vec::new();
        let mut due = NEVER;
        let mut deferred = false;
        for r in env.recipients.iter().filter(|r| r.state == RcptState::Pending) {
            let d = self.domains.id(&domain_of(&r.address).to_ascii_lowercase());
            match counts.iter_mut().find(|(x, _)| *x == d) {
                Some((_, n)) => *n = n.saturating_add(1),
                None => counts.push((d, 1)),
            }
            due = due.min(u32::try_from(r.next_attempt).unwrap_or(NEVER - 1));
            deferred |= r.attempts > 0;
        }
        let old = self.metas.get(&env.id).map_or(0, |m| m.flags & FORCED);
        let mut flags = old | if env.held { HELD } else { 0 } | if deferred { DEFERRED } else { 0 };
        if counts.len() > 1 {
            flags |= MULTI;
            self.multi.insert(env.id, counts.clone().into_boxed_slice());
        } else {
            self.multi.remove(&env.id);
        }
        let pending = counts.iter().map(|(_, n)| *n).fold(0u16, u16::saturating_add);
        let due = if runs && !env.held && pending > 0 { due } else { NEVER };
        let arrival = u32::try_from(env.arrival).unwrap_or(u32::MAX);
        let domain = counts.first().map_or(0, |(d, _)| *d);
        if let Some(m) = self.metas.insert(env.id, Meta { due, arrival, domain, pending, flags })
            && m.flags & ACTIVE != 0
        {
            self.active -= 1;
        }
        if due != NEVER {
            self.wheel.entry(due).or_default().push(env.id);
        }
    }

    /// Forgets `id` (delivered, deleted). Entries left in the wheel or a ready list are
    /// skipped when reached.
    pub(crate) fn remove(&mut self, id: QueueId) {
        if let Some(m) = self.metas.remove(&id)
            && m.flags & ACTIVE != 0
        {
            self.active -= 1;
        }
        self.multi.remove(&id);
    }

    /// Asks for an attempt of `id` now (a flush); `false` if it is unknown, held or has
    /// nothing pending.
    pub(crate) fn force(&mut self, id: QueueId, now: u32) -> bool {
        let Some(m) = self.metas.get_mut(&id) else { return false };
        if m.flags & HELD != 0 || m.pending == 0 {
            return false;
        }
        m.flags |= FORCED;
        if m.flags & (ACTIVE | READY) == 0 {
            m.due = now;
            self.wheel.entry(now).or_default().push(id);
        }
        true
    }

    /// Stops scheduling `id` (a hold); the envelope saved by the caller says so from now on.
    pub(crate) fn hold(&mut self, id: QueueId) -> bool {
        let Some(m) = self.metas.get_mut(&id) else { return false };
        m.flags |= HELD;
        m.due = NEVER;
        true
    }

    /// Moves every message due by `now` to its destination's ready list; returns the next due
    /// second after that, if any.
    pub(crate) fn promote(&mut self, now: u32) -> Option<u32> {
        while let Some(entry) = self.wheel.first_entry() {
            if *entry.key() > now {
                return Some(*entry.key());
            }
            let (second, ids) = entry.remove_entry();
            for id in ids {
                let Some(m) = self.metas.get_mut(&id) else { continue };
                if m.due != second || m.flags & (ACTIVE | READY | HELD) != 0 {
                    continue;
                }
                m.flags |= READY;
                m.due = NEVER;
                let list = self.ready.entry(m.domain).or_default();
                if list.is_empty() {
                    self.turns.push_back(m.domain);
                }
                list.push_back(id);
            }
        }
        None
    }

    /// The next message to attempt, destinations in turn; marks it active. Returns it and
    /// whether the attempt was forced (a flush).
    pub(crate) fn take(&mut self) -> Option<(QueueId, bool)> {
        while let Some(domain) = self.turns.pop_front() {
            let Some(list) = self.ready.get_mut(&domain) else { continue };
            let Some(id) = list.pop_front() else {
                self.ready.remove(&domain);
                continue;
            };
            if list.is_empty() {
                self.ready.remove(&domain);
            } else {
                self.turns.push_back(domain);
            }
            let Some(m) = self.metas.get_mut(&id) else { continue };
            if m.flags & READY == 0 {
                continue;
            }
            let forced = m.flags & FORCED != 0;
            m.flags = (m.flags & !(READY | FORCED)) | ACTIVE;
            self.active += 1;
            return Some((id, forced));
        }
        None
    }

    /// Whether a message is waiting in a ready list.
    pub(crate) fn has_ready(&self) -> bool {
        !self.turns.is_empty()
    }

    /// IDs matching `keep` (by destination domains and held flag), in ID order.
    pub(crate) fn ids_where(&self, mut keep: impl FnMut(QueueId, &[&str], bool) -> bool) -> Vec<QueueId> {
        let mut out: Vec<QueueId> = self
            .metas
            .iter()
            .filter(|(id, m)| {
                let names: Vec<&str> = match self.multi.get(id) {
                    Some(c) => c.iter().map(|(d, _)| self.domains.name(*d)).collect(),
                    None if m.pending > 0 => vec![self.domains.name(m.domain)],
                    None => Vec::new(),
                };
                keep(**id, &names, m.flags & HELD != 0)
            })
            .map(|(id, _)| *id)
            .collect();
        out.sort_unstable();
        out
    }

    /// Messages, those deferred at least once, held ones, and per destination domain the
    /// messages, pending recipients and oldest arrival.
    pub(crate) fn summary(&self) -> (u64, u64, u64, Vec<DomainFigures>) {
        let mut by: HashMap<u32, DomainFigures> = HashMap::new();
        let (mut deferred, mut held) = (0, 0);
        for (id, m) in &self.metas {
            deferred += u64::from(m.flags & DEFERRED != 0 && m.pending > 0);
            held += u64::from(m.flags & HELD != 0);
            let single = [(m.domain, m.pending)];
            let counts: &[(u32, u16)] = self.multi.get(id).map_or(&single[..m.pending.min(1) as usize], |c| c);
            for &(d, n) in counts {
                let f = by.entry(d).or_insert_with(|| DomainFigures {
                    domain: self.domains.name(d).to_owned(),
                    messages: 0,
                    recipients: 0,
                    oldest: (u64::MAX, *id),
                });
                f.messages += 1;
                f.recipients += u64::from(n);
                f.oldest = f.oldest.min((u64::from(m.arrival), *id));
            }
        }
        let mut domains: Vec<DomainFigures> = by.into_values().collect();
        domains.sort_by_key(|d| d.oldest);
        (self.metas.len() as u64, deferred, held, domains)
    }
}

#[cfg(test)]
mod tests;
