//! Alert mails (`[[alert]]`): one plain-text message per change of a rule's state, as the
//! "phone home" scripts our users wrote, with `Auto-Submitted: auto-generated` (RFC 3834 §5)
//! so that vacation responders stay quiet.

use mail_builder::MessageBuilder;
use mail_builder::headers::HeaderType;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};

/// Which change the mail reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The rule started firing.
    Firing,
    /// Still firing (the `repeat` reminder).
    StillFiring,
    /// It stopped firing.
    Resolved,
}

/// One alert mail.
#[derive(Debug, Clone)]
pub struct AlertMail<'a> {
    /// The rule's name: `queue_age yahoo.com`.
    pub rule: &'a str,
    /// What happened.
    pub change: Change,
    /// When it started firing, Unix seconds.
    pub since: i64,
    /// Now, Unix seconds.
    pub now: i64,
    /// The current figures, one or more lines.
    pub figures: &'a str,
    /// The command to look further: `postern queue stats`.
    pub look_further: &'a str,
    /// The reporting host (`hostname`).
    pub host: &'a str,
    /// `From:`.
    pub from: &'a str,
    /// `To:`.
    pub to: &'a [String],
}

fn utc(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).map_or_else(String::new, |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

/// The subject: `[a.example.test] FIRING: queue_age yahoo.com`.
pub fn subject(mail: &AlertMail<'_>) -> String {
    let what = match mail.change {
        Change::Firing => "FIRING",
        Change::StillFiring => "STILL FIRING",
        Change::Resolved => "RESOLVED",
    };
    format!("[{}] {what}: {}", mail.host, mail.rule)
}

/// The message, CRLF line endings.
pub fn compose(mail: &AlertMail<'_>) -> Vec<u8> {
    let state = match mail.change {
        Change::Firing => format!("is firing since {}", utc(mail.since)),
        Change::StillFiring => format!("is still firing, since {}", utc(mail.since)),
        Change::Resolved => format!("is resolved at {} (it fired since {})", utc(mail.now), utc(mail.since)),
    };
    let body = format!(
        "The alert \"{}\" on {} {state}.\n\nNow:\n  {}\n\nTo look further:\n  {}\n\n-- \nPostern on {}; `postern alerts` shows every rule's state.\n",
        mail.rule,
        mail.host,
        mail.figures.replace('\n', "\n  "),
        mail.look_further,
        mail.host
    );
    // Plain lines a postmaster reads with `less` on the Maildir file: no quoted-printable.
    let body = body.replace('\n', "\r\n");
    let encoding = if body.is_ascii() { "7bit" } else { "8bit" };
    MessageBuilder::new()
        .from(Address::new_address(Some("Postern alerts"), mail.from.to_owned()))
        .to(mail.to.iter().map(|a| Address::new_address(None::<&str>, a.clone())).collect::<Vec<_>>())
        .subject(subject(mail))
        .date(mail.now)
        .message_id(format!(
            "alert.{}.{}@{}",
            mail.now,
            mail.rule.replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
            mail.host
        ))
        .header("Auto-Submitted", HeaderType::Raw(Raw::new("auto-generated")))
        .body(
            MimePart::new(ContentType::new("text/plain").attribute("charset", "utf-8"), BodyPart::Text(body.into()))
                .transfer_encoding(encoding),
        )
        .write_to_vec()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mail_says_what_since_when_and_where_to_look() {
        let to = vec!["postmaster@a.test".to_owned()];
        let mail = AlertMail {
            rule: "queue_age yahoo.com",
            change: Change::Firing,
            since: 1_764_633_600,
            now: 1_764_633_660,
            figures: "the oldest message to yahoo.com has waited 3h",
            look_further: "postern queue stats",
            host: "mx.a.test",
            from: "postmaster@a.test",
            to: &to,
        };
        let text = String::from_utf8(compose(&mail)).unwrap();
        assert!(text.contains("Subject: [mx.a.test] FIRING: queue_age yahoo.com\r\n"), "{text}");
        assert!(text.contains("Auto-Submitted: auto-generated\r\n"), "{text}");
        assert!(text.contains("since 2025-12-02 00:00:00 UTC"), "{text}");
        assert!(text.contains("postern queue stats"), "{text}");
        let resolved = AlertMail { change: Change::Resolved, ..mail };
        assert!(subject(&resolved).contains("RESOLVED"));
    }
}
