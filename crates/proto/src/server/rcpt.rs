//! RCPT TO (RFC 5321 §4.1.1.3). The session checks syntax and limits; whether the recipient
//! exists or may be relayed to is asked of the driver ([`Step::CheckRecipient`]), which asks the
//! policy.

use postern_types::dsn::{Notify, Orcpt};
use postern_types::{Address, Destination, EnhancedStatus, Verdict};

use super::{AcceptedRecipient, Session, State, Step};
use crate::replies;

impl Session {
    pub(super) fn check_rcpt(
        &mut self,
        local: String,
        domain: Option<String>,
        path: Option<Address>,
        params: Vec<(String, Option<String>)>,
    ) -> Option<Step> {
        let Some(tx) = &self.tx else {
            self.error(replies::need_mail());
            return self.closed_step();
        };
        let mut dsn = (None, None);
        for (key, value) in &params {
            match (key.as_str(), value.as_deref()) {
                // RFC 3461 §4.1, §4.2.
                ("NOTIFY", Some(v)) if Notify::parse(v).is_some() => dsn.0 = Notify::parse(v),
                ("ORCPT", Some(v)) if Orcpt::parse(v).is_some() => dsn.1 = Orcpt::parse(v),
                ("NOTIFY" | "ORCPT", _) => {
                    self.error(replies::bad_param_value(key));
                    return self.closed_step();
                }
                _ => {
                    self.error(replies::unsupported_param(key));
                    return self.closed_step();
                }
            }
        }
        if tx.recipients.len() >= self.params.max_recipients {
            self.error(replies::too_many_recipients());
            return self.closed_step();
        }
        let address = match (path, domain) {
            (Some(a), _) => a,
            (None, _) => Address::new(local, &self.params.postmaster_domain),
        };
        if address.is_utf8() && !tx.smtputf8 {
            self.error(replies::needs_smtputf8());
            return self.closed_step();
        }
        self.state = State::AwaitRecipient(address.clone(), dsn.0, dsn.1);
        Some(Step::CheckRecipient(address))
    }

    pub(super) fn proceed_rcpt(
        &mut self,
        address: Address,
        notify: Option<Notify>,
        orcpt: Option<Orcpt>,
        verdict: Verdict<Vec<Destination>>,
    ) {
        match verdict {
            Verdict::Ok(destinations) => {
                if let Some(tx) = &mut self.tx {
                    tx.recipients.push(AcceptedRecipient { forward_path: address, destinations, notify, orcpt });
                }
                self.reply(replies::ok(EnhancedStatus(2, 1, 5)));
            }
            Verdict::TempFail(reply) | Verdict::PermFail(reply) => self.error(reply),
        }
    }
}
