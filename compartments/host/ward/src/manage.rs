//! The `ward` commands that manage compartments through `wardd`.

use std::io::Write;
use std::path::Path;

use crate::daemon::client::{Client, ClientError};
use crate::daemon::proto::{Reply, Request, State, Status};

/// A management command failed.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// The daemon could not be reached or broke the connection.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The daemon refused.
    #[error("{0}")]
    Refused(String),
    /// An answer of the wrong kind.
    #[error("wardd answered {0:?}")]
    Unexpected(Box<Reply>),
}

fn expect_ok(reply: Reply) -> Result<(), ManageError> {
    match reply {
        Reply::Ok { .. } => Ok(()),
        Reply::Error { message, .. } => Err(ManageError::Refused(message)),
        other => Err(ManageError::Unexpected(Box::new(other))),
    }
}

/// Sends a request that answers `ok`.
pub fn simple(socket: &Path, request: &Request) -> Result<(), ManageError> {
    expect_ok(Client::connect(socket)?.request(request)?)
}

/// Largest piece of console input in one request: as JSON numbers it stays
/// well under the protocol's line limit.
pub const INPUT_CHUNK: usize = 8 * 1024;

/// Forwards `input` to compartment `name`'s console through wardd until it
/// ends (then the compartment's input ends too) or the compartment is gone.
pub fn forward_input(socket: &Path, name: &str, mut input: impl std::io::Read) -> Result<(), ManageError> {
    let mut buf = vec![0u8; INPUT_CHUNK];
    loop {
        let n = match input.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // Unreadable input ends like empty input.
            Err(_) => 0,
        };
        let request = Request::Input { name: name.to_owned(), data: buf[..n].to_vec(), end: n == 0 };
        simple(socket, &request)?;
        if n == 0 {
            return Ok(());
        }
    }
}

/// `ward ls`.
pub fn list(socket: &Path) -> Result<String, ManageError> {
    match Client::connect(socket)?.request(&Request::List {})? {
        Reply::List { compartments, .. } => Ok(render_list(&compartments)),
        Reply::Error { message, .. } => Err(ManageError::Refused(message)),
        other => Err(ManageError::Unexpected(Box::new(other))),
    }
}

/// The `ward ls` table.
pub fn render_list(list: &[Status]) -> String {
    let dash = || "-".to_owned();
    let mut out = format!(
        "{:<20} {:<13} {:<10} {:>8} {:>8} {:>7} {:>9} {:>8} {:>4} {:>8}\n",
        "NAME", "ROLE", "STATE", "PID", "UPTIME", "MEM", "RSS", "CPU", "EXIT", "RESTARTS"
    );
    for s in list {
        out.push_str(&format!(
            "{:<20} {:<13} {:<10} {:>8} {:>8} {:>7} {:>9} {:>8} {:>4} {:>8}\n",
            s.name,
            s.role,
            format!("{:?}", s.state).to_lowercase(),
            s.pid.map_or_else(dash, |p| p.to_string()),
            s.uptime_s.map_or_else(dash, |u| format!("{u}s")),
            format!("{}M", s.memory_mib),
            s.rss_kib.map_or_else(dash, |r| format!("{}K", r)),
            s.cpu_ms.map_or_else(dash, |c| format!("{c}ms")),
            s.exit_code.map_or_else(dash, |c| c.to_string()),
            s.restarts
        ));
    }
    out
}

/// `ward inspect`.
pub fn inspect(socket: &Path, name: &str) -> Result<String, ManageError> {
    match Client::connect(socket)?.request(&Request::Inspect { name: name.to_owned() })? {
        Reply::Inspect { record, .. } => Ok(record + "\n"),
        Reply::Error { message, .. } => Err(ManageError::Refused(message)),
        other => Err(ManageError::Unexpected(Box::new(other))),
    }
}

/// `ward audit`.
pub fn audit(socket: &Path, limit: usize) -> Result<String, ManageError> {
    match Client::connect(socket)?.request(&Request::Audit { limit })? {
        Reply::Audit { entries, .. } => Ok(entries.iter().map(|e| format!("{e}\n")).collect()),
        Reply::Error { message, .. } => Err(ManageError::Refused(message)),
        other => Err(ManageError::Unexpected(Box::new(other))),
    }
}

/// `ward pending`.
pub fn pending(socket: &Path) -> Result<String, ManageError> {
    match Client::connect(socket)?.request(&Request::Pending {})? {
        Reply::Pending { asks, .. } if asks.is_empty() => Ok("no calls are waiting for an answer\n".to_owned()),
        Reply::Pending { asks, .. } => {
            let mut out = format!("{:>6} {:<20} {:<20} {:<32} {:>7}\n", "ID", "FROM", "TO", "SERVICE", "WAITING");
            for a in asks {
                out.push_str(&format!(
                    "{:>6} {:<20} {:<20} {:<32} {:>6}s\n",
                    a.id, a.from, a.to, a.service, a.waited_s
                ));
            }
            Ok(out)
        }
        Reply::Error { message, .. } => Err(ManageError::Refused(message)),
        other => Err(ManageError::Unexpected(Box::new(other))),
    }
}

/// `ward logs`: writes the history (and, following, new output) to `out`;
/// returns the exit code when following ends.
pub fn logs(socket: &Path, name: &str, follow: bool, out: &mut dyn Write) -> Result<Option<i32>, ManageError> {
    let mut client = Client::connect(socket)?;
    let mut reply = client.request(&Request::Logs { name: name.to_owned(), from: 0, follow })?;
    loop {
        match reply {
            Reply::Log { text, .. } => {
                let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
                if !follow {
                    return Ok(None);
                }
            }
            Reply::Exited { exit_code, .. } => return Ok(exit_code),
            Reply::Error { message, .. } => return Err(ManageError::Refused(message)),
            other => return Err(ManageError::Unexpected(Box::new(other))),
        }
        reply = client.next_reply()?;
    }
}

/// Whether a daemon answers at `socket`.
pub fn daemon_available(socket: &Path) -> bool {
    Client::connect(socket).and_then(|mut c| c.request(&Request::Ping {})).is_ok_and(|r| matches!(r, Reply::Ok { .. }))
}

/// Whether `state` means the compartment runs or will.
pub fn is_active(state: State) -> bool {
    matches!(state, State::Starting | State::Running | State::Restarting | State::Stopping)
}
