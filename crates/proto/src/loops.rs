//! Mail loops, seen in the header section (RFC 5321 §6.3): a message that already says
//! `Delivered-To: X` is looping when it comes back for X (Postfix and qmail refuse it so), and
//! one with more `Received:` headers than the hop limit is looping somewhere (Postfix's
//! `hopcount_limit`). Checked at the end of DATA, before the 250, so that a loop is refused
//! rather than accepted and bounced (no backscatter), and again at delivery.

use memchr::memmem;
use postern_types::{EnhancedStatus, Reply};

/// The header lines of `message` (up to the first empty line).
fn header_lines(message: &[u8]) -> impl Iterator<Item = &[u8]> {
    let end = memmem::find(message, b"\r\n\r\n").unwrap_or(message.len());
    message[..end].split(|&b| b == b'\n')
}

fn field<'a>(line: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    line[..colon].eq_ignore_ascii_case(name.as_bytes()).then(|| &line[colon + 1..])
}

/// Whether the header section of `message` already has `Delivered-To: address`
/// (case-insensitive).
pub fn has_delivered_to(message: &[u8], address: &str) -> bool {
    header_lines(message).any(|line| {
        field(line, "delivered-to").is_some_and(|v| String::from_utf8_lossy(v).trim().eq_ignore_ascii_case(address))
    })
}

/// How many `Received:` fields the header section has.
pub fn received_count(message: &[u8]) -> usize {
    header_lines(message).filter(|line| field(line, "received").is_some()).count()
}

/// The refusal for a looping message about to be accepted for `local_addresses` (the final
/// addresses of its local mailboxes): `554 5.4.6`, or `None`.
pub fn refusal(message: &[u8], local_addresses: &[String], max_hops: usize) -> Option<Reply> {
    let hops = received_count(message);
    if hops > max_hops {
        return Some(Reply::new(
            554,
            EnhancedStatus(5, 4, 6),
            format!("Too many hops ({hops} Received headers, at most {max_hops}): mail loop"),
        ));
    }
    let looping = local_addresses.iter().find(|a| has_delivered_to(message, a))?;
    Some(Reply::new(554, EnhancedStatus(5, 4, 6), format!("Mail forwarding loop for <{looping}>")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_to_and_hops() {
        let m = b"Received: x\r\nDelivered-To: Bob@X.test\r\nSubject: s\r\n\r\nDelivered-To: alice@x.test\r\n";
        assert!(has_delivered_to(m, "bob@x.test"));
        assert!(!has_delivered_to(m, "alice@x.test"), "only the header section counts");
        assert_eq!(received_count(m), 1);
        assert_eq!(refusal(m, &["bob@x.test".into()], 50).unwrap().status, Some(EnhancedStatus(5, 4, 6)));
        assert!(refusal(m, &["carol@x.test".into()], 50).is_none());
        let many = "Received: hop\r\n".repeat(51) + "\r\nbody";
        assert!(refusal(many.as_bytes(), &[], 50).unwrap().lines[0].contains("51 Received"));
        assert!(refusal(many.as_bytes(), &[], 51).is_none());
    }
}
