//! The `ward` side of the control socket.
//!
//! Every wait is bounded: a reply must come within [`REPLY_TIMEOUT`] (more
//! for a stop, by its own time-out), a request must be taken within
//! [`WRITE_TIMEOUT`]; only a followed stream (`ward logs -f`, `ward
//! audit -f`) and `ward wait` wait as long as the compartment runs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::proto::{self, Reply, Request};

/// How long a reply may take (beyond a stop's own time-out).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long wardd may take to read a request.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest path a UNIX socket address holds (`sun_path`, less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Talking to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the socket.
    #[error("cannot reach wardd at {path}: {source} (is it running? start it with `wardd`)")]
    NotRunning {
        /// The socket.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Something else is at the path.
    #[error("{path} is {kind}, not wardd's socket (--socket names the socket wardd serves)")]
    NotASocket {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The path cannot be a socket address.
    #[error("the socket path {path} is {len} bytes; a UNIX socket path has at most {MAX_SOCKET_PATH}")]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// Connecting failed otherwise (no permission, ...).
    #[error("cannot reach wardd at {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// wardd did not answer in time.
    #[error("wardd at {path} did not answer within {} s", .after.as_secs())]
    NoReply {
        /// The socket.
        path: PathBuf,
        /// How long we waited.
        after: Duration,
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
    path: PathBuf,
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    /// The read time-out in force.
    waiting: Option<Duration>,
}

impl Client {
    /// Connects to the daemon at `socket`.
    pub fn connect(socket: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(socket).map_err(|source| connect_error(socket, source))?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Self { path: socket.to_owned(), stream, reader, waiting: None })
    }

    /// Sends `request` and reads the first reply.
    pub fn request(&mut self, request: &Request) -> Result<Reply, ClientError> {
        let timeout = match request {
            // wardd answers a stop once the VMM is gone: after its time-out.
            Request::Stop { timeout_ms, .. } => {
                Some(REPLY_TIMEOUT.saturating_add(Duration::from_millis(timeout_ms.unwrap_or(5_000))))
            }
            // A wait ends when the compartment does.
            Request::Wait { .. } => None,
            _ => Some(REPLY_TIMEOUT),
        };
        self.wait_at_most(timeout)?;
        self.stream.write_all(proto::encode_request(request).as_bytes())?;
        self.read_reply()
    }

    /// Reads the next reply of a stream (followed logs), which comes when
    /// the compartment prints: no time-out.
    pub fn next_reply(&mut self) -> Result<Reply, ClientError> {
        self.wait_at_most(None)?;
        self.read_reply()
    }

    fn wait_at_most(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        if self.waiting != timeout {
            self.stream.set_read_timeout(timeout)?;
            self.waiting = timeout;
        }
        Ok(())
    }

    fn read_reply(&mut self) -> Result<Reply, ClientError> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => return Err(ClientError::Closed),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(ClientError::NoReply { path: self.path.clone(), after: self.waiting.unwrap_or_default() });
            }
            Err(e) => return Err(e.into()),
        }
        serde_json::from_str(line.trim_end()).map_err(|e| ClientError::BadReply(format!("{e}: {line}")))
    }
}

/// Why connecting to `path` failed, in words that say what to do.
fn connect_error(path: &Path, source: std::io::Error) -> ClientError {
    use std::os::unix::fs::FileTypeExt;
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return ClientError::PathTooLong { path: path.to_owned(), len };
    }
    if let Ok(meta) = std::fs::metadata(path) {
        let kind = meta.file_type();
        let what = if kind.is_socket() {
            None
        } else if kind.is_dir() {
            Some("a directory")
        } else if kind.is_file() {
            Some("a regular file")
        } else {
            Some("not a socket")
        };
        if let Some(kind) = what {
            return ClientError::NotASocket { path: path.to_owned(), kind };
        }
    }
    match source.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning { path: path.to_owned(), source }
        }
        _ => ClientError::Connect { path: path.to_owned(), source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ward-client-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn only_a_missing_or_dead_socket_gets_the_start_wardd_hint() {
        let dir = scratch("hints");
        let hint = "start it with `wardd`";
        let e = Client::connect(&dir.join("missing.sock")).unwrap_err();
        assert!(matches!(e, ClientError::NotRunning { .. }) && e.to_string().contains(hint), "{e}");
        std::fs::write(dir.join("file"), "").unwrap();
        let e = Client::connect(&dir.join("file")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{} is a regular file, not wardd's socket (--socket names the socket wardd serves)",
                dir.join("file").display()
            )
        );
        let e = Client::connect(&dir).unwrap_err();
        assert!(matches!(e, ClientError::NotASocket { kind: "a directory", .. }), "{e}");
        let long = dir.join("x".repeat(120));
        let e = Client::connect(&long).unwrap_err();
        assert!(matches!(e, ClientError::PathTooLong { .. }) && !e.to_string().contains(hint), "{e}");
        // A socket nobody serves any more (a dead wardd's).
        drop(std::os::unix::net::UnixListener::bind(dir.join("dead.sock")).unwrap());
        let e = Client::connect(&dir.join("dead.sock")).unwrap_err();
        assert!(matches!(e, ClientError::NotRunning { .. }), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_daemon_that_never_answers_is_a_time_out_not_a_hang() {
        let dir = scratch("silent");
        let path = dir.join("silent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut client = Client::connect(&path).unwrap();
        // A short wait, as `request` would set a long one.
        client.wait_at_most(Some(Duration::from_millis(100))).unwrap();
        let e = client.read_reply().unwrap_err();
        assert!(matches!(e, ClientError::NoReply { .. }), "{e}");
        assert!(e.to_string().contains("did not answer"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
