//! Recipient resolution at RCPT time: no accept-then-bounce.
//!
//! Order (sendmail's, as postmasters know it): is the domain local → virtual table → aliases →
//! users.
//!
//! 1. A domain that is not local is accepted only from a trusted client (relay), otherwise
//!    `550 5.7.1 Relaying denied`.
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
use postern_config::{Tables, Target};
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

/// Resolves `rcpt` for a client at `client_ip`.
///
/// Returns the destinations (deduplicated, in order), `PermFail` with the reply to send
/// (550 5.1.1 unknown user, 550 5.7.1 relaying denied, or a virtual `error:` entry's reply), or
/// `TempFail` (451 4.3.0) for an alias loop.
pub fn resolve_recipient(p: &RecipientPolicy<'_>, client_ip: IpAddr, rcpt: &Address) -> Verdict<Vec<Destination>> {
    if !p.is_local(rcpt.domain()) {
        return if is_trusted(client_ip, p.trusted_networks) {
            Verdict::Ok(vec![Destination::Remote(rcpt.clone())])
        } else {
            Verdict::PermFail(Reply::new(550, EnhancedStatus(5, 7, 1), format!("<{rcpt}>: Relaying denied")))
        };
    }
    let mut out = Vec::new();
    match p.resolve_local(rcpt, 0, &mut HashSet::new(), &mut out) {
        Ok(()) => {
            let mut seen = HashSet::new();
            out.retain(|d| seen.insert(d.clone()));
            Verdict::Ok(out)
        }
        Err(Failure::Perm(r)) => Verdict::PermFail(r),
        Err(Failure::Temp(r)) => Verdict::TempFail(r),
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
    fn is_local(&self, domain: &str) -> bool {
        self.local_domains.iter().any(|d| d == domain)
    }

    /// `local+detail` → `local`, using the first separator character present.
    fn base<'s>(&self, local: &'s str) -> &'s str {
        match local.find(|c| self.separators.contains(c)) {
            Some(i) if i > 0 => &local[..i],
            _ => local,
        }
    }

    fn resolve_local(
        &self,
        rcpt: &Address,
        depth: usize,
        seen: &mut HashSet<String>,
        out: &mut Vec<Destination>,
    ) -> Result<(), Failure> {
        if depth > MAX_DEPTH {
            return Err(looped(rcpt));
        }
        let local = rcpt.local_part().to_lowercase();
        let base = self.base(&local);
        let domain = rcpt.domain();
        let keys = [format!("{local}@{domain}"), format!("{base}@{domain}"), format!("@{domain}")];
        if let Some(target) = keys.iter().find_map(|k| self.tables.virtual_.get(k))
            && *target != Target::AsAddressed
        {
            return self.follow(target, rcpt, depth, seen, out);
        }
        self.resolve_name(base, rcpt, depth, seen, out)
    }

    fn follow(
        &self,
        target: &Target,
        rcpt: &Address,
        depth: usize,
        seen: &mut HashSet<String>,
        out: &mut Vec<Destination>,
    ) -> Result<(), Failure> {
        match target {
            Target::Error(reply) if reply.is_temporary() => Err(Failure::Temp(reply.clone())),
            Target::Error(reply) => Err(Failure::Perm(reply.clone())),
            Target::Address(a) if self.is_local(a.domain()) => self.resolve_local(a, depth + 1, seen, out),
            Target::Address(a) => {
                out.push(Destination::Remote(a.clone()));
                Ok(())
            }
            Target::Name(name) => self.resolve_name(name, rcpt, depth + 1, seen, out),
            Target::AsAddressed => {
                self.resolve_name(self.base(&rcpt.local_part().to_lowercase()), rcpt, depth + 1, seen, out)
            }
        }
    }

    /// A local name: alias (expanded) or mailbox.
    fn resolve_name(
        &self,
        name: &str,
        rcpt: &Address,
        depth: usize,
        seen: &mut HashSet<String>,
        out: &mut Vec<Destination>,
    ) -> Result<(), Failure> {
        if depth > MAX_DEPTH {
            return Err(looped(rcpt));
        }
        let is_user = self.tables.users.contains_key(name) || name == "postmaster";
        if let Some(targets) = self.tables.aliases.get(name) {
            // A name met again during its own expansion is the mailbox itself (`bob: bob, archive`);
            // if there is no such mailbox, the aliases loop.
            if seen.insert(name.to_owned()) {
                for t in targets {
                    self.follow(t, rcpt, depth, seen, out)?;
                }
                return Ok(());
            }
            if !is_user {
                return Err(looped(rcpt));
            }
        }
        if is_user {
            let domain = if self.is_local(rcpt.domain()) { rcpt.domain() } else { &self.local_domains[0] };
            out.push(Destination::Mailbox { name: name.to_owned(), address: Address::new(name, domain) });
            return Ok(());
        }
        Err(unknown(rcpt))
    }
}

#[cfg(test)]
mod tests;
