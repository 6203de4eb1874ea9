//! Load generator for `bench/accept.sh`: N concurrent SMTP clients send M messages in total of a
//! given size to one server on loopback, each transaction pipelined (MAIL, RCPT, DATA in one
//! write), and report accepted messages per second. Bounded in count and in time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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

async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> anyhow::Result<u16> {
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
) -> anyhow::Result<usize> {
    let stream = TcpStream::connect(&args.server).await.context("connect")?;
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    anyhow::ensure!(reply(&mut rd).await? == 220);
    wr.write_all(b"EHLO bench.test\r\n").await?;
    anyhow::ensure!(reply(&mut rd).await? == 250);
    let envelope = format!("MAIL FROM:<bench@remote.test>\r\nRCPT TO:<{}>\r\nDATA\r\n", args.rcpt);
    let mut mine = 0;
    while sent.fetch_add(1, Ordering::Relaxed) < args.messages && Instant::now() < deadline {
        wr.write_all(envelope.as_bytes()).await?;
        for want in [250, 250, 354] {
            let got = reply(&mut rd).await?;
            anyhow::ensure!(got == want, "expected {want}, got {got}");
        }
        wr.write_all(&body).await?;
        let got = reply(&mut rd).await?;
        anyhow::ensure!(got == 250, "message refused with {got}");
        mine += 1;
    }
    wr.write_all(b"QUIT\r\n").await?;
    Ok(mine)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let body = Arc::new(message(args.size));
    let sent = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.max_seconds);
    let tasks: Vec<_> =
        (0..args.clients).map(|_| tokio::spawn(client(args.clone(), body.clone(), sent.clone(), deadline))).collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "clients={} size={} messages={accepted} seconds={secs:.2} msg_per_s={:.0}",
        args.clients,
        args.size,
        accepted as f64 / secs
    );
    Ok(())
}
