//! The inbound edge: tokio listeners, connection limits, failed-AUTH bans, TLS, and the
//! per-connection driver that performs each [`Step`](postern_proto::Step) of the sans-I/O session
//! (socket reads and writes with per-stage timeouts, the TLS handshake, password checks,
//! recipient and sender policy, the spool commit).

mod authenticate;
mod commit;
mod deadline;
mod limits;
mod milter;
mod rate;
pub mod screen;
mod session;
mod space;
mod steps;
mod stream;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use postern_config::{Listener, Live, Role};
use postern_queue::Queue;
use postern_spool::Spool;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use authenticate::dkim_sign;
pub use limits::ConnectionLimits;
pub use space::SpaceGuard;

/// What every session needs: the configuration in force, the spool and the scheduler.
#[derive(Debug)]
pub struct Context {
    /// Configuration and tables; each session takes a snapshot when it starts.
    pub live: Arc<Live>,
    /// The durable spool.
    pub spool: Arc<Spool>,
    /// The scheduler, told about each committed message.
    pub queue: Queue,
    /// Connection counts, total and per client IP.
    pub limits: ConnectionLimits,
    /// Greylisting triplets, failed-AUTH bans, rate-limit counters and report aggregates:
    /// embedded, or shared by a cluster (`[store]`).
    pub store: Arc<postern_store::Store>,
    /// The TLS configuration (certificate and key) in force; replaced on reload, while each
    /// session keeps the one it started with. `None`: no `[tls]` configured.
    pub tls: RwLock<Option<Arc<rustls::ServerConfig>>>,
    /// DKIM signing keys and the inbound checker in force; replaced on reload.
    pub auth: RwLock<Arc<AuthState>>,
    /// DMARC results are counted in the store (`[dmarc_reports] enabled` at start).
    pub dmarc: bool,
    /// Outbound TLS results are counted in the store (`[tls_reports] enabled` at start).
    pub tlsrpt: bool,
    /// The resolver of the `[policy]` checks (shared with delivery, so one cache).
    pub resolver: Arc<postern_dns::HickoryResolver>,
    /// The `[policy]` network lists in force; replaced on reload.
    pub screen_lists: screen::SharedLists,
    /// Turns for password checks (`[server] auth_concurrency` permits, read at start): each
    /// Argon2 check holds 19 MiB, so a flood of AUTH attempts waits here instead of taking
    /// memory.
    pub password_checks: Arc<tokio::sync::Semaphore>,
    /// The spool's free space against `[spool] min_free`.
    pub space: SpaceGuard,
}

/// Email authentication in force: the DKIM signer (`[dkim]`) and the SPF/DKIM/DMARC checker
/// (`[authentication]`, `None` when `verify = false`).
#[derive(Debug, Default)]
pub struct AuthState {
    /// Signs relayed mail.
    pub signer: postern_auth::Signer,
    /// Checks mail from the outside.
    pub checker: Option<postern_auth::Checker>,
    /// Seals forwarded mail (ARC, the `[dkim]` key of `[forwarding] srs_domain`).
    pub arc: Option<postern_auth::ArcKey>,
}

impl AuthState {
    /// Loads the keys of `config` and builds the checker.
    ///
    /// # Errors
    /// Every unusable key, or a resolver that cannot be built.
    pub fn load(config: &postern_config::Config) -> Result<Self, Vec<String>> {
        Self::load_with(config, &postern_config::Disk)
    }

    /// As [`AuthState::load`], reading the DKIM keys from `files`.
    ///
    /// # Errors
    /// As [`AuthState::load`].
    pub fn load_with(
        config: &postern_config::Config,
        files: &dyn postern_config::FileSource,
    ) -> Result<Self, Vec<String>> {
        let signer = postern_auth::Signer::load_with(&config.dkim, files)?;
        let arc = match &config.forwarding.srs_domain {
            Some(d) => postern_auth::ArcKey::load(&config.dkim, d, files).map_err(|e| vec![e.to_string()])?,
            None => None,
        };
        let checker = if config.authentication.verify {
            let d = &config.dns;
            let dns = postern_dns::DnsSettings {
                nameservers: d.nameservers.clone(),
                timeout: d.timeout.0,
                attempts: d.attempts,
            };
            Some(postern_auth::Checker::new(&dns, &config.hostname).map_err(|e| vec![e.to_string()])?)
        } else {
            None
        };
        Ok(Self { signer, checker, arc })
    }
}

impl Context {
    /// A snapshot of the TLS configuration.
    pub fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A snapshot of the `[policy]` network lists.
    pub fn screen_lists(&self) -> Arc<screen::ScreenLists> {
        self.screen_lists.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the `[policy]` network lists.
    pub fn set_screen_lists(&self, lists: screen::ScreenLists) {
        *self.screen_lists.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(lists);
    }

    /// A snapshot of the email authentication state.
    pub fn auth(&self) -> Arc<AuthState> {
        self.auth.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the email authentication state.
    pub fn set_auth(&self, auth: AuthState) {
        *self.auth.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(auth);
    }

    /// Replaces the TLS configuration for sessions that start from now on.
    pub fn set_tls_config(&self, config: Option<Arc<rustls::ServerConfig>>) {
        *self.tls.write().unwrap_or_else(|e| e.into_inner()) = config;
    }
}

/// What a session needs to know about the listener that accepted it.
#[derive(Debug, Clone, Copy)]
pub struct ListenerInfo {
    /// The listener's role: `mx`, `submission` (STARTTLS, AUTH required) or `submissions`
    /// (implicit TLS, AUTH required).
    pub role: Role,
    /// Whether AUTH is offered (under TLS only).
    pub auth: bool,
}

impl From<&Listener> for ListenerInfo {
    fn from(l: &Listener) -> Self {
        Self { role: l.role, auth: l.offers_auth() }
    }
}

/// Binds a listening socket on `addr`. An IPv6 socket is IPv6-only (`IPV6_V6ONLY`), so that
/// `0.0.0.0:25` and `[::]:25` can both be listeners, as Postfix and OpenSMTPD bind them; without
/// it Linux makes `[::]` dual-stack and the IPv4 bind fails with "Address already in use".
///
/// # Errors
/// The socket cannot be made or bound (in use, no permission for a port below 1024).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections on `listener` until `shutdown` becomes true; each session runs in its own
/// task and learns of the shutdown too.
pub async fn serve(listener: TcpListener, info: ListenerInfo, ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer): (_, SocketAddr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: log, breathe, continue.
                tracing::error!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let open = postern_metrics::metrics().session(&info.role.to_string());
        let session = session::run(stream, peer, ctx, info, shutdown);
        tracing::trace!("session task of {} bytes (bench/idle.sh)", std::mem::size_of_val(&session));
        tokio::spawn(async move {
            let _open = open;
            session.await;
        });
    }
}
