//! The inbound edge: tokio listeners, connection limits, and the per-connection driver that
//! performs each [`Step`](postern_proto::Step) of the sans-I/O session (socket reads and writes
//! with per-stage timeouts, recipient policy, the spool commit).

mod commit;
mod limits;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use postern_config::Live;
use postern_queue::Queue;
use postern_spool::Spool;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use limits::ConnectionLimits;

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
}

/// Accepts connections on `listener` until `shutdown` becomes true; each session runs in its own
/// task and learns of the shutdown too.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
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
        tokio::spawn(async move { session::run(stream, peer, ctx, shutdown).await });
    }
}
