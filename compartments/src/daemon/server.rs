//! The control socket: accepting `ward`'s connections, checking who they
//! come from, and answering requests.
//!
//! The socket is mode 0600 and every connection's peer credentials are
//! checked: root or the daemon's own user, nobody else. Each connection is
//! served on its own thread, one request per line. A line that is not a
//! valid request gets an error reply; one that is too long gets an error
//! reply and the connection is closed. Nothing a client sends can stop the
//! daemon.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::lockfile::{LockError, LockFile};
use super::proto::{self, ErrorKind, MAX_LINE, Reply, Request, State, VERSION};
use super::supervisor::{DEFAULT_STOP_TIMEOUT, Supervisor};
use crate::console_log;

/// Serving the socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding or configuring the socket failed.
    #[error("control socket {path}: {source}")]
    Socket {
        /// Its path.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Its lock file could not be opened.
    #[error(transparent)]
    Lock(LockError),
}

/// The daemon's claim on its control socket: a POSIX lock on
/// `<socket>.lock`, held while the daemon lives. "Another wardd serves this
/// socket" means another live process holds the lock, not that something
/// answers a connect: a process the daemon forked keeps a copy of the
/// listening socket until it execs, and would otherwise make a restarted
/// daemon believe the old one still serves. POSIX record locks belong to
/// the process, are not inherited by its children, and go when it dies.
#[derive(Debug)]
pub struct SocketClaim {
    path: std::path::PathBuf,
    _lock: LockFile,
    /// The socket file was made by this daemon (and is removed with it).
    bound: bool,
}

impl SocketClaim {
    /// Claims `path` for this daemon, or says which wardd has it.
    pub fn take(path: &std::path::Path) -> Result<Self, ServerError> {
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        match LockFile::try_lock(std::path::Path::new(&lock_path)) {
            Ok(lock) => Ok(Self { path: path.to_owned(), _lock: lock, bound: false }),
            Err(LockError::Held { holder }) => Err(ServerError::Socket {
                path: path.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    match holder {
                        Some(pid) => format!("another wardd (pid {pid}) is serving it"),
                        None => "another wardd is serving it".to_owned(),
                    },
                ),
            }),
            Err(e @ LockError::Open { .. }) => Err(ServerError::Lock(e)),
        }
    }

    /// Binds the control socket, mode 0600, replacing a stale one (a socket
    /// file only: anything else at the path is refused, not removed).
    pub fn bind(&mut self) -> Result<UnixListener, ServerError> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let path = &self.path;
        let err = |source| ServerError::Socket { path: path.to_owned(), source };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
            Ok(_) => {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "something that is not a socket is there; wardd removes only a socket it finds",
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let listener = UnixListener::bind(path).map_err(err)?;
        self.bound = true;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        Ok(listener)
    }
}

impl Drop for SocketClaim {
    /// The socket file goes with the daemon that claimed it (whatever the
    /// way out: a clean stop, or a failure after binding).
    fn drop(&mut self) {
        if self.bound {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Accepts connections until `stop` is set.
pub fn serve(listener: &UnixListener, sup: &Arc<Supervisor>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let sup = Arc::clone(sup);
                let spawned =
                    std::thread::Builder::new().name("wardd-conn".into()).spawn(move || connection(stream, &sup));
                if let Err(e) = spawned {
                    log::warn!("cannot serve a connection: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                log::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The peer's uid, from SO_PEERCRED.
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>()).ok()?;
    // SAFETY: `cred` and `len` are valid for writing and sized for
    // SO_PEERCRED; the fd is the open connection's.
    let rc = unsafe {
        libc::getsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &raw mut len)
    };
    (rc == 0).then_some(cred.uid)
}

fn send(stream: &mut UnixStream, reply: &Reply) -> bool {
    stream.write_all(proto::encode_reply(reply).as_bytes()).is_ok()
}

fn connection(mut stream: UnixStream, sup: &Supervisor) {
    let _ = stream.set_nonblocking(false);
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    match peer_uid(&stream) {
        Some(uid) if uid == 0 || uid == me => {}
        other => {
            let _ = sup.store().audit("refused", "-", &format!("connection from uid {other:?}"));
            send(&mut stream, &Reply::error(ErrorKind::Forbidden, "you may not use this wardd"));
            return;
        }
    }
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    loop {
        let mut line = Vec::new();
        // Read at most one byte past the limit, so a huge line cannot make
        // us hold it all.
        let n = match (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if n > MAX_LINE {
            send(&mut stream, &Reply::error(ErrorKind::TooLarge, format!("request over {MAX_LINE} bytes")));
            return;
        }
        let text = String::from_utf8_lossy(&line);
        let reply = match proto::parse_request(text.trim_end()) {
            Err(reply) => reply,
            Ok(Request::Logs { name, from, follow }) => {
                stream_logs(&mut stream, sup, &name, from, follow);
                continue;
            }
            Ok(request) => handle(sup, request),
        };
        if !send(&mut stream, &reply) {
            return;
        }
    }
}

/// Answers one request.
pub fn handle(sup: &Supervisor, request: Request) -> Reply {
    let result = match request {
        Request::Ping => Ok(Reply::ok()),
        Request::Create(args) => sup.create(&args).map(|()| Reply::ok()),
        Request::Start { name } => sup.start(&name).map(|()| Reply::ok()),
        Request::Stop { name, timeout_ms } => {
            let timeout = timeout_ms.map_or(DEFAULT_STOP_TIMEOUT, Duration::from_millis);
            sup.stop(&name, timeout, false).map(|()| Reply::ok())
        }
        Request::Kill { name } => sup.stop(&name, Duration::ZERO, true).map(|()| Reply::ok()),
        Request::Remove { name } => sup.remove(&name).map(|()| Reply::ok()),
        Request::Input { name, data, end } => sup.input(&name, &data, end).map(|()| Reply::ok()),
        Request::List => sup.list().map(|compartments| Reply::List { version: VERSION, compartments }),
        Request::Inspect { name } => sup.inspect(&name).map(|record| Reply::Inspect { version: VERSION, record }),
        Request::Audit { limit } => {
            sup.store().audit_tail(limit).map(|entries| Reply::Audit { version: VERSION, entries }).map_err(Into::into)
        }
        Request::Logs { .. } => Ok(Reply::error(ErrorKind::Malformed, "logs is streamed")),
        Request::Pending => Ok(Reply::Pending { version: VERSION, asks: sup.pending() }),
        Request::Answer { id, allow } => sup.answer(id, allow).map(|()| Reply::ok()),
    };
    result.unwrap_or_else(Reply::from)
}

/// Sends console history from `from`, then, with `follow`, new output as
/// it comes until the compartment stops.
fn stream_logs(stream: &mut UnixStream, sup: &Supervisor, name: &str, from: u64, follow: bool) {
    let path = sup.console_log(name);
    match sup.state_of(name) {
        Ok(Some(_)) => {}
        Ok(None) => {
            send(stream, &Reply::error(ErrorKind::NotFound, format!("no compartment {name}")));
            return;
        }
        Err(e) => {
            send(stream, &Reply::from(e));
            return;
        }
    }
    let history = console_log::read_history(&path).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(history.len());
    let text = String::from_utf8_lossy(&history[start..]).into_owned();
    if !send(stream, &Reply::Log { version: VERSION, text, next: history.len() as u64 }) {
        return;
    }
    if !follow {
        return;
    }
    // Follow the current file (the history above may include the rotated one).
    let mut offset = std::fs::metadata(&path).map_or(0, |m| m.len());
    loop {
        let state = sup.state_of(name).ok().flatten();
        if let Ok((bytes, next)) = console_log::read_from(&path, offset) {
            if !bytes.is_empty() {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                if !send(stream, &Reply::Log { version: VERSION, text, next }) {
                    return;
                }
            }
            offset = next;
        }
        match state {
            Some((State::Running | State::Starting | State::Stopping | State::Restarting | State::Created, _)) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Some((State::Stopped, exit_code)) => {
                // One last read: the VMM may have written just before it ended.
                if let Ok((bytes, next)) = console_log::read_from(&path, offset)
                    && !bytes.is_empty()
                {
                    send(
                        stream,
                        &Reply::Log { version: VERSION, text: String::from_utf8_lossy(&bytes).into_owned(), next },
                    );
                }
                send(stream, &Reply::Exited { version: VERSION, exit_code });
                return;
            }
            None => {
                send(stream, &Reply::Exited { version: VERSION, exit_code: None });
                return;
            }
        }
    }
}
