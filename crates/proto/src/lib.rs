//! Sans-I/O SMTP (RFC 5321). This crate owns the protocol: parsing command lines
//! ([`command`]), decoding DATA with dot-unstuffing and line-ending checks ([`data`]), the server
//! [`Session`] state machine that turns received bytes into replies and [`Step`]s for the driver
//! to perform, and the trace header composed on acceptance ([`trace`]).
//!
//! Nothing here reads a socket, touches a file or knows about tokio: the inbound driver feeds
//! bytes in, performs each [`Step`] (a recipient lookup, a spool commit) and writes out the
//! replies the session produced. That keeps every SMTP rule unit-testable.

pub mod client;
pub mod command;
pub mod data;
pub mod loops;
pub mod refusal;
pub mod replies;
pub mod requiretls;
pub mod server;
pub mod submission;
pub mod trace;

pub use command::Command;
pub use refusal::Refusal;
pub use server::{AcceptedRecipient, AuthOutcome, Phase, Session, SessionParams, Step, TlsInfo, Transaction};
