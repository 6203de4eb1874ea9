//! Policy decisions, pure over the loaded configuration and tables. This crate owns recipient
//! resolution at RCPT time ([`recipients`]) and the relay decision ([`relay`]): the two rules
//! that decide whether Postern accepts a recipient, and so whether it is an open relay; and the
//! password hashes and sender addresses of authenticated submission ([`credentials`],
//! [`senders`]).

pub mod credentials;
pub mod recipients;
pub mod relay;
pub mod screen;
pub mod senders;
pub mod srs;
pub mod sts;

pub use recipients::{
    RecipientPolicy, explain_for_delivery, is_srs_address, resolve_for_delivery, resolve_recipient, srs_sender_refusal,
};
pub use relay::is_trusted;
