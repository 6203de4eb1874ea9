//! STARTTLS (RFC 3207). The session answers `220 2.0.0`, asks the driver for the handshake
//! ([`Step::StartTls`]) and, once it succeeded, forgets everything the client said before
//! (§4.2): the HELO name, any transaction, and any bytes pipelined after the STARTTLS line
//! (those are dropped by [`Session::advance`], the CVE-2011-0411 class of injection).

use super::{Session, State, Step, TlsInfo};
use crate::replies;

impl Session {
    pub(super) fn starttls(&mut self) -> Option<Step> {
        let refusal = if self.tls.is_some() {
            Some(replies::tls_already_active())
        } else if !self.params.starttls {
            Some(replies::tls_not_available())
        } else if self.tx.is_some() {
            Some(replies::in_transaction())
        } else {
            None
        };
        if let Some(r) = refusal {
            self.error(r);
            return self.closed_step();
        }
        self.reply(replies::ready_for_tls());
        self.state = State::AwaitTls;
        Some(Step::StartTls)
    }

    /// The handshake after [`Step::StartTls`] succeeded: the session starts over as if just
    /// connected, without a greeting (RFC 3207 §4.2); the client must send EHLO again.
    pub fn tls_started(&mut self, info: TlsInfo) {
        assert!(matches!(self.state, State::AwaitTls), "tls_started without StartTls");
        self.state = State::Command;
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.tls = Some(info);
    }
}
