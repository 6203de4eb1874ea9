//! Recipient resolution at RCPT time: no accept-then-bounce.
//!
//! Order (sendmail's, as postmasters know it): is the domain local → virtual table → aliases →
//! users.
//!
//! 1. A domain that is not local is accepted only from a trusted client (relay), otherwise
//!    `550 5.7.1 Relaying denied`. For a trusted client the routes table applies at once: an
//!    `error:` route refuses the recipient, a `local:` route delivers it to a mailbox. Routes
//!    never grant relaying by themselves.
//! 2. Virtual table (virtusertable): the most specific key wins: `user+detail@domain`, then
//!    `user@domain`, then `@domain` (catch-all). As in sendmail and Postfix, a catch-all catches
//!    every address of its domain that has no more specific entry, existing users included; list
//!    `user@domain !` to exempt one. `!` means "deliver as addressed" (continue with step 3).
//! 3. The local part without its sub-address (`user` of `user+detail`) is looked up in the aliases
//!    (recursively, a name that is its own alias target stops the expansion as in sendmail), then
//!    in the users table. `postmaster` always exists (RFC 5321 §4.5.1): without a user or alias of
//!    that name it is the mailbox `postmaster`.
//! 4. Nothing found: `550 5.1.1 User unknown`.
//!
//! Addresses produced by aliases or the virtual table are resolved again when their domain is
//! local, up to a depth of 10 (loops give a temporary failure so that the postmaster can fix the
//! tables without mail being lost).

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use postern_config::{Route, Tables, Target};
use postern_types::{Address, Destination, EnhancedStatus, Reply, ReversePath, Verdict};

use crate::relay::is_trusted;

const MAX_DEPTH: usize = 10;

/// What recipient resolution needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct RecipientPolicy<'a> {
    /// Local domains, lower-cased.
    pub local_domains: &'a [String],
    /// Clients allowed to relay.
    pub trusted_networks: &'a [IpNet],
    /// Sub-address separator characters (empty: none).
    pub separators: &'a str,
    /// The loaded tables.
    pub tables: &'a Tables,
}

impl<'a> RecipientPolicy<'a> {
    /// The policy of `config` (`[domains] local`, `[relay] trusted_networks`, `[delivery]
    /// subaddress_separator`) over `tables`.
    #[must_use]
    pub fn new(config: &'a postern_config::Config, tables: &'a Tables) -> Self {
        Self {
            local_domains: &config.domains.local,
            trusted_networks: &config.relay.trusted_networks,
            separators: &config.delivery.subaddress_separator,
            tables,
        }
    }
}

/// Resolves `rcpt` for a client at `client_ip`; `authenticated` is true after a successful
/// AUTH (RFC 4954), which allows relaying like a trusted network.
///
/// Returns the destinations (deduplicated, in order), `PermFail` with the reply to send
/// (550 5.1.1 unknown user, 550 5.7.1 relaying denied, or a virtual `error:` entry's reply), or
/// `TempFail` (451 4.3.0) for an alias loop.
pub fn resolve_recipient(
    p: &RecipientPolicy<'_>,
    client_ip: IpAddr,
    authenticated: bool,
    rcpt: &Address,
) -> Verdict<Vec<Destination>> {
    resolve_traced(p, relay_grant(p, client_ip, authenticated), rcpt, None)
}

/// Why a client may relay, if it may: `authenticated` (RFC 4954) or in `[relay]
/// trusted_networks`.
fn relay_grant(p: &RecipientPolicy<'_>, client_ip: IpAddr, authenticated: bool) -> Option<&'static str> {
    if authenticated {
        Some("authenticated")
    } else if is_trusted(client_ip, p.trusted_networks) {
        Some("trusted network")
    } else {
        None
    }
}

/// As [`resolve_recipient`], with every step that led to the verdict (`postern route`): the
/// same code path, so the explanation is what the daemon does.
pub fn explain_recipient(
    p: &RecipientPolicy<'_>,
    client_ip: IpAddr,
    authenticated: bool,
    rcpt: &Address,
) -> (Verdict<Vec<Destination>>, Vec<Traced>) {
    let mut trace = Vec::new();
    let verdict = resolve_traced(p, relay_grant(p, client_ip, authenticated), rcpt, Some(&mut trace));
    (verdict, trace)
}

/// As [`resolve_for_delivery`], with every step (`postern route` without `--client`).
pub fn explain_for_delivery(p: &RecipientPolicy<'_>, rcpt: &Address) -> (Verdict<Vec<Destination>>, Vec<Traced>) {
    let mut trace = Vec::new();
    let verdict = resolve_traced(p, Some(LOCAL_SUBMISSION), rcpt, Some(&mut trace));
    (verdict, trace)
}

/// The relay grant of mail that enters the queue on the host itself (the `sendmail` command,
/// DSNs, reports): it is ours, so it may go anywhere, the way the routes table says.
const LOCAL_SUBMISSION: &str = "local submission";

/// One step of a resolution, at a depth of expansion (0 for the address given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traced {
    /// How many table entries deep this step is.
    pub depth: usize,
    /// What was decided.
    pub step: Explain,
}

/// What one step of recipient resolution decided.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Explain {
    /// The domain is in `[domains] local`.
    LocalDomain(String),
    /// The domain is not ours: relaying is allowed for this reason, or denied (`None`).
    Relay {
        /// The domain.
        domain: String,
        /// `Some("trusted network")`, `Some("authenticated")`, or `None`: denied.
        granted: Option<&'static str>,
    },
    /// The routes table entry with this key decided at RCPT time.
    Route(String),
    /// The address has a sub-address: looked up also as `base`.
    SubAddress {
        /// The user part without the detail.
        base: String,
        /// The detail, after the separator.
        detail: String,
    },
    /// The virtual table entry `key` matched; `target` as written, `substituted` when it is a
    /// template (`%1`).
    Virtual {
        /// The key that matched.
        key: String,
        /// Its target.
        target: Target,
        /// The target after `%1`/`%2`/`%3` substitution.
        substituted: Option<Target>,
    },
    /// The alias `name` expands to these targets.
    Alias {
        /// The alias name.
        name: String,
        /// Its targets.
        targets: Vec<Target>,
    },
    /// A local mailbox (users table, or the implicit `postmaster`).
    Mailbox {
        /// The mailbox name.
        name: String,
        /// Whether it is the implicit postmaster (RFC 5321 §4.5.1).
        implicit: bool,
    },
    /// Forwarded to this address in another domain.
    Remote(Address),
    /// The message is piped to `command` for alias `name`.
    Pipe {
        /// The command line.
        command: String,
        /// The alias that named it.
        name: String,
    },
    /// An SRS address of ours, reversed to the original sender (a bounce of forwarded mail).
    SrsReversed(Address),
    /// The resolution failed here.
    Failed(Reply),
}

fn resolve_traced(
    p: &RecipientPolicy<'_>,
    granted: Option<&'static str>,
    rcpt: &Address,
    mut trace: Option<&mut Vec<Traced>>,
) -> Verdict<Vec<Destination>> {
    let mut note = |step: Explain| {
        if let Some(t) = trace.as_deref_mut() {
            t.push(Traced { depth: 0, step });
        }
    };
    if let Some(keys) = &p.tables.srs
        && rcpt.domain() == keys.domain
    {
        let srs = crate::srs::Srs::from(keys);
        if srs.is_ours(rcpt) {
            return srs_bounce(&srs, rcpt, &mut note);
        }
    }
    if !p.is_local(rcpt.domain()) {
        note(Explain::Relay { domain: rcpt.domain().to_owned(), granted });
        if granted.is_none() {
            let r = Reply::new(550, EnhancedStatus(5, 7, 1), format!("<{rcpt}>: Relaying denied"));
            note(Explain::Failed(r.clone()));
            return Verdict::PermFail(r);
        }
        // The routes table decides at RCPT time where relayed mail goes (sendmail mailertable).
        let entry = p.tables.route_entry(rcpt.domain());
        let verdict = match entry.map(|(_, r)| r) {
            Some(Route::Error(r)) if r.is_temporary() => Verdict::TempFail(r.clone()),
            Some(Route::Error(r)) => Verdict::PermFail(r.clone()),
            Some(Route::Local(mailbox)) => Verdict::Ok(vec![Destination::Mailbox {
                name: mailbox.clone(),
                address: Address::new(mailbox.as_str(), &p.local_domains[0]),
            }]),
            // Run as `[delivery] pipe_user` (no alias names an account).
            Some(Route::Pipe(command)) => Verdict::Ok(vec![Destination::Pipe {
                command: command.clone(),
                name: String::new(),
                address: rcpt.clone(),
            }]),
            Some(Route::Relay(_) | Route::Lmtp(_)) | None => Verdict::Ok(vec![Destination::Remote(rcpt.clone())]),
        };
        if let Some((key, Route::Error(_) | Route::Local(_) | Route::Pipe(_))) = entry {
            note(Explain::Route(key.to_owned()));
        }
        match &verdict {
            Verdict::TempFail(r) | Verdict::PermFail(r) => note(Explain::Failed(r.clone())),
            Verdict::Ok(d) => match d.first() {
                Some(Destination::Mailbox { name, .. }) => {
                    note(Explain::Mailbox { name: name.clone(), implicit: false })
                }
                Some(Destination::Pipe { .. }) => {}
                _ => note(Explain::Remote(rcpt.clone())),
            },
        }
        return verdict;
    }
    note(Explain::LocalDomain(rcpt.domain().to_owned()));
    let mut walk = Expansion { policy: p, rcpt, seen: HashSet::new(), out: Vec::new(), trace };
    match walk.local(rcpt, 0) {
        Ok(()) => {
            let mut seen = HashSet::new();
            walk.out.retain(|d| seen.insert(d.clone()));
            Verdict::Ok(walk.out)
        }
        Err(Failure::Perm(r)) => {
            walk.note(0, Explain::Failed(r.clone()));
            Verdict::PermFail(r)
        }
        Err(Failure::Temp(r)) => {
            walk.note(0, Explain::Failed(r.clone()));
            Verdict::TempFail(r)
        }
    }
}

/// Mail to one of our SRS addresses from a sender other than the null sender: `550 5.7.1`, so
/// that an SRS address is never a relay, forged or not (issue 26). What legitimately goes back
/// to one comes from the null reverse-path: bounces (RFC 5321 §4.5.5) and auto-replies
/// (RFC 3834 §3.1.7). `None`: not an SRS address of ours, or the null sender.
pub fn srs_sender_refusal(p: &RecipientPolicy<'_>, reverse_path: &ReversePath, rcpt: &Address) -> Option<Reply> {
    let ours = is_srs_address(p, rcpt);
    (ours && *reverse_path != ReversePath::Null).then(|| {
        Reply::new(
            550,
            EnhancedStatus(5, 7, 1),
            format!("<{rcpt}>: Recipient address rejected: an SRS address takes bounces only (the null sender)"),
        )
    })
}

/// Whether `rcpt` is at `[forwarding] srs_domain` and has the shape of one of our SRS
/// addresses (`SRS0=…`, `SRS1=…`), verified or not: a refused one counts toward a ban of the
/// client's network, so that guessing hashes costs the guesser (issue 26).
pub fn is_srs_address(p: &RecipientPolicy<'_>, rcpt: &Address) -> bool {
    p.tables.srs.as_ref().is_some_and(|keys| rcpt.domain() == keys.domain && crate::srs::Srs::from(keys).is_ours(rcpt))
}

/// A bounce to one of our SRS addresses: accepted only when hash and timestamp verify, and sent
/// on to the original sender; forged or expired ones get `550 5.1.1` at RCPT.
fn srs_bounce(srs: &crate::srs::Srs, rcpt: &Address, note: &mut impl FnMut(Explain)) -> Verdict<Vec<Destination>> {
    match srs.reverse(rcpt, crate::srs::today()) {
        Ok(original) => {
            note(Explain::SrsReversed(original.clone()));
            Verdict::Ok(vec![Destination::Remote(original)])
        }
        Err(e) => {
            let r = Reply::new(550, EnhancedStatus(5, 1, 1), format!("<{rcpt}>: Recipient address rejected: {e}"));
            note(Explain::Failed(r.clone()));
            Verdict::PermFail(r)
        }
    }
}

/// Resolves an address for mail that enters the queue on the host itself: the `sendmail`
/// command (the submission socket), DSNs, reports. As [`resolve_recipient`] resolves it for a
/// trusted client: local domains through the tables, other domains through the routes table
/// (an `error:`, `local:` or `pipe:` route applies to cron's mail as to SMTP's, as sendmail's
/// mailertable did), else remote.
pub fn resolve_for_delivery(p: &RecipientPolicy<'_>, address: &Address) -> Verdict<Vec<Destination>> {
    resolve_traced(p, Some(LOCAL_SUBMISSION), address, None)
}

enum Failure {
    Perm(Reply),
    Temp(Reply),
}

fn unknown(rcpt: &Address) -> Failure {
    Failure::Perm(Reply::new(
        550,
        EnhancedStatus(5, 1, 1),
        format!("<{rcpt}>: Recipient address rejected: User unknown"),
    ))
}

fn looped(rcpt: &Address) -> Failure {
    Failure::Temp(Reply::new(451, EnhancedStatus(4, 3, 0), format!("<{rcpt}>: alias expansion too deep or looping")))
}

impl RecipientPolicy<'_> {
    /// Whether `domain` (lower-case) is one of ours.
    pub fn is_local(&self, domain: &str) -> bool {
        self.local_domains.iter().any(|d| d == domain)
    }

    /// `local+detail` → (`local`, `Some(('+', "detail"))`), at the first separator character
    /// present (not at the start); `(local, None)` without one.
    pub fn split_detail<'s>(&self, local: &'s str) -> (&'s str, Option<(char, &'s str)>) {
        match local.char_indices().find(|(_, c)| self.separators.contains(*c)) {
            Some((i, sep)) if i > 0 => (&local[..i], Some((sep, &local[i + sep.len_utf8()..]))),
            _ => (local, None),
        }
    }
}

/// One recipient's expansion through the tables: the alias names already expanded and the
/// destinations found so far. Errors name the recipient as given in RCPT TO.
struct Expansion<'p, 'a, 't> {
    policy: &'p RecipientPolicy<'a>,
    rcpt: &'p Address,
    seen: HashSet<String>,
    out: Vec<Destination>,
    /// Where the steps are recorded, for `postern route`.
    trace: Option<&'t mut Vec<Traced>>,
}

impl Expansion<'_, '_, '_> {
    fn note(&mut self, depth: usize, step: Explain) {
        if let Some(t) = self.trace.as_deref_mut() {
            t.push(Traced { depth, step });
        }
    }

    /// An address in a local domain: virtual table, then its local part as a name.
    ///
    /// Virtual keys, most specific first (sendmail's virtusertable with sub-addresses):
    /// `user+detail@domain`, `user+*@domain` (`user++@domain` for an empty detail),
    /// `user@domain`, `@domain`.
    fn local(&mut self, address: &Address, depth: usize) -> Result<(), Failure> {
        if depth > MAX_DEPTH {
            return Err(looped(self.rcpt));
        }
        let p = self.policy;
        let local = address.local_part().to_lowercase();
        let (base, detail) = p.split_detail(&local);
        if let Some((_, d)) = detail {
            self.note(depth, Explain::SubAddress { base: base.to_owned(), detail: d.to_owned() });
        }
        let domain = address.domain();
        let mut keys = vec![format!("{local}@{domain}")];
        if let Some((sep, d)) = detail {
            keys.push(if d.is_empty() {
                format!("{base}{sep}{sep}@{domain}")
            } else {
                format!("{base}{sep}*@{domain}")
            });
            keys.push(format!("{base}@{domain}"));
        }
        keys.push(format!("@{domain}"));
        if let Some((key, target)) = keys.iter().find_map(|k| p.tables.virtual_.get(k).map(|t| (k, t))) {
            let substituted = match target {
                Target::Template(t) => Some(t.substitute(base, detail).map_err(|e| {
                    Failure::Temp(Reply::new(451, EnhancedStatus(4, 3, 5), format!("virtual table entry {key}: {e}")))
                })?),
                _ => None,
            };
            let step = Explain::Virtual { key: key.clone(), target: target.clone(), substituted: substituted.clone() };
            self.note(depth, step);
            if *target != Target::AsAddressed {
                return self.follow(substituted.as_ref().unwrap_or(target), address, depth);
            }
        }
        self.name(base, address, depth)
    }

    /// Where a table entry points; `address` is the address whose entry it is.
    fn follow(&mut self, target: &Target, address: &Address, depth: usize) -> Result<(), Failure> {
        match target {
            Target::Error(reply) if reply.is_temporary() => Err(Failure::Temp(reply.clone())),
            Target::Error(reply) => Err(Failure::Perm(reply.clone())),
            Target::Address(a) if self.policy.is_local(a.domain()) => self.local(a, depth + 1),
            Target::Address(a) => {
                self.note(depth + 1, Explain::Remote(a.clone()));
                self.out.push(Destination::Remote(a.clone()));
                Ok(())
            }
            Target::Name(name) => self.name(name, address, depth + 1),
            Target::AsAddressed | Target::Template(_) => {
                let local = address.local_part().to_lowercase();
                self.name(self.policy.split_detail(&local).0, address, depth + 1)
            }
            Target::Pipe(command) => {
                let local = address.local_part().to_lowercase();
                self.pipe(command, self.policy.split_detail(&local).0, address, depth + 1);
                Ok(())
            }
        }
    }

    /// A `|command` target of alias `name`.
    fn pipe(&mut self, command: &str, name: &str, address: &Address, depth: usize) {
        self.note(depth, Explain::Pipe { command: command.to_owned(), name: name.to_owned() });
        let domain =
            if self.policy.is_local(address.domain()) { address.domain() } else { &self.policy.local_domains[0] };
        self.out.push(Destination::Pipe {
            command: command.to_owned(),
            name: name.to_owned(),
            address: Address::new(name, domain),
        });
    }

    /// A local name: alias (expanded) or mailbox. `address` gives the domain for Delivered-To.
    fn name(&mut self, name: &str, address: &Address, depth: usize) -> Result<(), Failure> {
        if depth > MAX_DEPTH {
            return Err(looped(self.rcpt));
        }
        let p = self.policy;
        let is_user = p.tables.users.contains_key(name) || name == "postmaster";
        if let Some(targets) = p.tables.aliases.get(name) {
            // A name met again during its own expansion is the mailbox itself (`bob: bob, archive`);
            // if there is no such mailbox, the aliases loop.
            if self.seen.insert(name.to_owned()) {
                self.note(depth, Explain::Alias { name: name.to_owned(), targets: targets.clone() });
                for t in targets {
                    match t {
                        Target::Pipe(command) => self.pipe(command, name, address, depth + 1),
                        _ => self.follow(t, address, depth)?,
                    }
                }
                return Ok(());
            }
            if !is_user {
                return Err(looped(self.rcpt));
            }
        }
        if is_user {
            let implicit = !p.tables.users.contains_key(name);
            self.note(depth, Explain::Mailbox { name: name.to_owned(), implicit });
            let domain = if p.is_local(address.domain()) { address.domain() } else { &p.local_domains[0] };
            self.out.push(Destination::Mailbox { name: name.to_owned(), address: Address::new(name, domain) });
            return Ok(());
        }
        Err(unknown(self.rcpt))
    }
}

#[cfg(test)]
mod tests;
