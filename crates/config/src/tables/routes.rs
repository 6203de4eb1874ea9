//! The routes table, sendmail mailertable syntax: `key route` per line. The key is a domain
//! (`example.test`, exact) or a suffix (`.example.test`, any subdomain). Routes:
//!
//! - `relay:[host]`, `relay:[host]:port`: that host, no MX lookup (brackets, as in sendmail).
//! - `relay:host`, `relay:host:port`: the MX hosts of `host`.
//! - `local:mailbox`: deliver to a local mailbox.
//! - `lmtp:unix:/path`, `lmtp:[host]:port`: LMTP (RFC 2033) to that server, e.g. another
//!   host's Dovecot (Postfix's `lmtp:` transport).
//! - `pipe:command args`: pipe the message to a command, as a `|command` alias is (needs
//!   `[delivery] allow_pipes`; runs as `[delivery] pipe_user`).
//! - `error:5.3.0:Text` (any `error:` form of the virtual table): refuse at RCPT time.
//!
//! `smtp:` and `esmtp:` are accepted as synonyms of `relay:` (sendmail's mailer names).

use crate::error::{ValueError, invalid};
use std::collections::HashMap;
use std::path::Path;

use postern_types::Reply;

use super::{address_key_error, key_target_table, parse_error};
use crate::error::ConfigError;

/// A table and the line of each key.
type Lined<T> = (HashMap<String, T>, HashMap<String, usize>);

/// Where mail for a domain goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An SMTP relay.
    Relay(Relay),
    /// A local mailbox.
    Local(String),
    /// An LMTP server: `unix:/path` or `[host]:port`, as `[delivery] lmtp`.
    Lmtp(LmtpServer),
    /// A command line the message is piped to (`$RECIPIENT`, `$SENDER`… in its environment).
    Pipe(String),
    /// Refuse at RCPT time with this reply.
    Error(Reply),
}

/// A next-hop host for SMTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// Host name (lower-cased) or IP address.
    pub host: String,
    /// Port; `None` means `[outbound] port`.
    pub port: Option<u16>,
    /// Whether to look up the MX records of `host` (no brackets) or use it directly (brackets).
    pub mx_lookup: bool,
}

/// Parses `[host]:port`, `[host]`, `host:port` or `host` (a `relay:` prefix is allowed).
///
/// # Errors
/// A message saying what form is expected.
pub fn parse_relay(s: &str) -> Result<Relay, ValueError> {
    let s = s.trim();
    let s = ["relay:", "smtp:", "esmtp:"].iter().find_map(|p| s.strip_prefix(p)).unwrap_or(s);
    let bad = || invalid!("{s:?}: expected [host], [host]:port, host or host:port");
    let (host, port, mx_lookup) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?.parse::<u16>().map_err(|_| bad())?),
        };
        (host, port, false)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| bad())?), true),
            None => (s, None, true),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(Relay { host: host.to_lowercase(), port, mx_lookup })
}

pub(super) fn parse(path: &Path, text: &str, errors: &mut Vec<ConfigError>) -> Lined<Route> {
    let key_error = |key: &str| key.contains('@').then_some("key must be a domain or .suffix");
    key_target_table(path, text, errors, key_error, |target| {
        if let Some(rest) = target.strip_prefix("error:") {
            parse_error(rest).map(Route::Error)
        } else if let Some(mailbox) = target.strip_prefix("local:") {
            if mailbox.is_empty() || mailbox.contains(char::is_whitespace) {
                Err("local: needs a mailbox name".into())
            } else {
                Ok(Route::Local(mailbox.to_lowercase()))
            }
        } else if let Some(command) = target.strip_prefix("pipe:") {
            if command.trim().is_empty() {
                Err("pipe: needs a command".into())
            } else {
                Ok(Route::Pipe(command.trim().to_owned()))
            }
        } else if let Some(server) = target.strip_prefix("lmtp:") {
            match LmtpServer::parse(server) {
                Ok(server) => Ok(Route::Lmtp(server)),
                Err(_) => Err(invalid!("{target:?}: expected lmtp:unix:/path/to/socket or lmtp:[host]:port")),
            }
        } else if is_relay(target) {
            parse_relay(target).map(Route::Relay)
        } else {
            Err(invalid!(
                "{target:?}: expected relay:[host], relay:host, local:mailbox, lmtp:..., pipe:command or error:..."
            ))
        }
    })
}

/// The sender routes table (sendmail smarttable): `user@domain` or `@domain` → `relay:...`.
pub(super) fn parse_sender(path: &Path, text: &str, errors: &mut Vec<ConfigError>) -> Lined<Relay> {
    key_target_table(path, text, errors, address_key_error, |target| {
        if is_relay(target) {
            parse_relay(target)
        } else {
            Err(invalid!("{target:?}: expected relay:[host] or relay:host"))
        }
    })
}

/// An LMTP server (RFC 2033), as `[delivery] lmtp` and `lmtp:` routes name it: a Unix socket
/// (`unix:/run/dovecot/lmtp`) or a TCP address (`[127.0.0.1]:24`, `host:24`, `[::1]:24`;
/// Postfix's `lmtp:` prefix allowed). Parsed once, when the configuration or table is read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum LmtpServer {
    /// A Unix socket (an absolute path).
    Unix(std::path::PathBuf),
    /// A TCP address as written: `[host]:port` or `host:port` ([`LmtpServer::tcp_target`] is
    /// what is connected to).
    Tcp(String),
}

/// A setting that names no LMTP server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: use \"unix:/run/dovecot/lmtp\" or \"[127.0.0.1]:24\"")]
pub struct BadLmtpServer(pub String);

impl LmtpServer {
    /// Parses `unix:/path`, `[host]:port` or `host:port` (with or without `lmtp:`).
    ///
    /// # Errors
    /// [`BadLmtpServer`] for anything else (a relative socket path, no port).
    pub fn parse(s: &str) -> Result<Self, BadLmtpServer> {
        if !is_lmtp_server(s) {
            return Err(BadLmtpServer(s.to_owned()));
        }
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Self::Unix(path.into()));
        }
        Ok(Self::Tcp(s.trim_start_matches("lmtp:").to_owned()))
    }

    /// The `host:port` a TCP connection is made to: `[::1]:24` keeps its brackets (an IPv6
    /// address needs them), `[host]:port` loses them; `None` for a Unix socket.
    #[must_use]
    pub fn tcp_target(&self) -> Option<String> {
        let Self::Tcp(addr) = self else { return None };
        let ipv6 = addr.starts_with('[') && addr.split(']').next().is_some_and(|h| h.contains(':'));
        Some(if ipv6 { addr.clone() } else { addr.replace(['[', ']'], "") })
    }
}

impl TryFrom<String> for LmtpServer {
    type Error = BadLmtpServer;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl std::fmt::Display for LmtpServer {
    /// `unix:/path` or `host:port`, as the logs and `postern route` show it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Tcp(a) => f.write_str(a),
        }
    }
}

/// Whether `s` names an LMTP server: `unix:/absolute/path`, `[host]:port` or `host:port`.
pub fn is_lmtp_server(s: &str) -> bool {
    s.strip_prefix("unix:").map_or_else(
        || s.replace(['[', ']'], "").rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
        |p| p.starts_with('/'),
    )
}

/// Whether `target` names an SMTP relay (`relay:`, or sendmail's mailer names `smtp:`, `esmtp:`).
fn is_relay(target: &str) -> bool {
    ["relay:", "smtp:", "esmtp:"].iter().any(|p| target.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_forms() {
        assert_eq!(
            parse_relay("relay:[mx.b.test]:2525").unwrap(),
            Relay { host: "mx.b.test".into(), port: Some(2525), mx_lookup: false }
        );
        assert_eq!(
            parse_relay("[127.0.0.1]").unwrap(),
            Relay { host: "127.0.0.1".into(), port: None, mx_lookup: false }
        );
        assert_eq!(
            parse_relay("smtp:Relay.Test").unwrap(),
            Relay { host: "relay.test".into(), port: None, mx_lookup: true }
        );
        assert_eq!(parse_relay("relay.test:587").unwrap().port, Some(587));
        assert!(parse_relay("[x.test").is_err());
        assert!(parse_relay("[x.test]:port").is_err());
    }

    #[test]
    fn sender_table() {
        let mut errors = Vec::new();
        let text =
            "app@a.test relay:[127.0.0.1]:2600\n@capture.test relay:[capture.test]\nbad relay:[x]\n@x.test local:bob\n";
        let (map, _) = parse_sender(Path::new("sender-routes"), text, &mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        let t = super::super::Tables { sender_routes: map, ..Default::default() };
        let from = |s: &str| postern_types::ReversePath::Mailbox(postern_types::Address::parse(s).unwrap());
        assert_eq!(t.sender_route_for(&from("App@A.test")).unwrap().port, Some(2600));
        assert_eq!(t.sender_route_for(&from("anyone@capture.test")).unwrap().host, "capture.test");
        assert!(t.sender_route_for(&from("other@a.test")).is_none());
        assert!(t.sender_route_for(&postern_types::ReversePath::Null).is_none());
    }

    #[test]
    fn lmtp_server_forms() {
        let unix = LmtpServer::parse("unix:/run/dovecot/lmtp").unwrap();
        assert_eq!(unix, LmtpServer::Unix("/run/dovecot/lmtp".into()));
        assert_eq!(unix.to_string(), "unix:/run/dovecot/lmtp");
        let tcp = LmtpServer::parse("lmtp:[127.0.0.1]:24").unwrap();
        assert_eq!(tcp, LmtpServer::Tcp("[127.0.0.1]:24".into()));
        assert_eq!((tcp.to_string(), tcp.tcp_target()), ("[127.0.0.1]:24".into(), Some("127.0.0.1:24".into())));
        let v6 = LmtpServer::parse("[::1]:24").unwrap().tcp_target().unwrap();
        assert!(v6.parse::<std::net::SocketAddr>().is_ok(), "what TcpStream::connect is given: {v6}");
        assert_eq!(unix.tcp_target(), None);
        for bad in ["unix:relative", "nowhere", "host:", ":24"] {
            assert!(LmtpServer::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn table() {
        let mut errors = Vec::new();
        let text = "# routes\nexample.test relay:[127.0.0.1]:2526\n.example.test local:bob\nbad.test error:5.3.0:No mail here\nworse.test frobnicate\nimap.test lmtp:[10.0.0.5]:24\nbadlmtp.test lmtp:unix:relative\nlist.test pipe:/usr/bin/mlmmj-receive -L /var/spool/mlmmj/list\n";
        let (map, lines) = parse(Path::new("routes"), text, &mut errors);
        assert_eq!(map.len(), 5);
        assert_eq!(map["list.test"], Route::Pipe("/usr/bin/mlmmj-receive -L /var/spool/mlmmj/list".into()));
        assert_eq!(map["imap.test"], Route::Lmtp(LmtpServer::Tcp("[10.0.0.5]:24".into())));
        assert_eq!(map[".example.test"], Route::Local("bob".into()));
        assert_eq!(lines[".example.test"], 3);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].line, Some(5));
        assert_eq!(errors[1].line, Some(7));
        // Most specific wins: exact key, then the longest suffix, whatever the line order.
        let mut t = super::super::Tables { routes: map, ..Default::default() };
        t.routes.insert(".sub.example.test".into(), Route::Local("carol".into()));
        assert!(matches!(t.route_for("example.test"), Some(Route::Relay(_))));
        assert_eq!(t.route_for("a.example.test"), Some(&Route::Local("bob".into())));
        assert_eq!(t.route_for("x.sub.example.test"), Some(&Route::Local("carol".into())));
        assert_eq!(t.route_for("sub.example.test"), Some(&Route::Local("bob".into())));
        assert_eq!(t.route_for("other.test"), None);
    }
}
