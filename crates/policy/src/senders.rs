//! Which sender addresses an authenticated user may use (RFC 6409 §6.1: the submission server
//! may check that the sender is authorised; Postfix's `reject_sender_login_mismatch`).
//!
//! An address listed in the senders table (`user@domain` or `@domain`) belongs to the logins
//! listed there. An address without an entry belongs to the mailbox it is delivered to: the
//! users-table name that every destination of the address resolves to (so `bob@example.test`,
//! `bob+news@example.test` and a virtual alias pointing only at bob are bob's). Anything else is
//! refused with `553 5.7.1`.

use postern_types::{Address, Destination, EnhancedStatus, Reply, Verdict};

use crate::recipients::{RecipientPolicy, resolve_for_delivery};

/// Whether `login` may use `address` as envelope sender or From address.
pub fn may_send_as(p: &RecipientPolicy<'_>, login: &str, address: &Address) -> bool {
    let login = login.to_lowercase();
    if let Some(logins) = p.tables.sender_logins(&address.to_string()) {
        return logins.contains(&login);
    }
    if !p.is_local(address.domain()) {
        return false;
    }
    match resolve_for_delivery(p, address) {
        Verdict::Ok(destinations) => {
            !destinations.is_empty()
                && destinations.iter().all(|d| matches!(d, Destination::Mailbox { name, .. } if *name == login))
        }
        Verdict::TempFail(_) | Verdict::PermFail(_) => false,
    }
}

/// The reply refusing `address` to `login`: `553 5.7.1` (RFC 5321 §4.2.2 553 "mailbox name not
/// allowed"; RFC 3463 5.7.1 "delivery not authorized").
pub fn not_owned(login: &str, address: &Address) -> Reply {
    Reply::new(553, EnhancedStatus(5, 7, 1), format!("<{address}>: Sender address rejected: not owned by user {login}"))
}
