//! Temporary versus permanent, as a type (see ARCHITECTURE.md, "Invariants").

use crate::{Address, Reply};

/// The answer of every lookup, rule and delivery attempt.
///
/// `TempFail` must only ever become a 4xx reply or a retry; `PermFail` a 5xx reply or a bounce.
/// The reply carried is the one the SMTP session would send; deliveries log its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<T> {
    /// Success with its value.
    Ok(T),
    /// Try again later (4xx).
    TempFail(Reply),
    /// Will not succeed as it is (5xx).
    PermFail(Reply),
}

/// Where one accepted recipient goes after resolution (aliases, virtual table).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// A local mailbox by name (a line of the users table), delivered to its Maildir.
    /// `address` is the final recipient address, used for Delivered-To.
    Mailbox { name: String, address: Address },
    /// A remote address, handed to outbound delivery.
    Remote(Address),
    /// A command the message is piped to (`|command` in the aliases, with `[delivery]
    /// allow_pipes`, or a `pipe:` route): `name` is the alias that named it (its Unix account
    /// runs the command when there is one), empty for a route (`[delivery] pipe_user` runs it);
    /// `address` the final recipient for Delivered-To and `$RECIPIENT`.
    Pipe { command: String, name: String, address: Address },
}
