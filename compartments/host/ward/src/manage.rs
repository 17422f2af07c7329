//! The `ward` commands that manage compartments through `wardd`.

use std::io::Write;
use std::path::Path;

use crate::daemon::client::{Client, ClientError};
use crate::daemon::ipc::PendingAsk;
use crate::daemon::proto::{AuditEntry, ErrorKind, Inspection, LogsArgs, Reply, Request, State, Status};
use crate::output::{age, duration_ms, local_time};

/// A management command failed.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// The daemon could not be reached or broke the connection.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The daemon refused, and why.
    #[error("{message}")]
    Daemon {
        /// Whose fault, for a script.
        kind: ErrorKind,
        /// What, for a person.
        message: String,
    },
    /// The command failed otherwise.
    #[error("{0}")]
    Refused(String),
    /// An answer of the wrong kind.
    #[error("wardd answered {0:?}")]
    Unexpected(Box<Reply>),
}

/// The error a reply that is not the expected one makes.
fn unexpected(reply: Reply) -> ManageError {
    match reply {
        Reply::Error { error, message, .. } => ManageError::Daemon { kind: error, message },
        other => ManageError::Unexpected(Box::new(other)),
    }
}

/// Sends a request that answers `ok`.
pub fn simple(socket: &Path, request: &Request) -> Result<(), ManageError> {
    noted(socket, request).map(drop)
}

/// Sends a request that answers `ok`, perhaps with a note that nothing
/// needed doing.
pub fn noted(socket: &Path, request: &Request) -> Result<Option<String>, ManageError> {
    match Client::connect(socket)?.request(request)? {
        Reply::Ok { note, .. } => Ok(note),
        other => Err(unexpected(other)),
    }
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

/// Every compartment's status.
pub fn statuses(socket: &Path) -> Result<Vec<Status>, ManageError> {
    match Client::connect(socket)?.request(&Request::List {})? {
        Reply::List { compartments, .. } => Ok(compartments),
        other => Err(unexpected(other)),
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
            s.state.as_str(),
            s.pid.map_or_else(dash, |p| p.to_string()),
            s.uptime_s.map_or_else(dash, |u| duration_ms(u.saturating_mul(1000)).replace(' ', "")),
            format!("{}M", s.memory_mib),
            s.usage.rss_kib.map_or_else(dash, |r| format!("{}K", r)),
            s.usage.cpu_ms.map_or_else(dash, |c| duration_ms(c).replace(' ', "")),
            s.exit_code.map_or_else(dash, |c| c.to_string()),
            s.restarts
        ));
    }
    out
}

/// `ward inspect`'s answer.
pub fn inspect(socket: &Path, name: &str) -> Result<Inspection, ManageError> {
    match Client::connect(socket)?.request(&Request::Inspect { name: name.to_owned() })? {
        Reply::Inspect { details, .. } => Ok(*details),
        other => Err(unexpected(other)),
    }
}

/// `ward inspect` for a person: what a record says, in words.
pub fn render_inspection(i: &Inspection, now_ms: u64) -> String {
    let r = &i.record;
    let when =
        |ms: Option<u64>| ms.map_or_else(|| "-".to_owned(), |t| format!("{} ({})", local_time(t), age(t, now_ms)));
    let mut out = String::new();
    let mut line = |key: &str, value: String| out.push_str(&format!("{key:<12} {value}\n"));
    line("name", r.name.clone());
    line("role", r.role.clone());
    line("image", r.image.clone());
    line("state", r.state.as_str().to_owned());
    line("memory", format!("{} MiB", r.memory_mib));
    line("restart", format!("{:?}", r.restart).to_lowercase().replace("onfailure", "on-failure"));
    line("disposable", if r.disposable { "yes" } else { "no" }.to_owned());
    if !r.cmdline.is_empty() {
        line("cmdline", r.cmdline.clone());
    }
    line("devices", devices(r));
    for d in &r.disks {
        line("disk", format!("{}{}", d.path.display(), if d.read_only { " (read-only)" } else { "" }));
    }
    line("created", when(Some(r.created_at_ms)));
    line("started", when(r.started_at_ms));
    if r.state == State::Stopped || r.ended_at_ms.is_some() {
        line("ended", when(r.ended_at_ms));
    }
    let code = r.exit_code.map_or_else(|| "unknown".to_owned(), |c| c.to_string());
    match &r.exit_reason {
        Some(reason) => line("last exit", format!("{code}: {reason}")),
        None if r.ended_at_ms.is_some() => line("last exit", code),
        None => line("last exit", "- (it has not ended yet)".to_owned()),
    }
    line("restarts", r.restarts.to_string());
    if !i.pids.is_empty() {
        let pids: Vec<String> = i.pids.iter().map(u32::to_string).collect();
        line("pids", pids.join(" "));
    }
    if let Some(uid) = r.uid {
        line("uid", uid.to_string());
    }
    if let Some(rss) = i.usage.rss_kib {
        line("host memory", format!("{} MiB", rss / 1024));
    }
    if let Some(cpu) = i.usage.cpu_ms {
        line("cpu", duration_ms(cpu));
    }
    line("console log", i.console_log.display().to_string());
    line("vmm log", i.vmm_log.display().to_string());
    line("spec", i.spec.display().to_string());
    for c in &i.cgroups {
        line("cgroup", c.display().to_string());
    }
    out
}

fn devices(r: &crate::daemon::state::Record) -> String {
    let d = &r.devices;
    let named: Vec<&str> = [(d.console, "console"), (d.rng, "entropy"), (d.vsock, "vsock")]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
    if named.is_empty() { "debug console only".to_owned() } else { named.join(", ") }
}

/// `ward audit`'s entries, oldest first.
pub fn audit(socket: &Path, request: &Request) -> Result<Vec<AuditEntry>, ManageError> {
    match Client::connect(socket)?.request(request)? {
        Reply::Audit { entries, .. } => Ok(entries),
        other => Err(unexpected(other)),
    }
}

/// Follows the audit log: `each` gets every batch of entries as wardd
/// sends it, until the daemon goes away.
pub fn follow_audit(
    socket: &Path,
    request: &Request,
    mut each: impl FnMut(&[AuditEntry]) -> std::io::Result<()>,
) -> Result<(), ManageError> {
    let mut client = Client::connect(socket)?;
    let mut reply = client.request(request)?;
    loop {
        match reply {
            Reply::Audit { entries, .. } => {
                if each(&entries).is_err() {
                    // Whoever reads our output went away: done.
                    return Ok(());
                }
            }
            other => return Err(unexpected(other)),
        }
        reply = client.next_reply()?;
    }
}

/// An audit entry as a line for a person.
pub fn render_audit(e: &AuditEntry) -> String {
    let subject = e.compartment.as_deref().unwrap_or("-");
    format!("{} {} {subject} {}", local_time(e.at_ms), e.kind, e.detail).trim_end().to_owned() + "\n"
}

/// The calls waiting for an answer.
pub fn pending(socket: &Path) -> Result<Vec<PendingAsk>, ManageError> {
    match Client::connect(socket)?.request(&Request::Pending {})? {
        Reply::Pending { asks, .. } => Ok(asks),
        other => Err(unexpected(other)),
    }
}

/// `ward pending` for a person.
pub fn render_pending(asks: &[PendingAsk]) -> String {
    if asks.is_empty() {
        return "no calls are waiting for an answer\n".to_owned();
    }
    let mut out = format!("{:>6} {:<20} {:<20} {:<32} {:>7}\n", "ID", "FROM", "TO", "SERVICE", "WAITING");
    for a in asks {
        out.push_str(&format!(
            "{:>6} {:<20} {:<20} {:<32} {:>7}\n",
            a.id,
            a.from,
            a.to,
            a.service,
            duration_ms(a.waited_s.saturating_mul(1000))
        ));
    }
    out
}

/// `ward wait`: the exit code of `name`'s run once it has ended.
pub fn wait(socket: &Path, name: &str) -> Result<Option<i32>, ManageError> {
    match Client::connect(socket)?.request(&Request::Wait { name: name.to_owned() })? {
        Reply::Exited { exit_code, .. } => Ok(exit_code),
        other => Err(unexpected(other)),
    }
}

/// `ward logs`: writes the history (and, following, new output) to `out`;
/// returns the exit code when following ends.
pub fn logs(socket: &Path, args: &LogsArgs, out: &mut dyn Write) -> Result<Option<i32>, ManageError> {
    let follow = args.follow;
    let mut client = Client::connect(socket)?;
    let mut reply = client.request(&Request::Logs(args.clone()))?;
    loop {
        match reply {
            Reply::Log { text, .. } => {
                let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
                if !follow {
                    return Ok(None);
                }
            }
            Reply::Exited { exit_code, .. } => return Ok(exit_code),
            other => return Err(unexpected(other)),
        }
        reply = client.next_reply()?;
    }
}

/// Whether a daemon answers at `socket`.
pub fn daemon_available(socket: &Path) -> bool {
    Client::connect(socket).and_then(|mut c| c.request(&Request::Ping {})).is_ok_and(|r| matches!(r, Reply::Ok { .. }))
}
