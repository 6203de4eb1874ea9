//! opendkim's configuration: `opendkim.conf` and the tables it names (KeyTable, SigningTable,
//! InternalHosts / TrustedHosts). Postern signs by itself, so the keys become `[[dkim.key]]`,
//! the signing table `[dkim] sign`, and the internal hosts `[dkim] sign_networks` (signed, never
//! allowed to relay).

use crate::Sources;
use crate::draft::Draft;
use crate::key_value;
use crate::report::{Fate, Report};

const CONF: &str = "opendkim.conf";

/// The tables `opendkim.conf` names: (report name, path), for the caller to read into
/// [`Sources`] under that name.
pub fn referenced_tables(conf: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for line in conf.lines() {
        let Some((key, value)) = key_value(line) else { continue };
        let name = match key {
            "KeyTable" => "KeyTable",
            "SigningTable" => "SigningTable",
            "InternalHosts" => "InternalHosts",
            "ExternalIgnoreList" => "ExternalIgnoreList",
            _ => continue,
        };
        let path = value.split_once(':').filter(|(k, _)| ["refile", "file"].contains(k)).map_or(value, |(_, p)| p);
        out.push((name, path.to_owned()));
    }
    out
}

/// Reads opendkim's files into `draft`.
pub(crate) fn import(sources: &Sources, draft: &mut Draft, report: &mut Report) {
    if let Some(conf) = sources.text(CONF) {
        let mut single = (None, None, None);
        for (i, line) in conf.lines().enumerate() {
            let Some((key, value)) = key_value(line) else { continue };
            let fate = conf_line(key, value, &mut single);
            report.add(CONF, i + 1, line, fate);
        }
        // Single-key mode: Domain, Selector and KeyFile instead of a KeyTable.
        if let (Some(d), Some(s), Some(k)) = single {
            draft.dkim_keys.push((d, s, k));
        }
    }
    table(sources, "KeyTable", report, |key, value| {
        let parts: Vec<&str> = value.splitn(3, ':').collect();
        let [domain, selector, path] = parts.as_slice() else {
            return Fate::NotMapped(format!("{key}: expected domain:selector:/path/to/key"));
        };
        draft.dkim_keys.push((domain.to_lowercase(), (*selector).to_owned(), (*path).to_owned()));
        Fate::Mapped(format!("[[dkim.key]] domain = {domain:?}, selector = {selector:?}, private_key = {path:?}"))
    });
    table(sources, "SigningTable", report, |key, _| {
        let pattern = if key.contains('@') { key.to_lowercase() } else { format!("*@{}", key.to_lowercase()) };
        if !draft.dkim_sign.contains(&pattern) {
            draft.dkim_sign.push(pattern.clone());
        }
        Fate::Mapped(format!("[dkim] sign += {pattern:?} (signed with that domain's keys)"))
    });
    for name in ["InternalHosts", "ExternalIgnoreList"] {
        table(sources, name, report, |key, _| internal_host(key, draft));
    }
}

fn conf_line(key: &str, value: &str, single: &mut (Option<String>, Option<String>, Option<String>)) -> Fate {
    match key {
        "KeyTable" | "SigningTable" | "InternalHosts" | "ExternalIgnoreList" => {
            Fate::Mapped(format!("{key}: read below"))
        }
        "Domain" => {
            single.0 = Some(value.to_lowercase());
            Fate::Mapped("[[dkim.key]] domain".into())
        }
        "Selector" => {
            single.1 = Some(value.to_owned());
            Fate::Mapped("[[dkim.key]] selector".into())
        }
        "KeyFile" => {
            single.2 = Some(value.to_owned());
            Fate::Mapped("[[dkim.key]] private_key".into())
        }
        "Mode" => Fate::Default(
            "Postern signs what it relays for its users and checks what arrives ([authentication])".into(),
        ),
        "Canonicalization" => Fate::Default("Postern signs relaxed/relaxed".into()),
        "Socket" | "PidFile" | "UserID" | "UMask" | "Syslog" | "SyslogSuccess" | "LogWhy" | "AutoRestart"
        | "Background" => Fate::Default("opendkim's own process settings: no separate process any more".into()),
        "SubDomains" => Fate::Default("subdomains are signed with the closest parent domain's key".into()),
        "OversignHeaders" | "SignatureAlgorithm" | "On-BadSignature" | "OnBadSignature" => {
            Fate::Default("Postern's signing and checking defaults apply".into())
        }
        _ => Fate::NotMapped(format!("{key}: no equivalent")),
    }
}

fn table(sources: &Sources, name: &str, report: &mut Report, mut f: impl FnMut(&str, &str) -> Fate) {
    let Some(text) = sources.text(name) else { return };
    for (i, line) in text.lines().enumerate() {
        let Some((key, value)) = key_value(line) else { continue };
        let fate = f(key, value);
        report.add(name, i + 1, line, fate);
    }
}

/// An `InternalHosts` / `ExternalIgnoreList` entry: hosts whose mail opendkim *signs*. It
/// becomes `[dkim] sign_networks`, never relay permission: sendmail decided who relays, and
/// its own lines (access, relay-domains) are imported as such (issue 26, finding 15).
fn internal_host(key: &str, draft: &mut Draft) -> Fate {
    let k = key.trim();
    let net = k.parse::<ipnet::IpNet>().ok().map(|n| n.to_string()).or_else(|| {
        k.parse::<std::net::IpAddr>().ok().map(|ip| format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 }))
    });
    match net {
        Some(n) => {
            draft.sign_networks.insert(n.clone());
            Fate::Mapped(format!("[dkim] sign_networks += {n:?} (their mail is signed; no relay permission)"))
        }
        None if k == "localhost" => {
            draft.sign_networks.insert("127.0.0.0/8".into());
            draft.sign_networks.insert("::1/128".into());
            Fate::Mapped("[dkim] sign_networks += 127.0.0.0/8, ::1/128 (no relay permission)".into())
        }
        None => Fate::NotMapped(format!("{k}: by name; add its addresses to [dkim] sign_networks")),
    }
}
