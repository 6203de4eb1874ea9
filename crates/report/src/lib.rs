//! Every report Postern composes, in one place. This crate owns the delivery status
//! notification (DSN, RFC 3464): a `multipart/report; report-type=delivery-status` message
//! with a human-readable part, the machine-readable `message/delivery-status` part, and the
//! original message's headers (`text/rfc822-headers`) or the whole original
//! (`message/rfc822`, RET=FULL, RFC 3461 §4.3); the DMARC aggregate reports ([`dmarc`], RFC
//! 7489 §7.2: the rows of each check encoded as store tallies, the day's XML, the report
//! message); the TLS reports ([`tlsrpt`], RFC 8460: the negotiations as tallies, the JSON, the
//! message, the `_smtp._tls` record); and the alert mails of `[[alert]]` ([`alert`]).
//! Composition uses mail-builder and mail-auth's report types; this crate decides the content.
//! The daily jobs that send the DMARC and TLS reports run in the daemon
//! (`postern/src/reports/`).

pub mod alert;
pub mod dmarc;
pub mod tlsrpt;

use mail_builder::MessageBuilder;
use mail_builder::headers::HeaderType;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use postern_types::{EnhancedStatus, ForwardPath};

/// RFC 3464 §2.3.3 `Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Delivery failed; no more attempts.
    Failed,
    /// Delivery is delayed; attempts continue.
    Delayed,
    /// Delivered (a success DSN, NOTIFY=SUCCESS).
    Delivered,
    /// Handed to a next hop that does not offer DSN, so no further report will come
    /// (RFC 3464 §2.3.3).
    Relayed,
    /// Delivered to an alias or list that expanded to other addresses, which are not named
    /// (RFC 3461 §6.2.7.3, RFC 3464 §2.3.3).
    Expanded,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Delayed => "delayed",
            Self::Delivered => "delivered",
            Self::Relayed => "relayed",
            Self::Expanded => "expanded",
        }
    }
}

/// One recipient's block of the `message/delivery-status` part (RFC 3464 §2.3).
#[derive(Debug, Clone)]
pub struct RecipientStatus {
    /// `Final-Recipient: rfc822; ADDRESS`: the final recipient, or the forward-path an alias
    /// expanded (`Action: expanded`).
    pub final_recipient: ForwardPath,
    /// `Original-Recipient: rfc822; ADDRESS` when it differs (the RCPT TO before aliases).
    pub original_recipient: Option<String>,
    /// `Action`.
    pub action: Action,
    /// `Status`, the enhanced status code (RFC 3463).
    pub status: EnhancedStatus,
    /// `Remote-MTA: dns; HOST` when a remote server answered.
    pub remote_mta: Option<String>,
    /// `Diagnostic-Code: smtp; TEXT`: the reply that decided, e.g. `550 5.1.1 User unknown`.
    pub diagnostic: Option<String>,
}

/// Everything a DSN says.
#[derive(Debug, Clone)]
pub struct Dsn<'a> {
    /// Our host name (`Reporting-MTA`, the From address's domain).
    pub reporting_mta: &'a str,
    /// The queue ID of the original message.
    pub queue_id: &'a str,
    /// The DSN's recipient: the original's reverse-path, or the SRS address a forwarded copy
    /// left with.
    pub to: &'a postern_types::Address,
    /// Arrival of the original, seconds since the Unix epoch.
    pub arrival: i64,
    /// `Original-Envelope-Id` (ENVID, RFC 3461 §4.4), if the sender gave one.
    pub envelope_id: Option<&'a str>,
    /// The recipients reported on.
    pub recipients: Vec<RecipientStatus>,
    /// The original message as queued (CRLF).
    pub original: &'a [u8],
    /// Return the whole original (RET=FULL) instead of its headers.
    pub return_full: bool,
}

fn rfc2822(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default().to_rfc2822()
}

/// The header section of `message` (up to and including the blank line), or all of it.
fn header_section(message: &[u8]) -> &[u8] {
    let end = message.windows(4).position(|w| w == b"\r\n\r\n").map_or(message.len(), |i| i + 4);
    &message[..end]
}

/// Composes the DSN as a complete RFC 5322 message (CRLF line endings), to be sent from the
/// null reverse-path (RFC 5321 §4.5.5) so that it can never cause another DSN.
pub fn compose(dsn: &Dsn<'_>) -> Vec<u8> {
    let failed = dsn.recipients.iter().any(|r| r.action == Action::Failed);
    let delayed = dsn.recipients.iter().any(|r| r.action == Action::Delayed);
    let subject = if failed {
        "Undelivered Mail Returned to Sender"
    } else if delayed {
        "Delayed Mail (still being retried)"
    } else {
        "Successful Mail Delivery Report"
    };
    let mut human = format!("This is the mail system at host {}.\r\n\r\n", dsn.reporting_mta);
    human.push_str(if failed {
        "I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients. The reasons are below.\r\n"
    } else if delayed {
        "Your message could not be delivered yet. The mail system will keep\r\ntrying; you do not need to send it again.\r\n"
    } else {
        "Your message was delivered to the recipients below.\r\n"
    });
    human.push_str("\r\n");
    // Every value that came from outside (addresses, ENVID, a remote host's name and reply)
    // goes through `printable`: no value can end a line, so none can add a field.
    let p = postern_types::printable;
    for r in &dsn.recipients {
        human.push_str(&format!("<{}>: {} ({})", p(&r.final_recipient.to_string()), r.action.as_str(), r.status));
        if let Some(d) = &r.diagnostic {
            let host = r.remote_mta.as_deref().map_or(String::new(), |h| format!(" host {} said:", p(h)));
            human.push_str(&format!("\r\n   {host} {}", p(d)));
        }
        human.push_str("\r\n");
    }

    let mut status = format!("Reporting-MTA: dns; {}\r\nX-Postern-Queue-ID: {}\r\n", dsn.reporting_mta, dsn.queue_id);
    if let Some(envid) = dsn.envelope_id {
        status.push_str(&format!("Original-Envelope-Id: {}\r\n", p(envid)));
    }
    status.push_str(&format!("Arrival-Date: {}\r\n", rfc2822(dsn.arrival)));
    for r in &dsn.recipients {
        status.push_str("\r\n");
        if let Some(o) = &r.original_recipient {
            status.push_str(&format!("Original-Recipient: rfc822; {}\r\n", p(o)));
        }
        status.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\nAction: {}\r\nStatus: {}\r\n",
            p(&r.final_recipient.to_string()),
            r.action.as_str(),
            r.status
        ));
        if let Some(m) = &r.remote_mta {
            status.push_str(&format!("Remote-MTA: dns; {}\r\n", p(m)));
        }
        if let Some(d) = &r.diagnostic {
            status.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", p(d)));
        }
    }

    let report_status =
        MimePart::new(ContentType::new("message/delivery-status"), BodyPart::Binary(status.into_bytes().into()))
            .transfer_encoding("7bit");
    let original = if dsn.return_full {
        MimePart::new(ContentType::new("message/rfc822"), BodyPart::Binary(dsn.original.into()))
            .transfer_encoding("8bit")
    } else {
        MimePart::new(ContentType::new("text/rfc822-headers"), BodyPart::Binary(header_section(dsn.original).into()))
            .transfer_encoding("8bit")
    };
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        BodyPart::Multipart(vec![
            MimePart::new(
                ContentType::new("text/plain").attribute("charset", "us-ascii"),
                BodyPart::Text(human.into()),
            ),
            report_status,
            original,
        ]),
    );
    let from = format!("MAILER-DAEMON@{}", dsn.reporting_mta);
    MessageBuilder::new()
        .from(Address::new_address(Some("Mail Delivery System"), from))
        .to(Address::new_address(None::<&str>, dsn.to.to_string()))
        .subject(subject)
        .date(chrono::Utc::now().timestamp())
        .message_id(format!("{}.dsn.{}@{}", dsn.queue_id, chrono::Utc::now().timestamp_micros(), dsn.reporting_mta))
        .header("Auto-Submitted", HeaderType::Raw(Raw::new("auto-replied")))
        .body(report)
        .write_to_vec()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_dsn_shape() {
        let original = b"Received: x\r\nSubject: hello\r\nFrom: a@b.test\r\n\r\nsecret body\r\n";
        let dsn = Dsn {
            reporting_mta: "mx.a.test",
            queue_id: "0000000000000001",
            to: &postern_types::Address::new("a", "b.test"),
            arrival: 1_795_000_000,
            envelope_id: Some("env-1"),
            recipients: vec![RecipientStatus {
                final_recipient: ForwardPath::Mailbox(postern_types::Address::new("nobody", "c.test")),
                original_recipient: None,
                action: Action::Failed,
                status: EnhancedStatus(5, 1, 1),
                remote_mta: Some("mx.c.test".into()),
                diagnostic: Some("550 5.1.1 User unknown".into()),
            }],
            original,
            return_full: false,
        };
        let text = String::from_utf8(compose(&dsn)).unwrap();
        for want in [
            "Subject: Undelivered Mail Returned to Sender",
            "Auto-Submitted: auto-replied",
            "multipart/report",
            "report-type=\"delivery-status\"",
            "Content-Type: message/delivery-status",
            "Reporting-MTA: dns; mx.a.test\r\n",
            "Original-Envelope-Id: env-1\r\n",
            "Final-Recipient: rfc822; nobody@c.test\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.c.test\r\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\r\n",
            "Content-Type: text/rfc822-headers",
            "Subject: hello\r\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("secret body"), "RET=HDRS must not return the body");
        let full = compose(&Dsn { return_full: true, ..dsn });
        assert!(String::from_utf8(full).unwrap().contains("secret body"));
    }
}
