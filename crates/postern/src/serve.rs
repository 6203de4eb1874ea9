//! `postern serve`: load the configuration, open the spool, recover the queue, bind the
//! listeners, load the TLS certificate, drop privileges, run until SIGTERM/SIGINT; reload
//! configuration, tables and certificate on SIGHUP or `postern reload`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use postern_config::{Config, Live, Tables};
use postern_dns::dnssec::DnssecResolver;
use postern_dns::{DnsSettings, HickoryResolver};
use postern_inbound::{AuthState, ConnectionLimits, Context, ListenerInfo};
use postern_queue::Queue;
use postern_spool::{Spool, SyncMode};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Removes the partial `tmp/` files a crashed predecessor left in the users' Maildirs (their
/// deliveries are repeated from the queue), one log line each.
fn clean_maildir_tmp(config: &postern_config::Config, tables: &postern_config::Tables) {
    if config.delivery.local != postern_config::schema::LocalTransport::Maildir {
        return;
    }
    for user in tables.users.keys() {
        match postern_local::clean_tmp(&config.maildir_of(user), &config.hostname) {
            Ok(removed) => {
                for path in removed {
                    tracing::info!("maildir: removed {} (a delivery cut short by a crash)", path.display());
                }
            }
            Err(e) => tracing::warn!("maildir of {user}: cannot clean tmp/: {e}"),
        }
    }
}

/// Makes the allocator give large blocks back to the system when they are freed. glibc raises
/// its mmap threshold each time a large block is freed (up to 32 MiB), after which a burst of
/// 19 MiB Argon2 blocks (one per AUTH attempt) is carved from the heaps and stays there; a fixed
/// threshold keeps such blocks in their own mappings, returned on free (mallopt(3)).
fn return_large_blocks() {
    // SAFETY: mallopt only changes allocator parameters; called before any thread exists.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024) };
    if ok != 1 {
        tracing::warn!("mallopt(M_MMAP_THRESHOLD) failed; memory of AUTH bursts may not be returned");
    }
    // glibc gives each thread that allocates under contention an arena of its own (up to 8 per
    // core), and memory freed in one arena is not reused by another: with messages moving
    // between the runtime's threads and the blocking pool, that alone doubled the daemon's
    // memory at 20 sessions of 100 KiB messages (docs/benchmarks.md, "Memory per message
    // size"). Two arenas keep the threads from waiting on one lock without the fragmentation.
    // SAFETY: as above.
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    if ok != 1 {
        tracing::warn!("mallopt(M_ARENA_MAX) failed");
    }
}

pub(crate) fn main(config_path: Option<&Path>) -> ExitCode {
    let (config, tables) = match load(config_path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!(
                "postern: configuration has {} error(s); not starting (see `postern check-config`)",
                errors.len()
            );
            return ExitCode::from(2);
        }
    };
    crate::logging::init(&config.log);
    return_large_blocks();
    postern_types::failpoint::setup();
    // Forked while single-threaded, before the runtime: the helper that keeps root to re-read
    // root-only keys on reload once the daemon runs as [server] user.
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    // The local-delivery helper keeps root to run pipes and write mboxes as their recipients.
    // Its liveness channel stays open for the daemon's whole life (the helper ends with it).
    let mut alive_fds = Vec::new();
    if let (true, Some(path), Some(user)) = (as_root, config_path, &config.server.user) {
        let started = crate::privileges::ids_of(user, config.server.group.as_deref())
            .and_then(|owner| crate::local_helper::spawn(path, &config.data_dir, owner));
        match started {
            Ok((socket, alive)) => {
                postern_local::privileged::use_helper(socket);
                alive_fds.push(std::os::fd::AsRawFd::as_raw_fd(&alive));
                std::mem::forget(alive);
            }
            Err(e) => {
                eprintln!("postern: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    let helper = match (config.server.user.is_some() && as_root, config_path) {
        (true, Some(path)) => match crate::privsep::Helper::spawn(path, &alive_fds) {
            Ok(h) => Some(h),
            Err(e) => {
                eprintln!("postern: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("postern: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config_path.map(Path::to_path_buf), config, tables, helper)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("fatal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: Option<&Path>) -> Result<(Config, Tables), Vec<postern_config::ConfigError>> {
    match path {
        Some(p) => postern_config::load(p),
        None => {
            let (c, t) = postern_config::dev_default();
            eprintln!(
                "postern: no --config given, using the embedded development default (data in {})",
                c.data_dir.display()
            );
            Ok((c, t))
        }
    }
}

/// Everything the daemon creates is its own (umask 077, as Postfix's master sets): the spool,
/// the stores, the Maildirs, the caches. `data_dir`, when the daemon creates it, is 0711 so
/// that other accounts reach `submit.sock` (0666) inside without listing anything; one that
/// exists keeps the mode its owner gave it.
pub(crate) fn create_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe { libc::umask(0o077) };
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating data_dir {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("chmod 0711 data_dir {}", dir.display()))?;
    }
    Ok(())
}

async fn run(
    config_path: Option<std::path::PathBuf>,
    config: Config,
    tables: Tables,
    helper: Option<crate::privsep::Helper>,
) -> anyhow::Result<()> {
    // Signal handlers first: a SIGHUP that arrives while the daemon starts must reload, not
    // kill it (the default action).
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    create_data_dir(&config.data_dir)?;
    let spool_dir = config.spool_dir();
    let mode = match config.spool.sync {
        postern_config::schema::SpoolSync::Syncfs => SyncMode::Syncfs,
        postern_config::schema::SpoolSync::Fsync => SyncMode::Fsync,
    };
    let spool =
        Arc::new(Spool::open(&spool_dir, mode).with_context(|| format!("opening spool {}", spool_dir.display()))?);
    let tls = load_tls(&config, &postern_config::Disk).map_err(anyhow::Error::msg)?;
    let auth = AuthState::load(&config).map_err(|e| anyhow::Error::msg(e.join("; ")))?;
    let store = Arc::new(open_store(&config)?);
    spawn_store_ping(store.clone());
    let (listeners, metrics_listener) = bind_all(&config).await?;
    let privileges = (config.server.user.clone(), config.server.group.clone());
    let grace = config.server.shutdown_grace.0;
    let live = Arc::new(Live::new(config, tables));
    let dns = &live.config().dns;
    let settings = DnsSettings { nameservers: dns.nameservers.clone(), timeout: dns.timeout.0, attempts: dns.attempts };
    let resolver = Arc::new(HickoryResolver::new(&settings).map_err(anyhow::Error::msg)?);
    let queue = Queue::new(spool.clone(), live.clone(), resolver.clone());
    let anchor = live.config().dns.trust_anchor.clone();
    queue.set_dnssec(DnssecResolver::new(&settings, anchor.as_deref()).map_err(anyhow::Error::msg)?);
    // Shares the MTA-STS cache with a cluster (a no-op with the embedded store).
    queue.share_store(store.clone());
    let screen_lists = postern_inbound::screen::ScreenLists::load(&live.config().policy).map_err(anyhow::Error::msg)?;
    tokio::task::spawn_blocking({
        let (config, tables) = (live.config(), live.tables());
        move || clean_maildir_tmp(&config, &tables)
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    // Messages queued from now on have later IDs: the recovery leaves them to the scheduler.
    let started = postern_types::QueueId::generate();
    let runner = tokio::spawn(queue.clone().run(stop_rx.clone()));
    let ctx = Arc::new(Context {
        live: live.clone(),
        spool: spool.clone(),
        queue: queue.clone(),
        limits: ConnectionLimits::default(),
        store: store.clone(),
        tls: std::sync::RwLock::new(tls),
        auth: std::sync::RwLock::new(Arc::new(auth)),
        dmarc: live.config().dmarc_reports.enabled,
        tlsrpt: live.config().tls_reports.enabled,
        resolver,
        screen_lists: std::sync::RwLock::new(Arc::new(screen_lists)),
        space: postern_inbound::SpaceGuard::default(),
        password_checks: Arc::new(tokio::sync::Semaphore::new(live.config().server.auth_concurrency.max(1))),
    });
    if helper.is_some() {
        tracing::info!("privileged helper started: reloads read the certificate and DKIM keys through it");
    }
    let at_start = live.config();
    let reloader = Arc::new(Reloader { path: config_path, ctx: ctx.clone(), helper, at_start });
    let socket = live.config().control_socket();
    let alerts = Arc::new(crate::alerts::Board::default());
    crate::control::spawn(&socket, ctx.clone(), reloader.clone(), alerts.clone(), stop_rx.clone())
        .with_context(|| format!("binding the control socket {}", socket.display()))?;
    let submit = live.config().submit_socket();
    let submit_group = live.config().server.submit_group.clone();
    crate::submit::spawn(&submit, submit_group.as_deref(), ctx.clone(), stop_rx.clone())
        .with_context(|| format!("binding the submission socket {}", submit.display()))?;
    match privileges {
        (Some(user), group) => {
            let data_dir = live.config().data_dir.clone();
            crate::privileges::drop_to(&user, group.as_deref(), &data_dir).context("dropping privileges")?;
            tracing::info!("running as user {user}");
        }
        (None, _) if unsafe { libc::geteuid() } == 0 => {
            tracing::warn!("running as root: set [server] user to an unprivileged account");
        }
        (None, _) => {}
    }
    spawn_jobs(&ctx, alerts, metrics_listener, &stop_rx);
    let listening = listeners.len();
    for (listener, info) in listeners {
        tokio::spawn(postern_inbound::serve(listener, info, ctx.clone(), stop_rx.clone()));
    }
    crate::notify::spawn_watchdog(stop_rx.clone());
    tracing::info!("postern started: {listening} listener(s); recovering the queue in the background");
    crate::notify::ready(&format!("{listening} listener(s), recovering the queue"));
    let recovery = spawn_recovery(queue.clone(), started, stop_rx.clone());
    spawn_trim(stop_rx.clone());

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => {
                if let Ok(what) = reloader.reload("SIGHUP") {
                    tracing::info!("SIGHUP: {what}");
                }
            }
        }
    }
    crate::notify::stopping();
    let _ = stop_tx.send(true);
    shut_down(&ctx, grace, [runner, recovery]).await;
    tracing::info!("postern stopped: {} message(s) left in the queue", queue.len());
    Ok(())
}

/// Binds every `[[listener]]` and `[metrics] listen`, and says where (tests and operators read
/// the line to learn a port chosen with `:0`).
async fn bind_all(
    config: &Config,
) -> anyhow::Result<(Vec<(tokio::net::TcpListener, ListenerInfo)>, Option<tokio::net::TcpListener>)> {
    let mut listeners = Vec::new();
    for l in &config.listener {
        let listener = postern_inbound::bind(l.address).with_context(|| format!("binding {}", l.address))?;
        let local = listener.local_addr()?;
        tracing::info!("listening on {local} (role {})", l.role);
        listeners.push((listener, ListenerInfo::from(l)));
    }
    let metrics = match config.metrics.listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding [metrics] listen {addr}"))?;
            tracing::info!("metrics on http://{}/metrics", l.local_addr()?);
            Some(l)
        }
        None => None,
    };
    Ok((listeners, metrics))
}

/// The daemon's background jobs: the daily DMARC and TLS reports, the alert watcher, the
/// `/metrics` endpoint and the greylisting purge (Redis expires triplets by itself).
fn spawn_jobs(
    ctx: &Arc<Context>,
    alerts: Arc<crate::alerts::Board>,
    metrics: Option<tokio::net::TcpListener>,
    stop: &watch::Receiver<bool>,
) {
    if ctx.dmarc {
        crate::reports::dmarc::spawn_daily(ctx.clone(), stop.clone());
    }
    if ctx.tlsrpt {
        crate::reports::tls_rpt::spawn(ctx.clone(), stop.clone());
    }
    crate::alerts::spawn(ctx.clone(), alerts, stop.clone());
    if let Some(l) = metrics {
        crate::metrics_http::spawn(l, ctx.queue.clone(), stop.clone());
    }
    if ctx.live.config().policy.greylist != postern_config::schema::Check::Off {
        spawn_greylist_purge(ctx.store.clone(), ctx.live.clone(), stop.clone());
    }
}

/// After the stop signal: sessions between commands close at once with 421, those receiving
/// a message may finish within `grace`; then the scheduler and the recovery get `grace` each.
async fn shut_down(ctx: &Context, grace: Duration, tasks: [tokio::task::JoinHandle<()>; 2]) {
    let deadline = Instant::now() + grace;
    while ctx.limits.total() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if ctx.limits.total() > 0 {
        tracing::warn!(
            "{} session(s) still open after {grace:?}; aborting them (nothing of theirs was acknowledged)",
            ctx.limits.total()
        );
    }
    for task in tasks {
        let _ = tokio::time::timeout(grace, task).await;
    }
}

/// Opens the `[store]`: the embedded files that greylisting and the reports need, or the
/// Redis server (connected on first use: one that is down at start is an outage, not a
/// fatal error).
fn open_store(config: &postern_config::Config) -> anyhow::Result<postern_store::Store> {
    use postern_store::{Aggregate, BackendKind, Settings};
    let st = &config.store;
    let mut aggregates = Vec::new();
    if config.dmarc_reports.enabled {
        aggregates.push(Aggregate::Dmarc);
    }
    if config.tls_reports.enabled {
        aggregates.push(Aggregate::TlsRpt);
    }
    let settings = Settings {
        backend: match st.backend {
            postern_config::schema::StoreBackend::Embedded => BackendKind::Embedded,
            postern_config::schema::StoreBackend::Redis => BackendKind::Redis(st.url.clone()),
        },
        prefix: st.prefix.clone(),
        timeout: st.timeout.0,
        ca_file: st.ca_file.clone(),
        data_dir: config.data_dir.clone(),
        greylist: config.policy.greylist != postern_config::schema::Check::Off,
        aggregates,
    };
    let store = postern_store::Store::open(&settings).map_err(anyhow::Error::msg)?;
    tracing::info!("store: {}", store.describe());
    Ok(store)
}

/// Pings a shared store once at start, so that one that is down is logged at once (as the
/// start of an outage) rather than at the first greylisted recipient.
fn spawn_store_ping(store: Arc<postern_store::Store>) {
    if store.is_shared() {
        tokio::spawn(async move {
            if store.ping().await.is_ok() {
                tracing::info!("store: {} answers", store.describe());
            }
        });
    }
}

/// Reads the spool into the scheduler while the listeners already accept mail; logs the count
/// when done (a spool that cannot be read is fatal to the queue, so it is logged as an error).
fn spawn_recovery(
    queue: Queue,
    started: postern_types::QueueId,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let t0 = Instant::now();
        match queue.recover(started, stop.clone()).await {
            Ok(n) if *stop.borrow() => tracing::info!("queue recovery stopped by the shutdown after {n} message(s)"),
            Ok(n) => tracing::info!(
                "queue recovered: {n} message(s) recovered from the spool in {:.2}s",
                t0.elapsed().as_secs_f64()
            ),
            Err(e) => tracing::error!("recovering the queue: {e}; queued messages are not being delivered"),
        }
    })
}

/// Gives the heap's free pages back to the system every 30 s (malloc_trim(3)): after a burst
/// (a flood of sessions, a queue of a million messages accepted and deferred) glibc keeps the
/// freed memory of its arenas, and the RSS would stay at the burst's peak.
fn spawn_trim(mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(30)) => {}
                _ = stop.changed() => return,
            }
            // SAFETY: malloc_trim only returns free memory to the system.
            unsafe { libc::malloc_trim(0) };
        }
    });
}

/// Deletes forgotten greylisting triplets at start and then hourly, until `stop`.
fn spawn_greylist_purge(store: Arc<postern_store::Store>, live: Arc<Live>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            let (delay, expire) = {
                let config = live.config();
                (config.policy.greylist_delay.0, config.policy.greylist_expire.0)
            };
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            match store.purge_greylist(now, delay, expire).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("greylist: purged {n} expired triplet(s)"),
                Err(e) => tracing::warn!("greylist: purge failed: {e}"),
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = stop.changed() => return,
            }
        }
    });
}

/// The server certificate of `config`, if `[tls]` is set.
fn load_tls(
    config: &Config,
    files: &dyn postern_config::FileSource,
) -> Result<Option<Arc<rustls::ServerConfig>>, postern_inbound::tls::CertificateError> {
    let loaded = postern_inbound::tls::load_with(&config.tls, files)?;
    if let Some(cert) = loaded.as_ref().and(config.tls.cert.as_ref()) {
        tracing::info!("TLS certificate loaded from {} ({} more by SNI)", cert.display(), config.tls.sni.len());
    }
    Ok(loaded)
}

/// Why a reload did not apply everything.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    /// The new configuration, tables or certificate has errors (one per line): nothing was
    /// changed.
    #[error("{}\nnew configuration refused ({} error(s)); the previous one stays in force", .0.join("\n"), .0.len())]
    Refused(Vec<String>),
    /// Applied, but for the settings read only at start.
    #[error("{loaded}\nnot applied until a restart: {}", .pending.join(", "))]
    RestartNeeded {
        /// What was loaded.
        loaded: String,
        /// The settings that need a restart.
        pending: Vec<&'static str>,
    },
}

/// Re-reads configuration, tables and certificate (SIGHUP, `postern reload`). All or nothing:
/// if any of them is broken the old ones stay in force. Sessions in flight keep the snapshot
/// they started with; listener changes and `[queue] max_concurrency` need a restart.
pub(crate) struct Reloader {
    path: Option<PathBuf>,
    ctx: Arc<Context>,
    /// Under `[server] user`: where the root-only key files are read (`privsep`).
    helper: Option<crate::privsep::Helper>,
    /// The configuration the daemon started with: what is read only at start stays as it was.
    at_start: Arc<Config>,
}

impl Reloader {
    /// Reloads; `Ok` says what was loaded. Errors are logged one per line, prefixed with
    /// `why` (`SIGHUP`, `reload`).
    ///
    /// # Errors
    /// [`ReloadError::Refused`] with every error of the new configuration (nothing was
    /// changed), or [`ReloadError::RestartNeeded`] naming what was not applied.
    pub(crate) fn reload(&self, why: &str) -> Result<String, ReloadError> {
        let Some(path) = &self.path else {
            return Ok("running on the embedded default, nothing to reload".into());
        };
        crate::notify::reloading();
        let result = self.reload_from(path, why);
        crate::notify::ready(match &result {
            Ok((_, pending)) if pending.is_empty() => "reloaded",
            Ok(_) => "reloaded; some changes need a restart",
            Err(_) => "reload refused; the previous configuration stays in force",
        });
        match result {
            Ok((what, pending)) if pending.is_empty() => Ok(what),
            // Applied but for these: said, and a non-zero exit for `postern reload`.
            Ok((loaded, pending)) => {
                tracing::warn!("{why}: not applied until a restart: {}", pending.join(", "));
                Err(ReloadError::RestartNeeded { loaded, pending })
            }
            Err(e) => Err(e),
        }
    }

    /// Applies what can be applied; returns what was loaded and the changed settings that
    /// take effect only after a restart.
    fn reload_from(&self, path: &Path, why: &str) -> Result<(String, Vec<&'static str>), ReloadError> {
        let refused = |errors: Vec<String>| {
            for e in &errors {
                tracing::error!("{why}: {e}");
            }
            let n = errors.len();
            tracing::error!("{why}: new configuration refused ({n} error(s)); the previous one stays in force");
            ReloadError::Refused(errors)
        };
        let (config, tables) =
            postern_config::load(path).map_err(|errors| refused(errors.iter().map(ToString::to_string).collect()))?;
        let fetched;
        let files: &dyn postern_config::FileSource = match &self.helper {
            Some(h) => {
                fetched = h.fetch().map_err(|e| refused(vec![e.to_string()]))?;
                &fetched
            }
            None => &postern_config::Disk,
        };
        let tls = load_tls(&config, files).map_err(|e| refused(vec![e.to_string()]))?;
        let auth = AuthState::load_with(&config, files).map_err(refused)?;
        let lists =
            postern_inbound::screen::ScreenLists::load(&config.policy).map_err(|e| refused(vec![e.to_string()]))?;
        let live = &self.ctx.live;
        let pending = restart_needed(&self.at_start, &config);
        let what = format!(
            "reloaded {} ({} user(s), {} alias(es), {} virtual entr(ies), certificate {})",
            path.display(),
            tables.users.len(),
            tables.aliases.len(),
            tables.virtual_.len(),
            if tls.is_some() { "loaded" } else { "none" }
        );
        live.set_config(config);
        live.set_tables(tables);
        self.ctx.set_tls_config(tls);
        self.ctx.set_auth(auth);
        self.ctx.set_screen_lists(lists);
        Ok((what, pending))
    }
}

/// The settings that differ between `old` and `new` and are read only at start: the sockets
/// bound, the account dropped to, the spool's place and sync, the store, the scheduler's size;
/// under systemd (`$INVOCATION_ID` set) also the folders the deliveries write, which the
/// unit's sandbox fixed at start (`postern sandbox`).
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let listeners = |c: &Config| c.listener.iter().map(|l| (l.address, l.role)).collect::<Vec<_>>();
    let systemd = std::env::var_os("INVOCATION_ID").is_some();
    [
        (
            "the sandbox's folders (`postern sandbox`; `systemctl daemon-reload` with the Debian package's generator)",
            systemd && old.write_paths() != new.write_paths(),
        ),
        ("[[listener]]", listeners(old) != listeners(new)),
        ("[metrics] listen", old.metrics.listen != new.metrics.listen),
        ("[server] user, group", (&old.server.user, &old.server.group) != (&new.server.user, &new.server.group)),
        ("data_dir", old.data_dir != new.data_dir),
        ("[queue] max_concurrency", old.queue.max_concurrency != new.queue.max_concurrency),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}
