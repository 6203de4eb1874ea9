//! Postern's shared vocabulary. This crate owns the types every layer speaks: mail addresses
//! ([`Address`], [`ReversePath`]), the [`QueueId`], SMTP replies with enhanced status codes
//! ([`Reply`], [`EnhancedStatus`]) and the temporary-versus-permanent [`Verdict`] that every
//! lookup, rule and delivery returns. It does no I/O and knows nothing of tokio.

mod address;
pub mod dsn;
pub mod failpoint;
pub mod net;
mod queue_id;
mod reply;
pub mod tls_report;
mod verdict;

pub use address::{Address, AddressError, ForwardPath, ReversePath};
pub use queue_id::QueueId;
pub use reply::{EnhancedStatus, Reply, printable};
pub use verdict::{Destination, Verdict};
