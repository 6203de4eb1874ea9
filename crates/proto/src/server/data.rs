//! DATA (RFC 5321 §4.1.1.4) and BDAT (RFC 3030 §2): receiving the message content and handing
//! the complete transaction to the driver for the spool commit.

use postern_types::{EnhancedStatus, Reply};

use super::{Session, State, Step, Transaction};
use crate::data::{ContentError, DataDecoder, LineEndings};
use crate::replies;

impl Session {
    pub(super) fn check_data(&mut self) -> Option<Step> {
        let reply = match &self.tx {
            None => Some(replies::need_mail()),
            Some(tx) if tx.recipients.is_empty() => Some(replies::no_valid_recipients()),
            Some(tx) if tx.chunks.is_some() => Some(replies::data_then_bdat()),
            Some(_) => None,
        };
        if let Some(r) = reply {
            self.error(r);
            return self.closed_step();
        }
        self.reply(replies::start_data());
        self.state = State::Data(DataDecoder::new(self.params.max_message_size));
        // RFC 2920 §3.1: DATA ends a pipelined group and the client waits for 354, which the
        // driver writes when the session next needs input. Content that a client sent early
        // is simply decoded.
        None
    }

    pub(super) fn end_of_data(&mut self, content: Result<Vec<u8>, ContentError>) -> Option<Step> {
        match content {
            Ok(message) if crate::data::nul_dot_line(&message) => self.end_of_data(Err(ContentError::NulDotLine)),
            Ok(message) => Some(self.commit_step(message)),
            Err(e) => {
                self.tx = None;
                self.error(content_error_reply(e));
                self.closed_step()
            }
        }
    }

    pub(super) fn check_bdat(&mut self, size: u64, last: bool) {
        // RFC 3030 §2: the chunk is always read, even when the command is refused.
        let error = match &mut self.tx {
            None => Some(replies::need_mail()),
            Some(tx) if tx.recipients.is_empty() => Some(replies::no_valid_recipients()),
            Some(tx) => {
                tx.chunks.get_or_insert_with(|| (Vec::new(), LineEndings::default()));
                None
            }
        };
        self.state = State::Bdat { remaining: size, last, error };
    }

    pub(super) fn bdat_content(&mut self, bytes: &[u8]) {
        let max = self.params.max_message_size;
        let State::Bdat { error: None, .. } = self.state else { return };
        let Some(tx) = &mut self.tx else { return };
        let Some((buf, endings)) = &mut tx.chunks else { return };
        endings.check(bytes);
        if tx.chunks_too_big || buf.len() + bytes.len() > max {
            tx.chunks_too_big = true;
            *buf = Vec::new();
        } else {
            buf.extend_from_slice(bytes);
        }
    }

    pub(super) fn end_of_chunk(&mut self) -> Option<Step> {
        let State::Bdat { last, error, .. } = std::mem::replace(&mut self.state, State::Command) else {
            unreachable!()
        };
        if let Some(reply) = error {
            self.error(reply);
            return self.closed_step();
        }
        let Some(tx) = &mut self.tx else { unreachable!("BDAT accepted without transaction") };
        if tx.chunks_too_big {
            // RFC 3030 §2: after a failed BDAT the transaction is void.
            self.tx = None;
            self.error(replies::size_exceeded());
            return self.closed_step();
        }
        let Some((buf, endings)) = tx.chunks.as_mut() else { unreachable!() };
        if !last {
            let r = Reply::new(250, EnhancedStatus(2, 0, 0), format!("{} octets received", buf.len()));
            self.reply(r);
            return None;
        }
        let bad = endings.is_bad();
        let message = std::mem::take(buf);
        self.end_of_data(if bad { Err(ContentError::BareLineEnding) } else { Ok(message) })
    }

    fn commit_step(&mut self, message: Vec<u8>) -> Step {
        let tx = self.tx.as_mut().expect("commit without transaction");
        let t = Transaction {
            helo: self.helo.clone().unwrap_or_default(),
            esmtp: self.esmtp,
            client_ip: self.params.client_ip,
            reverse_path: tx.reverse_path.clone(),
            recipients: std::mem::take(&mut tx.recipients),
            body_8bit: tx.body_8bit,
            smtputf8: tx.smtputf8,
            ret_full: tx.ret_full,
            envid: tx.envid.clone(),
            require_tls: tx.require_tls,
            tls: self.tls.clone(),
            auth: self.auth.clone(),
            auth_mechanism: self.auth_mechanism,
            message,
        };
        self.state = State::AwaitCommit;
        Step::Commit(Box::new(t))
    }
}

fn content_error_reply(e: ContentError) -> Reply {
    match e {
        ContentError::BareLineEnding => replies::bare_line_ending(),
        ContentError::NulDotLine => replies::nul_dot_line(),
        ContentError::TooBig => replies::size_exceeded(),
    }
}
