//! The SMTP side of `postern doctor`: our MX as the world sees it on port 25 (greeting name,
//! STARTTLS, the certificate it serves, DANE), and the open-relay self-test.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use postern_dns::dnssec::{DnssecResolver, Secured};
use postern_outbound::link::Link;
use postern_proto::client::Outgoing;
use postern_proto::client::session::{ClientError, Dialect, Event, RcptTo, Session as Conversation, Stage};
use tokio::net::TcpStream;

use super::Finding;

/// Longest any step may take.
const STEP: Duration = Duration::from_secs(15);

/// Why a probe of our MX could not be made; the text of a finding.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("connecting to {0}: timed out")]
    ConnectTimeout(SocketAddr),
    #[error("connecting to {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("greets with {0}")]
    Greeting(u16),
    #[error("{0} answered {1}")]
    Refused(Stage, u16),
    #[error("unexpected {0:?}")]
    Unexpected(Event),
    #[error(transparent)]
    Link(#[from] postern_outbound::LinkError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Unsendable(postern_types::Reply),
}

/// A connection to `addr` carrying an SMTP conversation as `helo`.
async fn connect(addr: SocketAddr, helo: &str) -> Result<Link<TcpStream>, ProbeError> {
    let tcp = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .map_err(|_| ProbeError::ConnectTimeout(addr))?
        .map_err(|source| ProbeError::Connect { addr, source })?;
    Ok(Link::new(tcp, Conversation::new(Dialect::Smtp, helo)))
}

/// The greeting and EHLO (HELO when refused).
async fn open(link: &mut Link<TcpStream>) -> Result<(), ProbeError> {
    match link.next_event(STEP).await? {
        Event::Ready => Ok(()),
        Event::Refused { stage: Stage::Greeting, reply } => Err(ProbeError::Greeting(reply.code)),
        Event::Refused { stage, reply } => Err(ProbeError::Refused(stage, reply.code)),
        other => Err(ProbeError::Unexpected(other)),
    }
}

/// What [`probe`] needs to know.
pub(super) struct Target<'a> {
    /// Our MX's public name.
    pub(super) mx: &'a str,
    /// Its address and port.
    pub(super) addr: SocketAddr,
    /// Our `hostname`: the HELO name of our outbound mail.
    pub(super) helo: &'a str,
    /// The names the PTR of `addr` gives.
    pub(super) ptr: &'a [String],
    /// `[outbound] ca_file`.
    pub(super) ca_file: Option<&'a std::path::Path>,
    /// The certificate must stay valid this long, seconds.
    pub(super) min_validity: i64,
}

/// Greeting name = PTR = HELO, STARTTLS, the certificate (names, expiry, chain) and DANE.
pub(super) async fn probe(t: &Target<'_>, dnssec: &DnssecResolver, out: &mut Vec<Finding>) {
    let mut c = match connect(t.addr, t.helo).await {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::fail(
                "SMTP",
                e.to_string(),
                format!("open port 25 to {}: is `postern serve` listening there?", t.mx),
            ));
            return;
        }
    };
    let opened = open(&mut c).await;
    let Some(greeting) = c.session.greeting().filter(|g| g.code == 220).cloned() else {
        let e = opened.err().map(|e| e.to_string()).unwrap_or_default();
        return out.push(Finding::temp("SMTP", format!("{}: {e}", t.addr)));
    };
    let name = greeting.lines[0].split_whitespace().next().unwrap_or("").trim_end_matches('.').to_ascii_lowercase();
    let ptr_has = |n: &str| t.ptr.iter().any(|p| p.trim_end_matches('.').eq_ignore_ascii_case(n));
    if name.eq_ignore_ascii_case(t.helo) && ptr_has(&name) {
        out.push(Finding::ok("SMTP", format!("{} greets as {name} = PTR = HELO", t.addr)));
    } else {
        let fix = if name.eq_ignore_ascii_case(t.helo) {
            format!("set the PTR of {} to {} (ask the provider of the address)", t.addr.ip(), t.helo)
        } else {
            format!("set hostname = \"{}\" in postern.toml (it should equal the PTR), then restart", t.helo)
        };
        let ptr = if t.ptr.is_empty() { "none".to_owned() } else { t.ptr.join(", ") };
        out.push(Finding::fail(
            "SMTP",
            format!("{} greets as {name:?}, its PTR is {ptr}, our HELO is {}: they must be one name", t.addr, t.helo),
            fix,
        ));
    }
    if let Err(e) = opened {
        return out.push(Finding::temp("SMTP", e.to_string()));
    }
    if !c.session.capabilities().starttls {
        let fix = "set [tls] cert and key (certbot's fullchain.pem and privkey.pem), then postern reload";
        return out.push(Finding::fail("TLS", format!("{} does not offer STARTTLS", t.mx), fix.into()));
    }
    if let Err(e) = starttls(&mut c).await {
        return out.push(Finding::temp("TLS", e.to_string()));
    }
    let (tcp, mut conversation) = c.into_parts();
    let handshake = postern_outbound::tls::handshake(tcp, t.mx, t.ca_file, None);
    let (stream, info) = match tokio::time::timeout(STEP, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return out.push(Finding::fail("TLS", format!("{}: {e}", t.mx), "check [tls] cert and key".into()));
        }
        Err(_) => return out.push(Finding::temp("TLS", "the TLS handshake timed out".into())),
    };
    let chain: Vec<Vec<u8>> =
        stream.get_ref().1.peer_certificates().unwrap_or_default().iter().map(|c| c.as_ref().to_vec()).collect();
    certificate(t, &chain, info.verify_error.as_deref(), out);
    dane(t.mx, dnssec, &chain, out).await;
    if conversation.tls_started().is_ok() {
        Link::new(stream, conversation).quit(STEP).await;
    }
}

/// STARTTLS answered 220: the handshake may begin.
async fn starttls(c: &mut Link<TcpStream>) -> Result<(), ProbeError> {
    c.session.starttls()?;
    match c.next_event(STEP).await? {
        Event::StartTls => Ok(()),
        Event::Refused { stage, reply } => Err(ProbeError::Refused(stage, reply.code)),
        other => Err(ProbeError::Unexpected(other)),
    }
}

/// An address probe (MAIL and RCPT, no DATA) of `postern-doctor@{foreign}` from itself: the
/// RCPT's reply.
async fn relay_probe(c: &mut Link<TcpStream>, foreign: &str) -> Result<postern_types::Reply, ProbeError> {
    open(c).await?;
    let address = postern_types::Address::new("postern-doctor", foreign);
    let from = postern_types::ReversePath::Mailbox(address.clone());
    let message = Outgoing {
        reverse_path: &from,
        size: 0,
        body_8bit: false,
        smtputf8: false,
        ret: None,
        envid: None,
        require_tls: false,
    };
    let rcpt = [RcptTo { address: &address, notify: None, orcpt: None }];
    if let Err(why) = c.session.transaction(&message, &rcpt, true)? {
        return Err(ProbeError::Unsendable(why.reply()));
    }
    match c.next_event(STEP).await? {
        Event::Done(answers) => match answers.into_iter().next() {
            Some(a) if a.stage == Stage::Rcpt => Ok(a.reply),
            Some(a) => Err(ProbeError::Refused(a.stage, a.reply.code)),
            None => Err(ProbeError::Unexpected(Event::Done(Vec::new()))),
        },
        other => Err(ProbeError::Unexpected(other)),
    }
}

/// The served certificate covers the MX name, is not about to expire and chains to a root.
fn certificate(t: &Target<'_>, chain: &[Vec<u8>], verify_error: Option<&str>, out: &mut Vec<Finding>) {
    let renew =
        format!("get a certificate for {} (certbot certonly -d {}), set [tls] cert, then postern reload", t.mx, t.mx);
    let Some(leaf) = chain.first().and_then(|d| postern_inbound::tls::leaf_info(d).ok()) else {
        return out.push(Finding::fail("CERT", "the server sent no parsable certificate".into(), renew));
    };
    if leaf.covers(t.mx) {
        out.push(Finding::ok("CERT", format!("the certificate ({}) covers {}", leaf.subject, t.mx)));
    } else {
        out.push(Finding::fail(
            "CERT",
            format!("the certificate covers {}, not the MX name {}", leaf.names.join(", "), t.mx),
            renew.clone(),
        ));
    }
    let left = leaf.not_after - chrono::Utc::now().timestamp();
    if left < t.min_validity {
        out.push(Finding::fail(
            "CERT",
            format!("the certificate expires in {} day(s)", left.div_euclid(86_400)),
            "renew it (certbot renew), then postern reload".into(),
        ));
    } else {
        out.push(Finding::ok("CERT", format!("valid for {} more day(s)", left / 86_400)));
    }
    match verify_error {
        None => out.push(Finding::ok("CERT", "the chain verifies against the trust anchors".into())),
        Some(e) if leaf.covers(t.mx) => out.push(Finding::fail(
            "CERT",
            format!("the chain does not verify: {e}"),
            "serve the full chain (certbot's fullchain.pem, not cert.pem) from a public CA".into(),
        )),
        Some(_) => {}
    }
}

/// The TLSA records of the MX (DANE, RFC 7672; senders look them up at port 25) against the
/// served chain.
async fn dane(mx: &str, dnssec: &DnssecResolver, chain: &[Vec<u8>], out: &mut Vec<Finding>) {
    let name = format!("_25._tcp.{mx}");
    let publish = chain.first().and_then(|l| postern_outbound::dane::record_3_1_1(l));
    let records = match dnssec.tlsa(mx, 25).await {
        Secured::Secure(records) if !records.is_empty() => records,
        Secured::Secure(_) => {
            let why = format!("no TLSA record (optional: publish `{name}. IN TLSA {}`)", publish.unwrap_or_default());
            return out.push(Finding::ok("DANE", format!("not used: {why}")));
        }
        Secured::Insecure => {
            return out.push(Finding::ok("DANE", "not used: the zone is not DNSSEC-signed (DANE needs it)".into()));
        }
        Secured::Bogus(e) => {
            return out.push(Finding::fail(
                "DANE",
                format!("{name}: DNSSEC validation fails: {e}"),
                "fix the zone's signatures (DS, RRSIG) with your DNS provider".into(),
            ));
        }
        Secured::TempFail(e) => return out.push(Finding::temp("DANE", format!("{name}: {e}"))),
    };
    let Some(leaf) = chain.first() else { return };
    let intermediates: Vec<&[u8]> = chain[1..].iter().map(Vec::as_slice).collect();
    let Ok(server) = rustls::pki_types::ServerName::try_from(mx.to_owned()) else { return };
    let now = rustls::pki_types::UnixTime::now();
    match postern_outbound::dane::check(&records, leaf, &intermediates, &server, now) {
        None => out.push(Finding::ok("DANE", format!("{name}: the served certificate matches"))),
        Some(e) => out.push(Finding::fail(
            "DANE",
            format!("{name}: {e}"),
            format!(
                "publish `{name}. IN TLSA {}` (keep the old record until caches expire)",
                publish.unwrap_or_default()
            ),
        )),
    }
}

/// A RCPT for a foreign domain must be refused (never an open relay). The domain is one of
/// RFC 2606's that is not in `local` (a box that receives for example.net tests another). The
/// probe connects to our public address from this host, so its source is that address: in
/// `[relay] trusted_networks` relaying is allowed by design and said so, else the answer is
/// what an outsider gets.
pub(super) async fn open_relay(
    addr: SocketAddr,
    helo: &str,
    trusted: &[ipnet::IpNet],
    local: &[String],
    out: &mut Vec<Finding>,
) {
    let Some(foreign) =
        ["example.net", "example.org", "example.com"].into_iter().find(|d| !local.iter().any(|l| l == d))
    else {
        return out.push(Finding::temp("RELAY", "every RFC 2606 domain is local here; test from outside".into()));
    };
    let mut c = match connect(addr, helo).await {
        Ok(c) => c,
        Err(e) => return out.push(Finding::temp("RELAY", e.to_string())),
    };
    let source: Option<IpAddr> = c.stream.local_addr().ok().map(|a| a.ip());
    let rcpt = match relay_probe(&mut c, foreign).await {
        Ok(r) => r,
        Err(e) => return out.push(Finding::temp("RELAY", e.to_string())),
    };
    c.quit(STEP).await;
    let trusted_here = source.is_some_and(|ip| trusted.iter().any(|n| n.contains(&ip)));
    match rcpt.code {
        500..=599 => out.push(Finding::ok("RELAY", format!("a RCPT for {foreign} is refused ({})", rcpt.code))),
        200..=299 if trusted_here => out.push(Finding::ok(
            "RELAY",
            "this host is in [relay] trusted_networks, so it may relay; test from outside to see what others may"
                .into(),
        )),
        200..=299 => out.push(Finding::fail(
            "RELAY",
            format!(
                "a RCPT for {foreign} from {} was accepted: an open relay",
                source.map(|i| i.to_string()).unwrap_or_default()
            ),
            "narrow [relay] trusted_networks to your own networks; relay others only after AUTH".into(),
        )),
        _ => out.push(Finding::temp("RELAY", format!("the RCPT was answered {}", rcpt.code))),
    }
}
