//! The control protocol between `ward` and `wardd`.
//!
//! One JSON object per line over a UNIX stream socket. Every message
//! carries the protocol [`VERSION`]; the daemon answers a request of
//! another version, a line that is not a request, or a line over
//! [`MAX_LINE`] bytes with an error reply (and, for an oversized line,
//! closes the connection), and keeps serving everyone else.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use super::usage::Usage;

use super::state::{Record, Restart};
use crate::grant::DiskRequest;

/// Protocol version (2: structured audit entries and inspection, `wait`,
/// notes on `ok`).
pub const VERSION: u32 = 2;
/// Longest request line, in bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// A request and its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// [`VERSION`].
    pub version: u32,
    /// What is asked.
    pub request: Request,
}

/// A compartment to define: the policy decides what it gets; these may
/// only narrow it (and name its disks, which the policy's volumes bound).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateArgs {
    /// Its name.
    pub name: String,
    /// An image other than the policy's (ad-hoc apps only).
    pub image: Option<String>,
    /// Less memory than the policy grants, in MiB.
    pub memory_mib: Option<u64>,
    /// Guest kernel command line.
    #[serde(default)]
    pub cmdline: String,
    /// Host files to attach as disks, in order: absolute paths.
    #[serde(default)]
    pub disks: Vec<DiskRequest>,
    /// Remove it and its state when it stops.
    pub disposable: bool,
    /// What happens when its VMM ends (default: the policy's).
    #[serde(default)]
    pub restart: Option<Restart>,
}

impl CreateArgs {
    /// A compartment exactly as the policy defines it.
    pub fn from_policy(name: &str) -> Self {
        Self { name: name.to_owned(), ..Self::default() }
    }
}

/// What of a compartment's console history to send.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsArgs {
    /// Its name.
    pub name: String,
    /// Start offset in the stored history.
    #[serde(default)]
    pub from: u64,
    /// Keep streaming.
    #[serde(default)]
    pub follow: bool,
    /// Only the last this many lines of the history (then what follows).
    #[serde(default)]
    pub tail: Option<u64>,
    /// Only lines started at or after this Unix time (ms).
    #[serde(default)]
    pub since_ms: Option<u64>,
    /// Each line with the time it started.
    #[serde(default)]
    pub timestamps: bool,
    /// The guest's output only, without Ward's markers between runs.
    #[serde(default)]
    pub console_only: bool,
}

impl LogsArgs {
    /// The whole history of `name`, console only: what `ward run` shows.
    pub fn console(name: &str) -> Self {
        Self { name: name.to_owned(), console_only: true, ..Self::default() }
    }
}

/// What a client may ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Is the daemon there? (Fields-less variants are written `{}`:
    /// serde checks unknown fields only of a struct variant.)
    Ping {},
    /// Define a compartment (from the policy, optionally narrowing it).
    Create(CreateArgs),
    /// Start a created or stopped compartment.
    Start {
        /// Its name.
        name: String,
    },
    /// Stop it: SIGTERM, then SIGKILL after `timeout_ms`.
    Stop {
        /// Its name.
        name: String,
        /// Grace period.
        timeout_ms: Option<u64>,
    },
    /// Stop it at once (SIGKILL).
    Kill {
        /// Its name.
        name: String,
    },
    /// Forget a stopped compartment and its state.
    Remove {
        /// Its name.
        name: String,
    },
    /// Every compartment's status.
    List {},
    /// One compartment's full record.
    Inspect {
        /// Its name.
        name: String,
    },
    /// Console history; with `follow`, keep streaming until the
    /// compartment stops.
    Logs(LogsArgs),
    /// Bytes for a running compartment's console input; `end` then closes
    /// the input (its programs see end of input).
    Input {
        /// Its name.
        name: String,
        /// The bytes (a few KiB at a time: a request line is at most
        /// [`MAX_LINE`]).
        data: Vec<u8>,
        /// Close the input after them.
        end: bool,
    },
    /// The audit log, newest last; with `follow`, new entries as they
    /// are written, until the client goes away.
    Audit {
        /// At most this many of the entries already written.
        limit: usize,
        /// Keep streaming new entries.
        #[serde(default)]
        follow: bool,
        /// Only entries about this compartment (as subject or peer).
        #[serde(default)]
        compartment: Option<String>,
        /// Only entries of these kinds (all if empty).
        #[serde(default)]
        kinds: Vec<String>,
    },
    /// Waits until the compartment's current run ends (at once if it is
    /// not running); the reply is [`Reply::Exited`].
    Wait {
        /// Its name.
        name: String,
    },
    /// The IPC calls waiting for the user's answer (the policy said `ask`).
    Pending {},
    /// The user's answer to a pending call.
    Answer {
        /// Its id (from [`Request::Pending`]).
        id: u64,
        /// Let it through, or deny it.
        allow: bool,
    },
}

/// A compartment's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Defined, never started.
    Created,
    /// Its VMM is being started.
    Starting,
    /// Its VMM runs.
    Running,
    /// Being stopped.
    Stopping,
    /// Its VMM ended.
    Stopped,
    /// Waiting to be restarted (restart policy, with backoff).
    Restarting,
}

impl State {
    /// The state in words, as `ward ls` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Restarting => "restarting",
        }
    }

    /// Whether the compartment runs, or will without being asked.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Starting | Self::Running | Self::Restarting | Self::Stopping)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `ward ls` shows of a compartment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Name.
    pub name: String,
    /// Role (from the policy).
    pub role: String,
    /// Image.
    pub image: String,
    /// Lifecycle state.
    pub state: State,
    /// VMM process id, while running.
    pub pid: Option<u32>,
    /// Seconds since it started, while running.
    pub uptime_s: Option<u64>,
    /// Guest memory granted, MiB.
    pub memory_mib: u64,
    /// What its VMM uses of the host now (while it runs).
    #[serde(flatten)]
    pub usage: Usage,
    /// Exit code of its last run, as a shell shows it (see
    /// [`Record::exit_code`]).
    pub exit_code: Option<i32>,
    /// Restarts by the restart policy.
    pub restarts: u32,
    /// Unix time (ms) its current or last run started.
    pub started_at_ms: Option<u64>,
    /// Unix time (ms) its last run ended.
    pub ended_at_ms: Option<u64>,
}

/// What `ward inspect` shows: the record, and where the host keeps the
/// compartment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspection {
    /// Everything the daemon keeps about it.
    pub record: Record,
    /// Its console history (and `<path>.1`, the older half).
    pub console_log: PathBuf,
    /// What its VMM wrote to standard error.
    pub vmm_log: PathBuf,
    /// The spec its VMM was started with.
    pub spec: PathBuf,
    /// Its cgroup's directories (one per hierarchy), while it runs in one.
    pub cgroups: Vec<PathBuf>,
    /// Its VMM's processes while it runs: the one wardd watches first,
    /// then (when jailed) the VMM itself, PID 1 of its namespace.
    pub pids: Vec<u32>,
    /// What its VMM uses of the host now (while it runs).
    #[serde(flatten)]
    pub usage: Usage,
}

/// One entry of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its position in the log: larger is later.
    pub id: u64,
    /// Unix time (ms) it was written.
    pub at_ms: u64,
    /// What happened: `create`, `start`, `exit`, `ipc-allow`, ...
    pub kind: String,
    /// The compartment it is about (the caller of an IPC call), if any.
    pub compartment: Option<String>,
    /// The other compartment of an IPC call.
    #[serde(default)]
    pub peer: Option<String>,
    /// The rest, in words.
    pub detail: String,
}

impl AuditEntry {
    /// Whether the entry is about `name`, as subject or peer.
    pub fn concerns(&self, name: &str) -> bool {
        self.compartment.as_deref() == Some(name) || self.peer.as_deref() == Some(name)
    }
}

/// A reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// Done.
    Ok {
        /// [`VERSION`].
        version: u32,
        /// Nothing needed doing, and why (a stop of a stopped
        /// compartment, a start of a running one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Statuses.
    List {
        /// [`VERSION`].
        version: u32,
        /// One per compartment.
        compartments: Vec<Status>,
    },
    /// A compartment's record and where the host keeps it.
    Inspect {
        /// [`VERSION`].
        version: u32,
        /// What there is to see.
        details: Box<Inspection>,
    },
    /// A piece of console history (more may follow when following).
    Log {
        /// [`VERSION`].
        version: u32,
        /// The text.
        text: String,
        /// Offset after it.
        next: u64,
    },
    /// The followed or awaited compartment's run ended: end of the
    /// stream.
    Exited {
        /// [`VERSION`].
        version: u32,
        /// Its exit code as a shell shows it, if known.
        exit_code: Option<i32>,
    },
    /// Audit entries (more follow when following).
    Audit {
        /// [`VERSION`].
        version: u32,
        /// Oldest first.
        entries: Vec<AuditEntry>,
    },
    /// The IPC calls waiting for an answer.
    Pending {
        /// [`VERSION`].
        version: u32,
        /// Oldest first.
        asks: Vec<super::ipc::PendingAsk>,
    },
    /// The request failed.
    Error {
        /// [`VERSION`].
        version: u32,
        /// What kind of failure.
        error: ErrorKind,
        /// What, for a person.
        message: String,
    },
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The line is not a request of this protocol.
    Malformed,
    /// The line is too long.
    TooLarge,
    /// Another protocol version.
    Version,
    /// No compartment of that name.
    NotFound,
    /// It exists already.
    Exists,
    /// Not in a state that allows it.
    WrongState,
    /// The policy does not allow it.
    Denied,
    /// What it asks for cannot work: a bad name, a disk that is not a
    /// file, an image that does not exist, a command line too long.
    Invalid,
    /// The policy cannot be read or has errors (the host's
    /// configuration): nothing was decided.
    Policy,
    /// The caller may not use the daemon.
    Forbidden,
    /// The daemon serves as many connections as it will; try again.
    Busy,
    /// The daemon failed.
    Internal,
}

impl Reply {
    /// An error reply.
    pub fn error(error: ErrorKind, message: impl Into<String>) -> Self {
        Self::Error { version: VERSION, error, message: message.into() }
    }

    /// The success reply.
    pub fn ok() -> Self {
        Self::Ok { version: VERSION, note: None }
    }

    /// Success, with nothing done, and why.
    pub fn noted(note: impl Into<String>) -> Self {
        Self::Ok { version: VERSION, note: Some(note.into()) }
    }
}

/// Parses one request line. Errors are the reply to send.
pub fn parse_request(line: &str) -> Result<Request, Reply> {
    if line.len() > MAX_LINE {
        return Err(Reply::error(ErrorKind::TooLarge, format!("request over {MAX_LINE} bytes")));
    }
    // Check the version first, so a newer client gets a version error, not
    // a confusing one about a request kind we do not know.
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| Reply::error(ErrorKind::Malformed, format!("not JSON: {e}")))?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => {
            return Err(Reply::error(ErrorKind::Version, format!("protocol version {v}; wardd speaks {VERSION}")));
        }
        None => return Err(Reply::error(ErrorKind::Malformed, "no protocol version")),
    }
    serde_json::from_value::<Envelope>(value)
        .map(|e| e.request)
        .map_err(|e| Reply::error(ErrorKind::Malformed, format!("not a request: {e}")))
}

/// Encodes a request line (with the newline).
pub fn encode_request(request: &Request) -> String {
    let envelope = Envelope { version: VERSION, request: request.clone() };
    // Serialising our own types cannot fail; fall back to a request the
    // daemon rejects rather than panicking.
    serde_json::to_string(&envelope).unwrap_or_default() + "\n"
}

/// Encodes a reply line (with the newline).
pub fn encode_reply(reply: &Reply) -> String {
    serde_json::to_string(reply).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for request in [
            Request::Ping {},
            Request::Create(CreateArgs {
                memory_mib: Some(32),
                disposable: true,
                disks: vec![DiskRequest { path: "/srv/mail.img".into(), read_only: true }],
                ..CreateArgs::from_policy("mail")
            }),
            Request::Stop { name: "mail".into(), timeout_ms: Some(500) },
            Request::Logs(LogsArgs { name: "mail".into(), from: 10, follow: true, ..LogsArgs::default() }),
            Request::Input { name: "mail".into(), data: b"hi\n".to_vec(), end: true },
        ] {
            let line = encode_request(&request);
            assert!(line.ends_with('\n'));
            assert_eq!(parse_request(line.trim_end()), Ok(request));
        }
    }

    #[test]
    fn garbage_gets_a_typed_error() {
        let kind = |line: &str| match parse_request(line) {
            Err(Reply::Error { error, .. }) => Some(error),
            _ => None,
        };
        assert_eq!(kind("hello"), Some(ErrorKind::Malformed));
        assert_eq!(kind(r#"{"version":2}"#), Some(ErrorKind::Malformed));
        assert_eq!(kind(r#"{"version":2,"request":{"kind":"format_disk"}}"#), Some(ErrorKind::Malformed));
        assert_eq!(kind(r#"{"version":2,"request":{"kind":"ping"},"extra":1}"#), Some(ErrorKind::Malformed));
        for request in [r#"{"kind":"ping","extra":1}"#, r#"{"kind":"list","x":0}"#, r#"{"kind":"pending","a":[]}"#] {
            let line = format!(r#"{{"version":2,"request":{request}}}"#);
            assert_eq!(kind(&line), Some(ErrorKind::Malformed), "{line}");
        }
        assert_eq!(parse_request(r#"{"version":2,"request":{"kind":"ping"}}"#), Ok(Request::Ping {}));
        // A client of the first version is told, not misread.
        assert_eq!(kind(r#"{"version":1,"request":{"kind":"ping"}}"#), Some(ErrorKind::Version));
        assert_eq!(kind(r#"{"version":9,"request":{"kind":"ping"}}"#), Some(ErrorKind::Version));
        assert_eq!(kind(&"x".repeat(MAX_LINE + 1)), Some(ErrorKind::TooLarge));
    }
}
