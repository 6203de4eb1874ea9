//! Property tests for issue 26: what an outsider writes never becomes a command, and no
//! encoder lets a value end a line.
//! - Whatever local part a client sends (quoted, with `|`, `/`, `:include:`, `error:`), through
//!   the documented virtual-table template and aliases, a recipient resolves to a pipe only when
//!   a table line names that very command.
//! - Replies (`Reply::encode`), DSNs (`report::compose`), `types::printable` and a milter's
//!   header edits (`milter::edit::apply`) emit no control character from the values they are
//!   given, and exactly the lines and fields they mean to.

use std::net::IpAddr;
use std::path::Path;

use postern_config::{TableKind, Tables};
use postern_policy::{RecipientPolicy, resolve_recipient};
use postern_types::{Address, Destination, EnhancedStatus, Reply, Verdict};
use proptest::prelude::*;

/// The commands the tables below name; nothing else may ever be piped to.
const COMMANDS: [&str; 1] = ["/usr/bin/procmail -d carol"];

fn tables() -> Tables {
    let mut t = Tables::default();
    let mut errors = Vec::new();
    t.parse_into(TableKind::Users, Path::new("users"), "carol\nbob\n", &mut errors);
    t.parse_into(
        TableKind::Aliases,
        Path::new("aliases"),
        "carol: \"|/usr/bin/procmail -d carol\"\nteam: bob, carol\n",
        &mut errors,
    );
    t.parse_into(TableKind::Virtual, Path::new("virtual"), "@example.org %1@example.test\n", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    t
}

/// Local parts an attacker would try: table-target syntax, quoting, controls, plain text.
fn local_part() -> impl Strategy<Value = String> {
    let prefix = prop::sample::select(vec!["|", "/", ":include:", "error:", "\"|", "\\|", "", "carol", "team"]);
    (prefix, "[ -~]{0,40}").prop_map(|(p, rest)| format!("{p}{rest}"))
}

fn encoded(reply: &Reply) -> String {
    let mut out = Vec::new();
    reply.encode(&mut out);
    String::from_utf8(out).unwrap()
}

fn no_control(text: &str) -> bool {
    !text.chars().any(|c| c.is_control() && c != '\t')
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_client_local_part_never_yields_a_command(local in local_part(), domain in prop::sample::select(vec!["example.org", "example.test"]), trusted in any::<bool>()) {
        let tables = tables();
        let local_domains = ["example.test".to_owned(), "example.org".to_owned()];
        let nets = ["127.0.0.2/32".parse().unwrap()];
        let policy = RecipientPolicy { local_domains: &local_domains, trusted_networks: &nets, separators: "+", tables: &tables };
        for text in [format!("{local}@{domain}"), format!("\"{}\"@{domain}", local.replace(['"', '\\'], ""))] {
            let Ok(rcpt) = Address::parse(&text) else { continue };
            let ip: IpAddr = if trusted { [127, 0, 0, 2].into() } else { [192, 0, 2, 1].into() };
            if let Verdict::Ok(destinations) = resolve_recipient(&policy, ip, false, &rcpt) {
                for d in destinations {
                    if let Destination::Pipe { command, .. } = &d {
                        prop_assert!(COMMANDS.contains(&command.as_str()), "{text} became the command {command:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_reply_is_one_reply_whatever_its_text(lines in prop::collection::vec(any::<String>(), 1..4), code in 200u16..600) {
        let mut reply = Reply::new(code, EnhancedStatus((code / 100) as u8, 0, 0), lines[0].clone());
        reply.lines.extend(lines[1..].iter().cloned());
        let wire = encoded(&reply);
        let sent: Vec<&str> = wire.split_terminator("\r\n").collect();
        prop_assert_eq!(sent.len(), lines.len(), "{:?}", wire);
        for (i, line) in sent.iter().enumerate() {
            prop_assert!(no_control(line), "{:?}", line);
            let sep = if i + 1 == sent.len() { ' ' } else { '-' };
            prop_assert!(line.starts_with(&format!("{code}{sep}")), "{:?}", line);
        }
        prop_assert!(no_control(&reply.to_string()));
        prop_assert!(no_control(&postern_types::printable(&lines[0])));
    }

    #[test]
    fn a_dsn_has_the_fields_it_means_whatever_the_values(values in prop::collection::vec(any::<String>(), 5)) {
        let recipient = postern_report::RecipientStatus {
            final_recipient: postern_types::ForwardPath::Mailbox(postern_types::Address::new(values[0].clone(), "example.test")),
            original_recipient: Some(values[1].clone()),
            action: postern_report::Action::Failed,
            status: EnhancedStatus(5, 1, 1),
            remote_mta: Some(values[2].clone()),
            diagnostic: Some(values[3].clone()),
        };
        let dsn = postern_report::Dsn {
            reporting_mta: "mx.example.test",
            queue_id: "0000000000000001",
            to: &postern_types::Address::new("a", "example.test"),
            arrival: 1_795_000_000,
            envelope_id: Some(&values[4]),
            recipients: vec![recipient],
            original: b"Subject: s\r\n\r\nx\r\n",
            return_full: false,
        };
        let message = String::from_utf8_lossy(&postern_report::compose(&dsn)).into_owned();
        let status = message.split("Content-Type: message/delivery-status").nth(1).unwrap();
        let status = status.split("\r\n--").next().unwrap();
        for line in status.split("\r\n") {
            prop_assert!(no_control(line), "{:?}", line);
        }
        for field in ["Final-Recipient:", "Action:", "Status:", "Original-Envelope-Id:", "Diagnostic-Code:"] {
            let n = status.split("\r\n").filter(|l| l.starts_with(field)).count();
            prop_assert_eq!(n, 1, "{} in {:?}", field, status);
        }
    }

    #[test]
    fn a_milters_header_stays_one_field(value in any::<String>()) {
        let message = b"Subject: s\r\n\r\nbody\r\n";
        if !postern_milter::edit::writable("X-Scan", &value) {
            return Ok(());
        }
        let out = postern_milter::edit::apply(message, &[postern_milter::Response::AddHeader("X-Scan".into(), value.clone())]);
        let out = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        prop_assert_eq!(body, "body\r\n", "{:?}", out);
        prop_assert!(!head.replace("\r\n", "").contains(['\r', '\n']), "bare CR or LF: {:?}", head);
        let fields: Vec<&str> = head.split("\r\n").filter(|l| !l.starts_with([' ', '\t'])).collect();
        prop_assert_eq!(fields.len(), 2, "{:?}", head);
    }
}

/// The first property can fail: a table line's command is reached, by name and through the
/// template, so a command from anywhere else would be seen.
#[test]
fn the_command_property_is_not_vacuous() {
    let tables = tables();
    let local_domains = ["example.test".to_owned(), "example.org".to_owned()];
    let policy =
        RecipientPolicy { local_domains: &local_domains, trusted_networks: &[], separators: "+", tables: &tables };
    for text in ["carol@example.test", "carol@example.org"] {
        let rcpt = Address::parse(text).unwrap();
        let Verdict::Ok(d) = resolve_recipient(&policy, [192, 0, 2, 1].into(), false, &rcpt) else { panic!("{text}") };
        assert!(matches!(&d[0], Destination::Pipe { command, .. } if command == COMMANDS[0]), "{text}: {d:?}");
    }
}
