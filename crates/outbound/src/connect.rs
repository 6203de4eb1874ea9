//! Connecting to a next hop. Each address gets `[outbound] connect_timeout` at most, then the
//! next one is tried: a dead IPv6 route costs one timeout, not every delivery's minute.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// Connects to `addr` within `timeout`.
///
/// # Errors
/// A description for the log: `connect to ADDR: timed out` or the OS error.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(format!("connect to {addr}: {e}")),
        Err(_) => Err(format!("connect to {addr}: timed out after {timeout:?}")),
    }
}
