//! The per-connection driver: performs the steps of [`postern_proto::Session`] over a TCP or
//! TLS stream. All SMTP rules live in the session; this file only does I/O, timeouts, the TLS
//! handshake, policy calls (recipients, passwords, sender ownership) and logging.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use postern_config::schema::Check;
use postern_config::{Config, Role, Tables};
use postern_policy::senders::{may_send_as, not_owned};
use postern_policy::{RecipientPolicy, credentials, is_trusted, resolve_recipient};
use postern_proto::{AuthOutcome, Phase, Session, SessionParams, Step, Transaction, submission};
use postern_types::{Address, Destination, EnhancedStatus, QueueId, Reply, ReversePath, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::authenticate::{self, Added};
use crate::commit::commit;
use crate::deadline::{Deadlines, Limit};
use crate::limits::Refused;
use crate::stream::Conn;
use crate::{Context, ListenerInfo};

/// Bytes read from the socket at a time during DATA/BDAT content.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read at a time while waiting for commands (a pipelined group fits).
const COMMAND_CHUNK: usize = 4 * 1024;

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
    let s = &config.server;
    let _slot = match ctx.limits.acquire(ip, s.max_connections, s.max_connections_per_ip, s.new_client_reserve()) {
        Ok(slot) => slot,
        Err(why) => {
            let text = match why {
                Refused::Total => format!("{} Error: too many connections", config.hostname),
                Refused::PerIp => format!("{} Error: too many connections from {ip}", config.hostname),
            };
            tracing::warn!("reject: connect from {}: {why} limit reached", client_label(None, peer));
            let _ = refuse(&mut conn, listener.role, text).await;
            return;
        }
    };
    if let Some(left) = ctx.bans.banned(ip, Instant::now(), config.server.ban_time.0) {
        tracing::warn!(
            "reject: connect from [{ip}]:{}: banned for {}s more after failed AUTH",
            peer.port(),
            left.as_secs()
        );
        let text = format!("{} Error: too many failed logins from {ip}, try later", config.hostname);
        let _ = refuse(&mut conn, listener.role, text).await;
        return;
    }
    tracing::info!("connect from {} to {} listener", client_label(None, peer), listener.role);
    let tls_config = ctx.tls_config();
    let mut implicit_tls = None;
    if listener.role == Role::Submissions {
        let Some(tls) = tls_config.clone() else {
            tracing::error!("no TLS certificate loaded: closing submissions connection from [{ip}]");
            return;
        };
        match conn.start_tls(tls, config.tls.handshake_timeout.0).await {
            Ok(info) => {
                tracing::info!(
                    "TLS=server implicit from [{ip}]: version={} cipher={} client_cert=none",
                    info.version,
                    info.cipher
                );
                implicit_tls = Some(info);
            }
            Err(e) => {
                tracing::info!("TLS=server implicit from [{ip}]: handshake failed: {e}");
                return;
            }
        }
    }
    let tables = ctx.live.tables();
    // Mail from the outside: the `[policy]` and `[authentication]` checks apply.
    let outside = listener.role == Role::Mx && !is_trusted(ip, &config.relay.trusted_networks);
    // `block_networks` is a local fact known at connect: refused there, before any DNS.
    let refuse = (outside && config.policy.enabled && {
        let lists = ctx.screen_lists();
        lists.block.contains(ip) && !lists.allow.contains(ip)
    })
    .then(|| {
        let r = Reply::new(554, EnhancedStatus(5, 7, 1), format!("Client host [{ip}] blocked by local policy"));
        tracing::info!("NOQUEUE: reject: CONNECT from [{ip}]: {r}; policy: block_networks");
        r
    });
    let params = SessionParams {
        hostname: config.hostname.clone(),
        client_ip: ip,
        postmaster_domain: config.domains.local.first().cloned().unwrap_or_else(|| config.hostname.clone()),
        max_message_size: usize::try_from(config.limits.max_message_size.0).unwrap_or(usize::MAX),
        max_recipients: config.limits.max_recipients,
        max_line_length: config.limits.max_line_length,
        max_errors: config.limits.max_errors,
        starttls: tls_config.is_some() && implicit_tls.is_none(),
        implicit_tls,
        auth: listener.auth,
        require_auth: listener.role != Role::Mx,
        screen: outside && config.policy.enabled,
        check_sender: outside && (config.policy.enabled || spf_at_mail(&config)),
        refuse,
    };
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
    let outcome = driver.drive(&mut conn, Session::new(params), shutdown).await;
    let client = driver.client();
    match outcome {
        Ok(()) => tracing::info!("disconnect from {client}"),
        Err(e) => tracing::info!("lost connection from {client}: {e}"),
    }
}

/// Whether SPF refuses at MAIL FROM (`[authentication] spf_at = "mail"`, checks on).
fn spf_at_mail(config: &Config) -> bool {
    config.authentication.verify && config.authentication.spf_at == postern_config::schema::SpfAt::Mail
}

/// Writes a 421 4.7.0 refusal and closes; on a `submissions` listener the client expects a TLS
/// handshake, not text, so the connection is only closed.
async fn refuse(conn: &mut Conn, role: Role, text: String) -> std::io::Result<()> {
    if role == Role::Submissions {
        return conn.shutdown().await;
    }
    let mut out = Vec::new();
    Reply::new(421, EnhancedStatus(4, 7, 0), text).encode(&mut out);
    conn.write_all(&out).await?;
    conn.shutdown().await
}

/// What one session's steps need; the configuration and tables are the snapshot taken when
/// the session started, so a reload never changes a session in flight.
struct Driver<'a> {
    ctx: &'a Context,
    config: &'a Config,
    tables: &'a Tables,
    peer: SocketAddr,
    /// The address the client connected to (milter `{if_addr}`, `{daemon_addr}`).
    local: Option<SocketAddr>,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    role: Role,
    /// `[policy]` checks with action `tag` that failed, for `X-Postern-Policy`.
    tags: std::sync::Mutex<Vec<String>>,
    /// The client is allow-listed or forward-confirmed (and that may skip greylisting).
    skip_greylist: std::sync::atomic::AtomicBool,
    /// The client's forward-confirmed host name, once screened (for `[[policy.exception]]`).
    client_name: std::sync::Mutex<Option<String>>,
    /// The session runs the `[policy]` checks (mx, untrusted).
    screened: bool,
}

impl Driver<'_> {
    /// The client as `name[ip]:port`.
    fn client(&self) -> String {
        let name = self.client_name.lock().unwrap_or_else(|e| e.into_inner()).clone();
        client_label(name.as_deref(), self.peer)
    }

    fn policy(&self) -> RecipientPolicy<'_> {
        RecipientPolicy {
            local_domains: &self.config.domains.local,
            trusted_networks: &self.config.relay.trusted_networks,
            separators: &self.config.delivery.subaddress_separator,
            tables: self.tables,
        }
    }

    async fn drive(
        &self,
        conn: &mut Conn,
        mut session: Session,
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
                    let chunk = if in_content { READ_CHUNK } else { COMMAND_CHUNK };
                    let read = tokio::time::timeout_at(deadline.into(), async {
                        conn.readable().await?;
                        input.reserve(chunk);
                        conn.read_buf(&mut input).await
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
                Step::StartTls => {
                    conn.write_all(&session.take_output()).await?;
                    let Some(tls) = self.tls_config.clone() else {
                        return Err(std::io::Error::other("STARTTLS without a certificate"));
                    };
                    match conn.start_tls(tls, self.config.tls.handshake_timeout.0).await {
                        Ok(info) => {
                            tracing::info!(
                                "STARTTLS=server from [{ip}]: version={} cipher={} client_cert=none",
                                info.version,
                                info.cipher
                            );
                            session.tls_started(info);
                        }
                        Err(e) => {
                            tracing::info!("STARTTLS=server from [{ip}]: handshake failed: {e}");
                            return Ok(());
                        }
                    }
                }
                Step::Authenticate { login, password } => self.authenticate(&mut session, login, password).await,
                Step::CheckSender(address) if session.authenticated().is_none() => {
                    let verdict = self.check_sender_from_outside(session.helo().unwrap_or(""), &address).await;
                    session.sender_verdict(verdict);
                }
                Step::CheckSender(address) => {
                    let login = session.authenticated().unwrap_or_default().to_owned();
                    if may_send_as(&self.policy(), &login, &address) {
                        session.sender_verdict(Verdict::Ok(()));
                    } else {
                        let r = not_owned(&login, &address);
                        tracing::info!(
                            "NOQUEUE: reject: MAIL from [{ip}]: {r}; from=<{address}> sasl_username={login}"
                        );
                        session.sender_verdict(Verdict::PermFail(r));
                    }
                }
                Step::CheckClient(helo) => {
                    let verdict = self.screen_client(&helo).await;
                    session.client_verdict(verdict);
                }
                Step::CheckRecipient(rcpt) => {
                    let mut verdict = resolve_recipient(&self.policy(), ip, session.authenticated().is_some(), &rcpt);
                    if matches!(verdict, Verdict::Ok(_))
                        && let Some(r) = self.greylist(session.reverse_path(), &rcpt).await
                    {
                        verdict = Verdict::TempFail(r);
                    }
                    if let Verdict::PermFail(r) | Verdict::TempFail(r) = &verdict {
                        tracing::info!(
                            "NOQUEUE: reject: RCPT from [{ip}]: {r}; to=<{rcpt}> helo=<{}>",
                            session.helo().unwrap_or("")
                        );
                    }
                    session.recipient_verdict(verdict);
                }
                Step::Commit(tx) => {
                    let result = match self.foreign_from(&tx).or_else(|| self.looping(&tx)) {
                        Some(r) => Err(r),
                        None => self.filter_and_commit(*tx).await,
                    };
                    session.commit_result(result);
                }
                Step::Close => {
                    if session.has_output() {
                        conn.write_all(&session.take_output()).await?;
                    }
                    let _ = conn.shutdown().await;
                    return Ok(());
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

    /// Checks a password off the runtime (Argon2 costs tens of milliseconds of CPU and 19 MiB),
    /// at most `[server] auth_concurrency` at once: an attempt that gets no turn within
    /// `auth_wait` is answered `454 4.7.0` (RFC 4954 §6) and does not count as a failure. An
    /// unknown user costs the same as a wrong password, so timing does not reveal which names
    /// exist. Failures count towards the IP's ban.
    async fn authenticate(&self, session: &mut Session, login: String, password: Vec<u8>) {
        let ip = self.peer.ip();
        let stored = self.tables.users.get(&login.to_lowercase()).cloned().flatten();
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| dummy_hash().to_owned());
        let wait = self.config.server.auth_wait.0;
        let turn = self.ctx.password_checks.clone().acquire_owned();
        let outcome = match tokio::time::timeout(wait, turn).await {
            // The turn moves into the check, so it is held until the check ends even if the
            // client goes away meanwhile.
            Ok(Ok(turn)) => match tokio::task::spawn_blocking(move || {
                let ok = credentials::verify(&hash, &password);
                drop(turn);
                ok
            })
            .await
            {
                Ok(true) if known => AuthOutcome::Success,
                Ok(_) => AuthOutcome::Invalid,
                Err(_) => AuthOutcome::TempFail,
            },
            _ => {
                tracing::warn!(
                    "AUTH from [{ip}]: sasl_username={login}: no password check free within {}s \
                     ([server] auth_concurrency = {}): 454",
                    wait.as_secs(),
                    self.config.server.auth_concurrency
                );
                session.auth_result(AuthOutcome::TempFail);
                return;
            }
        };
        session.auth_result(outcome);
        match outcome {
            AuthOutcome::Success => tracing::info!("AUTH from [{ip}]: sasl_username={login} ok"),
            AuthOutcome::TempFail => tracing::error!("AUTH from [{ip}]: sasl_username={login}: check failed"),
            AuthOutcome::Invalid => {
                let s = &self.config.server;
                tracing::warn!("AUTH from [{ip}]: sasl_username={login}: authentication failed");
                if self.ctx.bans.failure(ip, Instant::now(), s.auth_failures_before_ban, s.ban_time.0) {
                    tracing::warn!(
                        "ban: [{ip}] after {} failed AUTH attempts, for {}s",
                        s.auth_failures_before_ban,
                        s.ban_time.0.as_secs()
                    );
                    session.abort(Reply::new(
                        421,
                        EnhancedStatus(4, 7, 0),
                        format!("{} Error: too many failed logins from {ip}, try later", self.config.hostname),
                    ));
                }
            }
        }
    }

    /// The `[policy]` checks after the first HELO/EHLO (`helo`): logged, tags kept for the
    /// message, what greylisting needs remembered.
    async fn screen_client(&self, helo: &str) -> Verdict<()> {
        let ip = self.peer.ip();
        let lists = self.ctx.screen_lists();
        let mut screened = crate::screen::screen(&*self.ctx.resolver, self.config, &lists, ip, helo).await;
        self.record(&mut screened, "EHLO", &format!("helo=<{helo}>"));
        let skip = screened.allowed || (screened.fcrdns_passed() && self.config.policy.greylist_skip_fcrdns);
        self.skip_greylist.store(skip, std::sync::atomic::Ordering::Relaxed);
        *self.client_name.lock().unwrap_or_else(|e| e.into_inner()) = screened.client_name().map(str::to_owned);
        screened.verdict
    }

    /// Logs what screening found, one line (`policy: [IP] WHAT: check: result (facts) -> action;
    /// ...: outcome`), plus `NOQUEUE: reject: STAGE from [IP]: ...` for a refusal, and keeps its
    /// tags for the message's `X-Postern-Policy` header.
    fn record(&self, screened: &mut crate::screen::Screened, stage: &str, what: &str) {
        let ip = self.peer.ip();
        if !screened.report.is_empty() {
            let outcome = match &screened.verdict {
                Verdict::Ok(()) => "accept".to_owned(),
                Verdict::PermFail(r) | Verdict::TempFail(r) => format!("refuse ({r})"),
            };
            tracing::info!("policy: [{ip}] {what}: {}: {outcome}", screened.report.join("; "));
            if !matches!(screened.verdict, Verdict::Ok(())) {
                tracing::info!("NOQUEUE: reject: {stage} from [{ip}]: {outcome}; {what}");
            }
        }
        self.tags.lock().unwrap_or_else(|e| e.into_inner()).append(&mut screened.tags);
    }

    /// MAIL FROM of a client from the outside: the `[policy]` sender checks (sender domain,
    /// its MX hosts, RHSBL), then, with `[authentication] spf_at = "mail"`, SPF (RFC 7208 §2.4).
    async fn check_sender_from_outside(&self, helo: &str, address: &Address) -> Verdict<()> {
        let ip = self.peer.ip();
        let sender = address.to_string();
        if self.screened {
            let lists = self.ctx.screen_lists();
            let name = self.client_name.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut screened =
                crate::screen::screen_sender(&*self.ctx.resolver, self.config, &lists, ip, name.as_deref(), &sender)
                    .await;
            self.record(&mut screened, "MAIL", &format!("from=<{sender}>"));
            if !matches!(screened.verdict, Verdict::Ok(())) {
                return screened.verdict;
            }
        }
        let a = &self.config.authentication;
        let domain = address.domain().to_ascii_lowercase();
        if !spf_at_mail(self.config) || is_trusted(ip, &a.exempt_networks) || a.exempt_domains.contains(&domain) {
            return Verdict::Ok(());
        }
        let auth = self.ctx.auth();
        let Some(checker) = &auth.checker else { return Verdict::Ok(()) };
        let spf = checker.spf_mail_from(ip, helo, &sender).await;
        match postern_auth::spf_refusal(spf, &domain, a, ip) {
            None => Verdict::Ok(()),
            Some(r) => {
                tracing::info!("NOQUEUE: reject: MAIL from [{ip}]: {r}; from=<{sender}> spf={spf}");
                if r.code >= 500 { Verdict::PermFail(r) } else { Verdict::TempFail(r) }
            }
        }
    }

    /// Greylisting of one recipient: `Some(451 4.7.1)` for a triplet not yet allowed.
    async fn greylist(&self, sender: Option<&ReversePath>, rcpt: &Address) -> Option<Reply> {
        let store = self.ctx.greylist.clone()?;
        let p = &self.config.policy;
        if !self.screened || p.greylist != Check::Defer || self.skip_greylist.load(std::sync::atomic::Ordering::Relaxed)
        {
            return None;
        }
        let ip = self.peer.ip();
        let sender = match sender {
            Some(ReversePath::Mailbox(a)) => a.to_string(),
            _ => String::new(),
        };
        let name = self.client_name.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let facts = crate::screen::Facts::new(ip, name.as_deref(), Some(&sender), Some(&rcpt.to_string()));
        if crate::screen::exempt(p, "greylist", &facts) {
            tracing::info!("greylist: [{ip}] from=<{sender}> to=<{rcpt}>: exempt ([[policy.exception]])");
            return None;
        }
        let (delay, expire, rcpt_text, from) =
            (p.greylist_delay.0, p.greylist_expire.0, rcpt.to_string(), sender.clone());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let checked = tokio::task::spawn_blocking(move || store.check(ip, &from, &rcpt_text, now, delay, expire))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        match checked {
            Ok(crate::greylist::Greylist::Pass) => None,
            Ok(crate::greylist::Greylist::Wait(left)) => {
                tracing::info!("greylist: [{ip}] from=<{sender}> to=<{rcpt}>: deferred, retry in {}s", left.as_secs());
                Some(Reply::new(
                    451,
                    EnhancedStatus(4, 7, 1),
                    format!("<{rcpt}>: Greylisted, please try again in {} seconds", left.as_secs()),
                ))
            }
            Err(e) => {
                // A broken store must not stop mail: accept, and say so.
                tracing::warn!("greylist store: {e}; accepting");
                None
            }
        }
    }

    /// The `[[milter]]` filters, then authentication and the commit. A filter's refusal is the
    /// reply to DATA; its `discard` is a 250 with nothing queued.
    async fn filter_and_commit(&self, mut tx: Transaction) -> Result<QueueId, Reply> {
        if self.config.milter.is_empty() {
            return self.authenticate_and_commit(tx, false, None).await;
        }
        // The queue ID is chosen now, so that the filters see it (macro `i`) and their log
        // lines and the queue's carry the same ID.
        let id = QueueId::generate();
        let name = self.client_name.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let client = crate::milter::Client { name: name.as_deref(), peer: self.peer, local: self.local, queue_id: id };
        let policy = self.policy();
        let resolve = |a: &Address| match postern_policy::resolve_for_delivery(&policy, a) {
            Verdict::Ok(d) => d,
            _ => Vec::new(),
        };
        match crate::milter::filter(self.config, self.role, &client, &mut tx, &resolve).await {
            crate::milter::Decision::Accept => self.authenticate_and_commit(tx, false, Some(id)).await,
            crate::milter::Decision::Hold(reason) => {
                tracing::info!("{id}: milter: quarantine ({reason}): the message is held");
                self.authenticate_and_commit(tx, true, Some(id)).await
            }
            crate::milter::Decision::Refuse(r) => {
                tracing::info!("NOQUEUE: reject: DATA from [{}]: {r}; milter", self.peer.ip());
                Err(r)
            }
            crate::milter::Decision::Discard(by) => {
                tracing::info!("{id}: discarded by milter {by}: accepted with 250, not queued");
                Ok(id)
            }
        }
    }

    /// Signs what is relayed for our own users (trusted networks, AUTH), checks what comes from
    /// outside on `mx` listeners and acts on the results, then commits under `id` (a new queue
    /// ID when `None`).
    async fn authenticate_and_commit(
        &self,
        mut tx: Transaction,
        held: bool,
        id: Option<QueueId>,
    ) -> Result<QueueId, Reply> {
        let ip = self.peer.ip();
        let auth = self.ctx.auth();
        let mut added = Added::default();
        let tags = self.tags.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if !tags.is_empty() {
            added.headers.push_str(&format!("X-Postern-Policy: {}\r\n", tags.join("; ")));
        }
        let ours = tx.auth.is_some() || is_trusted(ip, &self.config.relay.trusted_networks);
        if tx.auth.is_some() {
            // RFC 6409 §8.3, §8.4: submission completes Date and Message-ID (before signing,
            // as both are signed).
            let date = chrono::Utc::now().to_rfc2822();
            let unique = QueueId::generate().to_string();
            let mut message =
                submission::missing_headers(&tx.message, &self.config.hostname, &unique, &date).into_bytes();
            message.extend_from_slice(&tx.message);
            tx.message = message;
        }
        let relayed = tx.recipients.iter().flat_map(|r| &r.destinations).any(|d| matches!(d, Destination::Remote(_)));
        if ours && relayed {
            let signature = authenticate::sign(auth.clone(), self.config, ip, &mut tx).await?;
            added.headers.push_str(&signature);
        } else if !ours
            && self.role == Role::Mx
            && let Some(checker) = &auth.checker
            && !is_trusted(ip, &self.config.authentication.exempt_networks)
        {
            authenticate::check_from_outside(self.ctx, self.config, checker, &auth.arc, ip, &mut tx, &mut added)
                .await?;
        }
        let committed = commit(self.ctx, tx, &self.client(), &added.headers, added.quarantine, held, id).await;
        if let (Ok(id), Some(line)) = (&committed, added.auth_line) {
            tracing::info!("{id}: {line}");
        }
        committed
    }

    /// A message that is looping (`Delivered-To` of one of its local recipients, too many
    /// `Received:`): refused at the end of DATA with `554 5.4.6`, so no DSN is ever made for it
    /// (accepting and then bouncing would send backscatter to a forged sender).
    fn looping(&self, tx: &Transaction) -> Option<Reply> {
        let local: Vec<String> = tx
            .recipients
            .iter()
            .flat_map(|r| &r.destinations)
            .filter_map(|d| match d {
                Destination::Mailbox { address, .. } | Destination::Pipe { address, .. } => Some(address.to_string()),
                Destination::Remote(_) => None,
            })
            .collect();
        let r = postern_proto::loops::refusal(&tx.message, &local, self.config.limits.max_hops)?;
        tracing::info!("NOQUEUE: reject: DATA from [{}]: {r}; helo=<{}>", self.peer.ip(), tx.helo);
        Some(r)
    }

    /// For an authenticated submission: the refusal when a From address of the message is not
    /// the login's (RFC 6409 §6.1). `550 5.7.1`: at the end of DATA, RFC 5321 §4.3.2 allows
    /// 550/554, not 553.
    fn foreign_from(&self, tx: &Transaction) -> Option<Reply> {
        let login = tx.auth.as_deref()?;
        let parsed = mail_parser::MessageParser::new().parse_headers(&tx.message)?;
        let from = parsed.from()?;
        for a in from.iter() {
            let Some(text) = a.address() else { continue };
            let owned = Address::parse(text).is_ok_and(|address| may_send_as(&self.policy(), login, &address));
            if !owned {
                tracing::info!(
                    "NOQUEUE: reject: DATA from [{}]: From: <{text}> not owned by sasl_username={login}",
                    self.peer.ip()
                );
                return Some(Reply::new(
                    550,
                    EnhancedStatus(5, 7, 1),
                    format!("From: <{text}> rejected: not owned by user {login}"),
                ));
            }
        }
        None
    }
}

/// A valid Argon2id hash of a random password, verified against when the login is unknown.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| credentials::hash(b"unknown user, no password matches").unwrap_or_default())
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
