//! Connecting to a next hop. Each address gets `[outbound] connect_timeout` at most, then the
//! next one is tried: a dead IPv6 route costs one timeout, not every delivery's minute.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// Connects to `addr` within `timeout`, from `source` when it is of the same family
/// (`[outbound] source_address`).
///
/// # Errors
/// A description for the log: `connect to ADDR: timed out` or the OS error.
pub async fn connect(addr: SocketAddr, timeout: Duration, source: Option<IpAddr>) -> Result<TcpStream, String> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() };
    let socket = socket.map_err(|e| format!("connect to {addr}: {e}"))?;
    if let Some(src) = source.filter(|s| s.is_ipv4() == addr.is_ipv4()) {
        socket.bind(SocketAddr::new(src, 0)).map_err(|e| format!("binding {src} to connect to {addr}: {e}"))?;
    }
    match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(format!("connect to {addr}: {e}")),
        Err(_) => Err(format!("connect to {addr}: timed out after {timeout:?}")),
    }
}
