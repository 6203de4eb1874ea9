//! `postern serve`: load the configuration, open the spool, recover the queue, bind the
//! listeners, run until SIGTERM/SIGINT, reload tables and configuration on SIGHUP.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use postern_config::{Config, Live, Tables};
use postern_dns::{DnsSettings, HickoryResolver};
use postern_inbound::{ConnectionLimits, Context};
use postern_queue::Queue;
use postern_spool::{Spool, SyncMode};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

pub(crate) fn main(config_path: Option<&Path>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("POSTERN_LOG").unwrap_or_else(|_| "info".into()))
        .init();
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
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("postern: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config_path.map(Path::to_path_buf), config, tables)) {
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

async fn run(config_path: Option<std::path::PathBuf>, config: Config, tables: Tables) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    let spool_dir = config.spool_dir();
    let mode = match config.spool.sync {
        postern_config::schema::SpoolSync::Syncfs => SyncMode::Syncfs,
        postern_config::schema::SpoolSync::Fsync => SyncMode::Fsync,
    };
    let spool =
        Arc::new(Spool::open(&spool_dir, mode).with_context(|| format!("opening spool {}", spool_dir.display()))?);
    let mut listeners = Vec::new();
    for l in &config.listener {
        let listener = TcpListener::bind(l.address).await.with_context(|| format!("binding {}", l.address))?;
        let local = listener.local_addr()?;
        // Tests and operators read this line to learn the port when `address` ends in :0.
        tracing::info!("listening on {local} (role {})", format!("{:?}", l.role).to_lowercase());
        listeners.push(listener);
    }
    let grace = config.server.shutdown_grace.0;
    let live = Arc::new(Live::new(config, tables));
    let dns = &live.config().dns;
    let settings = DnsSettings { nameservers: dns.nameservers.clone(), timeout: dns.timeout.0, attempts: dns.attempts };
    let resolver = Arc::new(HickoryResolver::new(&settings).map_err(anyhow::Error::msg)?);
    let queue = Queue::new(spool.clone(), live.clone(), resolver);
    let recovered = queue.recover().context("recovering the queue")?;
    tracing::info!("postern started: {recovered} message(s) recovered from the spool");
    let (stop_tx, stop_rx) = watch::channel(false);
    let runner = tokio::spawn(queue.clone().run(stop_rx.clone()));
    let socket = live.config().control_socket();
    crate::control::spawn(&socket, queue.clone(), spool.clone(), stop_rx.clone())
        .with_context(|| format!("binding the control socket {}", socket.display()))?;
    let submit = live.config().submit_socket();
    crate::submit::spawn(&submit, live.clone(), queue.clone(), spool.clone(), stop_rx.clone())
        .with_context(|| format!("binding the submission socket {}", submit.display()))?;
    let ctx =
        Arc::new(Context { live: live.clone(), spool, queue: queue.clone(), limits: ConnectionLimits::default() });
    for listener in listeners {
        tokio::spawn(postern_inbound::serve(listener, ctx.clone(), stop_rx.clone()));
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => reload(config_path.as_deref(), &live),
        }
    }
    let _ = stop_tx.send(true);
    // Sessions between commands close at once with 421; those receiving a message may finish.
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
    let _ = tokio::time::timeout(grace, runner).await;
    tracing::info!("postern stopped: {} message(s) left in the queue", queue.len());
    Ok(())
}

/// SIGHUP: re-reads the configuration and tables; a broken new configuration is refused and the
/// old one stays in force. Listener changes need a restart.
fn reload(path: Option<&Path>, live: &Live) {
    let Some(path) = path else {
        tracing::info!("SIGHUP: running on the embedded default, nothing to reload");
        return;
    };
    match postern_config::load(path) {
        Ok((config, tables)) => {
            let listeners_changed =
                config.listener.iter().map(|l| l.address).ne(live.config().listener.iter().map(|l| l.address));
            if listeners_changed {
                tracing::warn!("SIGHUP: listener changes take effect only after a restart");
            }
            tracing::info!(
                "SIGHUP: reloaded {} ({} user(s), {} alias(es), {} virtual entr(ies))",
                path.display(),
                tables.users.len(),
                tables.aliases.len(),
                tables.virtual_.len()
            );
            live.set_config(config);
            live.set_tables(tables);
        }
        Err(errors) => {
            for e in &errors {
                tracing::error!("SIGHUP: {e}");
            }
            tracing::error!(
                "SIGHUP: new configuration refused ({} error(s)); the previous one stays in force",
                errors.len()
            );
        }
    }
}
