//! HELO and EHLO (RFC 5321 §4.1.1.1): reset the session and announce extensions (STARTTLS
//! while the connection is in clear text, AUTH and REQUIRETLS only under TLS).

use postern_types::{Reply, Verdict};

use super::{Session, State, Step};

impl Session {
    /// The first HELO/EHLO of a screened session waits for [`Step::CheckClient`].
    pub(super) fn check_helo(&mut self, name: String, esmtp: bool) -> Option<Step> {
        if self.params.screen && !self.screened {
            self.state = State::AwaitClient(name.clone(), esmtp);
            return Some(Step::CheckClient(name));
        }
        self.proceed_helo(name, esmtp);
        self.closed_step()
    }

    /// The answer to [`Step::CheckClient`]: `Ok` answers the HELO/EHLO as usual (and the
    /// client is not screened again); a refusal answers it with the verdict's reply and leaves
    /// the session without a HELO, so MAIL is refused until a HELO passes.
    pub fn client_verdict(&mut self, verdict: Verdict<()>) {
        let State::AwaitClient(name, esmtp) = std::mem::replace(&mut self.state, State::Command) else {
            panic!("client_verdict without CheckClient");
        };
        match verdict {
            Verdict::Ok(()) => {
                self.screened = true;
                self.proceed_helo(name, esmtp);
            }
            Verdict::TempFail(r) | Verdict::PermFail(r) => {
                self.helo = None;
                self.error(r);
            }
        }
    }

    /// Any HELO/EHLO name is accepted here; judging it is the policy's job (a later version).
    pub(super) fn proceed_helo(&mut self, name: String, esmtp: bool) {
        self.tx = None;
        self.helo = Some(name);
        self.esmtp = esmtp;
        if !esmtp {
            let r = Reply::plain(250, self.params.hostname.clone());
            self.reply(r);
            return;
        }
        // No VRFY/EXPN: we refuse them. No enhanced codes outside the status, see RFC 2034.
        let mut lines = vec![
            self.params.hostname.clone(),
            "PIPELINING".into(),
            format!("SIZE {}", self.params.max_message_size),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
            "SMTPUTF8".into(),
            "CHUNKING".into(),
            "DSN".into(),
        ];
        if self.params.starttls && self.tls.is_none() {
            lines.push("STARTTLS".into());
        }
        // RFC 8689 §2: REQUIRETLS is offered once the session is under TLS, as Exim does.
        if self.tls.is_some() {
            lines.push("REQUIRETLS".into());
        }
        // RFC 4954 §4 and RFC 8314 §3: passwords travel only under TLS, so AUTH is not even
        // advertised before it.
        if self.params.auth && self.tls.is_some() && self.auth.is_none() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        self.reply(Reply { code: 250, status: None, lines });
    }
}
