//! Trace information added on acceptance: the `Received` header (RFC 5321 §4.4, RFC 5322
//! §3.6.7). It is prepended to the message as received; nothing after it is ever changed.

use std::net::IpAddr;

use postern_types::QueueId;

use crate::server::{TlsInfo, Transaction};

/// Where a message came from, as its `Received:` header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An SMTP client.
    Smtp {
        /// The HELO/EHLO argument.
        helo: String,
        /// The client's address.
        client_ip: IpAddr,
        /// EHLO was used.
        esmtp: bool,
        /// SMTPUTF8 was used (RFC 6531).
        smtputf8: bool,
        /// TLS in use.
        tls: Option<TlsInfo>,
        /// The client authenticated (RFC 4954).
        authenticated: bool,
    },
    /// A local user, through `sendmail` (the kernel's `SO_PEERCRED` uid).
    Local {
        /// The submitting user's uid.
        uid: u32,
    },
    /// Postern itself: a DSN, a DMARC report.
    Generated {
        /// What it is, e.g. `DSN`.
        what: &'static str,
    },
}

impl Origin {
    /// The origin of an SMTP transaction.
    pub fn of(tx: &Transaction) -> Self {
        Self::Smtp {
            helo: tx.helo.clone(),
            client_ip: tx.client_ip,
            esmtp: tx.esmtp,
            smtputf8: tx.smtputf8,
            tls: tx.tls.clone(),
            authenticated: tx.auth.is_some(),
        }
    }
}

/// Composes the `Received:` header for `tx`, accepted by `hostname` under queue ID `id` at
/// `date` (an RFC 5322 date-time, e.g. `Tue, 24 Nov 2026 10:00:00 +0000`).
///
/// Shape (folded with CRLF + tab, ending in CRLF):
/// `Received: from HELO ([IP])` / `by HOST (Postern) with PROTO id ID` / `for <RCPT>; DATE`.
/// With several recipients the `for` clause is left out and the date follows `id ID;`.
/// `with` is `ESMTP`/`SMTP`, or `UTF8SMTP` when SMTPUTF8 was used (RFC 6531 §4.3), with `S`
/// appended under TLS and `A` after AUTH (RFC 3848: `ESMTPS`, `ESMTPSA`); under TLS a comment
/// line `(using TLSv1.3 with cipher ...)` follows the `from` clause, as Postfix writes. The `for`
/// clause is given only for a single recipient, so that a message to many does not disclose the
/// others (as Postfix does).
pub fn received(tx: &Transaction, hostname: &str, id: QueueId, date: &str) -> String {
    let only = match tx.recipients.as_slice() {
        [only] => Some(only.forward_path.to_string()),
        _ => None,
    };
    received_from(&Origin::of(tx), hostname, id, only.as_deref(), date)
}

/// The one `Received:` builder: for an SMTP origin as [`received`] describes; for a local
/// submission `Received: by HOST (Postern, from userid UID) id ID; DATE`; for a message
/// Postern generates `Received: by HOST (Postern WHAT) id ID; DATE`. `only_rcpt` is the single
/// recipient's forward-path for the `for` clause (SMTP only).
pub fn received_from(origin: &Origin, hostname: &str, id: QueueId, only_rcpt: Option<&str>, date: &str) -> String {
    let (helo, client_ip, esmtp, smtputf8, tls, authenticated) = match origin {
        Origin::Smtp { helo, client_ip, esmtp, smtputf8, tls, authenticated } => {
            (helo, *client_ip, *esmtp, *smtputf8, tls, *authenticated)
        }
        Origin::Local { uid } => {
            return format!("Received: by {hostname} (Postern, from userid {uid})\r\n\tid {id}; {date}\r\n");
        }
        Origin::Generated { what } => {
            return format!("Received: by {hostname} (Postern {what})\r\n\tid {id}; {date}\r\n");
        }
    };
    let ip = match client_ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("IPv6:{v6}"),
        },
    };
    // RFC 3848 §2 / RFC 6531 §4.3: S for TLS, A for an authenticated client.
    let mut proto = match (smtputf8, esmtp) {
        (true, _) => "UTF8SMTP",
        (false, true) => "ESMTP",
        (false, false) => "SMTP",
    }
    .to_owned();
    if esmtp && tls.is_some() {
        proto.push('S');
    }
    if esmtp && authenticated {
        proto.push('A');
    }
    let helo = sanitize(helo);
    let mut h = format!("Received: from {helo} ([{ip}])\r\n\t");
    if let Some(tls) = tls {
        h.push_str(&format!("(using {} with cipher {})\r\n\t", tls.version, tls.cipher));
    }
    h.push_str(&format!("by {hostname} (Postern) with {proto} id {id}"));
    match only_rcpt {
        Some(only) => h.push_str(&format!("\r\n\tfor <{}>; ", sanitize(only))),
        None => h.push_str(";\r\n\t"),
    }
    h.push_str(date);
    h.push_str("\r\n");
    h
}

/// Keeps a client-supplied string from breaking the header: printable characters only, no
/// parentheses (they would open a comment).
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_control() || c == '(' || c == ')' { '_' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::AcceptedRecipient;
    use postern_types::{Address, ReversePath};

    #[test]
    fn received_shape() {
        let tx = Transaction {
            helo: "client.test".into(),
            esmtp: true,
            client_ip: "::1".parse().unwrap(),
            reverse_path: ReversePath::Null,
            recipients: vec![AcceptedRecipient {
                forward_path: Address::new("bob", "x.test"),
                destinations: vec![],
                notify: None,
                orcpt: None,
            }],
            body_8bit: false,
            smtputf8: false,
            ret_full: None,
            envid: None,
            require_tls: false,
            tls: None,
            auth: None,
            auth_mechanism: None,
            message: vec![],
        };
        let id = QueueId::parse("0000000000000001").unwrap();
        let date = "Tue, 24 Nov 2026 10:00:00 +0000";
        let mut two = tx.clone();
        two.recipients.push(two.recipients[0].clone());
        assert!(
            received(&two, "mx.test", id, date)
                .ends_with("id 0000000000000001;\r\n\tTue, 24 Nov 2026 10:00:00 +0000\r\n")
        );
        let h = received(&tx, "mx.test", id, date);
        assert_eq!(
            h,
            "Received: from client.test ([IPv6:::1])\r\n\tby mx.test (Postern) with ESMTP id 0000000000000001\r\n\tfor <bob@x.test>; Tue, 24 Nov 2026 10:00:00 +0000\r\n"
        );
        let mut secure = tx.clone();
        secure.tls =
            Some(crate::server::TlsInfo { version: "TLSv1.3".into(), cipher: "TLS13_AES_128_GCM_SHA256".into() });
        secure.auth = Some("bob".into());
        assert_eq!(
            received(&secure, "mx.test", id, date),
            "Received: from client.test ([IPv6:::1])\r\n\t(using TLSv1.3 with cipher TLS13_AES_128_GCM_SHA256)\r\n\tby mx.test (Postern) with ESMTPSA id 0000000000000001\r\n\tfor <bob@x.test>; Tue, 24 Nov 2026 10:00:00 +0000\r\n"
        );
    }
}
