//! sendmail's tables (makemap source text, `/etc/aliases`): the same syntax in Postern for
//! virtusertable (`virtual`), aliases and mailertable (`routes`); local-host-names,
//! relay-domains and access become configuration and network lists.

use std::net::IpAddr;

use crate::Sources;
use crate::draft::Draft;
use crate::key_value;
use crate::report::{Fate, Report};

/// Reads every table into `draft`, local-host-names first (the others need the local domains).
pub(crate) fn import(sources: &Sources, draft: &mut Draft, report: &mut Report) {
    for_lines(sources, "local-host-names", report, |line, _| {
        draft.add_local(line);
        Fate::Mapped(format!("[domains] local += {:?}", line.trim().to_lowercase()))
    });
    for_lines(sources, "relay-domains", report, |line, _| relay_domain(line.trim(), draft));
    for_lines(sources, "access", report, |line, _| access(line, draft));
    let mut virtual_text = String::from("# virtusertable (postern import)\n");
    for_lines(sources, "virtusertable", report, |line, _| virtual_line(line, draft, &mut virtual_text));
    if sources.text("virtusertable").is_some() {
        draft.tables.insert("virtual".into(), virtual_text);
    }
    let mut routes = String::from("# mailertable (postern import)\n");
    for_lines(sources, "mailertable", report, |line, _| route_line(line, draft, &mut routes));
    if sources.text("mailertable").is_some() {
        draft.tables.insert("routes".into(), routes);
    }
    for_lines(sources, "genericstable", report, |_, _| {
        Fate::NotMapped(
            "Postern does not rewrite sender addresses; send as the address itself (AUTH [tables] senders)".into(),
        )
    });
    aliases(sources, draft, report);
}

/// Calls `f` on every entry line of `source` (comments and blanks skipped) and reports it.
fn for_lines(sources: &Sources, source: &str, report: &mut Report, mut f: impl FnMut(&str, usize) -> Fate) {
    let Some(text) = sources.text(source) else { return };
    for (i, line) in text.lines().enumerate() {
        if key_value(line).is_none() {
            continue;
        }
        let fate = f(line, i + 1);
        report.add(source, i + 1, line, fate);
    }
}

/// sendmail's address prefixes (`192.168.1`, `10`, `IPv6:2001:db8::1`, `[192.0.2.7]`) as a
/// network; `None` for a host or domain name.
fn network(key: &str) -> Option<String> {
    let k = key.trim().trim_start_matches('[').trim_end_matches(']');
    if let Some(v6) = k.strip_prefix("IPv6:").or_else(|| k.strip_prefix("ipv6:")) {
        return v6.parse::<std::net::Ipv6Addr>().ok().map(|a| format!("{a}/128"));
    }
    if let Ok(ip) = k.parse::<IpAddr>() {
        return Some(format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 }));
    }
    if k.parse::<ipnet::IpNet>().is_ok() {
        return Some(k.to_owned());
    }
    let octets: Vec<&str> = k.split('.').collect();
    if octets.len() < 4 && octets.iter().all(|o| o.parse::<u8>().is_ok()) {
        let mut full: Vec<&str> = octets.clone();
        full.resize(4, "0");
        return Some(format!("{}/{}", full.join("."), octets.len() * 8));
    }
    None
}

fn relay_domain(entry: &str, draft: &mut Draft) -> Fate {
    match network(entry) {
        Some(net) => {
            draft.trusted.insert(net.clone());
            Fate::Mapped(format!("[relay] trusted_networks += {net:?}"))
        }
        None => Fate::NotMapped(format!(
            "{entry}: Postern trusts clients by address, not by name: add their networks to [relay] trusted_networks, or let them AUTH"
        )),
    }
}

/// One access line: `Tag:key ACTION`.
fn access(line: &str, draft: &mut Draft) -> Fate {
    let Some((key, action)) = key_value(line) else { return Fate::Default("comment".into()) };
    let (tag, what) = match key.split_once(':') {
        Some((t, w))
            if ["connect", "from", "to", "spam", "greetpause", "qgrp"].contains(&t.to_lowercase().as_str()) =>
        {
            (t.to_lowercase(), w)
        }
        _ => ("connect".to_owned(), key),
    };
    let action_word = action.split(':').next().unwrap_or("").trim().to_uppercase();
    let loopback = ["localhost", "localhost.localdomain"].contains(&what.to_lowercase().as_str());
    if tag == "connect" && loopback && action_word == "RELAY" {
        draft.trusted.insert("127.0.0.0/8".into());
        draft.trusted.insert("::1/128".into());
        return Fate::Mapped("[relay] trusted_networks += 127.0.0.0/8, ::1/128 (localhost)".into());
    }
    match (tag.as_str(), network(what), action_word.as_str()) {
        ("connect", Some(net), "RELAY") => {
            draft.trusted.insert(net.clone());
            Fate::Mapped(format!("[relay] trusted_networks += {net:?}"))
        }
        ("connect", Some(net), "OK") => {
            draft.allow_networks.push(net.clone());
            Fate::Mapped(format!("allow-networks += {net} ([policy] allow_networks_file: skips every check)"))
        }
        ("connect", Some(net), "REJECT" | "ERROR") => {
            draft.block_networks.push(net.clone());
            Fate::Mapped(format!("block-networks += {net} ([policy] block_networks_file: 554 5.7.1 at connect)"))
        }
        ("connect", None, _) => Fate::NotMapped(format!(
            "{what}: a client by name; Postern decides by address ([[policy.exception]] client_names can exempt a forward-confirmed name)"
        )),
        ("to", _, "REJECT" | "ERROR") => to_refusal(what, action, draft),
        ("to", _, "RELAY") => Fate::NotMapped(format!(
            "To:{what} RELAY: Postern accepts mail only for [domains] local (backup MX relaying has no equivalent)"
        )),
        ("from", _, "REJECT" | "ERROR" | "DISCARD") => Fate::NotMapped(
            "no sender block list: [policy] sender_domain and rhsbl_zones refuse bad sender domains".into(),
        ),
        (_, _, "OK" | "SKIP") => Fate::Default("accepted by default".into()),
        (_, _, "DISCARD") => Fate::NotMapped("Postern never discards silently: refuse instead".into()),
        ("greetpause", ..) => {
            Fate::NotMapped("GreetPause: Postern has no greeting delay ([policy] checks instead)".into())
        }
        _ => Fate::NotMapped(format!("{tag}: no equivalent")),
    }
}

/// `To:address REJECT|ERROR:...` for a local address: a virtual `error:` line.
fn to_refusal(what: &str, action: &str, draft: &mut Draft) -> Fate {
    let what = what.to_lowercase();
    let (user, domain) = what.split_once('@').unwrap_or(("", &what));
    if !draft.local_domains.iter().any(|d| d == domain) {
        return Fate::NotMapped(format!("{what}: not a local domain; Postern refuses relaying to it anyway"));
    }
    let key = if user.is_empty() { format!("@{domain}") } else { format!("{user}@{domain}") };
    let target = match action.split_once(':') {
        Some((_, rest)) => format!("error:{}", error_target(rest)),
        None => "error:5.7.1:550 Access denied".to_owned(),
    };
    draft.extra_virtual.push(format!("{key} {target}"));
    Fate::Mapped(format!("virtual: {key} {target}"))
}

/// `"550 text"` or `5.7.1:"550 text"` (access ERROR forms) as Postern's `X.Y.Z:NNN text`.
fn error_target(rest: &str) -> String {
    let rest = rest.trim();
    let (status, text) = match rest.split_once(':') {
        Some((s, t)) if s.split('.').count() == 3 => (s.to_owned(), t),
        _ => (String::new(), rest),
    };
    let text = text.trim().trim_matches('"');
    let code = text.get(..3).filter(|c| c.chars().all(|d| d.is_ascii_digit())).unwrap_or("550");
    let mut words = text.get(3..).map_or(text, str::trim);
    // `"550 5.1.1 text"`: the enhanced code inside the text is the status, said once.
    let mut status = status;
    if status.is_empty()
        && let Some((first, rest)) = words.split_once(' ')
        && first.split('.').count() == 3
        && first.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        status = first.to_owned();
        words = rest.trim();
    }
    let status = if status.is_empty() { format!("{}.7.1", &code[..1]) } else { status };
    format!("{status}:{code} {}", if words.is_empty() { "Access denied" } else { words })
}

/// One virtusertable line, written as it is (the syntax is the same), with `user@localhost`
/// targets turned into the local name; program targets are commented out.
fn virtual_line(line: &str, draft: &Draft, out: &mut String) -> Fate {
    let Some((key, target)) = key_value(line) else { return Fate::Default("comment".into()) };
    let key_domain = key.rsplit_once('@').map_or("", |(_, d)| d).to_lowercase();
    let target = match target.strip_suffix("@localhost") {
        Some(user) => user.to_owned(),
        None => target.to_owned(),
    };
    if unsupported_target(&target) || target.trim_matches('"').starts_with('|') {
        out.push_str(&format!("# postern import: not supported: {line}\n"));
        return Fate::NotMapped(format!(
            "{target:?}: the virtual table points at mailboxes, aliases and addresses; pipes go in the aliases, and files are not delivered to"
        ));
    }
    out.push_str(&format!("{key} {target}\n"));
    let note = if key_domain.is_empty() || draft.local_domains.contains(&key_domain) {
        String::new()
    } else {
        format!(" (warning: {key_domain} is not in [domains] local, so this line is never used)")
    };
    Fate::Mapped(format!("virtual: {key} {target}{note}"))
}

/// A file target (`/var/mail/archive`): Postern delivers to mailboxes, not to files.
fn unsupported_target(t: &str) -> bool {
    t.trim_matches('"').starts_with('/')
}

/// One mailertable line: sendmail's mailer names become Postern's route forms. The procmail
/// mailer (`procmail:/etc/procmailrcs/x`, sendmail's `A=procmail -Y -m $h $f $u`) becomes a
/// `pipe:` route, and turns `[delivery] allow_pipes` on.
fn route_line(line: &str, draft: &mut Draft, out: &mut String) -> Fate {
    let Some((key, target)) = key_value(line) else { return Fate::Default("comment".into()) };
    let (mailer, rest) = target.split_once(':').unwrap_or((target, ""));
    let route = match mailer {
        "smtp" | "esmtp" | "smtp8" | "dsmtp" | "relay" => format!("relay:{rest}"),
        "local" => format!("local:{}", rest.split('@').next().unwrap_or(rest)),
        "error" => target.to_owned(),
        "procmail" if rest.starts_with('/') => {
            draft.allow_pipes = true;
            let route = format!("pipe:/usr/bin/procmail -Y -m {rest} \"$SENDER\" \"$RECIPIENT\"");
            out.push_str(&format!("{key} {route}\n"));
            return Fate::Mapped(format!(
                "routes: {key} {route} ([delivery] allow_pipes = true: it runs as [delivery] pipe_user, never root)"
            ));
        }
        other => {
            out.push_str(&format!("# postern import: not supported: {line}\n"));
            return Fate::NotMapped(format!(
                "mailer {other}: Postern routes to relay:, local:, lmtp:, pipe: and error: only"
            ));
        }
    };
    out.push_str(&format!("{key} {route}\n"));
    Fate::Mapped(format!("routes: {key} {route}"))
}

/// `/etc/aliases`: entries kept as they are, without the targets Postern cannot deliver to.
fn aliases(sources: &Sources, draft: &mut Draft, report: &mut Report) {
    let Some(text) = sources.text("aliases") else { return };
    let mut entries: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match entries.last_mut() {
            Some((_, prev)) if line.starts_with([' ', '\t']) && !line.trim().is_empty() => {
                prev.push(' ');
                prev.push_str(line.trim());
            }
            _ if key_value(line).is_some() => entries.push((i + 1, line.trim().to_owned())),
            _ => {}
        }
    }
    let mut out = String::from("# aliases (postern import)\n");
    for (n, entry) in entries {
        let Some((name, targets)) = entry.split_once(':') else {
            report.add("aliases", n, &entry, Fate::NotMapped("not `name: target, ...`".into()));
            continue;
        };
        let (kept, dropped): (Vec<&str>, Vec<&str>) =
            postern_config::tables::split_targets(targets).into_iter().partition(|t| !unsupported_target(t));
        let pipes = kept.iter().any(|t| t.trim_matches('"').starts_with('|'));
        draft.allow_pipes |= pipes;
        let fate = if kept.is_empty() {
            out.push_str(&format!("# postern import: not supported: {entry}\n"));
            Fate::NotMapped(format!(
                "{}: Postern does not deliver to files: use a mailbox ([delivery] local = \"mbox\" for an mbox)",
                dropped.join(", ")
            ))
        } else if pipes && dropped.is_empty() {
            let line = format!("{}: {}", name.trim(), kept.join(", "));
            out.push_str(&line);
            out.push('\n');
            Fate::Mapped(format!(
                "aliases: {line} ([delivery] allow_pipes = true: it runs as the alias's Unix account or nobody, never root; smrsh's list of allowed programs has no equivalent, review the command)"
            ))
        } else {
            let line = format!("{}: {}", name.trim(), kept.join(", "));
            out.push_str(&line);
            out.push('\n');
            if dropped.is_empty() {
                Fate::Mapped(format!("aliases: {line}"))
            } else {
                Fate::NotMapped(format!("kept `{line}`; dropped {} (no program or file delivery)", dropped.join(", ")))
            }
        };
        report.add("aliases", n, &entry, fate);
    }
    draft.tables.insert("aliases".into(), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_errors() {
        assert_eq!(network("192.168.1").as_deref(), Some("192.168.1.0/24"));
        assert_eq!(network("10").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(network("[192.0.2.7]").as_deref(), Some("192.0.2.7/32"));
        assert_eq!(network("IPv6:2001:db8::1").as_deref(), Some("2001:db8::1/128"));
        assert_eq!(network("localhost.localdomain"), None);
        assert_eq!(error_target("\"550 Go away\""), "5.7.1:550 Go away");
        assert_eq!(error_target("5.1.1:\"550 No such user\""), "5.1.1:550 No such user");
        // The enhanced code inside the text is said once (issue 28: `550 5.7.1 5.1.1 ...`).
        assert_eq!(error_target("\"550 5.1.1 no such user\""), "5.1.1:550 no such user");
    }
}
