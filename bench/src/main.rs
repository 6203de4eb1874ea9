//! Load generator for `bench/accept.sh` and `bench/tls.sh`: N concurrent SMTP clients send M
//! messages in total of a given size to one server on loopback, each transaction pipelined (MAIL,
//! RCPT, DATA in one write), and report accepted messages per second; with `--starttls`, each
//! connection first upgrades to TLS; with `--handshakes`, each client only repeats connect,
//! EHLO, STARTTLS, handshake, QUIT and the rate is handshakes per second. Bounded in count and
//! in time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

#[derive(Debug, Parser)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:2525")]
    server: String,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Messages to send in total.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Recipient of every message.
    #[arg(long, default_value = "bob@example.test")]
    rcpt: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    max_seconds: u64,
    /// Upgrade every connection with STARTTLS, trusting the root certificate in this PEM file.
    #[arg(long)]
    starttls: Option<std::path::PathBuf>,
    /// The server name to verify (SNI) with --starttls.
    #[arg(long, default_value = "mx.bench.test")]
    server_name: String,
    /// Measure handshakes instead of messages: `--messages` connections, each doing EHLO,
    /// STARTTLS, the handshake and QUIT.
    #[arg(long)]
    handshakes: bool,
    /// Measure sessions instead of messages: `--messages` connections, each doing the greeting,
    /// EHLO (whatever the reply) and QUIT; the rate is sessions per second, and the count of
    /// refused sessions (a 554 greeting, or a refused EHLO) is printed.
    #[arg(long)]
    sessions: bool,
    /// The EHLO name.
    #[arg(long, default_value = "bench.test")]
    helo: String,
}

/// Sessions refused (554 greeting, or a non-2xx EHLO reply) in `--sessions` mode.
static REFUSED: AtomicUsize = AtomicUsize::new(0);

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

fn tls_connector(root: &std::path::Path) -> anyhow::Result<TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(root)? {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Connects, reads the greeting, says EHLO and, with a connector, upgrades with STARTTLS (and
/// says EHLO again).
async fn open(args: &Args, tls: Option<&TlsConnector>) -> anyhow::Result<BufReader<Box<dyn Stream>>> {
    let stream = TcpStream::connect(&args.server).await.context("connect")?;
    stream.set_nodelay(true)?;
    let mut rd: BufReader<Box<dyn Stream>> = BufReader::new(Box::new(stream));
    anyhow::ensure!(reply(&mut rd).await? == 220);
    rd.get_mut().write_all(format!("EHLO {}\r\n", args.helo).as_bytes()).await?;
    anyhow::ensure!(reply(&mut rd).await? == 250);
    let Some(tls) = tls else { return Ok(rd) };
    rd.get_mut().write_all(b"STARTTLS\r\n").await?;
    anyhow::ensure!(reply(&mut rd).await? == 220, "STARTTLS refused");
    anyhow::ensure!(rd.buffer().is_empty(), "data after the 220 to STARTTLS");
    let name = rustls::pki_types::ServerName::try_from(args.server_name.clone())?;
    let tls_stream = tls.connect(name, rd.into_inner()).await.context("TLS handshake")?;
    let mut rd: BufReader<Box<dyn Stream>> = BufReader::new(Box::new(tls_stream));
    rd.get_mut().write_all(b"EHLO bench.test\r\n").await?;
    anyhow::ensure!(reply(&mut rd).await? == 250);
    Ok(rd)
}

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: bench@remote.test\r\nTo: bob@example.test\r\nSubject: benchmark\r\n\r\n".to_vec();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    while m.len() + 2 < size {
        m.push(b'x');
    }
    m.extend_from_slice(b"\r\n.\r\n");
    m
}

async fn reply(r: &mut BufReader<Box<dyn Stream>>) -> anyhow::Result<u16> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            bail!("connection closed");
        }
        if line.as_bytes().get(3) == Some(&b' ') {
            return Ok(line[..3].parse()?);
        }
    }
}

async fn client(
    args: Arc<Args>,
    body: Arc<Vec<u8>>,
    sent: Arc<AtomicUsize>,
    deadline: Instant,
    tls: Option<Arc<TlsConnector>>,
) -> anyhow::Result<usize> {
    let mut mine = 0;
    if args.sessions {
        while sent.fetch_add(1, Ordering::Relaxed) < args.messages && Instant::now() < deadline {
            let stream = TcpStream::connect(&args.server).await.context("connect")?;
            stream.set_nodelay(true)?;
            let mut rd: BufReader<Box<dyn Stream>> = BufReader::new(Box::new(stream));
            match reply(&mut rd).await? {
                220 => {
                    rd.get_mut().write_all(format!("EHLO {}\r\nQUIT\r\n", args.helo).as_bytes()).await?;
                    if reply(&mut rd).await? / 100 != 2 {
                        REFUSED.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // Refused at connect (RFC 5321 3.1): only QUIT is answered.
                554 => {
                    REFUSED.fetch_add(1, Ordering::Relaxed);
                    rd.get_mut().write_all(b"QUIT\r\n").await?;
                }
                other => anyhow::bail!("greeting {other}"),
            }
            let _ = reply(&mut rd).await;
            mine += 1;
        }
        return Ok(mine);
    }
    if args.handshakes {
        while sent.fetch_add(1, Ordering::Relaxed) < args.messages && Instant::now() < deadline {
            let mut rd = open(&args, tls.as_deref()).await?;
            rd.get_mut().write_all(b"QUIT\r\n").await?;
            anyhow::ensure!(reply(&mut rd).await? == 221);
            mine += 1;
        }
        return Ok(mine);
    }
    let mut rd = open(&args, tls.as_deref()).await?;
    let envelope = format!("MAIL FROM:<bench@remote.test>\r\nRCPT TO:<{}>\r\nDATA\r\n", args.rcpt);
    while sent.fetch_add(1, Ordering::Relaxed) < args.messages && Instant::now() < deadline {
        rd.get_mut().write_all(envelope.as_bytes()).await?;
        for want in [250, 250, 354] {
            let got = reply(&mut rd).await?;
            anyhow::ensure!(got == want, "expected {want}, got {got}");
        }
        rd.get_mut().write_all(&body).await?;
        let got = reply(&mut rd).await?;
        anyhow::ensure!(got == 250, "message refused with {got}");
        mine += 1;
    }
    rd.get_mut().write_all(b"QUIT\r\n").await?;
    Ok(mine)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let body = Arc::new(message(args.size));
    let sent = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.max_seconds);
    let tls = args.starttls.as_deref().map(tls_connector).transpose()?.map(Arc::new);
    let tasks: Vec<_> = (0..args.clients)
        .map(|_| tokio::spawn(client(args.clone(), body.clone(), sent.clone(), deadline, tls.clone())))
        .collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    if args.sessions {
        println!(
            "clients={} sessions={accepted} refused={} seconds={secs:.2} per_s={:.0}",
            args.clients,
            REFUSED.load(Ordering::Relaxed),
            accepted as f64 / secs
        );
    } else if args.handshakes {
        println!(
            "clients={} handshakes={accepted} seconds={secs:.2} per_s={:.0}",
            args.clients,
            accepted as f64 / secs
        );
    } else {
        println!(
            "clients={} size={} messages={accepted} seconds={secs:.2} msg_per_s={:.0} cpu_seconds={:.3}",
            args.clients,
            args.size,
            accepted as f64 / secs,
            own_cpu_seconds()
        );
    }
    Ok(())
}

/// User plus system CPU time of this process so far, in seconds (getrusage(2)).
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}
