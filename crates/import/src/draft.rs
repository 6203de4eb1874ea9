//! The configuration being built, and its rendering as `postern.toml`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::Sources;
use crate::report::{Fate, Report};

/// What the sources said, in Postern's terms.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    /// `hostname` (confDOMAIN_NAME, else the first local-host-names entry that looks like one).
    pub hostname: Option<String>,
    /// `[[listener]]`: (address, role).
    pub listeners: Vec<(String, &'static str)>,
    /// `[domains] local`, in order of appearance.
    pub local_domains: Vec<String>,
    /// `[domains] origin` (MASQUERADE_AS).
    pub origin: Option<String>,
    /// `[relay] trusted_networks`.
    pub trusted: BTreeSet<String>,
    /// `[relay] smarthost` (SMART_HOST).
    pub smarthost: Option<String>,
    /// `[limits] max_message_size`, bytes.
    pub max_message_size: Option<u64>,
    /// `[server] max_connections`.
    pub max_connections: Option<u64>,
    /// `[timeouts]` key → duration.
    pub timeouts: BTreeMap<&'static str, String>,
    /// `[queue]` key → duration.
    pub queue: BTreeMap<&'static str, String>,
    /// `[tls]` cert and key.
    pub tls_cert: Option<String>,
    /// `[tls]` key.
    pub tls_key: Option<String>,
    /// `[[dkim.key]]`: (domain, selector, private key path).
    pub dkim_keys: Vec<(String, String, String)>,
    /// `[dkim] sign` patterns.
    pub dkim_sign: Vec<String>,
    /// `[dkim] sign_networks` (opendkim's InternalHosts).
    pub sign_networks: BTreeSet<String>,
    /// `[dkim] on_error` (`F=T` of the opendkim milter: tempfail).
    pub dkim_on_error: Option<&'static str>,
    /// Networks for `[policy] block_networks_file` (access `Connect:... REJECT`).
    pub block_networks: Vec<String>,
    /// Networks for `[policy] allow_networks_file` (access `Connect:... OK`).
    pub allow_networks: Vec<String>,
    /// `[policy] dnsbl_zones` (`FEATURE(dnsbl, zone)`).
    pub dnsbl_zones: Vec<String>,
    /// Table files to write: name → text.
    pub tables: BTreeMap<String, String>,
    /// Mailboxes for the users table.
    pub users: BTreeSet<String>,
    /// Extra virtual-table lines (access `To:address ERROR`), appended after the imported ones.
    pub extra_virtual: Vec<String>,
    /// `[delivery] allow_pipes`: an alias pipes to a program.
    pub allow_pipes: bool,
    /// `[delivery] local = "mbox"` in `/var/mail` (sendmail's local mailer).
    pub mbox: bool,
}

impl Draft {
    /// Adds a local domain once (lower-cased).
    pub(crate) fn add_local(&mut self, domain: &str) {
        let d = domain.trim().trim_end_matches('.').to_lowercase();
        if !d.is_empty() && !self.local_domains.contains(&d) {
            self.local_domains.push(d);
        }
    }

    /// Last steps once every source is read: defaults a configuration needs to load, the users
    /// table, the extra virtual lines.
    pub(crate) fn finish(&mut self, sources: &Sources, report: &mut Report) {
        if self.listeners.is_empty() {
            // sendmail's default DAEMON_OPTIONS: port 25 on every address.
            self.listeners = vec![("0.0.0.0:25".into(), "mx"), ("[::]:25".into(), "mx")];
        }
        if self.local_domains.is_empty() {
            let h = self.hostname.clone().unwrap_or_else(|| "localhost".into());
            self.add_local(&h);
        }
        for a in &sources.accounts {
            self.users.insert(a.clone());
        }
        if !self.users.is_empty() {
            let mut text = String::from("# Mailboxes: the local accounts sendmail delivered to (postern import)\n");
            for u in &self.users {
                text.push_str(u);
                text.push('\n');
            }
            self.tables.insert("users".into(), text);
        }
        self.alias_system_accounts(sources, report);
        self.summarize(report);
        if !self.extra_virtual.is_empty() {
            let text = self.tables.entry("virtual".into()).or_insert_with(|| "# virtusertable\n".into());
            text.push_str("# From access To: entries (postern import)\n");
            for l in &self.extra_virtual {
                text.push_str(l);
                text.push('\n');
            }
        }
        for (name, list) in [("block-networks", &self.block_networks), ("allow-networks", &self.allow_networks)] {
            if !list.is_empty() {
                let mut text = format!("# {name}: from the access table (postern import)\n");
                for n in list {
                    text.push_str(n);
                    text.push('\n');
                }
                self.tables.insert(name.into(), text);
            }
        }
        if self.tls_cert.is_none() {
            let before = self.listeners.len();
            self.listeners.retain(|(_, role)| *role == "mx");
            if self.listeners.len() < before {
                report.add(
                    "postern.toml",
                    0,
                    "submission listeners",
                    Fate::NotMapped(
                        "a submission port needs TLS (confSERVER_CERT and confSERVER_KEY were not set): add [tls], then the listeners".into(),
                    ),
                );
            }
        }
    }

    /// System accounts that neither the users table nor the aliases name get an alias to root,
    /// as Debian's own /etc/aliases does for many: cron's mail to www-data was delivered by
    /// sendmail and must not bounce now.
    fn alias_system_accounts(&mut self, sources: &Sources, report: &mut Report) {
        let defined: std::collections::BTreeSet<String> = self
            .tables
            .get("aliases")
            .map(|t| t.lines().filter_map(|l| l.split_once(':')).map(|(n, _)| n.trim().to_lowercase()).collect())
            .unwrap_or_default();
        let missing: Vec<&String> = sources
            .system_accounts
            .iter()
            .filter(|a| *a != "root" && !defined.contains(*a) && !self.users.contains(*a))
            .collect();
        if missing.is_empty() {
            return;
        }
        let text = self.tables.entry("aliases".into()).or_insert_with(|| "# aliases (postern import)\n".into());
        text.push_str("# System accounts (/etc/passwd, uid < 1000): sendmail delivered to them (postern import)\n");
        for a in &missing {
            text.push_str(&format!("{a}: root\n"));
        }
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        report.add(
            "passwd",
            0,
            "system accounts",
            Fate::Mapped(format!("aliases: {} -> root (sendmail delivered to them)", names.join(", "))),
        );
    }

    /// The changes a user of the box notices, for the end of the report.
    fn summarize(&self, report: &mut Report) {
        let c = &mut report.changes;
        if self.mbox {
            c.push(
                "mail is still appended to /var/mail/USER (mbox), readable by mail(1), mutt and a passwd-based Dovecot"
                    .into(),
            );
        } else {
            c.push("mail is delivered to Maildirs under [delivery] maildir (/var/lib/postern/mail/USER by default), not /var/mail: point Dovecot or the mail reader there, or set [delivery] local = \"mbox\"".into());
        }
        if self.mbox || self.allow_pipes {
            c.push("under systemd the unit's sandbox must let Postern write /var/mail (and /home for programs such as procmail): the Debian package's generator opens what postern.toml delivers to; installed by hand, `postern sandbox` prints the drop-in".into());
        }
        c.push("every local account and program sends with /usr/sbin/sendmail as before; bare names (root) get [domains] origin in the envelope and the address headers".into());
        if !self.dkim_keys.is_empty() {
            c.push(
                "mail leaving for other domains is DKIM-signed by Postern itself; opendkim is no longer needed".into(),
            );
        }
        c.push("mail from the internet to an unknown address is refused at RCPT (550 5.1.1), never accepted and bounced later".into());
        if !self.users.is_empty() {
            c.push(
                "users may submit on port 587/465 with a password only once `postern user passwd NAME` has set one"
                    .into(),
            );
        }
    }

    /// `postern.toml`.
    pub fn render(&self) -> String {
        let mut s =
            String::from("# Written by `postern import sendmail`; see its report for where each line came from.\n");
        let host = self.hostname.clone().unwrap_or_else(|| self.local_domains.first().cloned().unwrap_or_default());
        let _ = writeln!(s, "hostname = {}", q(&host));
        s.push_str("data_dir = \"/var/lib/postern\"\n");
        for (address, role) in &self.listeners {
            let _ = writeln!(s, "\n[[listener]]\naddress = {}\nrole = {}", q(address), q(role));
        }
        let _ = writeln!(s, "\n[domains]\nlocal = {}", list(&self.local_domains));
        if let Some(o) = &self.origin {
            let _ = writeln!(s, "origin = {}", q(o));
        }
        let tables: Vec<(&str, &str)> =
            [("users", "users"), ("aliases", "aliases"), ("virtual", "virtual"), ("routes", "routes")]
                .into_iter()
                .filter(|(_, file)| self.tables.contains_key(*file))
                .collect();
        if !tables.is_empty() {
            s.push_str("\n[tables]\n");
            for (key, file) in tables {
                let _ = writeln!(s, "{key} = {}", q(file));
            }
        }
        if self.allow_pipes || self.mbox {
            s.push_str("\n[delivery]\n");
        }
        if self.allow_pipes {
            s.push_str("# Aliases pipe to programs (see the report): they run as the alias's account or nobody.\nallow_pipes = true\n");
        }
        if self.mbox {
            s.push_str("# Where sendmail's local mailer wrote. /var/mail is root:mail 2775: with [server] user,\n# add group = \"mail\" for mailboxes that are no Unix account.\nlocal = \"mbox\"\nmbox = \"/var/mail/{mailbox}\"\n");
        }
        let trusted = without_contained(&self.trusted);
        let _ = writeln!(s, "\n[relay]\ntrusted_networks = {}", list(&trusted));
        if let Some(h) = &self.smarthost {
            let _ = writeln!(s, "smarthost = {}", q(h));
        }
        if let Some(m) = self.max_message_size {
            let _ = writeln!(s, "\n[limits]\nmax_message_size = {}", q(&m.to_string()));
        }
        if let Some(m) = self.max_connections {
            let _ = writeln!(s, "\n[server]\nmax_connections = {m}");
        }
        section(&mut s, "timeouts", &self.timeouts);
        section(&mut s, "queue", &self.queue);
        if let (Some(c), Some(k)) = (&self.tls_cert, &self.tls_key) {
            let _ = writeln!(s, "\n[tls]\ncert = {}\nkey = {}", q(c), q(k));
        }
        if !self.dkim_keys.is_empty() {
            s.push_str("\n[dkim]\n");
            if !self.dkim_sign.is_empty() {
                let _ = writeln!(s, "sign = {}", list(&self.dkim_sign));
            }
            if let Some(e) = self.dkim_on_error {
                let _ = writeln!(s, "on_error = {}", q(e));
            }
            if !self.sign_networks.is_empty() {
                let nets: Vec<String> = self.sign_networks.iter().cloned().collect();
                let _ = writeln!(
                    s,
                    "# opendkim's InternalHosts: signed, not allowed to relay.\nsign_networks = {}",
                    list(&nets)
                );
            }
            for (domain, selector, key) in &self.dkim_keys {
                let _ = writeln!(
                    s,
                    "\n[[dkim.key]]\ndomain = {}\nselector = {}\nprivate_key = {}",
                    q(domain),
                    q(selector),
                    q(key)
                );
            }
        }
        let files: Vec<(&str, &str)> =
            [("block_networks_file", "block-networks"), ("allow_networks_file", "allow-networks")]
                .into_iter()
                .filter(|(_, f)| self.tables.contains_key(*f))
                .collect();
        if !files.is_empty() || !self.dnsbl_zones.is_empty() {
            s.push_str("\n[policy]\n");
            for (key, file) in files {
                let _ = writeln!(s, "{key} = {}", q(file));
            }
            if !self.dnsbl_zones.is_empty() {
                let _ = writeln!(s, "dnsbl_zones = {}", list(&self.dnsbl_zones));
            }
        }
        s
    }
}

/// The networks of `nets` that no other network of it contains (`127.0.0.1/32` beside
/// `127.0.0.0/8` says nothing more); anything that does not parse is kept.
fn without_contained(nets: &BTreeSet<String>) -> Vec<String> {
    let parsed: Vec<Option<ipnet::IpNet>> = nets.iter().map(|n| n.parse().ok()).collect();
    nets.iter()
        .zip(&parsed)
        .filter(|(_, p)| p.is_none_or(|me| !parsed.iter().flatten().any(|other| *other != me && other.contains(&me))))
        .map(|(n, _)| n.clone())
        .collect()
}

fn section(s: &mut String, name: &str, values: &BTreeMap<&'static str, String>) {
    if values.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n[{name}]");
    for (k, v) in values {
        let _ = writeln!(s, "{k} = {}", q(v));
    }
}

/// A TOML basic string.
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| q(i)).collect();
    format!("[{}]", quoted.join(", "))
}
