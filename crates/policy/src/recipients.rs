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
use postern_types::{Address, Destination, EnhancedStatus, Reply, Verdict};

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
    if !p.is_local(rcpt.domain()) {
        if !authenticated && !is_trusted(client_ip, p.trusted_networks) {
            return Verdict::PermFail(Reply::new(550, EnhancedStatus(5, 7, 1), format!("<{rcpt}>: Relaying denied")));
        }
        // The routes table decides at RCPT time where relayed mail goes (sendmail mailertable).
        return match p.tables.route_for(rcpt.domain()) {
            Some(Route::Error(r)) if r.is_temporary() => Verdict::TempFail(r.clone()),
            Some(Route::Error(r)) => Verdict::PermFail(r.clone()),
            Some(Route::Local(mailbox)) => Verdict::Ok(vec![Destination::Mailbox {
                name: mailbox.clone(),
                address: Address::new(mailbox.as_str(), &p.local_domains[0]),
            }]),
            Some(Route::Relay(_)) | None => Verdict::Ok(vec![Destination::Remote(rcpt.clone())]),
        };
    }
    let mut walk = Expansion { policy: p, rcpt, seen: HashSet::new(), out: Vec::new() };
    match walk.local(rcpt, 0) {
        Ok(()) => {
            let mut seen = HashSet::new();
            walk.out.retain(|d| seen.insert(d.clone()));
            Verdict::Ok(walk.out)
        }
        Err(Failure::Perm(r)) => Verdict::PermFail(r),
        Err(Failure::Temp(r)) => Verdict::TempFail(r),
    }
}

/// Resolves an address for mail Postern generates itself (DSNs): like [`resolve_recipient`] for
/// local domains, and any other domain is remote; relaying rules do not apply.
pub fn resolve_for_delivery(p: &RecipientPolicy<'_>, address: &Address) -> Verdict<Vec<Destination>> {
    if p.is_local(address.domain()) {
        resolve_recipient(p, std::net::Ipv4Addr::UNSPECIFIED.into(), false, address)
    } else {
        Verdict::Ok(vec![Destination::Remote(address.clone())])
    }
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

    /// `local+detail` → `local`, using the first separator character present.
    fn base<'s>(&self, local: &'s str) -> &'s str {
        match local.find(|c| self.separators.contains(c)) {
            Some(i) if i > 0 => &local[..i],
            _ => local,
        }
    }
}

/// One recipient's expansion through the tables: the alias names already expanded and the
/// destinations found so far. Errors name the recipient as given in RCPT TO.
struct Expansion<'p, 'a> {
    policy: &'p RecipientPolicy<'a>,
    rcpt: &'p Address,
    seen: HashSet<String>,
    out: Vec<Destination>,
}

impl Expansion<'_, '_> {
    /// An address in a local domain: virtual table, then its local part as a name.
    fn local(&mut self, address: &Address, depth: usize) -> Result<(), Failure> {
        if depth > MAX_DEPTH {
            return Err(looped(self.rcpt));
        }
        let p = self.policy;
        let local = address.local_part().to_lowercase();
        let base = p.base(&local);
        let domain = address.domain();
        let keys = [format!("{local}@{domain}"), format!("{base}@{domain}"), format!("@{domain}")];
        if let Some(target) = keys.iter().find_map(|k| p.tables.virtual_.get(k))
            && *target != Target::AsAddressed
        {
            return self.follow(target, address, depth);
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
                self.out.push(Destination::Remote(a.clone()));
                Ok(())
            }
            Target::Name(name) => self.name(name, address, depth + 1),
            Target::AsAddressed => {
                self.name(self.policy.base(&address.local_part().to_lowercase()), address, depth + 1)
            }
        }
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
                for t in targets {
                    self.follow(t, address, depth)?;
                }
                return Ok(());
            }
            if !is_user {
                return Err(looped(self.rcpt));
            }
        }
        if is_user {
            let domain = if p.is_local(address.domain()) { address.domain() } else { &p.local_domains[0] };
            self.out.push(Destination::Mailbox { name: name.to_owned(), address: Address::new(name, domain) });
            return Ok(());
        }
        Err(unknown(self.rcpt))
    }
}

#[cfg(test)]
mod tests;
