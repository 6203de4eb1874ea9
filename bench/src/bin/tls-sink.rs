//! A discarding SMTP sink with STARTTLS, for `bench/outbound-tls.sh` (Postfix's `smtp-sink`
//! has no TLS): it answers 250 to everything, 354 to DATA and 250 after the final dot, offers
//! PIPELINING and, with `--cert` and `--key` (PEM), STARTTLS (rustls, TLS 1.2/1.3). Nothing is
//! stored; each session writes one line to stderr (`a session over TLS` once its handshake is
//! done, or `a session in clear text` when it ends without one), so the benchmark can check
//! what it measured; `--max-sessions` bounds how many connections it serves before it exits.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2526")]
    listen: String,
    /// Certificate chain (PEM) for STARTTLS; without it STARTTLS is not offered.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of `--cert`.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Exit after this many connections.
    #[arg(long, default_value_t = 1_000_000)]
    max_sessions: usize,
}

fn acceptor(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How a session phase ended.
enum End {
    Closed,
    StartTls,
}

/// Serves commands until QUIT, EOF, or STARTTLS (when `offer_tls`). Replies to pipelined
/// commands go out together, when no more input is buffered.
async fn commands<S: AsyncRead + AsyncWrite + Unpin>(rd: &mut BufReader<S>, offer_tls: bool) -> anyhow::Result<End> {
    let mut out = Vec::with_capacity(512);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if rd.read_until(b'\n', &mut line).await? == 0 {
            return Ok(End::Closed);
        }
        let verb: Vec<u8> = line.iter().take(4).map(u8::to_ascii_uppercase).collect();
        match verb.as_slice() {
            b"EHLO" => {
                out.extend_from_slice(b"250-sink.bench.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n");
                if offer_tls {
                    out.extend_from_slice(b"250-STARTTLS\r\n");
                }
                out.extend_from_slice(b"250 SIZE 0\r\n");
            }
            b"STAR" if offer_tls => {
                rd.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await?;
                return Ok(End::StartTls);
            }
            b"DATA" => {
                rd.get_mut().write_all(&out).await?;
                out.clear();
                rd.get_mut().write_all(b"354 go ahead\r\n").await?;
                loop {
                    line.clear();
                    if rd.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(End::Closed);
                    }
                    if line == b".\r\n" {
                        break;
                    }
                }
                out.extend_from_slice(b"250 2.0.0 Ok: discarded\r\n");
            }
            b"QUIT" => {
                out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                rd.get_mut().write_all(&out).await?;
                return Ok(End::Closed);
            }
            _ => out.extend_from_slice(b"250 2.0.0 Ok\r\n"),
        }
        if rd.buffer().is_empty() && !out.is_empty() {
            rd.get_mut().write_all(&out).await?;
            out.clear();
        }
    }
}

async fn session(tcp: TcpStream, tls: Option<TlsAcceptor>) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    let mut rd = BufReader::new(tcp);
    rd.get_mut().write_all(b"220 sink.bench.test ESMTP tls-sink\r\n").await?;
    let Some(tls) = tls else {
        commands(&mut rd, false).await?;
        eprintln!("tls-sink: a session in clear text");
        return Ok(());
    };
    match commands(&mut rd, true).await? {
        End::StartTls => {
            let stream = tls.accept(rd.into_inner()).await.context("TLS handshake")?;
            eprintln!("tls-sink: a session over TLS");
            commands(&mut BufReader::new(stream), false).await?;
        }
        End::Closed => eprintln!("tls-sink: a session in clear text"),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tls = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => Some(acceptor(c, k)?),
        _ => None,
    };
    let listener = TcpListener::bind(&args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let served = Arc::new(AtomicUsize::new(0));
    while served.fetch_add(1, Ordering::Relaxed) < args.max_sessions {
        let (tcp, _) = listener.accept().await?;
        let tls = tls.clone();
        tokio::spawn(async move {
            if let Err(e) = session(tcp, tls).await {
                eprintln!("tls-sink: {e:#}");
            }
        });
    }
    Ok(())
}
