//! MAIL FROM (RFC 5321 §4.1.1.2) with the SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8
//! (RFC 6531), DSN (RFC 3461) and REQUIRETLS (RFC 8689, only under TLS) parameters. On a submission listener MAIL needs TLS and AUTH first (RFC 6409 §4.3,
//! RFC 4954 §6: 530 5.7.0); an authenticated sender is checked by the driver
//! ([`Step::CheckSender`]).

use postern_types::dsn::is_printable_xtext;
use postern_types::{EnhancedStatus, Reply, ReversePath};

use super::{MailTx, Session, State, Step};
use crate::replies;

impl Session {
    pub(super) fn check_mail(&mut self, path: ReversePath, params: Vec<(String, Option<String>)>) -> Option<Step> {
        let refusal = if self.helo.is_none() {
            Some(replies::need_helo())
        } else if self.tx.is_some() {
            Some(replies::nested_mail())
        } else if self.params.require_auth && self.tls.is_none() {
            Some(replies::need_tls())
        } else if self.params.require_auth && self.auth.is_none() {
            Some(replies::need_auth())
        } else if let Some(r) = &self.mail_refusal {
            Some(r.clone())
        } else {
            self.mail_params(path, params).err()
        };
        if let Some(r) = refusal {
            self.error(r);
            return self.closed_step();
        }
        if (self.auth.is_some() || self.params.check_sender)
            && let Some(MailTx { reverse_path: ReversePath::Mailbox(a), .. }) = &self.tx
        {
            let a = a.clone();
            let tx = self.tx.take().expect("matched above");
            self.state = State::AwaitSender(Box::new(tx));
            return Some(Step::CheckSender(a));
        }
        self.reply(replies::ok(EnhancedStatus(2, 1, 0)));
        None
    }

    /// Parses the parameters and opens the transaction, or returns the reply refusing them.
    fn mail_params(&mut self, path: ReversePath, params: Vec<(String, Option<String>)>) -> Result<(), Reply> {
        let mut body_8bit = false;
        let mut smtputf8 = false;
        let mut ret_full = None;
        let mut envid = None;
        let mut require_tls = false;
        for (key, value) in &params {
            if !self.esmtp {
                // Parameters are service extensions; HELO clients get none (RFC 5321 §4.1.1.2).
                return Err(replies::unsupported_param(key));
            }
            match (key.as_str(), value.as_deref()) {
                ("SIZE", Some(v)) => match v.parse::<u64>() {
                    // RFC 1870 §6: a declared size above our limit is refused with 552 5.3.4.
                    Ok(n) if n > self.params.max_message_size as u64 => return Err(replies::size_exceeded()),
                    Ok(_) => {}
                    Err(_) => return Err(replies::bad_param_value(key)),
                },
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => body_8bit = false,
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => body_8bit = true,
                ("BODY", _) => return Err(replies::bad_param_value(key)),
                ("SMTPUTF8", None) => smtputf8 = true,
                // RFC 8689 §4.1: tag the message; offered only under TLS (§2), so refused in
                // clear text as any parameter not advertised.
                ("REQUIRETLS", None) if self.tls.is_some() => require_tls = true,
                ("REQUIRETLS", _) if self.tls.is_none() => return Err(replies::requiretls_needs_tls()),
                // RFC 3461 §4.3, §4.4.
                ("RET", Some(v)) if v.eq_ignore_ascii_case("FULL") => ret_full = Some(true),
                ("RET", Some(v)) if v.eq_ignore_ascii_case("HDRS") => ret_full = Some(false),
                ("ENVID", Some(v)) if v.len() <= 100 && is_printable_xtext(v) => envid = Some(v.to_owned()),
                ("RET" | "ENVID", _) => return Err(replies::bad_param_value(key)),
                // RFC 4954 §5: a server offering AUTH must accept the AUTH parameter; the
                // identity it claims is not ours to trust, so it is taken and not used (`<>`:
                // none). Accepted on every listener, as Postfix does.
                ("AUTH", Some(v)) if v == "<>" || (v.len() <= 500 && is_printable_xtext(v)) => {}
                ("AUTH", _) => return Err(replies::bad_param_value(key)),
                _ => return Err(replies::unsupported_param(key)),
            }
        }
        if let ReversePath::Mailbox(a) = &path
            && a.is_utf8()
            && !smtputf8
        {
            return Err(replies::needs_smtputf8());
        }
        self.tx = Some(MailTx {
            reverse_path: path,
            body_8bit,
            smtputf8,
            ret_full,
            envid,
            require_tls,
            recipients: Vec::new(),
            chunks: None,
            chunks_too_big: false,
        });
        Ok(())
    }
}
