//! The per-connection driver: performs the steps of [`postern_proto::Session`] over a TCP or
//! TLS stream. All SMTP rules live in the session; this file only does I/O, timeouts, the TLS
//! handshake, policy calls (recipients, passwords, sender ownership) and logging.

use postern_proto::Refusal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_config::{Config, Role, Tables};
use postern_policy::{RecipientPolicy, is_trusted};
use postern_proto::{Phase, Session, SessionParams, Step};
use postern_types::QueueId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::deadline::{Deadlines, Limit};
use crate::limits::Refused;
use crate::steps::Flow;
use crate::stream::Conn;
use crate::{Context, ListenerInfo};

/// Bytes read from the socket at a time during DATA/BDAT content.
const READ_CHUNK: usize = 64 * 1024;

/// Runs one session inside its log span: every line it logs, from connect to disconnect, starts
/// with `session{id=…}`, and the commit line adds the queue ID (Postfix's `smtpd[pid]` and
/// queue ID), so that `grep ID` tells the session's whole story.
pub(crate) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Context>,
    listener: ListenerInfo,
    shutdown: watch::Receiver<bool>,
) {
    use tracing::Instrument as _;
    let span = tracing::info_span!("session", id = %session_id());
    run_in_span(stream, peer, ctx, listener, shutdown).instrument(span).await;
}

/// A session ID: 12 upper-case hex digits (the low 48 bits of a queue-ID-style microsecond
/// stamp, strictly increasing within the process), distinct from the 16-digit queue IDs.
fn session_id() -> String {
    format!("{:012X}", QueueId::generate().arrival_micros() & 0xFFFF_FFFF_FFFF)
}

/// `name[ip]:port` as Postfix logs a client; `unknown` until the name is forward-confirmed.
pub(crate) fn client_label(name: Option<&str>, peer: SocketAddr) -> String {
    format!("{}[{}]:{}", name.unwrap_or("unknown"), peer.ip(), peer.port())
}

async fn run_in_span(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Context>,
    listener: ListenerInfo,
    shutdown: watch::Receiver<bool>,
) {
    let local = stream.local_addr().ok();
    let mut conn = Conn::Plain(stream);
    let config = ctx.live.config();
    let ip = peer.ip();
    let Some(_slot) = Box::pin(admit(&ctx, &config, &mut conn, peer, listener.role)).await else { return };
    tracing::info!("connect from {} to {} listener", client_label(None, peer), listener.role);
    let tls_config = ctx.tls_config();
    let Ok(implicit_tls) = Box::pin(implicit_tls(&mut conn, tls_config.clone(), &config, ip, listener.role)).await
    else {
        return;
    };
    let tables = ctx.live.tables();
    let params = session_params(&ctx, &config, (ip, &listener), tls_config.is_some(), implicit_tls);
    let params_screen = params.screen;
    let driver = Driver {
        ctx: &ctx,
        config: &config,
        tables: &tables,
        peer,
        local,
        tls_config,
        role: listener.role,
        tags: std::sync::Mutex::new(Vec::new()),
        skip_greylist: std::sync::atomic::AtomicBool::new(false),
        client_name: std::sync::Mutex::new(None),
        screened: params_screen,
    };
    // Boxed, so that the task does not hold the session twice (the call's argument and the
    // callee's copy: async functions' state is laid out conservatively).
    let outcome = driver.drive(&mut conn, Box::new(Session::new(params)), shutdown).await;
    let client = driver.client();
    let role = listener.role.to_string();
    match outcome {
        Ok(()) => {
            tracing::info!("disconnect from {client}");
            postern_metrics::metrics().session_closed(&role, "completed");
        }
        Err(e) => {
            tracing::info!("lost connection from {client}: {e}");
            postern_metrics::metrics().session_closed(&role, "lost");
        }
    }
}

/// Whether a new connection from `peer` may proceed: within the connection limits (a slot
/// held for the session) and not from a banned network; else the 421 is written and `None`.
async fn admit(
    ctx: &Context,
    config: &Config,
    conn: &mut Conn,
    peer: SocketAddr,
    role: Role,
) -> Option<crate::limits::Slot> {
    let ip = peer.ip();
    let s = &config.server;
    let slot = match ctx.limits.acquire(ip, s.max_connections, s.max_connections_per_ip, s.new_client_reserve()) {
        Ok(slot) => slot,
        Err(why) => {
            let from = match why {
                Refused::Total => None,
                Refused::PerIp => Some(ip),
            };
            tracing::warn!("reject: connect from {}: {why} limit reached", client_label(None, peer));
            postern_metrics::metrics().refused("connect", "limit", 421);
            postern_metrics::metrics().session_closed(&role.to_string(), "refused");
            let refusal = Refusal::TooManyConnections { hostname: config.hostname.clone(), from };
            let _ = Box::pin(refuse(conn, role, refusal)).await;
            return None;
        }
    };
    // A store that cannot be reached does not ban (fail open: AUTH still needs the password).
    let network = config.server.ban_network(ip);
    if let Ok(Some(left)) = ctx.store.banned(network, postern_store::now_ms(), config.server.ban_time.0).await {
        let label = config.server.ban_label(network);
        tracing::warn!(
            "reject: connect from [{ip}]:{}: {label} banned for {}s more after repeated failures",
            peer.port(),
            left.as_secs()
        );
        postern_metrics::metrics().refused("connect", "ban", 421);
        postern_metrics::metrics().session_closed(&role.to_string(), "refused");
        let refusal = Refusal::Banned { hostname: config.hostname.clone(), network: label };
        let _ = Box::pin(refuse(conn, role, refusal)).await;
        return None;
    }
    Some(slot)
}

/// On a `submissions` listener, the TLS handshake before anything is said (RFC 8314): the
/// session's TLS; `Err` when there is no certificate or the handshake failed (the connection
/// is then closed). `Ok(None)` on other listeners.
async fn implicit_tls(
    conn: &mut Conn,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    config: &Config,
    ip: std::net::IpAddr,
    role: Role,
) -> Result<Option<postern_proto::TlsInfo>, ()> {
    if role != Role::Submissions {
        return Ok(None);
    }
    let Some(tls) = tls_config else {
        tracing::error!("no TLS certificate loaded: closing submissions connection from [{ip}]");
        return Err(());
    };
    match Box::pin(conn.start_tls(tls, config.tls.handshake_timeout.0)).await {
        Ok(info) => {
            tracing::info!(
                "TLS=server implicit from [{ip}]: version={} cipher={} client_cert=none",
                info.version,
                info.cipher
            );
            Ok(Some(info))
        }
        Err(e) => {
            tracing::info!("TLS=server implicit from [{ip}]: handshake failed: {e}");
            postern_metrics::metrics().session_closed(&role.to_string(), "tls-failed");
            Err(())
        }
    }
}

/// The session's parameters for a client at `ip` on `listener`: the limits, what is offered,
/// which checks apply to it (those of mail from outside on an `mx` listener), and the refusal
/// at connect of a client in `[policy] block_networks`.
fn session_params(
    ctx: &Context,
    config: &Config,
    (ip, listener): (std::net::IpAddr, &ListenerInfo),
    starttls: bool,
    implicit_tls: Option<postern_proto::TlsInfo>,
) -> SessionParams {
    // Mail from the outside: the `[policy]` and `[authentication]` checks apply.
    let outside = listener.role == Role::Mx && !is_trusted(ip, &config.relay.trusted_networks);
    // `block_networks` is a local fact known at connect: refused there, before any DNS.
    let refuse = (outside && config.policy.enabled && {
        let lists = ctx.screen_lists();
        lists.block.contains(ip) && !lists.allow.contains(ip)
    })
    .then(|| {
        let r = Refusal::Blocked(ip);
        tracing::info!("NOQUEUE: reject: CONNECT from [{ip}]: {r}; policy: block_networks");
        postern_metrics::metrics().refused("connect", "policy", r.reply().code);
        r
    });
    SessionParams {
        hostname: config.hostname.clone(),
        client_ip: ip,
        postmaster_domain: config.domains.local.first().cloned().unwrap_or_else(|| config.hostname.clone()),
        max_message_size: usize::try_from(config.limits.max_message_size.0).unwrap_or(usize::MAX),
        max_recipients: config.limits.max_recipients,
        max_line_length: config.limits.max_line_length,
        max_errors: config.limits.max_errors,
        starttls: starttls && implicit_tls.is_none(),
        implicit_tls,
        auth: listener.auth,
        require_auth: listener.role != Role::Mx,
        screen: outside && config.policy.enabled,
        check_sender: (outside && (config.policy.enabled || spf_at_mail(config))) || counts_messages(config, outside),
        refuse,
        qualify_bare_names: None,
    }
}

/// Whether SPF refuses at MAIL FROM (`[authentication] spf_at = "mail"`, checks on).
pub(crate) fn spf_at_mail(config: &Config) -> bool {
    config.authentication.verify && config.authentication.spf_at == postern_config::schema::SpfAt::Mail
}

/// Writes a refusal at connect (a 421 4.7.0) and closes; on a `submissions` listener the client
/// expects a TLS handshake, not text, so the connection is only closed.
async fn refuse(conn: &mut Conn, role: Role, refusal: Refusal) -> std::io::Result<()> {
    if role == Role::Submissions {
        return conn.shutdown().await;
    }
    let mut out = Vec::new();
    refusal.reply().encode(&mut out);
    conn.write_all(&out).await?;
    conn.shutdown().await
}

/// What one session's steps need; the configuration and tables are the snapshot taken when
/// the session started, so a reload never changes a session in flight.
pub(crate) struct Driver<'a> {
    pub(crate) ctx: &'a Context,
    pub(crate) config: &'a Config,
    pub(crate) tables: &'a Tables,
    pub(crate) peer: SocketAddr,
    /// The address the client connected to (milter `{if_addr}`, `{daemon_addr}`).
    pub(crate) local: Option<SocketAddr>,
    pub(crate) tls_config: Option<Arc<rustls::ServerConfig>>,
    pub(crate) role: Role,
    /// `[policy]` checks with action `tag` that failed, for `X-Postern-Policy`.
    pub(crate) tags: std::sync::Mutex<Vec<String>>,
    /// The client is allow-listed or forward-confirmed (and that may skip greylisting).
    pub(crate) skip_greylist: std::sync::atomic::AtomicBool,
    /// The client's forward-confirmed host name, once screened (for `[[policy.exception]]`).
    pub(crate) client_name: std::sync::Mutex<Option<String>>,
    /// The session runs the `[policy]` checks (mx, untrusted).
    pub(crate) screened: bool,
}

impl Driver<'_> {
    /// The client as `name[ip]:port`.
    pub(crate) fn client(&self) -> String {
        let name = self.client_name.lock().unwrap_or_else(|e| e.into_inner()).clone();
        client_label(name.as_deref(), self.peer)
    }

    pub(crate) fn policy(&self) -> RecipientPolicy<'_> {
        RecipientPolicy::new(self.config, self.tables)
    }

    /// Performs the session's steps until it closes. Waiting for input stays here; every other
    /// step runs in a boxed future ([`Driver::perform`]), so an idle session's task holds only
    /// the read path's state (docs/hardening.md, memory per session).
    async fn drive(
        &self,
        conn: &mut Conn,
        mut session: Box<Session>,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let ip = self.peer.ip();
        // Allocated when bytes arrive and freed between commands, so idle sessions hold none.
        let mut input: Vec<u8> = Vec::new();
        let mut deadlines = Deadlines::default();
        loop {
            let before = input.len();
            let step = session.advance(&mut input);
            if input.len() < before && !session.skipping_line() {
                deadlines.line_done();
            }
            for notice in session.take_notices() {
                tracing::warn!("[{ip}]: {notice}");
            }
            match step {
                Step::NeedInput => {
                    if session.has_output() {
                        conn.write_all(&session.take_output()).await?;
                    }
                    if *shutdown.borrow() && !session.in_content() {
                        session.shutdown();
                        continue;
                    }
                    if input.is_empty() && !session.in_content() {
                        input = Vec::new();
                    }
                    let in_content = session.in_content();
                    let wait = timeout_for(self.config, session.phase());
                    let (deadline, limit) =
                        deadlines.next(Instant::now(), wait, in_content, self.config.timeouts.data_min_rate);
                    let read = tokio::time::timeout_at(deadline.into(), async {
                        if in_content {
                            input.reserve(READ_CHUNK);
                            conn.read_buf(&mut input).await
                        } else {
                            conn.read_command(&mut input).await
                        }
                    });
                    let stopping = async {
                        // A dropped sender also means the server is stopping.
                        let _ = shutdown.changed().await;
                    };
                    let result = tokio::select! {
                        r = read => r,
                        () = stopping, if !in_content => {
                            session.shutdown();
                            continue;
                        }
                    };
                    match result {
                        Err(_) => {
                            self.log_timeout(limit, wait, session.phase(), &deadlines);
                            session.timed_out();
                        }
                        Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                        Ok(Ok(n)) => {
                            deadlines.received(n);
                            if !session.in_content() {
                                session.set_mail_refusal(self.ctx.space.refusal(&self.ctx.spool, self.config));
                            }
                        }
                        Ok(Err(e)) => return Err(e),
                    }
                }
                Step::Close => {
                    if session.has_output() {
                        conn.write_all(&session.take_output()).await?;
                    }
                    let _ = conn.shutdown().await;
                    return Ok(());
                }
                // Boxed: its states are allocated only while a step runs (memory per session).
                step => {
                    if Box::pin(self.perform(conn, &mut session, step)).await? == Flow::Stop {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The log line of a passed deadline.
    fn log_timeout(&self, limit: Limit, wait: Duration, phase: Phase, deadlines: &Deadlines) {
        let ip = self.peer.ip();
        match limit {
            Limit::Command => {
                tracing::info!("timeout after {}s from [{ip}]: {phase} command not complete", wait.as_secs());
            }
            Limit::Read => tracing::info!("timeout after {}s from [{ip}] waiting in {phase} stage", wait.as_secs()),
            Limit::Rate => {
                let (bytes, took) = deadlines.content_progress(Instant::now());
                tracing::info!(
                    "timeout from [{ip}]: DATA below data_min_rate {} bytes/s ({bytes} bytes in {}s)",
                    self.config.timeouts.data_min_rate,
                    took.as_secs()
                );
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

/// Whether a `[rate_limits]` rule counts this session's messages at MAIL FROM (clients of
/// trusted networks only when `exempt_trusted` is off).
fn counts_messages(config: &postern_config::Config, outside: bool) -> bool {
    let r = &config.rate_limits;
    (outside || !r.exempt_trusted)
        && r.rule.iter().any(|rule| rule.count == postern_config::schema::RateCount::Messages)
}
