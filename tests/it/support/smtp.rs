//! A small raw SMTP client for tests: exact control over bytes (pipelining, BDAT, smuggling),
//! in clear text or TLS (STARTTLS or implicit, with rustls).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
    Gone,
}

impl Conn {
    fn plain(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            _ => panic!("not a plain connection"),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
            Self::Gone => Ok(0),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
            Self::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
            Self::Gone => Ok(()),
        }
    }
}

/// One connection; replies are read whole (multi-line).
pub struct Client {
    reader: BufReader<Conn>,
}

/// A reply: code and the full text of all lines.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Client {
    /// Connects to 127.0.0.1:`port` from `source` (e.g. 127.0.0.2) and reads the greeting.
    pub fn connect_from(source: &str, port: u16) -> (Self, Reply) {
        let sock = socket2_connect(source, port);
        sock.set_read_timeout(Some(super::wait_bound())).unwrap();
        let mut c = Self { reader: BufReader::new(Conn::Plain(sock)) };
        let greeting = c.read_reply().expect("greeting");
        (c, greeting)
    }

    /// Connects from `source` (any local address, IPv4 or IPv6) to the loopback address of
    /// its family (127.0.0.1 or ::1) at `port`; returns the client and the greeting.
    pub fn connect_from_addr(source: std::net::IpAddr, port: u16) -> (Self, Reply) {
        use socket2::{Domain, Socket, Type};
        let (domain, dst) = match source {
            std::net::IpAddr::V4(_) => (Domain::IPV4, SocketAddr::from(([127, 0, 0, 1], port))),
            std::net::IpAddr::V6(_) => (Domain::IPV6, SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))),
        };
        let sock = Socket::new(domain, Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::new(source, 0).into()).unwrap();
        sock.connect(&dst.into()).unwrap_or_else(|e| panic!("connect from {source} to {dst}: {e}"));
        let sock: TcpStream = sock.into();
        sock.set_read_timeout(Some(super::wait_bound())).unwrap();
        let mut c = Self { reader: BufReader::new(Conn::Plain(sock)) };
        let greeting = c.read_reply().unwrap_or_else(|| Reply { code: 0, text: "closed before a greeting".into() });
        (c, greeting)
    }

    /// Connects from `source` with implicit TLS (RFC 8314): handshake first, then the greeting.
    /// Panics if the handshake fails.
    pub fn connect_tls_from(source: &str, port: u16, tls: Arc<rustls::ClientConfig>, name: &str) -> (Self, Reply) {
        let sock = socket2_connect(source, port);
        sock.set_read_timeout(Some(super::wait_bound())).unwrap();
        let mut c = Self { reader: BufReader::new(Conn::Plain(sock)) };
        c.handshake(tls, name).expect("TLS handshake");
        let greeting = c.read_reply().expect("greeting");
        (c, greeting)
    }

    /// STARTTLS (expecting 220), then the handshake. Panics on failure.
    pub fn starttls(&mut self, tls: Arc<rustls::ClientConfig>, name: &str) {
        let r = self.cmd("STARTTLS");
        assert_eq!(r.code, 220, "STARTTLS: {}", r.text);
        self.handshake(tls, name).expect("TLS handshake");
    }

    /// The TLS handshake as client over the clear connection. Bytes the server sent before it
    /// and that were not read yet are a protocol error (they would be lost).
    pub fn handshake(&mut self, tls: Arc<rustls::ClientConfig>, name: &str) -> Result<(), rustls::Error> {
        assert!(self.reader.buffer().is_empty(), "unread clear-text bytes before the TLS handshake");
        let Conn::Plain(tcp) = std::mem::replace(self.reader.get_mut(), Conn::Gone) else {
            panic!("not a clear-text connection");
        };
        let conn = rustls::ClientConnection::new(tls, name.to_owned().try_into().unwrap()).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                return Err(rustls::Error::General(e.to_string()));
            }
        }
        *self.reader.get_mut() = Conn::Tls(Box::new(stream));
        Ok(())
    }

    /// The certificates the server presented (leaf first), DER; empty in clear text.
    pub fn peer_certificates(&self) -> Vec<Vec<u8>> {
        match self.reader.get_ref() {
            Conn::Tls(s) => s.conn.peer_certificates().unwrap_or_default().iter().map(|c| c.to_vec()).collect(),
            _ => Vec::new(),
        }
    }

    /// The negotiated protocol version, e.g. `TLSv1_3`.
    pub fn tls_version(&self) -> Option<String> {
        match self.reader.get_ref() {
            Conn::Tls(s) => s.conn.protocol_version().map(|v| format!("{v:?}")),
            _ => None,
        }
    }

    /// The negotiated cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub fn tls_cipher(&self) -> Option<String> {
        match self.reader.get_ref() {
            Conn::Tls(s) => s.conn.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite())),
            _ => None,
        }
    }

    pub fn connect(port: u16) -> (Self, Reply) {
        Self::connect_from("127.0.0.1", port)
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let c = self.reader.get_mut();
        c.write_all(bytes).unwrap();
        c.flush().unwrap();
    }

    /// Reads one (possibly multi-line) reply; `None` at EOF.
    pub fn read_reply(&mut self) -> Option<Reply> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return if text.is_empty() { None } else { panic!("EOF inside a reply: {text}") };
            }
            text.push_str(&line);
            assert!(line.len() >= 4 && line.ends_with("\r\n"), "malformed reply line {line:?}");
            if line.as_bytes()[3] == b' ' {
                return Some(Reply { code: line[..3].parse().unwrap(), text });
            }
        }
    }

    /// A reply if one starts arriving within `wait` (plain connections), `None` otherwise.
    pub fn try_read_reply(&mut self, wait: Duration) -> Option<Reply> {
        if self.reader.buffer().is_empty() {
            let Conn::Plain(s) = self.reader.get_ref() else { panic!("try_read_reply needs a plain connection") };
            s.set_read_timeout(Some(wait)).unwrap();
            let ready = self.reader.fill_buf().map(|b| !b.is_empty());
            self.reader.get_ref().plain().set_read_timeout(Some(super::wait_bound())).unwrap();
            match ready {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return None;
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        self.read_reply()
    }

    /// Sends `line` + CRLF and reads the reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.read_reply().expect("reply")
    }

    /// A whole transaction with DATA (dot-stuffing `message`, which must end in CRLF or gets
    /// one). Returns the final reply.
    pub fn send_data(&mut self, from: &str, rcpts: &[&str], message: &[u8]) -> Reply {
        assert_eq!(self.cmd(&format!("MAIL FROM:<{from}>")).code, 250);
        for r in rcpts {
            let rep = self.cmd(&format!("RCPT TO:<{r}>"));
            assert_eq!(rep.code, 250, "RCPT {r}: {}", rep.text);
        }
        assert_eq!(self.cmd("DATA").code, 354);
        self.send(&dot_stuff(message));
        self.read_reply().unwrap()
    }

    /// A whole transaction with BDAT in chunks of `chunk` bytes: the message is sent exactly.
    pub fn send_bdat(&mut self, from: &str, rcpts: &[&str], message: &[u8], chunk: usize) -> Reply {
        assert_eq!(self.cmd(&format!("MAIL FROM:<{from}>")).code, 250);
        for r in rcpts {
            assert_eq!(self.cmd(&format!("RCPT TO:<{r}>")).code, 250);
        }
        let chunks: Vec<&[u8]> = if message.is_empty() { vec![] } else { message.chunks(chunk).collect() };
        if chunks.is_empty() {
            return self.cmd("BDAT 0 LAST");
        }
        // Pipeline all chunks, then read the replies.
        for (i, c) in chunks.iter().enumerate() {
            let last = if i + 1 == chunks.len() { " LAST" } else { "" };
            self.send(format!("BDAT {}{last}\r\n", c.len()).as_bytes());
            self.send(c);
        }
        let mut reply = None;
        for _ in &chunks {
            reply = self.read_reply();
        }
        reply.unwrap()
    }
}

/// The DATA wire form of `message`: leading dots doubled, CRLF added if missing, `.` CRLF.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A TCP connection from a chosen loopback source address.
fn socket2_connect(source: &str, port: u16) -> TcpStream {
    use std::os::fd::FromRawFd;
    let src: std::net::Ipv4Addr = source.parse().unwrap();
    let dst = SocketAddr::from(([127, 0, 0, 1], port));
    if src == std::net::Ipv4Addr::LOCALHOST {
        return TcpStream::connect(dst).unwrap();
    }
    // SAFETY: plain socket/bind/connect on a fresh descriptor we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as _;
        sa.sin_addr.s_addr = u32::from(src).to_be();
        assert_eq!(libc::bind(fd, (&raw const sa).cast(), std::mem::size_of::<libc::sockaddr_in>() as _), 0);
        let stream = TcpStream::from_raw_fd(fd);
        let mut da: libc::sockaddr_in = std::mem::zeroed();
        da.sin_family = libc::AF_INET as _;
        da.sin_port = port.to_be();
        da.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        assert_eq!(libc::connect(fd, (&raw const da).cast(), std::mem::size_of::<libc::sockaddr_in>() as _), 0);
        stream
    }
}
