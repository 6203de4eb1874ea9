//! Failures of talking to a next hop below its SMTP replies, typed, and the one place where they
//! become a delivery [`Outcome`]. A reply from the peer is classified by
//! [`Outcome::from_reply`]; everything else that ends an attempt (no connection, a broken or
//! timed-out one, a reply that does not parse) is a [`LinkError`], temporary for every
//! recipient it touches (RFC 5321 §4.2.5: the transaction did not complete) with the status
//! RFC 3463 gives it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use postern_types::EnhancedStatus;

use crate::Outcome;

/// Talking to a next hop failed below its replies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The TCP connection was refused or failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// The system's error.
        source: io::Error,
    },
    /// The source address (`[outbound] source_address`) could not be bound.
    #[error("binding {from} to connect to {addr}: {source}")]
    Bind {
        /// The source address.
        from: IpAddr,
        /// The address tried.
        addr: SocketAddr,
        /// The system's error.
        source: io::Error,
    },
    /// The TCP connection was not made in time (`[outbound] connect_timeout`).
    #[error("connect to {addr}: timed out after {after:?}")]
    ConnectTimeout {
        /// The address tried.
        addr: SocketAddr,
        /// The bound that passed.
        after: Duration,
    },
    /// An LMTP server's socket could not be reached.
    #[error("connect to {server}: {source}")]
    ConnectServer {
        /// The server as configured (`unix:/path` or `host:port`).
        server: String,
        /// The system's error.
        source: io::Error,
    },
    /// No reply came in time.
    #[error("timed out after {0:?} waiting for a reply")]
    ReplyTimeout(Duration),
    /// A write did not complete in time.
    #[error("timed out sending")]
    SendTimeout,
    /// Reading from the connection failed.
    #[error("read: {0}")]
    Read(io::Error),
    /// Writing to the connection failed.
    #[error("write: {0}")]
    Write(io::Error),
    /// The peer closed the connection.
    #[error("connection closed by the peer")]
    Closed,
    /// The peer's reply does not parse (RFC 5321 §4.2), or the conversation was driven out of
    /// order.
    #[error(transparent)]
    Protocol(#[from] postern_proto::client::session::ClientError),
    /// The message could not be read from its queue file while it was sent.
    #[error("reading the message from {path}: {source}")]
    ReadMessage {
        /// The queue file.
        path: std::path::PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// The TLS handshake failed or timed out.
    #[error("{0}")]
    Tls(String),
}

impl LinkError {
    /// Whether no connection was made at all (the next address or host may do better).
    pub fn before_connection(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Bind { .. } | Self::ConnectTimeout { .. } | Self::ConnectServer { .. }
        )
    }

    /// The outcome of each recipient whose attempt this ended; `during` says where
    /// (`"lost connection during EHLO"`), or nothing when empty. RFC 3463: 4.4.1 when no
    /// connection was made ("no answer from host"), 4.4.2 when it broke ("bad connection"),
    /// 4.3.0 when our queue file could not be read.
    pub fn outcome(&self, during: &str) -> Outcome {
        let status = match self {
            // Our own queue file: a local problem (RFC 3463 X.3.0), not the peer's.
            Self::ReadMessage { .. } => EnhancedStatus(4, 3, 0),
            _ if self.before_connection() => EnhancedStatus(4, 4, 1),
            _ => EnhancedStatus(4, 4, 2),
        };
        let text = if during.is_empty() { self.to_string() } else { format!("{during}: {self}") };
        Outcome::temp(status, text)
    }
}
