//! Email authentication (issue: authentication). mail-auth implements the protocols — DKIM
//! (RFC 6376, Ed25519 RFC 8463), SPF (RFC 7208), DMARC (RFC 7489, organisational domain by DNS
//! tree walk), ARC (RFC 8617); this crate owns what Postern does with them:
//!
//! - [`keys`]: DKIM private keys (load, generate) and the TXT records to publish;
//! - [`sign`]: which messages are signed with which keys (the SigningTable), and signing;
//! - [`verify`]: the checks of an incoming message and the `Authentication-Results` /
//!   `Received-SPF` headers (RFC 8601, RFC 7208 §9.1), removal of forged results;
//! - [`decision`]: the configured action for each result, as a pure function;
//! - [`seal`]: ARC sealing of forwarded mail.

pub mod arc;
pub mod decision;
pub mod keys;
pub mod seal;
pub mod sign;
pub mod spf;
pub mod verify;

pub use decision::{Decision, decide, spf_refusal};
pub use seal::ArcKey;
pub use sign::Signer;
pub use verify::{Checker, Findings, Outcome, strip_forged_results};
