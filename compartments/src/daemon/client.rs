//! The `ward` side of the control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::proto::{self, Reply, Request};

/// Talking to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon at the socket.
    #[error("cannot reach wardd at {path}: {source} (is it running? start it with `wardd`)")]
    Connect {
        /// The socket.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The connection broke.
    #[error("wardd connection: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon closed the connection.
    #[error("wardd closed the connection")]
    Closed,
    /// A reply that does not decode.
    #[error("wardd sent something that is not a reply: {0}")]
    BadReply(String),
}

/// A connection to `wardd`.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the daemon at `socket`.
    pub fn connect(socket: &Path) -> Result<Self, ClientError> {
        let stream =
            UnixStream::connect(socket).map_err(|source| ClientError::Connect { path: socket.to_owned(), source })?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Self { stream, reader })
    }

    /// Sends `request` and reads the first reply.
    pub fn request(&mut self, request: &Request) -> Result<Reply, ClientError> {
        self.stream.write_all(proto::encode_request(request).as_bytes())?;
        self.next_reply()
    }

    /// Reads the next reply (for streams such as followed logs).
    pub fn next_reply(&mut self) -> Result<Reply, ClientError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(ClientError::Closed);
        }
        serde_json::from_str(line.trim_end()).map_err(|e| ClientError::BadReply(format!("{e}: {line}")))
    }
}
