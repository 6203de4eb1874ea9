//! `sendmail.mc`: the m4 macros a postmaster writes (cf/README), one call per line as
//! Debian's and everyone's mc files have them. `dnl` comments and m4 boilerplate are skipped;
//! every other line gets a fate in the report.

use crate::Sources;
use crate::draft::Draft;
use crate::report::{Fate, Report};

/// What becomes of sendmail's procmail mailer.
const PROCMAIL: &str = "no procmail mailer: pipe per alias (`user: \"|/usr/bin/procmail\"`, [delivery] allow_pipes); \
     mailertable procmail: entries become pipe: routes; or Dovecot's Sieve";

const SOURCE: &str = "sendmail.mc";

/// One macro call: `NAME(`arg', `arg')`.
#[derive(Debug, PartialEq, Eq)]
struct Call {
    name: String,
    args: Vec<String>,
}

/// The aliases file `define(`ALIAS_FILE', `PATH')` names in `mc`, if it names one (the first
/// of a comma list): the import reads that file instead of `/etc/aliases`.
pub fn alias_file(mc: &str) -> Option<String> {
    mc.lines().filter_map(parse_call).find_map(|c| {
        (c.name == "define" && c.args.first().map(String::as_str) == Some("ALIAS_FILE"))
            .then(|| c.args.get(1).and_then(|v| v.split(',').next()).map(|v| v.trim().to_owned()))
            .flatten()
    })
}

/// Parses `NAME(args)` at the start of `line` (after trimming); arguments are m4-quoted
/// (`` `like this' ``) or bare, separated by commas outside quotes.
fn parse_call(line: &str) -> Option<Call> {
    let line = line.trim();
    let open = line.find('(')?;
    let name = &line[..open];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let (mut args, mut cur, mut depth, mut quote) = (Vec::new(), String::new(), 0usize, 0usize);
    for c in line[open + 1..].chars() {
        match c {
            '`' => {
                quote += 1;
                if quote == 1 {
                    continue;
                }
            }
            '\'' if quote > 0 => {
                quote -= 1;
                if quote == 0 {
                    continue;
                }
            }
            '(' if quote == 0 => depth += 1,
            ')' if quote == 0 && depth == 0 => {
                args.push(cur.trim().to_owned());
                return Some(Call { name: name.to_owned(), args });
            }
            ')' if quote == 0 => depth -= 1,
            ',' if quote == 0 && depth == 0 => {
                args.push(std::mem::take(&mut cur).trim().to_owned());
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    None
}

/// Reads the mc file into `draft`.
pub(crate) fn import(sources: &Sources, draft: &mut Draft, report: &mut Report) {
    let Some(text) = sources.text(SOURCE) else { return };
    let mut local_config = false;
    // A call continued on the next lines (`define(`confPRIVACY_FLAGS',dnl` then the value).
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        // `dnl` discards the rest of its line (m4), comments after it included.
        let code = line.find("dnl").map_or(line, |i| &line[..i]).trim();
        if pending.is_none() && (code.is_empty() || line.starts_with("dnl") || line.starts_with('#')) {
            continue;
        }
        let (n, joined) = match pending.take() {
            Some((n, mut prev)) => {
                prev.push_str(code);
                (n, prev)
            }
            None => (i + 1, code.to_owned()),
        };
        if joined.matches('(').count() > joined.matches(')').count() {
            pending = Some((n, joined));
            continue;
        }
        let (code, line) = (joined.as_str(), joined.as_str());
        if code == "MAILER_DEFINITIONS" {
            report.add(SOURCE, n, line, Fate::Default("m4 and sendmail.cf boilerplate".into()));
            continue;
        }
        if code == "LOCAL_CONFIG" {
            local_config = true;
            report.add(SOURCE, n, line, Fate::Default("starts raw sendmail.cf lines".into()));
            continue;
        }
        if local_config && let Some(domain) = code.strip_prefix("Cw") {
            for d in domain.split_whitespace() {
                draft.add_local(d);
            }
            report.add(SOURCE, n, line, Fate::Mapped(format!("[domains] local += {domain}")));
            continue;
        }
        let fate = match parse_call(code) {
            Some(call) => apply(&call, draft),
            None => Fate::NotMapped("raw sendmail.cf or an m4 form this import does not read".into()),
        };
        report.add(SOURCE, n, line, fate);
    }
}

fn arg(call: &Call, i: usize) -> &str {
    call.args.get(i).map_or("", String::as_str)
}

fn apply(call: &Call, draft: &mut Draft) -> Fate {
    match call.name.as_str() {
        "divert" | "VERSIONID" | "OSTYPE" | "DOMAIN" | "include" | "undefine" | "MODIFY_MAILER_FLAGS" => {
            Fate::Default("m4 and sendmail.cf boilerplate".into())
        }
        "define" => define(arg(call, 0), arg(call, 1), draft),
        "FEATURE" => feature(arg(call, 0), arg(call, 1), draft),
        "DAEMON_OPTIONS" => daemon_options(arg(call, 0), draft),
        "MASQUERADE_AS" => {
            draft.origin = Some(arg(call, 0).to_lowercase());
            Fate::Mapped(format!(
                "[domains] origin = {:?} (bare names get it; Postern never rewrites the From of relayed mail)",
                arg(call, 0)
            ))
        }
        "MASQUERADE_DOMAIN" => Fate::NotMapped("Postern does not rewrite addresses in headers".into()),
        "INPUT_MAIL_FILTER" => milter(arg(call, 0), arg(call, 1), draft),
        "MAILER" => match arg(call, 0) {
            // sendmail's local mailer (mail.local) appends to /var/mail/USER, where the user,
            // mutt and a passwd-based Dovecot read: the same place, not Postern's Maildirs.
            "local" => {
                draft.mbox = true;
                Fate::Mapped(
                    "[delivery] local = \"mbox\", mbox = \"/var/mail/{mailbox}\" (where mail.local wrote; a new mbox belongs to its user)".into(),
                )
            }
            "smtp" => Fate::Default("SMTP is built in".into()),
            "procmail" => Fate::NotMapped(PROCMAIL.into()),
            other => Fate::NotMapped(format!("no {other} mailer in Postern")),
        },
        "TRUST_AUTH_MECH" => Fate::Default("AUTH PLAIN and LOGIN, only under TLS, on submission listeners".into()),
        "CLIENT_OPTIONS" => {
            Fate::Default("outbound connections use the address families of [outbound] ip_version".into())
        }
        "LOCAL_RULESETS" | "LOCAL_RULE_0" | "LOCAL_RULE_3" | "LOCAL_NET_CONFIG" => {
            Fate::NotMapped("rulesets have no equivalent: express the rule as a table line or a [policy] check".into())
        }
        other => Fate::NotMapped(format!("{other}: no equivalent")),
    }
}

/// `define(`confX', `value')`.
fn define(name: &str, value: &str, draft: &mut Draft) -> Fate {
    let timeout = |draft: &mut Draft, section: &str, key: &'static str| {
        let v = sendmail_duration(value);
        match section {
            "timeouts" => draft.timeouts.insert(key, v.clone()),
            _ => draft.queue.insert(key, v.clone()),
        };
        Fate::Mapped(format!("[{section}] {key} = {v:?}"))
    };
    match name {
        "confDOMAIN_NAME" => {
            draft.hostname = Some(value.to_lowercase());
            Fate::Mapped(format!("hostname = {value:?}"))
        }
        "SMART_HOST" => {
            let host = value.trim_start_matches("relay:").trim_start_matches("smtp:").trim_start_matches("esmtp:");
            draft.smarthost = Some(host.to_lowercase());
            Fate::Mapped(format!("[relay] smarthost = {host:?}"))
        }
        "confMAX_MESSAGE_SIZE" => match value.parse::<u64>() {
            Ok(n) => {
                draft.max_message_size = Some(n);
                Fate::Mapped(format!("[limits] max_message_size = \"{n}\" (bytes)"))
            }
            Err(_) => Fate::NotMapped(format!("{value:?} is not a number of bytes")),
        },
        "confMAX_DAEMON_CHILDREN" => match value.parse::<u64>() {
            Ok(n) if n > 0 => {
                draft.max_connections = Some(n);
                Fate::Mapped(format!("[server] max_connections = {n}"))
            }
            _ => Fate::Default("no limit in sendmail; Postern's default is 500 sessions".into()),
        },
        "confTO_HELO" => timeout(draft, "timeouts", "helo"),
        "confTO_MAIL" => timeout(draft, "timeouts", "mail"),
        "confTO_RCPT" => timeout(draft, "timeouts", "rcpt"),
        "confTO_DATABLOCK" => timeout(draft, "timeouts", "data_block"),
        "confTO_QUEUERETURN" => timeout(draft, "queue", "max_age"),
        "confTO_QUEUEWARN" => timeout(draft, "queue", "warn_after"),
        n if n.starts_with("confTO_") => {
            Fate::NotMapped("Postern has per-stage timeouts for helo, mail, rcpt and data_block only".into())
        }
        "confPRIVACY_FLAGS" => Fate::Default(
            "Postern always refuses VRFY (252) and EXPN (502) and lets only the postmaster steer the queue".into(),
        ),
        "confQUEUE_LA" | "confREFUSE_LA" | "confDELAY_LA" => Fate::NotMapped(
            "no load-average switches: Postern bounds sessions ([server] max_connections, max_connections_per_ip)"
                .into(),
        ),
        "confCONNECTION_RATE_THROTTLE" => {
            Fate::NotMapped("no connection rate limit yet (rate limits: issue 17)".into())
        }
        "confSERVER_CERT" => {
            draft.tls_cert = Some(value.to_owned());
            Fate::Mapped(format!("[tls] cert = {value:?} (use the full chain, certbot's fullchain.pem)"))
        }
        "confSERVER_KEY" => {
            draft.tls_key = Some(value.to_owned());
            Fate::Mapped(format!("[tls] key = {value:?}"))
        }
        "confCACERT" | "confCACERT_PATH" => Fate::NotMapped(
            "client certificates are not asked for; outbound verification uses Mozilla's roots (webpki-roots), not this file".into(),
        ),
        "ALIAS_FILE" => Fate::Mapped(format!("aliases read from {value} (not /etc/aliases)")),
        "confCW_FILE" => Fate::Default("local-host-names is read as given to the import (--mail-dir)".into()),
        // sendmail's delivery modes: `q`/`d` queue only, `i`/`b` deliver at once.
        "confDELIVERY_MODE" if value.starts_with(['q', 'd']) => {
            draft.queue.insert("mode", "queue-only".into());
            Fate::Mapped("[queue] mode = \"queue-only\" (held until `postern queue flush`, sendmail -q)".into())
        }
        "confDELIVERY_MODE" => Fate::Default("Postern delivers at once, in the background".into()),
        "confAUTH_MECHANISMS" | "confAUTH_OPTIONS" => {
            Fate::Default("AUTH PLAIN and LOGIN, only under TLS, on submission listeners".into())
        }
        "confSMTP_LOGIN_MSG" => Fate::Default("the greeting is `220 HOSTNAME ESMTP Postern`".into()),
        "confLOG_LEVEL" => Fate::Default("one line per event; POSTERN_LOG=debug for more".into()),
        "PROCMAIL_MAILER_PATH" | "confDEF_USER_ID" | "confRUN_AS_USER" => {
            Fate::NotMapped(format!("{name}: set [server] user for the account Postern runs as"))
        }
        _ => Fate::NotMapped(format!("{name}: no equivalent")),
    }
}

/// sendmail's durations (`5m`, `1h`, `4d`, `90s`, `2w`): as Postern's units; weeks become days.
fn sendmail_duration(v: &str) -> String {
    let v = v.trim();
    match v.strip_suffix('w').and_then(|w| w.parse::<u64>().ok()) {
        Some(w) => format!("{}d", w * 7),
        None if v.chars().all(|c| c.is_ascii_digit()) => format!("{v}m"),
        None => v.to_owned(),
    }
}

fn feature(name: &str, argument: &str, draft: &mut Draft) -> Fate {
    match name {
        "virtusertable" => Fate::Mapped("[tables] virtual = \"virtual\" (from virtusertable)".into()),
        "mailertable" => Fate::Mapped("[tables] routes = \"routes\" (from mailertable)".into()),
        "access_db" => Fate::Mapped("the access table's lines (see access below)".into()),
        "use_cw_file" => Fate::Mapped("[domains] local (from local-host-names)".into()),
        "relay_hosts_only" => {
            Fate::Mapped("relay-domains entries are hosts, not domains: only their addresses are trusted".into())
        }
        "always_add_domain" => Fate::Default("Postern qualifies bare names with [domains] origin".into()),
        "smrsh" => Fate::NotMapped(
            "no restricted shell: with [delivery] allow_pipes any command in the aliases runs (as the alias's account, never root); review each".into(),
        ),
        "no_default_msa" => Fate::Default("submission listeners exist only where configured".into()),
        "redirect" | "nouucp" | "nocanonify" | "lookupdotdomain" | "relay_entire_domain" => {
            Fate::Default(format!("{name}: Postern behaves so already, or the feature has no effect here"))
        }
        "genericstable" | "generics_entire_domain" | "masquerade_envelope" | "masquerade_entire_domain" => {
            Fate::NotMapped("Postern does not rewrite sender addresses (genericstable lines are listed below)".into())
        }
        "blacklist_recipients" => {
            Fate::Mapped("access To: entries with REJECT/ERROR become virtual error: lines".into())
        }
        "dnsbl" | "enhdnsbl" => {
            let zone = argument.trim().to_owned();
            if zone.is_empty() {
                return Fate::NotMapped("FEATURE(dnsbl) without a zone: sendmail's default list is gone".into());
            }
            if !draft.dnsbl_zones.contains(&zone) {
                draft.dnsbl_zones.push(zone.clone());
            }
            Fate::Mapped(format!("[policy] dnsbl_zones += {zone:?} (checked after EHLO: 554 5.7.1)"))
        }
        "greet_pause" => {
            Fate::Default("Postern's [policy] HELO checks catch early talkers' tools without a pause".into())
        }
        "delay_checks" => Fate::Default("Postern refuses at RCPT and after EHLO, never accepts then bounces".into()),
        "local_procmail" => Fate::NotMapped(
            PROCMAIL.into(),
        ),
        "mailertable_defaults" | "promiscuous_relay" | "accept_unresolvable_domains" | "accept_unqualified_senders" => {
            let _ = draft;
            Fate::NotMapped(format!("{name}: not offered (Postern is never an open relay, and checks sender domains)"))
        }
        _ => Fate::NotMapped(format!("FEATURE({name}): no equivalent")),
    }
}

/// `DAEMON_OPTIONS(`Port=smtp,Addr=127.0.0.1, Name=MTA')`.
fn daemon_options(options: &str, draft: &mut Draft) -> Fate {
    let mut port = "25".to_owned();
    let mut addr = None;
    let mut family = "inet";
    let mut modifiers = "";
    for kv in options.split(',') {
        let Some((k, v)) = kv.split_once('=') else { continue };
        match k.trim() {
            "Port" => port = service_port(v.trim()).to_owned(),
            "Addr" => addr = Some(v.trim().to_owned()),
            "Family" => family = if v.trim() == "inet6" { "inet6" } else { "inet" },
            "M" | "Modifiers" => modifiers = v.trim(),
            _ => {}
        }
    }
    let host = match (addr, family) {
        (Some(a), "inet6") => format!("[{a}]"),
        (Some(a), _) => a,
        (None, "inet6") => "[::]".into(),
        (None, _) => "0.0.0.0".into(),
    };
    let role = match (port.as_str(), modifiers.contains('s')) {
        ("465", _) | (_, true) => "submissions",
        ("587", _) => "submission",
        _ => "mx",
    };
    let address = format!("{host}:{port}");
    draft.listeners.push((address.clone(), role));
    Fate::Mapped(format!("[[listener]] address = {address:?}, role = {role:?}"))
}

fn service_port(p: &str) -> &str {
    match p {
        "smtp" => "25",
        "submission" => "587",
        "smtps" => "465",
        other => other,
    }
}

/// `INPUT_MAIL_FILTER(`name', `S=inet:8891@localhost, F=T')`.
fn milter(name: &str, equates: &str, draft: &mut Draft) -> Fate {
    let tempfail = equates.split(',').any(|e| e.trim() == "F=T");
    if name.to_lowercase().contains("dkim") {
        if tempfail {
            draft.dkim_on_error = Some("tempfail");
        }
        return Fate::Mapped(format!(
            "DKIM signing built in ([dkim], from opendkim's tables below){}",
            if tempfail { "; F=T: [dkim] on_error = \"tempfail\"" } else { "" }
        ));
    }
    Fate::NotMapped(format!(
        "milter {name}: not translated; add a [[milter]] by hand (address = \"inet:127.0.0.1:PORT\" for \
         S=inet:PORT@localhost, default_action = \"tempfail\" for F=T)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls() {
        let c = parse_call("define(`confTO_HELO', `1m')dnl").unwrap();
        assert_eq!(c, Call { name: "define".into(), args: vec!["confTO_HELO".into(), "1m".into()] });
        let c = parse_call("DAEMON_OPTIONS(`Family=inet,  Name=MTA-v4, Port=smtp, Addr=127.0.0.1')").unwrap();
        assert_eq!(c.args, ["Family=inet,  Name=MTA-v4, Port=smtp, Addr=127.0.0.1"]);
        let c = parse_call("FEATURE(`dnsbl', `zen.spamhaus.org', `\"550 Rejected\"')").unwrap();
        assert_eq!(c.args.len(), 3);
        assert!(parse_call("Cwexample.org").is_none());
        assert_eq!(sendmail_duration("2w"), "14d");
        assert_eq!(sendmail_duration("1h"), "1h");
    }
}
