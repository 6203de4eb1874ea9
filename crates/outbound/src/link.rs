//! The I/O half of a client conversation: a connection and the sans-I/O
//! [`postern_proto::client::session::Session`] it carries. [`Link::next_event`] performs the
//! session's steps (writes, reads with a timeout) until it reports an [`Event`]; the SMTP
//! delivery, LMTP delivery and `postern doctor` drive their conversations through it, and add
//! only what is theirs (TLS policy, how replies become outcomes, what to probe).

use std::time::Duration;

use std::path::Path;

use postern_proto::client::session::{Answer, ClientError, Event, Session, Stage, Step};
use postern_proto::client::{DotStuffed, Stuffer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::LinkError;
use crate::transaction::Body;

/// The size of the pieces the message is sent in after DATA, in bytes: a delivery holds one
/// piece of the stuffed message, not a whole copy.
pub const DATA_PIECE: usize = 32 * 1024;

/// The size of the pieces a message is read from its queue file in, bytes: one read on the
/// blocking pool per piece (a message of 100 KiB takes two).
const FILE_PIECE: usize = 64 * 1024;

/// Reads a queue file in pieces on the blocking pool, one hop per piece: the file is opened by
/// the first and read with `pread` at the offset asked, into a buffer that goes back and forth.
struct PieceReader {
    path: std::path::PathBuf,
    file: Option<std::sync::Arc<std::fs::File>>,
    piece: Vec<u8>,
}

impl PieceReader {
    /// Fills `piece[..want]` with the bytes at `at`.
    async fn read(self, at: u64, want: usize) -> std::io::Result<Self> {
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt as _;
            let Self { path, file, mut piece } = self;
            let file = match file {
                Some(f) => f,
                None => std::sync::Arc::new(std::fs::File::open(&path)?),
            };
            file.read_exact_at(&mut piece[..want], at)?;
            Ok(Self { path, file: Some(file), piece })
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// A connection and its conversation.
pub struct Link<S> {
    /// The connection.
    pub stream: S,
    /// The conversation.
    pub session: Session,
    /// False after an I/O error: the connection is of no further use.
    intact: bool,
    /// Read buffer, reused: no zero-filling per read, and a delivery's future stays small.
    rbuf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Link<S> {
    /// `session` on `stream`.
    pub fn new(stream: S, session: Session) -> Self {
        Self { stream, session, intact: true, rbuf: Vec::with_capacity(8192) }
    }

    /// Whether the connection may carry another transaction (see
    /// [`Session::reusable`]), and no I/O on it failed.
    pub fn reusable(&self) -> bool {
        self.intact && self.session.reusable()
    }

    /// Performs the session's steps until its next event; `timeout` bounds each write and
    /// each wait for a reply.
    ///
    /// # Errors
    /// [`LinkError`] when the connection broke, timed out or the peer's reply does not parse;
    /// the link is then not reusable.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<Event, LinkError> {
        let result = self.steps(timeout).await;
        self.intact &= result.is_ok();
        result
    }

    async fn steps(&mut self, timeout: Duration) -> Result<Event, LinkError> {
        loop {
            match self.session.poll()? {
                Step::Send(bytes) => self.write(&bytes, timeout).await?,
                Step::Read => self.read(timeout).await?,
                Step::Event(e) => return Ok(e),
            }
        }
    }

    async fn write(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), LinkError> {
        match tokio::time::timeout(timeout, self.stream.write_all(bytes)).await {
            Err(_) => Err(LinkError::SendTimeout),
            Ok(r) => r.map_err(LinkError::Write),
        }
    }

    async fn read(&mut self, timeout: Duration) -> Result<(), LinkError> {
        self.rbuf.clear();
        self.rbuf.reserve(8192);
        match tokio::time::timeout(timeout, self.stream.read_buf(&mut self.rbuf)).await {
            Ok(Ok(n)) if n > 0 => {
                self.session.feed(&self.rbuf);
                Ok(())
            }
            Ok(Ok(_)) => Err(LinkError::Closed),
            Ok(Err(e)) => Err(LinkError::Read(e)),
            Err(_) => Err(LinkError::ReplyTimeout(timeout)),
        }
    }

    /// Sends `message` (CRLF line endings) after [`Event::SendContent`], dot-stuffed in pieces
    /// of about [`DATA_PIECE`] bytes (read from its file one piece at a time), each write
    /// bounded by `timeout`; the reply is then awaited.
    ///
    /// # Errors
    /// [`LinkError`] when a write fails or times out, or the file cannot be read: the
    /// message was not ended, so the peer discards what it got (RFC 5321 §4.1.1.4).
    pub async fn send_content(&mut self, message: &Body, timeout: Duration) -> Result<(), LinkError> {
        let sent = match message {
            Body::Bytes(bytes) => self.send_bytes(bytes, timeout).await,
            Body::File { path, offset, len } => self.send_file(path, *offset, *len, timeout).await,
        };
        if sent.is_err() {
            self.intact = false;
        }
        sent?;
        self.session.content_sent()?;
        Ok(())
    }

    async fn send_bytes(&mut self, message: &[u8], timeout: Duration) -> Result<(), LinkError> {
        for piece in DotStuffed::new(message, DATA_PIECE) {
            self.write(&piece, timeout).await?;
        }
        Ok(())
    }

    async fn send_file(&mut self, path: &Path, offset: u64, len: u64, timeout: Duration) -> Result<(), LinkError> {
        let read_error = |source| LinkError::ReadMessage { path: path.to_owned(), source };
        let mut reader = PieceReader { path: path.to_owned(), file: None, piece: vec![0; FILE_PIECE] };
        let mut stuffer = Stuffer::default();
        let mut dots = Vec::new();
        let mut at = 0;
        while at < len {
            let want = usize::try_from((len - at).min(FILE_PIECE as u64)).unwrap_or(FILE_PIECE);
            reader = reader.read(offset + at, want).await.map_err(read_error)?;
            let piece = &reader.piece[..want];
            // The piece as it was read, a dot written before each line that starts with one.
            dots.clear();
            stuffer.dots(piece, &mut dots);
            let mut from = 0;
            for &dot in &dots {
                self.write(&piece[from..dot], timeout).await?;
                self.write(b".", timeout).await?;
                from = dot;
            }
            self.write(&piece[from..], timeout).await?;
            at += want as u64;
        }
        let mut end = Vec::with_capacity(5);
        stuffer.finish(&mut end);
        self.write(&end, timeout).await
    }

    /// The events of a transaction begun on the session: the message sent on 354, its reply
    /// then awaited for `timeouts.1` (`[outbound] data_timeout`; every other reply and write
    /// for `timeouts.0`), one answer per recipient at the end.
    ///
    /// # Errors
    /// [`LinkError`] when the connection broke or the conversation went out of step.
    pub async fn complete_transaction(
        &mut self,
        message: &Body,
        timeouts: (Duration, Duration),
    ) -> Result<Vec<Answer>, LinkError> {
        let (command, data) = timeouts;
        let mut timeout = command;
        loop {
            match self.next_event(timeout).await? {
                Event::SendContent => {
                    self.send_content(message, command).await?;
                    timeout = data;
                }
                Event::Done(answers) => return Ok(answers),
                _ => return Err(ClientError::OutOfOrder("a transaction", "another stage ended").into()),
            }
        }
    }

    /// Ends the conversation politely: QUIT and its reply, within `timeout`; errors ignored.
    pub async fn quit(&mut self, timeout: Duration) {
        if self.intact && self.session.quit().is_ok() {
            let _ = self.next_event(timeout).await;
        }
    }

    /// The connection and the conversation, apart: to carry the conversation on over TLS
    /// after [`Event::StartTls`].
    pub fn into_parts(self) -> (S, Session) {
        (self.stream, self.session)
    }

    /// The command whose reply the session awaits, to say where a conversation broke.
    pub fn awaiting(&self) -> Option<Stage> {
        self.session.awaiting()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue file read in pieces gives the message's bytes, and a file shorter than the
    /// message it announces is an error, never a short message.
    #[test]
    fn a_queue_file_is_read_in_pieces() {
        let dir = std::env::temp_dir().join(format!("postern-pieces-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("q.msg");
        let head = b"Postern-Envelope: 3\nenv";
        let message: Vec<u8> = (0..FILE_PIECE * 2 + 100).map(|i| b"ab.\r\n"[i % 5]).collect();
        std::fs::write(&path, [&head[..], &message].concat()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut reader = PieceReader { path: path.clone(), file: None, piece: vec![0; FILE_PIECE] };
        let mut got = Vec::new();
        let mut at = 0;
        while at < message.len() {
            let want = (message.len() - at).min(FILE_PIECE);
            reader = rt.block_on(reader.read((head.len() + at) as u64, want)).unwrap();
            got.extend_from_slice(&reader.piece[..want]);
            at += want;
        }
        assert_eq!(got, message);
        let past_the_end = (head.len() + message.len() - 10) as u64;
        assert!(rt.block_on(reader.read(past_the_end, 64)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
