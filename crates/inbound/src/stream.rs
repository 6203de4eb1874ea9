//! The connection of one session: clear TCP, or TLS over it after STARTTLS or from the first
//! byte (implicit TLS).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use postern_proto::TlsInfo;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A session's byte stream.
pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while a handshake is in progress or after it failed.
    Gone,
}

impl Conn {
    /// Performs the server handshake over the clear connection, within `timeout`.
    ///
    /// # Errors
    /// The handshake failed or timed out, or the connection is not a clear one; the connection
    /// is unusable afterwards.
    pub(crate) async fn start_tls(&mut self, config: Arc<ServerConfig>, timeout: Duration) -> io::Result<TlsInfo> {
        let Self::Plain(tcp) = std::mem::replace(self, Self::Gone) else {
            return Err(io::Error::other("TLS is already active"));
        };
        let accept = TlsAcceptor::from(config).accept(tcp);
        let tls = tokio::time::timeout(timeout, accept)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let info = crate::tls::info(tls.get_ref().1);
        *self = Self::Tls(Box::new(tls));
        Ok(info)
    }
}

/// Bytes taken from the socket at a time while waiting for commands (a pipelined group fits).
const COMMAND_CHUNK: usize = 4 * 1024;

impl Conn {
    /// Reads what the client sent next into `input`, for the command phases. On a clear
    /// connection it waits for readiness holding no buffer and reads into one on the stack
    /// that lives only while no await is pending, so an idle session holds no read buffer
    /// (a `read_buf` into a reserved `Vec` would keep it allocated while waiting). A TLS
    /// stream keeps rustls' buffers anyway and reads directly.
    ///
    /// # Errors
    /// The socket failed; `Ok(0)` is the end of the stream.
    pub(crate) async fn read_command(&mut self, input: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => loop {
                tcp.readable().await?;
                let mut chunk = [0u8; COMMAND_CHUNK];
                match tcp.try_read(&mut chunk) {
                    Ok(n) => {
                        input.extend_from_slice(&chunk[..n]);
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            },
            Self::Tls(_) | Self::Gone => {
                use tokio::io::AsyncReadExt as _;
                input.reserve(COMMAND_CHUNK);
                self.read_buf(input).await
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::Gone => Poll::Ready(Ok(())),
        }
    }
}
