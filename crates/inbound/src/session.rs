//! The per-connection driver: performs the steps of [`postern_proto::Session`] over a TCP
//! stream. All SMTP rules live in the session; this file only does I/O, timeouts, policy calls
//! and logging.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_config::Config;
use postern_policy::{RecipientPolicy, resolve_recipient};
use postern_proto::{Phase, Session, SessionParams, Step};
use postern_types::{EnhancedStatus, Reply, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::Context;
use crate::commit::commit;
use crate::limits::Refused;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

pub(crate) async fn run(mut stream: TcpStream, peer: SocketAddr, ctx: Arc<Context>, shutdown: watch::Receiver<bool>) {
    let config = ctx.live.config();
    let ip = peer.ip();
    let _slot = match ctx.limits.acquire(ip, config.server.max_connections, config.server.max_connections_per_ip) {
        Ok(slot) => slot,
        Err(why) => {
            let text = match why {
                Refused::Total => format!("{} Error: too many connections", config.hostname),
                Refused::PerIp => format!("{} Error: too many connections from {ip}", config.hostname),
            };
            tracing::warn!("reject: connect from [{ip}]:{}: {why:?} limit reached", peer.port());
            let mut out = Vec::new();
            Reply::new(421, EnhancedStatus(4, 7, 0), text).encode(&mut out);
            let _ = stream.write_all(&out).await;
            return;
        }
    };
    tracing::info!("connect from [{ip}]:{}", peer.port());
    let outcome = drive(&mut stream, peer, &ctx, &config, shutdown).await;
    match outcome {
        Ok(()) => tracing::info!("disconnect from [{ip}]:{}", peer.port()),
        Err(e) => tracing::info!("lost connection from [{ip}]:{}: {e}", peer.port()),
    }
}

async fn drive(
    stream: &mut TcpStream,
    peer: SocketAddr,
    ctx: &Context,
    config: &Config,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let tables = ctx.live.tables();
    let params = SessionParams {
        hostname: config.hostname.clone(),
        client_ip: peer.ip(),
        postmaster_domain: config.domains.local.first().cloned().unwrap_or_else(|| config.hostname.clone()),
        max_message_size: usize::try_from(config.limits.max_message_size.0).unwrap_or(usize::MAX),
        max_recipients: config.limits.max_recipients,
        max_line_length: config.limits.max_line_length,
        max_errors: config.limits.max_errors,
    };
    let policy = RecipientPolicy {
        local_domains: &config.domains.local,
        trusted_networks: &config.relay.trusted_networks,
        separators: &config.delivery.subaddress_separator,
        tables: &tables,
    };
    let mut session = Session::new(params);
    let mut input: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        match session.advance(&mut input) {
            Step::NeedInput => {
                if session.has_output() {
                    stream.write_all(&session.take_output()).await?;
                }
                if *shutdown.borrow() && !session.in_content() {
                    session.shutdown();
                    continue;
                }
                let wait = timeout_for(config, session.phase());
                input.reserve(READ_CHUNK);
                let read = tokio::time::timeout(wait, stream.read_buf(&mut input));
                let stopping = async {
                    // A dropped sender also means the server is stopping.
                    let _ = shutdown.changed().await;
                };
                let result = tokio::select! {
                    r = read => r,
                    () = stopping, if !session.in_content() => {
                        session.shutdown();
                        continue;
                    }
                };
                match result {
                    Err(_) => {
                        tracing::info!(
                            "timeout after {:?} from [{}] waiting in {:?} stage",
                            wait,
                            peer.ip(),
                            session.phase()
                        );
                        session.timed_out();
                    }
                    Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                }
            }
            Step::CheckRecipient(rcpt) => {
                let verdict = resolve_recipient(&policy, peer.ip(), &rcpt);
                if let Verdict::PermFail(r) | Verdict::TempFail(r) = &verdict {
                    tracing::info!(
                        "NOQUEUE: reject: RCPT from [{}]: {r}; to=<{rcpt}> helo=<{}>",
                        peer.ip(),
                        session.helo().unwrap_or("")
                    );
                }
                session.recipient_verdict(verdict);
            }
            Step::Commit(tx) => {
                let result = commit(ctx, config, *tx).await;
                session.commit_result(result);
            }
            Step::Close => {
                if session.has_output() {
                    stream.write_all(&session.take_output()).await?;
                }
                let _ = stream.shutdown().await;
                return Ok(());
            }
        }
    }
}

fn timeout_for(config: &Config, phase: Phase) -> Duration {
    let t = &config.timeouts;
    match phase {
        Phase::Helo => t.helo.0,
        Phase::Mail => t.mail.0,
        Phase::Rcpt => t.rcpt.0,
        Phase::Data => t.data_block.0,
    }
}
