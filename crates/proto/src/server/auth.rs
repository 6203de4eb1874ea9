//! AUTH (RFC 4954) with the SASL mechanisms PLAIN (RFC 4616) and LOGIN
//! (draft-murchison-sasl-login). AUTH is offered and accepted only under TLS; before, it is
//! refused with `530 5.7.0`. The session decodes the exchange and asks the driver to check the
//! credentials ([`Step::Authenticate`]); the password never reaches a log.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use postern_types::Reply;

use super::{Session, State, Step};
use crate::replies;

/// Where a SASL exchange stands while it waits for the client's next line.
#[derive(Debug)]
pub(crate) enum Sasl {
    /// PLAIN without an initial response: waiting for `authzid NUL authcid NUL passwd`.
    Plain,
    /// LOGIN: waiting for the user name.
    LoginUser,
    /// LOGIN: waiting for the password of this user.
    LoginPassword(String),
}

/// What the driver found for [`Step::Authenticate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The password matches: `235 2.7.0`.
    Success,
    /// Unknown user or wrong password: `535 5.7.8` (counted as an error).
    Invalid,
    /// The check could not be made: `454 4.7.0`.
    TempFail,
}

/// `334 ` + base64 of `challenge` (RFC 4954 §4).
fn challenge(text: &str) -> Reply {
    Reply::plain(334, STANDARD.encode(text))
}

impl Session {
    pub(super) fn auth(&mut self, mechanism: &str, initial: Option<&str>) -> Option<Step> {
        let refusal = if !self.params.auth {
            Some(replies::auth_not_enabled())
        } else if self.tls.is_none() {
            Some(replies::need_tls())
        } else if !self.esmtp {
            Some(replies::need_helo())
        } else if self.auth.is_some() {
            Some(replies::already_authenticated())
        } else if self.tx.is_some() {
            Some(replies::in_transaction())
        } else {
            None
        };
        if let Some(r) = refusal {
            self.error(r);
            return self.closed_step();
        }
        match (mechanism, initial) {
            ("PLAIN", None) => {
                self.reply(Reply::plain(334, String::new()));
                self.state = State::Sasl(Sasl::Plain);
                None
            }
            ("PLAIN", Some(response)) => self.sasl_response(Sasl::Plain, response),
            ("LOGIN", None) => {
                self.reply(challenge("Username:"));
                self.state = State::Sasl(Sasl::LoginUser);
                None
            }
            ("LOGIN", Some(response)) => self.sasl_response(Sasl::LoginUser, response),
            _ => {
                self.error(replies::unknown_mechanism());
                self.closed_step()
            }
        }
    }

    /// One client line of a SASL exchange (or the initial response).
    pub(super) fn sasl_response(&mut self, sasl: Sasl, line: &str) -> Option<Step> {
        if line == "*" {
            self.error(replies::auth_aborted());
            return self.closed_step();
        }
        // RFC 4954 §4: `=` is an empty initial response.
        let decoded = if line == "=" { Ok(Vec::new()) } else { STANDARD.decode(line.trim()) };
        let Ok(decoded) = decoded else {
            self.error(replies::bad_base64());
            return self.closed_step();
        };
        match sasl {
            Sasl::Plain => {
                // RFC 4616 §2: [authzid] NUL authcid NUL passwd.
                let mut parts = decoded.splitn(3, |&b| b == 0);
                let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next()) else {
                    self.error(replies::bad_base64());
                    return self.closed_step();
                };
                // Acting for another identity is not supported: the authzid must be empty or
                // the authcid itself.
                if !authzid.is_empty() && authzid != authcid {
                    self.error(replies::auth_failed());
                    return self.closed_step();
                }
                self.authenticate(authcid, password.to_vec(), "PLAIN")
            }
            Sasl::LoginUser => match String::from_utf8(decoded) {
                Ok(user) => {
                    self.reply(challenge("Password:"));
                    self.state = State::Sasl(Sasl::LoginPassword(user));
                    None
                }
                Err(_) => {
                    self.error(replies::bad_base64());
                    self.closed_step()
                }
            },
            Sasl::LoginPassword(user) => self.authenticate(user.as_bytes(), decoded, "LOGIN"),
        }
    }

    fn authenticate(&mut self, login: &[u8], password: Vec<u8>, mechanism: &'static str) -> Option<Step> {
        let Ok(login) = std::str::from_utf8(login) else {
            self.error(replies::auth_failed());
            return self.closed_step();
        };
        self.state = State::AwaitAuth(login.to_owned(), mechanism);
        Some(Step::Authenticate { login: login.to_owned(), password })
    }

    /// The answer to [`Step::Authenticate`].
    pub fn auth_result(&mut self, outcome: AuthOutcome) {
        let State::AwaitAuth(login, mechanism) = std::mem::replace(&mut self.state, State::Command) else {
            panic!("auth_result without Authenticate");
        };
        match outcome {
            AuthOutcome::Success => {
                self.auth = Some(login);
                self.auth_mechanism = Some(mechanism);
                self.reply(replies::auth_ok());
            }
            AuthOutcome::Invalid => self.error(replies::auth_failed()),
            AuthOutcome::TempFail => self.reply(replies::auth_temp_failure()),
        }
    }
}
