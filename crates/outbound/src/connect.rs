//! Connecting to a next hop: connection racing over a host's addresses (Happy Eyeballs, RFC
//! 8305 §5 applied to SMTP). The first address gets a head start of `[outbound]
//! attempt_delay` (250 ms, §8's Connection Attempt Delay); then the next attempt starts each
//! time that delay passes or the attempts in flight have all failed, while the earlier ones go
//! on. The first TCP connection to complete wins; the others are closed. Each attempt is
//! bounded by `connect_timeout`, so a dead IPv6 route costs a head start, not a minute.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

use crate::LinkError;

/// Connects to `addr` within `timeout`, from `source` when it is of the same family
/// (`[outbound] source_address`).
///
/// # Errors
/// [`LinkError::Connect`], [`LinkError::Bind`] or [`LinkError::ConnectTimeout`].
pub async fn connect(addr: SocketAddr, timeout: Duration, source: Option<IpAddr>) -> Result<TcpStream, LinkError> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() };
    let socket = socket.map_err(|source| LinkError::Connect { addr, source })?;
    if let Some(from) = source.filter(|s| s.is_ipv4() == addr.is_ipv4()) {
        socket.bind(SocketAddr::new(from, 0)).map_err(|source| LinkError::Bind { from, addr, source })?;
    }
    match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(source)) => Err(LinkError::Connect { addr, source }),
        Err(_) => Err(LinkError::ConnectTimeout { addr, after: timeout }),
    }
}

/// One attempt of a race that did not win.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// The address tried.
    pub addr: SocketAddr,
    /// From its start until it failed, or until the winner made it moot.
    pub took: Duration,
    /// Why it failed; `None`: still pending when another address won (then closed).
    pub error: Option<String>,
}

/// The winner of a race.
#[derive(Debug)]
pub struct Won {
    /// The connection.
    pub stream: TcpStream,
    /// Its address.
    pub addr: SocketAddr,
    /// From the start of its attempt to the completed handshake.
    pub took: Duration,
    /// The attempts that lost, in the order they started.
    pub lost: Vec<Lost>,
}

/// How a race is run: `[outbound] attempt_delay`, `connect_timeout`, `source_address`.
#[derive(Debug, Clone, Copy)]
pub struct Racing {
    /// Head start of each attempt over the next.
    pub delay: Duration,
    /// Bound of each attempt.
    pub timeout: Duration,
    /// Source address of the connections.
    pub source: Option<IpAddr>,
}

/// Races connections to `addrs` (in preference order, see the module documentation).
///
/// # Errors
/// Every attempt failed: each one's failure, in the order they started.
pub async fn race(addrs: &[SocketAddr], how: Racing) -> Result<Won, Vec<Lost>> {
    let mut set: JoinSet<(usize, Result<TcpStream, LinkError>)> = JoinSet::new();
    let mut started: Vec<(SocketAddr, Instant, Option<Lost>)> = Vec::new();
    let mut next_at = Instant::now();
    loop {
        let more = started.len() < addrs.len();
        if more && (set.is_empty() || Instant::now() >= next_at) {
            let (i, addr) = (started.len(), addrs[started.len()]);
            started.push((addr, Instant::now(), None));
            set.spawn(async move { (i, connect(addr, how.timeout, how.source).await) });
            next_at = Instant::now() + how.delay;
            continue;
        }
        let wait =
            async { if more { tokio::time::sleep_until(next_at.into()).await } else { std::future::pending().await } };
        let done = tokio::select! {
            d = set.join_next() => d,
            () = wait => continue,
        };
        let Some(Ok((i, result))) = done else { continue };
        let (addr, at, _) = started[i];
        match result {
            Ok(stream) => {
                let lost = started
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, (a, t, l))| l.clone().unwrap_or(Lost { addr: *a, took: t.elapsed(), error: None }))
                    .collect();
                // Dropping the set aborts the attempts still pending, closing their sockets.
                return Ok(Won { stream, addr, took: at.elapsed(), lost });
            }
            Err(e) => {
                started[i].2 = Some(Lost { addr, took: at.elapsed(), error: Some(e.to_string()) });
                // RFC 8305 §5: a failure starts the next attempt at once.
                next_at = Instant::now();
                if set.is_empty() && started.len() == addrs.len() {
                    return Err(started.into_iter().filter_map(|(_, _, l)| l).collect());
                }
            }
        }
    }
}

/// The log text of a race's losers: `[IP]:PORT failed after 3ms (connect to ...: Connection
/// refused); [IP]:PORT pending after 251ms, closed`.
pub fn describe_losers(lost: &[Lost]) -> String {
    let parts: Vec<String> = lost
        .iter()
        .map(|l| match &l.error {
            Some(e) => format!("{} failed after {}ms ({e})", l.addr, l.took.as_millis()),
            None => format!("{} pending after {}ms, closed", l.addr, l.took.as_millis()),
        })
        .collect();
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn how(delay_ms: u64) -> Racing {
        Racing { delay: Duration::from_millis(delay_ms), timeout: Duration::from_secs(5), source: None }
    }

    #[tokio::test]
    async fn a_refused_address_starts_the_next_at_once() {
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let started = Instant::now();
        let won = race(&[refused, open.local_addr().unwrap()], how(2000)).await.unwrap();
        assert_eq!(won.addr, open.local_addr().unwrap());
        assert!(started.elapsed() < Duration::from_secs(1), "waited for the delay after a failure");
        assert_eq!(won.lost.len(), 1);
        assert!(won.lost[0].error.as_deref().unwrap().contains("refused"), "{:?}", won.lost);
    }

    #[tokio::test]
    async fn every_address_failing_reports_each() {
        let dead: Vec<SocketAddr> =
            (0..2).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()).collect();
        let lost = race(&dead, how(50)).await.unwrap_err();
        assert_eq!(lost.iter().map(|l| l.addr).collect::<Vec<_>>(), dead);
        assert!(describe_losers(&lost).contains("failed after"));
    }
}
