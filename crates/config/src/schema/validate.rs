//! The checks of a configuration that serde cannot express, each error with the file, the
//! line and the key at fault: one function per section.

use std::path::Path;

use super::*;
use crate::error::{ConfigError, line_of_key, nth_line_of_key};

impl Config {
    /// Semantic checks that serde cannot express; `text` is the source, for line numbers.
    pub(crate) fn validate(&self, text: &str) -> Vec<ConfigError> {
        let mut f = Found { source: &self.source, text, errors: Vec::new() };
        self.check_listeners(&mut f);
        self.check_authentication(&mut f);
        self.check_policy(&mut f);
        self.check_domains(&mut f);
        self.check_filters_and_forwarding(&mut f);
        self.check_host_and_limits(&mut f);
        self.check_alerts(&mut f);
        let mut errors = f.errors;
        errors.extend(store::validate(self, text));
        if self.alerts.interval.0 < std::time::Duration::from_secs(1) {
            let line = line_of_key(text, "alerts.interval");
            errors.push(ConfigError::new(&self.source, line, "alerts.interval", "must be at least 1s"));
        }
        errors
    }

    /// The listeners, TLS and the account the daemon runs as.
    fn check_listeners(&self, f: &mut Found<'_>) {
        if self.listener.is_empty() {
            f.err(
                "listener",
                "no [[listener]] configured: add one, e.g. address = \"0.0.0.0:25\", role = \"mx\"".into(),
            );
        }
        for l in &self.listener {
            if (l.role != Role::Mx || l.offers_auth()) && self.tls.cert.is_none() {
                let what = if l.role == Role::Mx { "AUTH".to_owned() } else { format!("a {} listener", l.role) };
                f.err(
                    "listener.role",
                    format!("{what} needs TLS: set [tls] cert and key (e.g. certbot's fullchain.pem and privkey.pem)"),
                );
            }
            if l.offers_auth() && self.tables.users.is_none() {
                f.err(
                    "listener.auth",
                    "AUTH needs passwords: set [tables] users to a file with name:hash lines".into(),
                );
            }
        }
        if !self.tls.sni.is_empty() && self.tls.cert.is_none() {
            f.err("tls.sni", "[[tls.sni]] certificates need a default: set [tls] cert and key too".into());
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            f.err("tls", "set both cert (fullchain.pem) and key (privkey.pem), or neither".into());
        }
        if self.server.group.is_some() && self.server.user.is_none() {
            f.err("server.group", "group is used with user: set [server] user too".into());
        }
    }

    /// `[authentication]` and `[dkim]`.
    fn check_authentication(&self, f: &mut Found<'_>) {
        let a = &self.authentication;
        if a.temperror != Action::Defer && a.temperror != Action::Accept {
            f.err("authentication.temperror", "use \"defer\" or \"accept\"".into());
        }
        if [a.spf_fail, a.spf_softfail].contains(&Action::Quarantine)
            || [a.spf_fail, a.spf_softfail].contains(&Action::Defer)
        {
            f.err("authentication", "SPF actions are \"reject\", \"tag\" or \"accept\"".into());
        }
        if a.quarantine_folder.is_empty() || a.quarantine_folder.contains('/') || !a.quarantine_folder.starts_with('.')
        {
            f.err("authentication.quarantine_folder", "a Maildir++ folder name such as \".Junk\"".into());
        }
        for k in &self.dkim.key {
            if k.selector.is_empty()
                || k.selector.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
            {
                f.err("dkim.key.selector", format!("{:?} is not a DNS label", k.selector));
            }
        }
        for pattern in self.dkim.sign.iter().flatten() {
            let domain = pattern.rsplit_once('@').map_or("", |(_, d)| d).trim_start_matches("*.").to_lowercase();
            let covered = domain == "*"
                || self.dkim.key.iter().any(|k| domain == k.domain || domain.ends_with(&format!(".{}", k.domain)));
            if !covered {
                f.err(
                    "dkim.sign",
                    format!(
                        "{pattern:?} matches no [[dkim.key]]: add a key for {domain} (or a parent domain), or drop the pattern"
                    ),
                );
            }
        }
    }

    /// `[policy]` and the ban settings of `[server]`.
    fn check_policy(&self, f: &mut Found<'_>) {
        if matches!(self.policy.greylist, Check::Reject | Check::Tag) {
            f.err("policy.greylist", "greylisting only defers: use \"defer\" or \"off\"".into());
        }
        for e in &self.policy.exception {
            if let Some(c) = e.checks.iter().find(|c| *c != "*" && !POLICY_CHECKS.contains(&c.as_str())) {
                f.err(
                    "policy.exception.checks",
                    format!("{c:?} is not a check: use \"*\" or one of {}", POLICY_CHECKS.join(", ")),
                );
            }
            if e.networks.is_empty()
                && e.client_names.is_empty()
                && e.sender_domains.is_empty()
                && e.recipients.is_empty()
            {
                f.err(
                    "policy.exception",
                    "an exception needs a criterion: networks, client_names, sender_domains or recipients".into(),
                );
            }
        }
        for z in self.policy.dnsbl_zones.iter().chain(&self.policy.rhsbl_zones) {
            if let Err(e) = ZoneSpec::parse(z) {
                f.err("policy.dnsbl_zones", e.into());
            }
        }
        if self.server.auth_failures_before_ban == 0 {
            f.err("server.auth_failures_before_ban", "must be at least 1".into());
        }
        if self.server.ban_prefix_ipv4 > 32 {
            f.err("server.ban_prefix_ipv4", "must be 0 to 32 (prefix bits of an IPv4 network)".into());
        }
        if self.server.ban_prefix_ipv6 > 128 {
            f.err("server.ban_prefix_ipv6", "must be 0 to 128 (prefix bits of an IPv6 network)".into());
        }
    }

    /// `[domains]`.
    fn check_domains(&self, f: &mut Found<'_>) {
        if self.domains.local.is_empty() {
            f.err("domains.local", "no local domain: list the domains delivered here, e.g. [\"example.test\"]".into());
        }
        for d in &self.domains.local {
            if postern_types::Address::parse(&format!("postmaster@{d}")).is_err() {
                f.err("domains.local", format!("{d:?} is not a valid domain name"));
            }
        }
        if let Some(o) = &self.domains.origin
            && postern_types::Address::parse(&format!("postmaster@{o}")).is_err()
        {
            f.err("domains.origin", format!("{o:?} is not a valid domain name"));
        }
    }

    /// `[[milter]]` addresses and `[forwarding]`.
    fn check_filters_and_forwarding(&self, f: &mut Found<'_>) {
        for m in &self.milter {
            let ok = m.address.strip_prefix("unix:").map_or_else(
                || {
                    m.address.strip_prefix("inet:").is_some_and(|a| {
                        a.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                    })
                },
                |p| p.starts_with('/'),
            );
            if !ok {
                f.err(
                    "milter.address",
                    format!("{:?}: use \"inet:127.0.0.1:11332\" or \"unix:/run/rspamd/milter.sock\"", m.address),
                );
            }
        }
        if !(4..=27).contains(&self.forwarding.srs_hash_length) {
            f.err("forwarding.srs_hash_length", "must be 4 to 27 characters (default 8)".into());
        }
        if self.forwarding.srs_domain.is_some() && self.forwarding.srs_secret_file.is_none() {
            f.err("forwarding.srs_secret_file", "srs_domain needs secrets: a file with one secret per line".into());
        }
        if let Some(d) = &self.forwarding.srs_domain
            && postern_types::Address::parse(&format!("postmaster@{d}")).is_err()
        {
            f.err("forwarding.srs_domain", format!("{d:?} is not a valid domain name"));
        }
    }

    /// `hostname`, `[delivery] maildir`, `[limits]`, `[relay] smarthost` and the connection limits.
    fn check_host_and_limits(&self, f: &mut Found<'_>) {
        if self.hostname.is_empty() || self.hostname.contains(char::is_whitespace) {
            f.err("hostname", format!("{:?} is not a host name", self.hostname));
        }
        if !self.delivery.maildir.contains("{mailbox}") {
            f.err(
                "delivery.maildir",
                "the template must contain {mailbox}, or all mailboxes would share one Maildir".into(),
            );
        }
        if self.limits.max_message_size.0 == 0 || self.limits.max_recipients == 0 {
            f.err("limits", "max_message_size and max_recipients must be greater than zero".into());
        }
        if self.limits.max_line_length < 512 {
            f.err("limits.max_line_length", "must be at least 512 (RFC 5321 §4.5.3.1.4)".into());
        }
        if let Some(s) = &self.relay.smarthost
            && let Err(e) = crate::tables::parse_relay(s)
        {
            f.err("relay.smarthost", e.into());
        }
        if self.server.max_connections == 0 || self.server.max_connections_per_ip == 0 {
            f.err("server", "max_connections and max_connections_per_ip must be greater than zero".into());
        }
    }

    /// `[[alert]]` rules: each valid, each name once.
    fn check_alerts(&self, f: &mut Found<'_>) {
        let mut names = std::collections::HashSet::new();
        for (i, a) in self.alert.iter().enumerate() {
            // The line of the rule's `kind`: a missing key has no line of its own.
            let line = nth_line_of_key(f.text, "alert.kind", i);
            if let Err((key, msg)) = a.rule() {
                f.errors.push(ConfigError::new(&self.source, line, &format!("alert.{key}"), msg));
            }
            if !names.insert(a.display_name()) {
                let msg = format!("two rules are named {:?}: give each its own name", a.display_name());
                f.errors.push(ConfigError::new(&self.source, line, "alert.name", msg));
            }
        }
    }
}

/// The errors of one validation, each with the line of its key in `text`.
struct Found<'a> {
    source: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Found<'_> {
    /// An error of `key`: `msg`, at the key's line.
    fn err(&mut self, key: &str, msg: String) {
        self.errors.push(ConfigError::new(self.source, line_of_key(self.text, key), key, msg));
    }
}
