//! A scripted SMTP peer for outbound tests: answers RCPT with the replies it is given, in turn
//! (then 250), records every message it accepts, and can offer STARTTLS (with a certificate
//! made by rcgen at test time) or offer it and then break the handshake.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// How the peer treats STARTTLS.
#[derive(Clone, Default)]
pub enum Tls {
    /// Not offered.
    #[default]
    None,
    /// Offered, with this server configuration.
    Offer(Arc<rustls::ServerConfig>),
    /// Offered, answered 220, then the connection is closed: a broken handshake.
    Broken,
}

/// A peer on 127.0.0.1:`port`, one thread per connection.
pub struct Peer {
    pub port: u16,
    /// Messages whose final reply the peer withholds (it reads them, counts them in
    /// `withheld`, and never answers): the first N transactions.
    pub hang_first: Arc<Mutex<usize>>,
    /// Messages read but never answered.
    pub withheld: Arc<Mutex<usize>>,
    /// Accepted messages (DATA content, dot-unstuffed, CRLF) and whether they came over TLS.
    pub received: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Whether each accepted message came over TLS.
    pub over_tls: Arc<Mutex<Vec<bool>>>,
    /// RCPT commands seen, in order.
    pub rcpts: Arc<Mutex<Vec<String>>>,
    /// (connections accepted, sessions open now, most sessions open at once).
    pub connections: Arc<Mutex<(usize, usize, usize)>>,
}

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<Vec<String>>>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    over_tls: Arc<Mutex<Vec<bool>>>,
    rcpts: Arc<Mutex<Vec<String>>>,
    hang_first: Arc<Mutex<usize>>,
    withheld: Arc<Mutex<usize>>,
    tls: Tls,
    dsn: bool,
    connections: Arc<Mutex<(usize, usize, usize)>>,
}

/// A self-signed certificate for `localhost` made now, as a rustls server configuration.
pub fn self_signed_tls() -> Arc<rustls::ServerConfig> {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .unwrap();
    Arc::new(config)
}

impl Peer {
    /// `rcpt_replies`: replies to the first RCPT commands, in order (e.g. `"451 4.7.1 later"`);
    /// once used up, RCPT gets `250 2.1.5 Ok`.
    pub fn start(rcpt_replies: &[&str]) -> Self {
        Self::start_tls(rcpt_replies, Tls::None)
    }

    /// As [`Peer::start`], also offering DSN (RFC 3461).
    pub fn start_dsn(rcpt_replies: &[&str]) -> Self {
        Self::start_full(rcpt_replies, Tls::None, true)
    }

    /// As [`Peer::start`], with a STARTTLS behaviour.
    pub fn start_tls(rcpt_replies: &[&str], tls: Tls) -> Self {
        Self::start_full(rcpt_replies, tls, false)
    }

    /// A plain peer on a port that was dead until now (connections to it were refused).
    pub fn start_on(dead: crate::support::net::DeadPort) -> Self {
        Self::start_listener(dead.listen(), &[], Tls::None, false)
    }

    fn start_full(rcpt_replies: &[&str], tls: Tls, dsn: bool) -> Self {
        Self::start_listener(TcpListener::bind("127.0.0.1:0").unwrap(), rcpt_replies, tls, dsn)
    }

    fn start_listener(listener: TcpListener, rcpt_replies: &[&str], tls: Tls, dsn: bool) -> Self {
        let port = listener.local_addr().unwrap().port();
        let shared = Shared {
            script: Arc::new(Mutex::new(rcpt_replies.iter().rev().map(|s| (*s).to_owned()).collect())),
            received: Arc::default(),
            over_tls: Arc::default(),
            rcpts: Arc::default(),
            hang_first: Arc::default(),
            withheld: Arc::default(),
            tls,
            dsn,
            connections: Arc::default(),
        };
        let peer = Self {
            port,
            hang_first: shared.hang_first.clone(),
            withheld: shared.withheld.clone(),
            received: shared.received.clone(),
            over_tls: shared.over_tls.clone(),
            rcpts: shared.rcpts.clone(),
            connections: shared.connections.clone(),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let shared = shared.clone();
                std::thread::spawn(move || {
                    {
                        let mut c = shared.connections.lock().unwrap();
                        c.0 += 1;
                        c.1 += 1;
                        c.2 = c.2.max(c.1);
                    }
                    let counted_closed = stream.write_all(b"220 peer.test ESMTP scripted\r\n").is_ok()
                        && serve(stream, &shared, false).unwrap_or(false);
                    if !counted_closed {
                        shared.connections.lock().unwrap().1 -= 1;
                    }
                });
            }
        });
        peer
    }
}

/// A byte stream in either direction: TCP, or TLS over TCP.
trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// One SMTP session over `stream` (clear text or TLS). `Ok(true)`: the client said QUIT, and
/// the session was counted as closed before the 221, since the client may open its next one as
/// soon as it reads it.
fn serve(stream: impl ReadWrite + 'static, sh: &Shared, is_tls: bool) -> std::io::Result<bool> {
    serve_dyn(Box::new(stream), sh, is_tls)
}

fn serve_dyn(stream: Box<dyn ReadWrite>, sh: &Shared, is_tls: bool) -> std::io::Result<bool> {
    let mut r = BufReader::new(stream);
    let mut accepted = 0;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(false);
        }
        let upper = line.to_ascii_uppercase();
        let offer_tls = !is_tls && !matches!(sh.tls, Tls::None);
        let reply = if upper.starts_with("EHLO") {
            let tls = if offer_tls { "250-STARTTLS\r\n" } else { "" };
            let dsn = if sh.dsn { "250-DSN\r\n" } else { "" };
            format!("250-peer.test\r\n{tls}{dsn}250-PIPELINING\r\n250 8BITMIME\r\n")
        } else if upper.starts_with("STARTTLS") && offer_tls {
            r.get_mut().write_all(b"220 2.0.0 Ready to start TLS\r\n")?;
            let Tls::Offer(config) = &sh.tls else { return Ok(false) }; // Broken: hang up.
            let conn = rustls::ServerConnection::new(config.clone()).map_err(std::io::Error::other)?;
            let tls = rustls::StreamOwned::new(conn, r.into_inner());
            return serve_dyn(Box::new(tls), sh, true);
        } else if upper.starts_with("MAIL") {
            accepted = 0;
            "250 2.1.0 Ok\r\n".into()
        } else if upper.starts_with("RCPT") {
            sh.rcpts.lock().unwrap().push(line.trim_end().to_owned());
            match sh.script.lock().unwrap().pop() {
                Some(s) => format!("{s}\r\n"),
                None => {
                    accepted += 1;
                    "250 2.1.5 Ok\r\n".into()
                }
            }
        } else if upper.starts_with("DATA") {
            if accepted == 0 {
                "554 5.5.1 no valid recipients\r\n".into()
            } else {
                r.get_mut().write_all(b"354 go ahead\r\n")?;
                let mut msg = Vec::new();
                loop {
                    let mut l = Vec::new();
                    let n = r.by_ref().take(1 << 20).read_until(b'\n', &mut l)?;
                    if n == 0 || l == b".\r\n" {
                        break;
                    }
                    let l = if l.starts_with(b"..") { l[1..].to_vec() } else { l };
                    msg.extend_from_slice(&l);
                }
                {
                    let mut h = sh.hang_first.lock().unwrap();
                    if *h > 0 {
                        *h -= 1;
                        *sh.withheld.lock().unwrap() += 1;
                        // Never answer: wait until the client goes away.
                        let mut sink = Vec::new();
                        let _ = r.read_to_end(&mut sink);
                        return Ok(false);
                    }
                }
                sh.received.lock().unwrap().push(msg);
                sh.over_tls.lock().unwrap().push(is_tls);
                "250 2.0.0 Ok: queued by peer\r\n".into()
            }
        } else if upper.starts_with("QUIT") {
            sh.connections.lock().unwrap().1 -= 1;
            let _ = r.get_mut().write_all(b"221 2.0.0 Bye\r\n");
            return Ok(true);
        } else {
            "250 2.0.0 Ok\r\n".into()
        };
        r.get_mut().write_all(reply.as_bytes())?;
        r.get_mut().flush()?;
    }
}
