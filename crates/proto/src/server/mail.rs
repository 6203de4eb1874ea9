//! MAIL FROM (RFC 5321 §4.1.1.2) with the SIZE (RFC 1870), BODY (RFC 6152) and SMTPUTF8
//! (RFC 6531) parameters.

use postern_types::dsn::is_xtext;
use postern_types::{EnhancedStatus, ReversePath};

use super::{MailTx, Session};
use crate::replies;

impl Session {
    pub(super) fn check_mail(&mut self, path: ReversePath, params: Vec<(String, Option<String>)>) {
        if self.helo.is_none() {
            return self.error(replies::need_helo());
        }
        if self.tx.is_some() {
            return self.error(replies::nested_mail());
        }
        let mut body_8bit = false;
        let mut smtputf8 = false;
        let mut ret_full = None;
        let mut envid = None;
        for (key, value) in &params {
            if !self.esmtp {
                // Parameters are service extensions; HELO clients get none (RFC 5321 §4.1.1.2).
                return self.error(replies::unsupported_param(key));
            }
            match (key.as_str(), value.as_deref()) {
                ("SIZE", Some(v)) => match v.parse::<u64>() {
                    // RFC 1870 §6: a declared size above our limit is refused with 552 5.3.4.
                    Ok(n) if n > self.params.max_message_size as u64 => return self.error(replies::size_exceeded()),
                    Ok(_) => {}
                    Err(_) => return self.error(replies::bad_param_value(key)),
                },
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => body_8bit = false,
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => body_8bit = true,
                ("BODY", _) => return self.error(replies::bad_param_value(key)),
                ("SMTPUTF8", None) => smtputf8 = true,
                // RFC 3461 §4.3, §4.4.
                ("RET", Some(v)) if v.eq_ignore_ascii_case("FULL") => ret_full = Some(true),
                ("RET", Some(v)) if v.eq_ignore_ascii_case("HDRS") => ret_full = Some(false),
                ("ENVID", Some(v)) if v.len() <= 100 && is_xtext(v) => envid = Some(v.to_owned()),
                ("RET" | "ENVID", _) => return self.error(replies::bad_param_value(key)),
                _ => return self.error(replies::unsupported_param(key)),
            }
        }
        if let ReversePath::Mailbox(a) = &path
            && a.is_utf8()
            && !smtputf8
        {
            return self.error(replies::needs_smtputf8());
        }
        self.tx = Some(MailTx {
            reverse_path: path,
            body_8bit,
            smtputf8,
            ret_full,
            envid,
            recipients: Vec::new(),
            chunks: None,
            chunks_too_big: false,
        });
        self.reply(replies::ok(EnhancedStatus(2, 1, 0)));
    }
}
