//! The control socket: accepting `ward`'s connections, checking who they
//! come from, and answering requests.
//!
//! The socket is mode 0600 and every connection's peer credentials are
//! checked: root or the daemon's own user, nobody else. Each connection is
//! served on its own thread, one request per line. A line that is not a
//! valid request gets an error reply; one that is too long gets an error
//! reply and the connection is closed. Nothing a client sends can stop the
//! daemon, and nothing a client leaves behind holds it: at most
//! [`MAX_CONNECTIONS`] are served at once (the next get a `busy` reply),
//! a connection that sends nothing for [`IDLE_TIMEOUT`] or leaves a line
//! unfinished for [`LINE_TIMEOUT`] is closed, a reply not taken within
//! [`WRITE_TIMEOUT`] ends the connection, and a follower of `ward logs
//! -f` that went away is noticed at once, not when the compartment next
//! prints.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::proto::{self, AuditEntry, ErrorKind, LogsArgs, MAX_LINE, Reply, Request, State, VERSION};
use super::supervisor::{DEFAULT_STOP_TIMEOUT, OpError, Supervisor};
use ward_sandbox::lockfile::{LockError, LockFile};
use ward_sandbox::sockets::{peer_gone, peer_uid};
use ward_vmm_process::console_lines::{self, Reader, View};
use ward_vmm_process::console_log;

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

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// A connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request line must arrive whole within this long of its first byte.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply the client does not take within this long ends the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a follower's compartment is looked at for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(50);

/// Counts a connection while its thread serves it.
struct Served(Arc<AtomicUsize>);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections until `stop` is set.
pub fn serve(listener: &UnixListener, sup: &Arc<Supervisor>, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                if active.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::Relaxed);
                    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
                    let busy = format!("wardd is busy: {MAX_CONNECTIONS} connections are open; try again");
                    send(&mut stream, &Reply::error(ErrorKind::Busy, busy));
                    continue;
                }
                let served = Served(Arc::clone(&active));
                let sup = Arc::clone(sup);
                let spawned = std::thread::Builder::new().name("wardd-conn".into()).spawn(move || {
                    let _served = served;
                    connection(stream, &sup);
                });
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

fn send(stream: &mut UnixStream, reply: &Reply) -> bool {
    stream.write_all(proto::encode_reply(reply).as_bytes()).is_ok()
}

fn connection(mut stream: UnixStream, sup: &Supervisor) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let me = ward_sandbox::process::euid();
    match peer_uid(&stream) {
        Some(uid) if uid == 0 || uid == me => {}
        other => {
            let _ = sup.store().audit("refused", "-", &format!("connection from uid {other:?}"));
            send(&mut stream, &Reply::error(ErrorKind::Forbidden, "you may not use this wardd"));
            return;
        }
    }
    let mut lines = Lines::default();
    loop {
        let line = match lines.next(&stream, IDLE_TIMEOUT, LINE_TIMEOUT) {
            Ok(line) => line,
            Err(LineEnd::TooLong) => {
                send(&mut stream, &Reply::error(ErrorKind::TooLarge, format!("request over {MAX_LINE} bytes")));
                return;
            }
            Err(LineEnd::Slow) => {
                let slow = format!("request not finished within {} s", LINE_TIMEOUT.as_secs());
                send(&mut stream, &Reply::error(ErrorKind::Malformed, slow));
                return;
            }
            Err(LineEnd::Closed) => return,
        };
        let text = String::from_utf8_lossy(&line);
        let reply = match proto::parse_request(text.trim_end()) {
            Err(reply) => reply,
            Ok(Request::Logs(args)) => {
                stream_logs(&mut stream, sup, &args);
                continue;
            }
            Ok(Request::Audit { limit, follow: true, compartment, kinds }) => {
                stream_audit(&mut stream, sup, limit, &AuditFilter { compartment, kinds });
                continue;
            }
            Ok(Request::Wait { name }) => {
                wait_for_end(&mut stream, sup, &name);
                continue;
            }
            Ok(request) => handle(sup, request),
        };
        if !send(&mut stream, &reply) {
            return;
        }
    }
}

/// How reading a request line ended without one.
#[derive(Debug, PartialEq, Eq)]
enum LineEnd {
    /// Closed, broken, or idle for [`IDLE_TIMEOUT`].
    Closed,
    /// Over [`MAX_LINE`] bytes.
    TooLong,
    /// Begun but not finished within [`LINE_TIMEOUT`].
    Slow,
}

/// Request lines from a connection, each within its deadlines.
#[derive(Debug, Default)]
struct Lines {
    /// Bytes received after the last line.
    pending: Vec<u8>,
}

impl Lines {
    /// The next line; `idle` bounds the wait for its first byte, `whole`
    /// the time from its first byte to its end.
    fn next(&mut self, mut stream: &UnixStream, idle: Duration, whole: Duration) -> Result<Vec<u8>, LineEnd> {
        let idle_since = Instant::now();
        let mut begun = (!self.pending.is_empty()).then_some(idle_since);
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                return Ok(self.pending.drain(..=end).collect());
            }
            if self.pending.len() > MAX_LINE {
                return Err(LineEnd::TooLong);
            }
            let deadline = begun.map_or(idle_since + idle, |at| at + whole);
            let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                return Err(if begun.is_some() { LineEnd::Slow } else { LineEnd::Closed });
            };
            if stream.set_read_timeout(Some(left)).is_err() {
                return Err(LineEnd::Closed);
            }
            match stream.read(&mut chunk) {
                Ok(0) => return Err(LineEnd::Closed),
                Ok(n) => {
                    begun.get_or_insert_with(Instant::now);
                    self.pending.extend_from_slice(&chunk[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Err(LineEnd::Closed),
            }
        }
    }
}

/// Answers one request.
pub fn handle(sup: &Supervisor, request: Request) -> Reply {
    let result = match request {
        Request::Ping {} => Ok(Reply::ok()),
        Request::Create(args) => sup.create(&args).map(|()| Reply::ok()),
        Request::Start { name } => sup.start(&name).map(noted),
        Request::Stop { name, timeout_ms } => {
            let timeout = timeout_ms.map_or(DEFAULT_STOP_TIMEOUT, Duration::from_millis);
            sup.stop(&name, timeout, false).map(noted)
        }
        Request::Kill { name } => sup.stop(&name, Duration::ZERO, true).map(noted),
        Request::Remove { name } => sup.remove(&name).map(|()| Reply::ok()),
        Request::Input { name, data, end } => sup.input(&name, &data, end).map(|()| Reply::ok()),
        Request::List {} => sup.list().map(|compartments| Reply::List { version: VERSION, compartments }),
        Request::Inspect { name } => {
            sup.inspect(&name).map(|details| Reply::Inspect { version: VERSION, details: Box::new(details) })
        }
        Request::Audit { limit, compartment, kinds, .. } => {
            let filter = AuditFilter { compartment, kinds };
            let entries = sup.store().audit_tail(limit, |e| filter.keeps(e));
            entries.map(|entries| Reply::Audit { version: VERSION, entries }).map_err(Into::into)
        }
        Request::Logs(_) | Request::Wait { .. } => Ok(Reply::error(ErrorKind::Malformed, "this is streamed")),
        Request::Pending {} => Ok(Reply::Pending { version: VERSION, asks: sup.pending() }),
        Request::Answer { id, allow } => sup.answer(id, allow).map(|()| Reply::ok()),
    };
    result.unwrap_or_else(Reply::from)
}

/// `ok`, or `ok` with the note that nothing needed doing.
fn noted(note: Option<String>) -> Reply {
    note.map_or_else(Reply::ok, Reply::noted)
}

/// Which audit entries a client asked for.
#[derive(Debug)]
struct AuditFilter {
    /// About this compartment (as subject or peer), if set.
    compartment: Option<String>,
    /// Of these kinds, if any.
    kinds: Vec<String>,
}

impl AuditFilter {
    fn keeps(&self, entry: &AuditEntry) -> bool {
        self.compartment.as_deref().is_none_or(|name| entry.concerns(name))
            && (self.kinds.is_empty() || self.kinds.contains(&entry.kind))
    }
}

/// Sends the last `limit` audit entries `filter` keeps, then each new one
/// as it is written, until the client goes away.
fn stream_audit(stream: &mut UnixStream, sup: &Supervisor, limit: usize, filter: &AuditFilter) {
    let store = sup.store();
    // The newest id first, then the tail up to it: nothing written in
    // between is lost or sent twice.
    let (mut last, tail) = match store.audit_last_id().and_then(|last| {
        let tail = store.audit_tail(limit, |e| e.id <= last && filter.keeps(e))?;
        Ok((last, tail))
    }) {
        Ok(found) => found,
        Err(e) => {
            send(stream, &Reply::from(OpError::from(e)));
            return;
        }
    };
    if !send(stream, &Reply::Audit { version: VERSION, entries: tail }) {
        return;
    }
    while !peer_gone(stream, FOLLOW_POLL) {
        let Ok(entries) = store.audit_after(last) else { continue };
        let Some(newest) = entries.last().map(|e| e.id) else { continue };
        last = newest;
        let entries: Vec<AuditEntry> = entries.into_iter().filter(|e| filter.keeps(e)).collect();
        if !entries.is_empty() && !send(stream, &Reply::Audit { version: VERSION, entries }) {
            return;
        }
    }
}

/// Answers `wait`: [`Reply::Exited`] once `name`'s current run has ended
/// (at once if it is not running; a compartment created but never started
/// is waited for until it has run). A client that goes away ends the wait.
fn wait_for_end(stream: &mut UnixStream, sup: &Supervisor, name: &str) {
    loop {
        let Some((state, exit_code)) = known_state(stream, sup, name) else { return };
        if matches!(state, State::Stopped | State::Restarting) {
            send(stream, &Reply::Exited { version: VERSION, exit_code });
            return;
        }
        if peer_gone(stream, FOLLOW_POLL) {
            return;
        }
    }
}

/// The state and last exit code of `name`; `None` once the client has
/// been told why there is none (no such compartment, or the store failed).
fn known_state(stream: &mut UnixStream, sup: &Supervisor, name: &str) -> Option<(State, Option<i32>)> {
    match sup.state_of(name) {
        Ok(Some(found)) => Some(found),
        Ok(None) => {
            send(stream, &Reply::error(ErrorKind::NotFound, format!("no compartment {name}")));
            None
        }
        Err(e) => {
            send(stream, &Reply::from(e));
            None
        }
    }
}

/// Sends console history as `args` asks (from its offset, its last lines,
/// since a time, with or without stamps and markers), then, with
/// `follow`, new output as it comes until the compartment stops.
fn stream_logs(stream: &mut UnixStream, sup: &Supervisor, args: &LogsArgs) {
    let name = args.name.as_str();
    if known_state(stream, sup, name).is_none() {
        return;
    }
    let path = sup.console_log(name);
    let view = View { since_ms: args.since_ms, timestamps: args.timestamps, console_only: args.console_only };
    let mut reader = Reader::new(view);
    let history = console_log::read_history(&path).unwrap_or_default();
    let mut start = usize::try_from(args.from).unwrap_or(usize::MAX).min(history.len());
    if let Some(lines) = args.tail {
        start = start.max(console_lines::tail_start(&history, lines));
    }
    let mut shown = reader.read(&history[start..]);
    if !args.follow {
        shown.extend(reader.finish());
    }
    let log = |bytes: &[u8], next: u64| Reply::Log {
        version: VERSION,
        text: String::from_utf8_lossy(bytes).into_owned(),
        next,
    };
    if !send(stream, &log(&shown, history.len() as u64)) || !args.follow {
        return;
    }
    // Follow the current file (the history above may include the rotated one).
    let mut offset = std::fs::metadata(&path).map_or(0, |m| m.len());
    // What the current file shows from `offset` on (which moves past it).
    let read_on = |offset: &mut u64, reader: &mut Reader| -> Vec<u8> {
        let Ok((bytes, next)) = console_log::read_from(&path, *offset) else { return Vec::new() };
        *offset = next;
        reader.read(&bytes)
    };
    loop {
        let state = sup.state_of(name).ok().flatten();
        let shown = read_on(&mut offset, &mut reader);
        if !shown.is_empty() && !send(stream, &log(&shown, offset)) {
            return;
        }
        match state {
            Some((State::Running | State::Starting | State::Stopping | State::Restarting | State::Created, _)) => {
                if peer_gone(stream, FOLLOW_POLL) {
                    return;
                }
            }
            Some((State::Stopped, exit_code)) => {
                // One last read: the VMM may have written just before it
                // ended (and wardd its marker after).
                let mut last = read_on(&mut offset, &mut reader);
                last.extend(reader.finish());
                if !last.is_empty() {
                    send(stream, &log(&last, offset));
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

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(200);

    #[test]
    fn lines_are_split_and_kept_across_reads() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(b"one\ntw").unwrap();
        let mut lines = Lines::default();
        assert_eq!(lines.next(&ours, SHORT, SHORT).unwrap(), b"one\n");
        theirs.write_all(b"o\n").unwrap();
        assert_eq!(lines.next(&ours, SHORT, SHORT).unwrap(), b"two\n");
        drop(theirs);
        assert_eq!(lines.next(&ours, SHORT, SHORT), Err(LineEnd::Closed));
    }

    #[test]
    fn an_idle_client_is_closed_and_a_half_written_line_times_out() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let started = Instant::now();
        assert_eq!(Lines::default().next(&ours, SHORT, SHORT), Err(LineEnd::Closed));
        assert!(started.elapsed() >= SHORT);
        // Half a line, then a byte now and then: the line's own deadline
        // holds however the bytes trickle in.
        theirs.write_all(b"{\"version\":").unwrap();
        let trickle = std::thread::spawn(move || {
            for _ in 0..10 {
                std::thread::sleep(Duration::from_millis(50));
                if theirs.write_all(b" ").is_err() {
                    break;
                }
            }
        });
        assert_eq!(Lines::default().next(&ours, Duration::from_secs(5), SHORT), Err(LineEnd::Slow));
        drop(ours);
        trickle.join().unwrap();
    }

    #[test]
    fn an_endless_line_is_refused_at_the_limit() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            let chunk = vec![b'x'; 8192];
            while theirs.write_all(&chunk).is_ok() {}
        });
        assert_eq!(Lines::default().next(&ours, SHORT, Duration::from_secs(5)), Err(LineEnd::TooLong));
        drop(ours);
        writer.join().unwrap();
    }

    #[test]
    fn a_follower_that_went_away_is_noticed() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        assert!(!peer_gone(&ours, Duration::from_millis(10)));
        (&theirs).write_all(b"stray bytes").unwrap();
        assert!(!peer_gone(&ours, Duration::from_millis(10)));
        drop(theirs);
        assert!(peer_gone(&ours, Duration::from_millis(10)));
    }
}
