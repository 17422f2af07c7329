//! wardd's side of inter-compartment IPC (docs/IPC.md): it runs the
//! `ward-ipc` router, connects each vsock compartment's VMM to it, carries
//! the router's audit lines into the audit log, keeps the calls waiting for
//! the user (`ask`), and restarts a router that died, reconnecting every
//! running compartment to the new one.
//!
//! The control socket to the router is `SOCK_SEQPACKET`: one JSON message
//! each, an attach carrying the compartment's vhost-user listener as
//! `SCM_RIGHTS`. Each vhost-user connection is made here: a listening socket
//! bound in wardd's private `ipc/` directory, connected to once (the VMM's
//! end), then unlinked, so the listener can only ever accept that one
//! connection and neither side reaches any other socket by path.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::state::Store;
use crate::policy_source::PolicySource;
use ward_sandbox::jail::{Cgroup, CgroupLimits, CpuMax};
use ward_sandbox::sockets::{connect_now, one_connection, seqpacket_pair, set_send_buffer};
use ward_sandbox::spawner::Spawner;

/// How long an `ask` waits for the user by default.
pub const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest control message (a policy), bytes.
const MAX_MESSAGE: usize = 1 << 20;
/// Longest a send to the router or to a VMM's reconnect socket may block.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait between router restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The router's name in its daemon's cgroups (`ward/SLOT.ward-ipc`); no
/// compartment may take the name.
pub const ROUTER_CGROUP: &str = "ward-ipc";
/// The router's limits: one CPU, its tasks (two per compartment), and the
/// memory it touches (its buffers, up to 512 KiB a call, and the guests'
/// receive buffers it fills first).
const ROUTER_LIMITS: CgroupLimits =
    CgroupLimits { memory_max: 2 << 30, cpu: Some(CpuMax { quota_us: 100_000, period_us: 100_000 }), pids_max: 16_384 };

/// Running the router or talking to it failed.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// A socket could not be made.
    #[error("IPC router: cannot make {what}: {source}")]
    Socket {
        /// Which.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The router could not be started.
    #[error("IPC router: cannot start {binary}: {source}")]
    Spawn {
        /// The executable.
        binary: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The policy could not be read for the router.
    #[error("IPC router: {0}")]
    Policy(String),
    /// The router is not running (it died and is being restarted).
    #[error("IPC router is not running")]
    NotRunning,
    /// A message to the router failed.
    #[error("IPC router: cannot send {what}: {source}")]
    Send {
        /// Which message.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// No pending call has that id.
    #[error("no pending call {0} (answered, timed out, or never asked)")]
    NoSuchAsk(u64),
}

/// What a vsock compartment's VMM inherits: its vhost-user stream, its end
/// of the reconnect socket, and a copy of wardd's end, which it only keeps
/// open, so the reconnect socket outlives this wardd and a restarted one
/// can take its end back from the VMM ([`ward_sandbox::pidfd::Pidfd::take_fd`]).
#[derive(Debug)]
pub struct VmmSockets {
    /// The vhost-user stream.
    pub backend: OwnedFd,
    /// The VMM's end of the reconnect socket.
    pub reconnect: OwnedFd,
    /// wardd's end, kept open by the VMM.
    pub keep: OwnedFd,
}

/// A message to the router.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum ToRouter<'a> {
    Policy {
        files: Vec<(String, String)>,
    },
    Attach {
        name: &'a str,
        cid: u64,
        fresh: bool,
    },
    Detach {
        name: &'a str,
    },
    Answer {
        id: u64,
        allow: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        no_answer_after_s: Option<u64>,
    },
    HostConnected {
        id: u64,
    },
    HostFailed {
        id: u64,
        reason: &'a str,
    },
}

/// A message from the router.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum FromRouter {
    Ready,
    Ask { id: u64, from: String, to: String, service: String },
    Audit { line: String },
    HostConnect { id: u64, from: String, service: String },
}

/// A call waiting for the user's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAsk {
    /// The id `ward allow` and `ward deny` take.
    pub id: u64,
    /// The caller.
    pub from: String,
    /// The compartment it asked for.
    pub to: String,
    /// The service (and argument).
    pub service: String,
    /// Seconds it has waited.
    pub waited_s: u64,
}

/// A compartment connected to the router.
#[derive(Debug)]
struct Attached {
    cid: u64,
    /// wardd's end of the VMM's reconnect socket.
    reconnect: UnixDatagram,
}

/// The running router.
#[derive(Debug)]
struct Running {
    child: Child,
    control: Arc<UnixDatagram>,
}

#[derive(Debug, Default)]
struct Inner {
    running: Option<Running>,
    /// The policy files the running router has.
    policy_sent: Vec<(String, String)>,
    attached: HashMap<String, Attached>,
    /// Asks by id, with the router generation that made them and when.
    pending: BTreeMap<u64, (PendingAsk, u64, Instant)>,
    generation: u64,
    failures: u32,
    restart_at: Option<Instant>,
}

/// How wardd runs its router.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// The `ward-ipc` executable.
    pub binary: PathBuf,
    /// wardd's state directory: the router's listeners go in its `ipc/`,
    /// its standard error in its `ipc-errors.log`.
    pub state_dir: PathBuf,
    /// The policy it decides by.
    pub policy: PolicySource,
    /// Jail it.
    pub jail: bool,
    /// How long an `ask` waits for the user.
    pub ask_timeout: Duration,
    /// Host services by name: the UNIX socket each listens on.
    pub host_services: HashMap<String, PathBuf>,
    /// The uid (and gid) it runs as when jailed: its own (the first of the
    /// daemon's slot, `daemon::slot`).
    pub uid: u32,
    /// Its cgroup's name (`SLOT.ward-ipc`).
    pub cgroup: String,
}

/// wardd's handle on the IPC router.
#[derive(Debug)]
pub struct IpcRouter {
    binary: PathBuf,
    /// Host services by name: the UNIX socket each listens on.
    host_services: Arc<HashMap<String, PathBuf>>,
    dir: PathBuf,
    errors: PathBuf,
    policy: PolicySource,
    jail: bool,
    ask_timeout: Duration,
    uid: u32,
    cgroup: String,
    spawner: Arc<Spawner>,
    store: Store,
    inner: Arc<Mutex<Inner>>,
    sequence: AtomicU64,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

impl IpcRouter {
    /// The router `config` describes, started by `spawner`; audit lines
    /// to `store`.
    pub fn new(config: RouterConfig, store: Store, spawner: Arc<Spawner>) -> Self {
        Self {
            binary: config.binary,
            dir: config.state_dir.join("ipc"),
            errors: config.state_dir.join("ipc-errors.log"),
            policy: config.policy,
            jail: config.jail,
            ask_timeout: config.ask_timeout,
            uid: config.uid,
            cgroup: config.cgroup,
            spawner,
            store,
            inner: Arc::new(Mutex::new(Inner::default())),
            sequence: AtomicU64::new(0),
            host_services: Arc::new(config.host_services),
        }
    }

    /// Connects compartment `name` (CID `cid`) to the router, starting it
    /// if needed. Returns the VMM's ends: the vhost-user stream and the
    /// reconnect socket.
    pub fn attach(&self, name: &str, cid: u64) -> Result<VmmSockets, IpcError> {
        let mut inner = lock(&self.inner);
        match self.try_attach(&mut inner, name, cid) {
            // The router died just now (its reader has not noticed yet):
            // replace it at once, then attach to the new one.
            Err(IpcError::Send { .. }) => {
                if let Some(mut dead) = inner.running.take() {
                    let _ = dead.child.kill();
                    let status = dead.child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    let _ = self.store.audit("ipc-router", "", &format!("ended: {status}"));
                }
                self.try_attach(&mut inner, name, cid)
            }
            other => other,
        }
    }

    /// [`Self::attach`], once (the lock is held).
    fn try_attach(&self, inner: &mut Inner, name: &str, cid: u64) -> Result<VmmSockets, IpcError> {
        if inner.running.is_none() {
            // Not started yet, or dead and waiting for its backoff: start
            // it now, reconnecting whoever was attached to the old one.
            inner.restart_at = None;
            self.restart(inner)?;
        } else {
            // The policy may have changed since the router got it (a new
            // compartment, new rules): it decides with what wardd grants.
            let files = self.policy_files()?;
            if files != inner.policy_sent {
                self.send_or_kill(inner, &ToRouter::Policy { files: files.clone() }, None, "the policy")?;
                inner.policy_sent = files;
            }
        }
        let (ours, theirs) =
            seqpacket_pair().map_err(|source| IpcError::Socket { what: "a reconnect socket", source })?;
        ours.set_write_timeout(Some(SEND_TIMEOUT))
            .map_err(|source| IpcError::Socket { what: "a reconnect socket", source })?;
        let stream = self.connect_one(inner, name, cid, true)?;
        let keep = ours.try_clone().map_err(|source| IpcError::Socket { what: "a reconnect socket", source })?;
        inner.attached.insert(name.to_owned(), Attached { cid, reconnect: ours });
        Ok(VmmSockets { backend: OwnedFd::from(stream), reconnect: OwnedFd::from(theirs), keep: OwnedFd::from(keep) })
    }

    /// A compartment whose VMM this wardd adopted after a restart, with
    /// wardd's end of its reconnect socket taken back from it
    /// ([`ward_sandbox::pidfd::Pidfd::take_fd`]): the old router went with the old wardd, so a new one
    /// starts on the next supervision pass and every attached VMM gets a
    /// connection to it.
    pub fn adopt(&self, name: &str, cid: u64, reconnect: UnixDatagram) {
        let mut inner = lock(&self.inner);
        if let Err(e) = reconnect.set_write_timeout(Some(SEND_TIMEOUT)) {
            log::warn!("compartment {name}: {e}");
        }
        inner.attached.insert(name.to_owned(), Attached { cid, reconnect });
        if inner.running.is_none() {
            inner.restart_at = Some(Instant::now());
        }
    }

    /// Sends a message to the running router; a router that does not take
    /// it within [`SEND_TIMEOUT`] is killed (and restarted by
    /// [`Self::supervise`]): wardd never waits on it for long.
    fn send_or_kill(
        &self,
        inner: &mut Inner,
        message: &ToRouter<'_>,
        fd: Option<i32>,
        what: &'static str,
    ) -> Result<(), IpcError> {
        let running = inner.running.as_mut().ok_or(IpcError::NotRunning)?;
        let result = send(&running.control, message, fd, what);
        if result.is_err() {
            log::warn!("the IPC router does not take messages; killing it");
            let _ = running.child.kill();
        }
        result
    }

    /// Compartment `name` stopped: the router drops its connections.
    pub fn detach(&self, name: &str) {
        let mut inner = lock(&self.inner);
        if inner.attached.remove(name).is_some() && inner.running.is_some() {
            let _ = self.send_or_kill(&mut inner, &ToRouter::Detach { name }, None, "a detach");
        }
    }

    /// Makes one vhost-user connection for `name` and hands the router its
    /// listening end; returns the VMM's end.
    fn connect_one(&self, inner: &mut Inner, name: &str, cid: u64, fresh: bool) -> Result<UnixStream, IpcError> {
        let socket = |source| IpcError::Socket { what: "a vhost-user connection", source };
        std::fs::create_dir_all(&self.dir).map_err(socket)?;
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let (listener, stream) = one_connection(&self.dir.join(format!("{name}.{n}.sock"))).map_err(socket)?;
        self.send_or_kill(inner, &ToRouter::Attach { name, cid, fresh }, Some(listener.as_raw_fd()), "an attach")?;
        Ok(stream)
    }

    /// Starts the router and sends it the policy (the lock is held).
    fn start(&self, inner: &mut Inner) -> Result<(), IpcError> {
        let files = self.policy_files()?;
        std::fs::create_dir_all(&self.dir).map_err(|source| IpcError::Socket { what: "the ipc directory", source })?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        let (ours, theirs) =
            seqpacket_pair().map_err(|source| IpcError::Socket { what: "the control socket", source })?;
        // Room for a policy in one message, and no send that blocks for
        // long: a router that stops reading is killed, not waited for.
        set_send_buffer(&ours, MAX_MESSAGE);
        ours.set_write_timeout(Some(SEND_TIMEOUT))
            .map_err(|source| IpcError::Socket { what: "the control socket", source })?;
        let errors = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.errors)
            .map_err(|source| IpcError::Spawn { binary: self.errors.clone(), source })?;
        let fd = theirs.as_raw_fd();
        let mut command = Spawner::command(&self.binary);
        command.arg("--control-fd").arg(fd.to_string()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(errors);
        if self.jail {
            command.arg("--uid").arg(self.uid.to_string());
            match Cgroup::create(&self.cgroup, &ROUTER_LIMITS) {
                Ok(cgroup) => cgroup.join_before_exec(&mut command),
                Err(e) => {
                    let _ = self.store.audit("cgroup-unavailable", ROUTER_CGROUP, &e.to_string());
                }
            }
        } else {
            command.arg("--no-jail");
        }
        ward_sandbox::process::inherit_fds(&mut command, vec![fd]);
        let mut child =
            self.spawner.spawn(command).map_err(|source| IpcError::Spawn { binary: self.binary.clone(), source })?;
        drop(theirs);
        let control = Arc::new(ours);
        if let Err(e) = send(&control, &ToRouter::Policy { files: files.clone() }, None, "the policy") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        inner.policy_sent = files;
        inner.generation += 1;
        let generation = inner.generation;
        inner.running = Some(Running { child, control: control.clone() });
        let _ = self.store.audit("ipc-router", "", &format!("started (generation {generation})"));
        self.spawn_reader(control, generation);
        Ok(())
    }

    /// The policy's files, as the router loads them.
    fn policy_files(&self) -> Result<Vec<(String, String)>, IpcError> {
        Ok(self
            .policy
            .read()
            .map_err(|e| IpcError::Policy(e.to_string()))?
            .into_iter()
            .map(|(path, text)| (path.display().to_string(), text))
            .collect())
    }

    /// Reads the router's messages until it goes away.
    fn spawn_reader(&self, control: Arc<UnixDatagram>, generation: u64) {
        let inner = Arc::clone(&self.inner);
        let store = self.store.clone();
        let host_services = Arc::clone(&self.host_services);
        let spawned = std::thread::Builder::new().name("wardd-ipc".into()).spawn(move || {
            let mut buf = vec![0u8; MAX_MESSAGE];
            loop {
                let n = match control.recv(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                match serde_json::from_slice::<FromRouter>(&buf[..n]) {
                    Ok(FromRouter::Ready) => log::info!("IPC router ready"),
                    Ok(FromRouter::Audit { line }) => audit_decision(&store, &line),
                    Ok(FromRouter::Ask { id, from, to, service }) => {
                        let ask = PendingAsk { id, from, to, service, waited_s: 0 };
                        lock(&inner).pending.insert(id, (ask, generation, Instant::now()));
                    }
                    Ok(FromRouter::HostConnect { id, from, service }) => {
                        connect_host_service(&control, &host_services, id, &from, &service);
                    }
                    Err(e) => log::warn!("IPC router sent a message wardd does not understand: {e}"),
                }
            }
            let ended = {
                let mut inner = lock(&inner);
                // Its asks die with it: the callers see their connection reset.
                inner.pending.retain(|_, (_, made_by, _)| *made_by != generation);
                if inner.generation == generation
                    && let Some(running) = inner.running.take()
                {
                    inner.failures += 1;
                    let backoff = Duration::from_millis(100 << inner.failures.min(6)).min(MAX_BACKOFF);
                    inner.restart_at = Some(Instant::now() + backoff);
                    Some(running)
                } else {
                    None
                }
            };
            // Outside the lock: a router that closed its socket but lives
            // on is killed, never waited for with wardd stalled.
            if let Some(mut running) = ended {
                let _ = running.child.kill();
                let status = running.child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                log::warn!("IPC router ended ({status}); restarting it");
                let _ = store.audit("ipc-router", "", &format!("ended: {status}"));
            }
        });
        if let Err(e) = spawned {
            log::error!("cannot start the IPC reader thread: {e}");
        }
    }

    /// One supervision step: restarts a dead router when its backoff has
    /// passed (reconnecting every attached compartment) and denies asks
    /// nobody answered in time.
    pub fn supervise(&self) {
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        let expired: Vec<u64> = inner
            .pending
            .iter()
            .filter(|(_, (_, _, since))| now.duration_since(*since) >= self.ask_timeout)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            if inner.pending.remove(&id).is_some() && inner.running.is_some() {
                // The router denies it and audits "no answer in N s".
                let answer = ToRouter::Answer { id, allow: false, no_answer_after_s: Some(self.ask_timeout.as_secs()) };
                let _ = self.send_or_kill(&mut inner, &answer, None, "an answer");
            }
        }
        let due = inner.restart_at.is_some_and(|at| now >= at);
        if due && inner.running.is_none() {
            inner.restart_at = None;
            if let Err(e) = self.restart(&mut inner) {
                log::warn!("{e}");
                inner.failures += 1;
                inner.restart_at = Some(now + Duration::from_millis(100 << inner.failures.min(6)).min(MAX_BACKOFF));
            }
        }
    }

    /// Starts a new router and gives every attached compartment's VMM a
    /// connection to it (the lock is held).
    fn restart(&self, inner: &mut Inner) -> Result<(), IpcError> {
        self.start(inner)?;
        let compartments: Vec<(String, u64)> = inner.attached.iter().map(|(n, a)| (n.clone(), a.cid)).collect();
        for (name, cid) in compartments {
            // One compartment that cannot be reconnected does not keep the
            // others from it.
            let stream = match self.connect_one(inner, &name, cid, false) {
                Ok(stream) => stream,
                Err(e) => {
                    log::warn!("compartment {name}: {e}");
                    continue;
                }
            };
            if let Some(attached) = inner.attached.get(&name)
                && let Err(e) = attached.reconnect.send_with_fd(&b"reconnect"[..], stream.as_raw_fd())
            {
                log::warn!("compartment {name}: cannot hand its VMM the new IPC router connection: {e}");
            }
        }
        inner.failures = 0;
        Ok(())
    }

    /// The calls waiting for the user, oldest first.
    pub fn pending(&self) -> Vec<PendingAsk> {
        let inner = lock(&self.inner);
        inner
            .pending
            .values()
            .map(|(ask, _, since)| PendingAsk { waited_s: since.elapsed().as_secs(), ..ask.clone() })
            .collect()
    }

    /// The user's answer to ask `id`.
    pub fn answer(&self, id: u64, allow: bool) -> Result<(), IpcError> {
        let mut inner = lock(&self.inner);
        let (ask, _, _) = inner.pending.remove(&id).ok_or(IpcError::NoSuchAsk(id))?;
        self.send_or_kill(&mut inner, &ToRouter::Answer { id, allow, no_answer_after_s: None }, None, "an answer")?;
        let (kind, how) = if allow { ("ipc-allow", "user allowed") } else { ("ipc-deny", "user denied") };
        let detail = format!("-> {} {}: {how}", ask.to, ask.service);
        let _ = self.store.audit_between(kind, Some(&ask.from), Some(&ask.to), &detail);
        Ok(())
    }

    /// The router's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.inner).running.as_ref().map(|r| r.child.id())
    }

    /// Stops the router (daemon shutdown).
    pub fn shutdown(&self) {
        let mut inner = lock(&self.inner);
        inner.generation += 1;
        if let Some(mut running) = inner.running.take() {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }
}

/// Connects host call `id` (from compartment `from`, for
/// `service[+argument]`) to the service's socket, and hands the router the
/// connection, or says why there is none. The router already checked the
/// policy; wardd only knows where the services are.
fn connect_host_service(
    control: &UnixDatagram,
    services: &HashMap<String, PathBuf>,
    id: u64,
    from: &str,
    service: &str,
) {
    let name = service.split('+').next().unwrap_or(service);
    let connected = match services.get(name) {
        None => Err(format!("no host service {name} is configured (wardd --host-service)")),
        Some(path) => connect_now(path).map_err(|e| format!("{}: {e}", path.display())),
    };
    let result = match &connected {
        Ok(stream) => send(control, &ToRouter::HostConnected { id }, Some(stream.as_raw_fd()), "a host connection"),
        Err(reason) => {
            log::info!("host call {id} from {from} to {service}: {reason}");
            send(control, &ToRouter::HostFailed { id, reason }, None, "a host failure")
        }
    };
    if let Err(e) = result {
        log::warn!("{e}");
    }
}

/// Sends `message` (and `fd`, if any) on the control socket.
fn send(control: &UnixDatagram, message: &ToRouter<'_>, fd: Option<i32>, what: &'static str) -> Result<(), IpcError> {
    let mut bytes = Vec::new();
    // Serialising our own message types cannot fail.
    let _ = serde_json::to_writer(&mut bytes, message);
    let _ = bytes.flush();
    let result = match fd {
        Some(fd) => control.send_with_fd(&bytes[..], fd).map(|_| ()).map_err(std::io::Error::from),
        None => control.send(&bytes).map(|_| ()),
    };
    result.map_err(|source| IpcError::Send { what, source })
}

/// Writes one of the router's decision lines (`allow mail -> vault sign:
/// rule #1 at ...`, `limit mail: ...`) as an audit entry of kind
/// `ipc-<action>` about the caller, with the callee as its peer.
fn audit_decision(store: &Store, line: &str) {
    let (action, rest) = line.split_once(' ').unwrap_or((line, ""));
    let kind = format!("ipc-{action}");
    let (from, peer, detail) = match rest.split_once(" -> ") {
        Some((from, call)) if !from.contains(' ') => {
            let to = call.split([' ', ':']).next().unwrap_or_default();
            (Some(from), Some(to), format!("-> {call}"))
        }
        _ => match rest.split_once(": ") {
            Some((name, detail)) if !name.contains(' ') => (Some(name), None, detail.to_owned()),
            _ => (None, None, rest.to_owned()),
        },
    };
    let _ = store.audit_between(&kind, from, peer, &detail);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_service_that_stopped_accepting_is_refused_not_waited_for() {
        let dir = std::env::temp_dir().join(format!("ward-connect-now-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stuck.sock");
        let _ = std::fs::remove_file(&path);
        // Never accepts: its backlog (made small) fills.
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        ward_sandbox::sockets::set_backlog(&listener, 1).unwrap();
        let mut held = Vec::new();
        let refused = (0..64).find_map(|_| match connect_now(&path) {
            Ok(stream) => {
                held.push(stream);
                None
            }
            Err(e) => Some(e),
        });
        let refused = refused.expect("a full backlog refuses instead of blocking");
        assert_eq!(refused.kind(), std::io::ErrorKind::WouldBlock, "{refused}");
        assert!(!held.is_empty(), "connections within the backlog work");
        assert!(connect_now(&dir.join("missing.sock")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
