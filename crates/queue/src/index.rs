//! The scheduler's index, without I/O: what it keeps of each queued message is a few dozen
//! bytes (its ID, due time, destination and flags; the arrival is in the ID, pending counts
//! other than one recipient in one domain in a side table), as OpenSMTPD's scheduler
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
/// Pending recipients other than one in one domain (their counts are in `Index::multi`).
const MULTI: u8 = 32;
/// No pending recipient.
const EMPTY: u8 = 64;

/// Interned domain numbers fit in 24 bits; later names share the last number.
const DOMAIN_MAX: u32 = (1 << 24) - 1;

/// What the index keeps of one message beside its ID: 8 bytes, so that a map entry is 16.
#[derive(Debug, Clone, Copy)]
struct Meta {
    /// Next attempt, Unix seconds, or [`NEVER`].
    due: u32,
    /// The (first) destination domain of its pending recipients, interned (high 24 bits),
    /// and the flags (low 8 bits).
    packed: u32,
}

impl Meta {
    fn new(due: u32, domain: u32, flags: u8) -> Self {
        Self { due, packed: (domain.min(DOMAIN_MAX) << 8) | u32::from(flags) }
    }

    fn flags(self) -> u8 {
        self.packed as u8
    }

    fn domain(self) -> u32 {
        self.packed >> 8
    }

    fn set_flags(&mut self, flags: u8) {
        self.packed = (self.packed & !0xff) | u32::from(flags);
    }
}

/// Pending recipients per interned domain, without an allocation for the usual one.
enum Counts<'a> {
    One([(u32, u16); 1]),
    Many(&'a [(u32, u16)]),
}

impl std::ops::Deref for Counts<'_> {
    type Target = [(u32, u16)];

    fn deref(&self) -> &Self::Target {
        match self {
            Counts::One(one) => one,
            Counts::Many(many) => many,
        }
    }
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
        if id > DOMAIN_MAX {
            return DOMAIN_MAX;
        }
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }
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
        self.metas.get(&id).is_some_and(|m| m.flags() & ACTIVE != 0)
    }

    /// Pending recipients of `id` per interned destination domain (none if nothing pending).
    fn counts(&self, id: QueueId, m: Meta) -> Counts<'_> {
        match self.multi.get(&id) {
            Some(c) if m.flags() & MULTI != 0 => Counts::Many(c),
            _ if m.flags() & EMPTY != 0 => Counts::Many(&[]),
            _ => Counts::One([(m.domain(), 1)]),
        }
    }

    /// Indexes `env` (new, recovered, released, or back from an attempt), scheduled at its
    /// earliest pending recipient's time when `runs` (not held, not queue-only).
    pub(crate) fn put(&mut self, env: &Envelope, runs: bool) {
        let mut counts: Vec<(u32, u16)> = Vec::new();
        let mut due = NEVER;
        let mut deferred = false;
        for r in env.recipients.iter().filter(|r| r.state == RcptState::Pending) {
            let d = self.domains.id(r.address().domain());
            match counts.iter_mut().find(|(x, _)| *x == d) {
                Some((_, n)) => *n = n.saturating_add(1),
                None => counts.push((d, 1)),
            }
            due = due.min(u32::try_from(r.next_attempt).unwrap_or(NEVER - 1));
            deferred |= r.attempts > 0;
        }
        let old = self.metas.get(&env.id).map_or(0, |m| m.flags() & FORCED);
        let mut flags = old | if env.held { HELD } else { 0 } | if deferred { DEFERRED } else { 0 };
        match counts[..] {
            [] => flags |= EMPTY,
            [(_, 1)] => {}
            _ => flags |= MULTI,
        }
        if flags & MULTI != 0 {
            self.multi.insert(env.id, counts.clone().into_boxed_slice());
        } else {
            self.multi.remove(&env.id);
        }
        let due = if runs && !env.held && !counts.is_empty() { due } else { NEVER };
        let domain = counts.first().map_or(0, |(d, _)| *d);
        if let Some(m) = self.metas.insert(env.id, Meta::new(due, domain, flags))
            && m.flags() & ACTIVE != 0
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
            && m.flags() & ACTIVE != 0
        {
            self.active -= 1;
        }
        self.multi.remove(&id);
    }

    /// Asks for an attempt of `id` now (a flush); `false` if it is unknown, held or has
    /// nothing pending.
    pub(crate) fn force(&mut self, id: QueueId, now: u32) -> bool {
        let Some(m) = self.metas.get_mut(&id) else { return false };
        if m.flags() & (HELD | EMPTY) != 0 {
            return false;
        }
        m.set_flags(m.flags() | FORCED);
        if m.flags() & (ACTIVE | READY) == 0 {
            m.due = now;
            self.wheel.entry(now).or_default().push(id);
        }
        true
    }

    /// Stops scheduling `id` (a hold); the envelope saved by the caller says so from now on.
    pub(crate) fn hold(&mut self, id: QueueId) -> bool {
        let Some(m) = self.metas.get_mut(&id) else { return false };
        m.set_flags(m.flags() | HELD);
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
                if m.due != second || m.flags() & (ACTIVE | READY | HELD) != 0 {
                    continue;
                }
                m.set_flags(m.flags() | READY);
                m.due = NEVER;
                let list = self.ready.entry(m.domain()).or_default();
                if list.is_empty() {
                    self.turns.push_back(m.domain());
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
            if m.flags() & READY == 0 {
                continue;
            }
            let forced = m.flags() & FORCED != 0;
            m.set_flags((m.flags() & !(READY | FORCED)) | ACTIVE);
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
                let names: Vec<&str> = self.counts(**id, **m).iter().map(|(d, _)| self.domains.name(*d)).collect();
                keep(**id, &names, m.flags() & HELD != 0)
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
            deferred += u64::from(m.flags() & DEFERRED != 0 && m.flags() & EMPTY == 0);
            held += u64::from(m.flags() & HELD != 0);
            let arrival = id.arrival_secs();
            for &(d, n) in self.counts(*id, *m).iter() {
                let f = by.entry(d).or_insert_with(|| DomainFigures {
                    domain: self.domains.name(d).to_owned(),
                    messages: 0,
                    recipients: 0,
                    oldest: (u64::MAX, *id),
                });
                f.messages += 1;
                f.recipients += u64::from(n);
                f.oldest = f.oldest.min((arrival, *id));
            }
        }
        let mut domains: Vec<DomainFigures> = by.into_values().collect();
        domains.sort_by_key(|d| d.oldest);
        (self.metas.len() as u64, deferred, held, domains)
    }
}

#[cfg(test)]
mod tests;
