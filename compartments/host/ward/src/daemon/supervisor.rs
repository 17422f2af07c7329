//! Compartment lifecycle: create, start, stop, kill, remove, the restart
//! policies, and finding compartments again after the daemon restarts.
//!
//! State changes happen under one lock and are saved (flushed) before the
//! daemon acts on them, so every compartment is always accounted for: a
//! daemon killed at any point finds, on restart, each record, and for each
//! running one either its VMM still running (adopted) or the exit record
//! it left.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ward_policy::{Lookup, Role};

use super::ipc::{IpcRouter, PendingAsk, RouterConfig, VmmSockets};
use super::paths::Paths;
use super::proto::{CreateArgs, Inspection, State, Status};
use super::slot::{Slot, SlotError};
use super::state::{Granted, Record, Restart, Store, StoreError, now_ms};
use super::usage::{self, Usage};
use crate::grant::{DiskRequest, grant};
use crate::name::CompartmentName;
use crate::policy_source::PolicySource;
use ward_sandbox::jail::{Cgroup, CgroupLimits};
use ward_sandbox::pidfd::Pidfd;
use ward_sandbox::spawner::Spawner;
use ward_vmm_process::console_log;
use ward_vmm_process::spec::{ExitRecord, VmmSpec, VsockSpec};

/// How long console input waits for a guest that does not read.
const INPUT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `stop` waits after SIGTERM before SIGKILL, by default.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_STOP_MS: u64 = 5_000;
/// Longest wait between restarts.
pub const MAX_BACKOFF_MS: u64 = 30_000;
/// A compartment that fails this many runs in a row, each ending within
/// [`STABLE_RUN_MS`] of its start, is not restarted again (a crash loop;
/// systemd's start limit is the model). `ward start` tries again.
pub const START_LIMIT_BURST: u32 = 5;
/// A run that lasted this long counts as a success for the start limit:
/// the next failure starts the count again.
pub const STABLE_RUN_MS: u64 = 60_000;
/// How long a stopped disposable compartment stays before it is removed.
pub const DISPOSABLE_GRACE_MS: u64 = 10_000;

/// What the daemon was started with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Its directories.
    pub paths: Paths,
    /// Where the policy comes from.
    pub policy: PolicySource,
    /// The `ward-vmm` executable.
    pub vmm_binary: PathBuf,
    /// Cap of a console history file.
    pub log_cap: u64,
    /// Jail VMM processes.
    pub jail: bool,
    /// The `ward-ipc` executable (the IPC router).
    pub ipc_binary: PathBuf,
    /// How long a call the policy says to `ask` about waits for the user.
    pub ask_timeout: Duration,
    /// Host services compartments may call (`to = "host"`): name and the
    /// UNIX socket the service listens on.
    pub host_services: HashMap<String, PathBuf>,
    /// The host-wide directory of daemon slots (`daemon::slot`).
    pub slot_registry: PathBuf,
}

/// The daemon could not open its state.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No slot of the host's uids and cgroup names.
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// The thread that starts processes.
    #[error("cannot start the spawning thread: {0}")]
    Spawner(std::io::Error),
}

pub use super::op_error::OpError;

/// The daemon's compartments.
#[derive(Debug)]
pub struct Supervisor {
    config: Config,
    store: Store,
    /// Held across every state change.
    ops: Mutex<()>,
    /// VMMs this daemon started (it can wait for them).
    children: Mutex<HashMap<String, Child>>,
    /// A process descriptor of every running VMM, started or adopted:
    /// liveness and signals without `/proc` and without pid reuse.
    vmms: Mutex<HashMap<String, Pidfd>>,
    /// The cgroup of each running compartment, removed when it ends.
    cgroups: Mutex<HashMap<String, Cgroup>>,
    /// The daemon's end of each running compartment's console input.
    inputs: Mutex<HashMap<String, std::os::unix::net::UnixStream>>,
    /// The IPC router, for compartments with a vsock device.
    ipc: IpcRouter,
    /// The host's uids and cgroup names this daemon may use.
    slot: Slot,
    /// Starts every process of the daemon.
    spawner: Arc<Spawner>,
}

/// Backoff before restart number `failures` (1 s, 2 s, 4 s ... 30 s).
pub fn backoff_ms(failures: u32) -> u64 {
    (1000u64 << failures.min(15)).min(MAX_BACKOFF_MS)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `pid` is a live `ward-vmm` running compartment `name`'s spec.
fn is_our_vmm(pid: u32, spec: &std::path::Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // A zombie has exited; it only waits for its parent to reap it.
    let zombie = stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3)) == Some("Z");
    !zombie
        && args.first().is_some_and(|a| a.ends_with(b"ward-vmm"))
        && args.contains(&spec.as_os_str().as_encoded_bytes())
        && !parent_is_vmm(&stat)
}

/// Whether a process's parent is itself a `ward-vmm`: a jailed VMM runs as
/// the child of its waiter (same command line), and the waiter is the
/// process wardd tracks, signals and adopts.
fn parent_is_vmm(stat: &str) -> bool {
    // Fields after the command's closing parenthesis: state, ppid, ...
    let ppid = stat.rfind(')').and_then(|i| stat.get(i + 2..)?.split(' ').nth(1)?.parse::<u32>().ok());
    ppid.and_then(|ppid| std::fs::read(format!("/proc/{ppid}/cmdline")).ok())
        .is_some_and(|cmd| cmd.split(|&b| b == 0).next().is_some_and(|a| a.ends_with(b"ward-vmm")))
}

/// Every live `ward-vmm` process and the spec file it runs.
fn running_vmms() -> Vec<(u32, PathBuf)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            if !args.first()?.ends_with(b"ward-vmm") || args.get(1) != Some(&&b"--spec"[..]) {
                return None;
            }
            let spec = PathBuf::from(String::from_utf8_lossy(args.get(2)?).into_owned());
            is_our_vmm(pid, &spec).then_some((pid, spec))
        })
        .collect()
}

/// A disk file a compartment asks for, by its real path, and its size in
/// bytes. The daemon has its own working directory, so only absolute paths
/// are taken.
fn bad_disk(name: &str, disk: &DiskRequest, reason: String) -> OpError {
    OpError::BadDisk { name: name.to_owned(), path: disk.path.clone(), reason }
}

fn disk_size(name: &str, disk: &DiskRequest) -> Result<(DiskRequest, u64), OpError> {
    if !disk.path.is_absolute() {
        return Err(bad_disk(name, disk, "not an absolute path (wardd has its own working directory)".to_owned()));
    }
    let real = std::fs::canonicalize(&disk.path).map_err(|e| bad_disk(name, disk, e.to_string()))?;
    match std::fs::metadata(&real) {
        Ok(m) if m.is_file() => Ok((DiskRequest { path: real, read_only: disk.read_only }, m.len())),
        Ok(_) => Err(bad_disk(name, disk, "not a regular file".to_owned())),
        Err(e) => Err(bad_disk(name, disk, e.to_string())),
    }
}

impl Supervisor {
    /// Opens the store and finds the compartments again.
    pub fn open(config: Config) -> Result<Self, OpenError> {
        let store = Store::open(&config.paths.db())?;
        let slot = Slot::claim(&config.slot_registry, &config.paths.state_dir)?;
        let spawner = Arc::new(Spawner::start().map_err(OpenError::Spawner)?);
        let router = RouterConfig {
            binary: config.ipc_binary.clone(),
            state_dir: config.paths.state_dir.clone(),
            policy: config.policy.clone(),
            jail: config.jail,
            ask_timeout: config.ask_timeout,
            host_services: config.host_services.clone(),
            uid: slot.router_uid(),
            cgroup: slot.cgroup(super::ipc::ROUTER_CGROUP),
        };
        let ipc = IpcRouter::new(router, store.clone(), Arc::clone(&spawner));
        let sup = Self {
            config,
            store,
            ipc,
            slot,
            spawner,
            ops: Mutex::new(()),
            children: Mutex::new(HashMap::new()),
            vmms: Mutex::new(HashMap::new()),
            cgroups: Mutex::new(HashMap::new()),
            inputs: Mutex::new(HashMap::new()),
        };
        sup.recover()?;
        Ok(sup)
    }

    /// The store, for the audit log.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The console history file of `name`.
    pub fn console_log(&self, name: &str) -> PathBuf {
        self.config.paths.console_log(name)
    }

    /// After a restart of the daemon: each record that says running is
    /// matched with its VMM process (adopted) or its exit record; a stop
    /// the old daemon began is carried on (signalled again, killed at its
    /// deadline by the supervision pass). A live VMM of this daemon's
    /// state that no running record claims (a record stopped or removed,
    /// or none: the daemon died between writing a spec and recording it)
    /// is killed: nothing the policy decided stands behind it.
    fn recover(&self) -> Result<(), StoreError> {
        let _guard = lock(&self.ops);
        let run_dir = self.config.paths.spec("x").parent().map(std::path::Path::to_owned).unwrap_or_default();
        let mut live: Vec<(u32, PathBuf)> =
            running_vmms().into_iter().filter(|(_, spec)| spec.parent() == Some(run_dir.as_path())).collect();
        for mut rec in self.store.all()? {
            let spec = self.config.paths.spec(&rec.name);
            let vmm = live.iter().position(|(_, s)| *s == spec).map(|i| live.swap_remove(i).0);
            let pidfd = vmm.and_then(|pid| Pidfd::open(pid).ok().map(|pidfd| (pid, pidfd)));
            match (rec.state, pidfd) {
                (State::Running | State::Starting | State::Stopping, Some((pid, pidfd))) => {
                    rec.pid = Some(pid);
                    if rec.state == State::Starting {
                        rec.state = State::Running;
                    }
                    if rec.state == State::Stopping {
                        // The old daemon may have died before its signal.
                        let deadline = rec.stop_deadline_ms.get_or_insert(now_ms() + DEFAULT_STOP_MS);
                        if *deadline > now_ms() {
                            let _ = pidfd.signal(libc::SIGTERM);
                        }
                    }
                    self.store.put(&rec)?;
                    self.store.audit("adopt", &rec.name, &format!("pid {pid} (daemon restarted)"))?;
                    self.adopt_ipc(&rec, &pidfd);
                    lock(&self.vmms).insert(rec.name.clone(), pidfd);
                }
                (State::Running | State::Starting | State::Stopping, None) => {
                    self.finish(&mut rec, None, "while the daemon was down")?;
                }
                (_, Some((pid, pidfd))) => {
                    let _ = pidfd.signal(libc::SIGKILL);
                    self.store.audit(
                        "kill-stray",
                        &rec.name,
                        &format!("pid {pid}: its record says {:?}", rec.state),
                    )?;
                }
                _ => {}
            }
        }
        for (pid, spec) in live {
            if let Ok(pidfd) = Pidfd::open(pid) {
                let _ = pidfd.signal(libc::SIGKILL);
            }
            let name = spec.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            self.store.audit("kill-stray", &name, &format!("pid {pid}: no record claims {}", spec.display()))?;
        }
        Ok(())
    }

    /// An adopted VMM with a vsock device: takes back wardd's end of its
    /// reconnect socket (the VMM kept a copy open for this), so the new
    /// router can be handed to it.
    fn adopt_ipc(&self, rec: &Record, pidfd: &Pidfd) {
        if !rec.devices.vsock {
            return;
        }
        let spec: Option<VmmSpec> =
            std::fs::read(self.config.paths.spec(&rec.name)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let Some(vsock) = spec.and_then(|s| s.vsock) else { return };
        let Some(keep_fd) = vsock.keep_fd else { return };
        match pidfd.take_fd(keep_fd) {
            Ok(fd) => self.ipc.adopt(&rec.name, vsock.cid, std::os::unix::net::UnixDatagram::from(fd)),
            Err(e) => {
                let _ = self.store.audit("ipc-lost", &rec.name, &format!("cannot take back its reconnect socket: {e}"));
            }
        }
    }

    /// Creates compartment `name` from the policy.
    pub fn create(&self, args: &CreateArgs) -> Result<(), OpError> {
        let CreateArgs { name, image, memory_mib, cmdline, disks, disposable, restart: asked_restart } = args;
        let (name, disposable) = (name.as_str(), *disposable);
        let valid = CompartmentName::new(name)?;
        // What the VMM would refuse at start is refused now.
        ward_vmm::boot::check_cmdline(cmdline.as_bytes())
            .map_err(|source| OpError::BadCmdline { name: name.to_owned(), source })?;
        let _guard = lock(&self.ops);
        if self.store.get(name)?.is_some() {
            return Err(OpError::Exists(name.to_owned()));
        }
        let policy = self.config.policy.load()?;
        let g = grant(&policy, &self.config.policy.describe(), &valid, *memory_mib, image.as_deref())?;
        // Kept by their real paths: the VMM opens them without following
        // links, so a path swapped for a link later is refused.
        let sized = disks.iter().map(|d| disk_size(name, d)).collect::<Result<Vec<_>, _>>()?;
        let disks: &Vec<DiskRequest> = &sized.iter().map(|(d, _)| d.clone()).collect();
        g.check_disks(name, &sized)?;
        if ward_images::image(&g.image).is_none() {
            return Err(OpError::NoSuchImage(g.image));
        }
        let (role, policy_restart) = match policy.compartment(name) {
            Lookup::Defined(spec) | Lookup::AdHoc(spec) => (spec.role.to_string(), restart_of(spec.restart)),
            Lookup::Undefined => ("app".to_owned(), Restart::Never),
        };
        // The restart policy is the person's to choose: it grants nothing.
        let restart = asked_restart.unwrap_or(policy_restart);
        let record = Record {
            name: name.to_owned(),
            role,
            image: g.image,
            memory_mib: g.memory_mib,
            cmdline: cmdline.clone(),
            restart,
            disposable,
            state: State::Created,
            pid: None,
            started_at_ms: None,
            exit_code: None,
            restarts: 0,
            failures: 0,
            restart_at_ms: None,
            created_at_ms: now_ms(),
            ended_at_ms: None,
            devices: Granted { console: g.console, rng: g.rng, vsock: g.vsock },
            disks: disks.clone(),
            uid: None,
            stop_deadline_ms: None,
            exit_reason: None,
        };
        self.store.put(&record)?;
        let mut what = format!("image {} memory {} MiB", record.image, record.memory_mib);
        for d in disks {
            what.push_str(&format!(" disk {}{}", d.path.display(), if d.read_only { " (read-only)" } else { "" }));
        }
        self.store.audit("create", name, &what)?;
        Ok(())
    }

    /// Starts a created or stopped compartment. A running one is left
    /// alone: the answer is a note saying so.
    pub fn start(&self, name: &str) -> Result<Option<String>, OpError> {
        let _guard = lock(&self.ops);
        let mut rec = self.get(name)?;
        match rec.state {
            State::Created | State::Stopped | State::Restarting => {
                // A person's start begins afresh: no backoff, no start limit.
                rec.failures = 0;
                self.spawn(&mut rec).map(|()| None)
            }
            State::Running | State::Starting => Ok(Some(format!("compartment {name} is running already"))),
            state => Err(OpError::WrongState { name: name.to_owned(), state, hint: "; wait until it stopped" }),
        }
    }

    fn get(&self, name: &str) -> Result<Record, OpError> {
        self.store.get(name)?.ok_or_else(|| OpError::NoSuchCompartment(name.to_owned()))
    }

    /// Starts the VMM process of `rec` (the ops lock is held).
    fn spawn(&self, rec: &mut Record) -> Result<(), OpError> {
        // A uid from another slot (the daemon's slot changed) is not ours.
        if rec.uid.is_none_or(|uid| !self.slot.compartment_uids().contains(&uid)) {
            rec.uid = Some(self.free_uid()?);
        }
        // IPC: a connection to the router, and the socket a new one comes
        // on if the router restarts; the VMM inherits both.
        let vsock = match (rec.devices.vsock, rec.uid) {
            (true, Some(uid)) => {
                let cid = Slot::cid(uid);
                let sockets = self.ipc.attach(&rec.name, cid)?;
                Some((cid, sockets))
            }
            _ => None,
        };
        let attached = vsock.is_some();
        let result = self.spawn_vmm(rec, vsock);
        if result.is_err() && attached {
            // No VMM took the connection: the router forgets it.
            self.ipc.detach(&rec.name);
        }
        result
    }

    /// [`Self::spawn`], once the compartment's IPC connection (if any) is
    /// made.
    fn spawn_vmm(&self, rec: &mut Record, vsock: Option<(u64, VmmSockets)>) -> Result<(), OpError> {
        let paths = &self.config.paths;
        let internal = |what: &str, e: std::io::Error| OpError::host(what, e);
        let (started, vmm_started) =
            std::os::unix::net::UnixStream::pair().map_err(|e| internal("making the started socket", e))?;
        let spec = VmmSpec {
            name: rec.name.clone(),
            image: rec.image.clone(),
            memory_mib: rec.memory_mib,
            cmdline: rec.cmdline.clone(),
            console_log: paths.console_log(&rec.name),
            log_cap: self.config.log_cap,
            exit_file: paths.exit_file(&rec.name),
            jail: self.config.jail,
            console: rec.devices.console,
            rng: rec.devices.rng,
            disks: rec.disks.clone(),
            uid: rec.uid,
            console_input: rec.devices.console,
            vsock: vsock.as_ref().map(|(cid, sockets)| VsockSpec {
                cid: *cid,
                backend_fd: sockets.backend.as_raw_fd(),
                reconnect_fd: sockets.reconnect.as_raw_fd(),
                keep_fd: Some(sockets.keep.as_raw_fd()),
            }),
            started_fd: Some(vmm_started.as_raw_fd()),
        };
        let vsock_fds = vsock.map(|(_, sockets)| sockets);
        let spec_path = paths.spec(&rec.name);
        let json = serde_json::to_vec_pretty(&spec).map_err(|e| OpError::host("encoding the spec", e.into()))?;
        std::fs::write(&spec_path, json).map_err(|e| internal("writing the spec", e))?;
        let _ = std::fs::remove_file(paths.exit_file(&rec.name));
        let how = if rec.state == State::Restarting {
            format!(" (restart {} by its restart policy)", rec.restarts)
        } else {
            String::new()
        };
        self.mark_console(&rec.name, &format!("ward: {} started{how}", rec.name));
        rec.state = State::Starting;
        rec.pid = None;
        self.store.put(rec)?;
        let errors = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(paths.vmm_errors(&rec.name))
            .map_err(|e| internal("opening the VMM error log", e))?;
        // Console input: the VMM reads its standard input, one end of a
        // socket pair; `input` writes to the other.
        let (input, vmm_input) =
            std::os::unix::net::UnixStream::pair().map_err(|e| internal("making the console input", e))?;
        let mut command = Spawner::command(&self.config.vmm_binary);
        command
            .arg("--spec")
            .arg(&spec_path)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(vmm_input)))
            .stdout(Stdio::null())
            .stderr(errors);
        let mut fds = vec![vmm_started.as_raw_fd()];
        if let Some(sockets) = &vsock_fds {
            fds.extend([sockets.backend.as_raw_fd(), sockets.reconnect.as_raw_fd(), sockets.keep.as_raw_fd()]);
        }
        ward_sandbox::process::inherit_fds(&mut command, fds);
        let cgroup = self.config.jail.then(|| self.cgroup_for(rec, &mut command)).flatten();
        let child = match self.spawner.spawn(command) {
            Ok(child) => child,
            Err(e) => {
                if let Some(cgroup) = cgroup {
                    let _ = cgroup.remove();
                }
                // A run that never began: a failure like any other, so the
                // restart policy and its backoff apply.
                let error = internal(&format!("starting {} in its cgroup", self.config.vmm_binary.display()), e);
                self.finish_with(rec, None, format!("not started: {error}"))?;
                return Err(error);
            }
        };
        if let Some(cgroup) = cgroup {
            lock(&self.cgroups).insert(rec.name.clone(), cgroup);
        }
        // The command went with the spawn, closing the VMM's end of the
        // input here; close its IPC sockets and its started socket too.
        drop(vsock_fds);
        drop(vmm_started);
        wait_until_started(&started, &rec.name);
        let pid = child.id();
        match Pidfd::open(pid) {
            Ok(pidfd) => {
                lock(&self.vmms).insert(rec.name.clone(), pidfd);
            }
            // It already ended: the supervision pass reaps it.
            Err(e) => log::warn!("compartment {}: no pidfd for pid {pid}: {e}", rec.name),
        }
        lock(&self.children).insert(rec.name.clone(), child);
        lock(&self.inputs).insert(rec.name.clone(), input);
        rec.state = State::Running;
        rec.pid = Some(pid);
        rec.started_at_ms = Some(now_ms());
        rec.restart_at_ms = None;
        rec.stop_deadline_ms = None;
        self.store.put(rec)?;
        let uid = rec.uid.filter(|_| self.config.jail).map(|uid| format!(" uid {uid}")).unwrap_or_default();
        self.store.audit("start", &rec.name, &format!("pid {pid}{uid}"))?;
        Ok(())
    }

    /// Writes Ward's marker `text` into `name`'s console history, where
    /// `ward logs` shows it between runs.
    fn mark_console(&self, name: &str, text: &str) {
        let path = self.config.paths.console_log(name);
        let now = std::time::SystemTime::now();
        if let Err(e) = ward_vmm_process::console_lines::append_marker(&path, self.config.log_cap, text, now) {
            log::warn!("compartment {name}: console history {}: {e}", path.display());
        }
    }

    /// The lowest uid of the daemon's slot no compartment has (the ops
    /// lock is held).
    fn free_uid(&self) -> Result<u32, OpError> {
        let taken: std::collections::HashSet<u32> = self.store.all()?.iter().filter_map(|r| r.uid).collect();
        let mut uids = self.slot.compartment_uids();
        let count = uids.len();
        uids.find(|uid| !taken.contains(uid))
            .ok_or_else(|| OpError::Exhausted(format!("all {count} compartment uids of this wardd's slot are in use")))
    }

    /// Makes the compartment's cgroup (memory, CPU, task limits) and has the
    /// VMM process join it before it runs a single instruction of its own,
    /// so everything it starts is limited too. A host without the cgroup
    /// controllers gets the VMM without them, reported once in the audit.
    fn cgroup_for(&self, rec: &Record, command: &mut Command) -> Option<Cgroup> {
        let cgroup = match Cgroup::create(&self.slot.cgroup(&rec.name), &CgroupLimits::for_guest(rec.memory_mib << 20))
        {
            Ok(c) => c,
            Err(e) => {
                let _ = self.store.audit("cgroup-unavailable", &rec.name, &e.to_string());
                return None;
            }
        };
        let missing: Vec<String> =
            cgroup.report().iter().filter(|m| !m.applied).map(|m| format!("{} ({})", m.name, m.detail)).collect();
        if !missing.is_empty() {
            let _ = self.store.audit("cgroup-partial", &rec.name, &missing.join("; "));
        }
        cgroup.join_before_exec(command);
        Some(cgroup)
    }

    /// Stops a compartment: SIGTERM, then SIGKILL after `timeout`. Returns
    /// once its VMM is gone. The deadline is in the record: if the daemon
    /// dies meanwhile, the next one finishes the stop. One that does not
    /// run is left alone: the answer is a note saying so.
    pub fn stop(&self, name: &str, timeout: Duration, force: bool) -> Result<Option<String>, OpError> {
        let deadline = {
            let _guard = lock(&self.ops);
            let mut rec = self.get(name)?;
            match rec.state {
                State::Running | State::Starting | State::Stopping => {}
                State::Restarting => {
                    rec.state = State::Stopped;
                    rec.restart_at_ms = None;
                    self.store.put(&rec)?;
                    self.store.audit("stop", name, "restart cancelled")?;
                    return Ok(None);
                }
                State::Created | State::Stopped => {
                    return Ok(Some(format!("compartment {name} is not running ({})", rec.state)));
                }
            }
            let timeout_ms = if force { 0 } else { u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX) };
            let deadline = now_ms().saturating_add(timeout_ms);
            // A second stop may shorten a first one's wait, never lengthen it.
            let deadline =
                rec.stop_deadline_ms.filter(|_| rec.state == State::Stopping).map_or(deadline, |d| d.min(deadline));
            rec.state = State::Stopping;
            rec.stop_deadline_ms = Some(deadline);
            self.store.put(&rec)?;
            self.store.audit(if force { "kill" } else { "stop" }, name, "")?;
            self.signal_vmm(name, if force { libc::SIGKILL } else { libc::SIGTERM });
            deadline
        };
        while self.vmm_alive(name) && now_ms() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.vmm_alive(name) {
            self.signal_vmm(name, libc::SIGKILL);
        }
        // The end is recorded by a supervision pass; run this compartment's
        // part of one (a whole pass per stop makes stopping n compartments
        // cost n²).
        for _ in 0..500 {
            if self.supervise_one(name)? != Some(State::Stopping) {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(OpError::DidNotStop(name.to_owned()))
    }

    /// Whether `name`'s VMM is still running (a zombie is not).
    fn vmm_alive(&self, name: &str) -> bool {
        lock(&self.vmms).get(name).is_some_and(|pidfd| !pidfd.has_exited())
    }

    /// Signals `name`'s VMM, if it runs.
    fn signal_vmm(&self, name: &str, signal: i32) {
        if let Some(pidfd) = lock(&self.vmms).get(name) {
            let _ = pidfd.signal(signal);
        }
    }

    /// Passes `data` to a running compartment's console input; `end`
    /// closes the input after it. Waits at most a few seconds for a guest
    /// that reads nothing.
    pub fn input(&self, name: &str, data: &[u8], end: bool) -> Result<(), OpError> {
        use std::io::Write;
        let stream = lock(&self.inputs).get(name).map(std::os::unix::net::UnixStream::try_clone);
        let stream = match stream {
            Some(Ok(stream)) => stream,
            Some(Err(e)) => return Err(OpError::host(format!("console input of {name}"), e)),
            None => {
                let reason = "not running with a console input from this daemon".to_owned();
                return Err(OpError::NoInput { name: name.to_owned(), reason });
            }
        };
        let refused =
            |e: std::io::Error| OpError::NoInput { name: name.to_owned(), reason: format!("console input: {e}") };
        stream.set_write_timeout(Some(INPUT_TIMEOUT)).map_err(refused)?;
        (&stream).write_all(data).map_err(refused)?;
        if end {
            stream.shutdown(std::net::Shutdown::Write).map_err(refused)?;
            lock(&self.inputs).remove(name);
        }
        Ok(())
    }

    /// Removes a stopped compartment and its files.
    pub fn remove(&self, name: &str) -> Result<(), OpError> {
        let _guard = lock(&self.ops);
        let rec = self.get(name)?;
        if !matches!(rec.state, State::Created | State::Stopped) {
            return Err(OpError::WrongState { name: name.to_owned(), state: rec.state, hint: "; stop it first" });
        }
        self.forget(name)?;
        Ok(())
    }

    fn forget(&self, name: &str) -> Result<(), StoreError> {
        let paths = &self.config.paths;
        let log = paths.console_log(name);
        for file in [paths.spec(name), paths.exit_file(name), console_log::rotated(&log), log, paths.vmm_errors(name)] {
            let _ = std::fs::remove_file(file);
        }
        self.store.remove(name)?;
        self.store.audit("remove", name, "")
    }

    /// Whether `name`'s VMM is this daemon's child, and its exit status if
    /// it has ended (then it is reaped, not left a zombie).
    fn reap(&self, name: &str) -> (bool, Option<std::process::ExitStatus>) {
        let mut children = lock(&self.children);
        let Some(child) = children.get_mut(name) else { return (false, None) };
        match child.try_wait() {
            Ok(None) => (true, None),
            Ok(Some(status)) => {
                children.remove(name);
                (true, Some(status))
            }
            // Not waitable after all: forget the handle and judge by `/proc`.
            Err(_) => {
                children.remove(name);
                (false, None)
            }
        }
    }

    /// One supervision pass: records VMMs that ended, applies restart
    /// policies, starts restarts that are due. The daemon runs it every
    /// 100 ms, so a killed VMM is noticed well within a second.
    pub fn supervise(&self) {
        self.ipc.supervise();
        let _guard = lock(&self.ops);
        let Ok(records) = self.store.all() else { return };
        for rec in records {
            self.supervise_record(rec);
        }
    }

    /// The supervision pass for `name` alone; returns its state after.
    fn supervise_one(&self, name: &str) -> Result<Option<State>, OpError> {
        let _guard = lock(&self.ops);
        let Some(rec) = self.store.get(name)? else { return Ok(None) };
        self.supervise_record(rec);
        Ok(self.store.get(name)?.map(|r| r.state))
    }

    /// One compartment's part of a supervision pass (the ops lock is held).
    fn supervise_record(&self, mut rec: Record) {
        match rec.state {
            State::Running | State::Stopping | State::Starting => {
                // A child's end shows in `waitpid`, and only there: its
                // pidfd could see it end first and record the end without
                // reaping it (a zombie for good). A VMM adopted after a
                // restart is not our child: its pidfd tells.
                let (child, status) = self.reap(&rec.name);
                let gone = !child && !self.vmm_alive(&rec.name);
                if status.is_none()
                    && !gone
                    && rec.state == State::Stopping
                    && rec.stop_deadline_ms.is_none_or(|deadline| now_ms() >= deadline)
                {
                    // A stop past its deadline, whoever began it.
                    self.signal_vmm(&rec.name, libc::SIGKILL);
                }
                if status.is_some() || gone {
                    let how = status.map_or_else(|| "exited".to_owned(), |s| s.to_string());
                    if let Err(e) = self.finish(&mut rec, status, &how) {
                        log::warn!("compartment {}: {e}", rec.name);
                    }
                }
            }
            // A disposable compartment goes once its end was seen
            // (`ward run --disposable` removes it at once; this catches
            // a client that went away).
            State::Stopped if rec.disposable && rec.ended_at_ms.is_some_and(|t| now_ms() > t + DISPOSABLE_GRACE_MS) => {
                if let Err(e) = self.forget(&rec.name) {
                    log::warn!("compartment {}: {e}", rec.name);
                }
            }
            State::Restarting if rec.restart_at_ms.is_none_or(|at| at <= now_ms()) => {
                rec.restarts += 1;
                if let Err(e) = self.spawn(&mut rec) {
                    log::warn!("compartment {}: restart failed: {e}", rec.name);
                }
            }
            _ => {}
        }
    }

    /// Records the end of `rec`'s run and decides what comes next;
    /// `status` is how its VMM process ended, when this daemon reaped it.
    fn finish(&self, rec: &mut Record, status: Option<ExitStatus>, how: &str) -> Result<(), StoreError> {
        lock(&self.inputs).remove(&rec.name);
        lock(&self.vmms).remove(&rec.name);
        self.ipc.detach(&rec.name);
        let without_record = if rec.state == State::Stopping {
            format!("stopped ({how})")
        } else {
            format!("killed or crashed ({how})")
        };
        self.finish_with(rec, status, without_record)
    }

    /// [`Self::finish`], with the reason to record if the VMM left none.
    fn finish_with(
        &self,
        rec: &mut Record,
        status: Option<ExitStatus>,
        without_record: String,
    ) -> Result<(), StoreError> {
        // A compartment adopted after a daemon restart has its group on the
        // host but not in this daemon's memory.
        let cgroup = lock(&self.cgroups).remove(&rec.name);
        let cgroup =
            cgroup.or_else(|| self.config.jail.then(|| Cgroup::open(&self.slot.cgroup(&rec.name)).ok()).flatten());
        if let Some(cgroup) = cgroup
            && let Err(e) = cgroup.remove()
        {
            log::warn!("compartment {}: {e}", rec.name);
        }
        let exit: Option<ExitRecord> =
            std::fs::read(self.config.paths.exit_file(&rec.name)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        // The guest's own code if it powered off; else what a shell shows
        // of the VMM process (125 for a crash, 128 + N for signal N).
        rec.exit_code = exit.as_ref().and_then(|e| e.exit_code).or_else(|| status.and_then(shell_exit_code));
        rec.pid = None;
        let now = now_ms();
        rec.ended_at_ms = Some(now);
        rec.stop_deadline_ms = None;
        let stopped_by_user = rec.state == State::Stopping;
        let failed = rec.exit_code != Some(0);
        let stable = rec.started_at_ms.is_some_and(|t| now.saturating_sub(t) >= STABLE_RUN_MS);
        rec.failures = match (failed, stable) {
            (false, _) => 0,
            (true, true) => 1,
            (true, false) => rec.failures.saturating_add(1),
        };
        let reason = exit.map_or(without_record, |e| e.reason);
        self.store.audit("exit", &rec.name, &reason)?;
        let code = rec.exit_code.map_or_else(|| "unknown".to_owned(), |c| c.to_string());
        self.mark_console(&rec.name, &format!("ward: {} ended: {reason} (exit code {code})", rec.name));
        rec.exit_reason = Some(reason);
        let mut restart = !stopped_by_user
            && match rec.restart {
                Restart::Never => false,
                Restart::OnFailure => failed,
                Restart::Always => true,
            };
        if restart && rec.failures >= START_LIMIT_BURST {
            restart = false;
            let why = format!(
                "failed {} times in a row, each within {} s of its start; not restarted (`ward start` tries again)",
                rec.failures,
                STABLE_RUN_MS / 1000
            );
            self.store.audit("restart-limit", &rec.name, &why)?;
        }
        if restart {
            let wait = backoff_ms(rec.failures.saturating_sub(1));
            rec.state = State::Restarting;
            rec.restart_at_ms = Some(now_ms() + wait);
            self.store.audit("restart-scheduled", &rec.name, &format!("in {wait} ms"))?;
        } else {
            rec.state = State::Stopped;
        }
        self.store.put(rec)
    }

    /// Statuses of every compartment.
    pub fn list(&self) -> Result<Vec<Status>, OpError> {
        let now = now_ms();
        Ok(self
            .store
            .all()?
            .into_iter()
            .map(|r| {
                let usage = r.pid.map(Usage::of_vmm).unwrap_or_default();
                Status {
                    uptime_s: r
                        .started_at_ms
                        .filter(|_| r.state == State::Running)
                        .map(|t| now.saturating_sub(t) / 1000),
                    name: r.name,
                    role: r.role,
                    image: r.image,
                    state: r.state,
                    pid: r.pid,
                    memory_mib: r.memory_mib,
                    usage,
                    exit_code: r.exit_code,
                    restarts: r.restarts,
                    started_at_ms: r.started_at_ms,
                    ended_at_ms: r.ended_at_ms,
                }
            })
            .collect())
    }

    /// A record, and where the host keeps the compartment.
    pub fn inspect(&self, name: &str) -> Result<Inspection, OpError> {
        let record = self.get(name)?;
        let paths = &self.config.paths;
        let usage = record.pid.map(Usage::of_vmm).unwrap_or_default();
        let pids = record.pid.map_or_else(Vec::new, usage::vmm_pids);
        let cgroups = if record.pid.is_some() && self.config.jail {
            let known = lock(&self.cgroups).get(name).cloned();
            let cgroup = known.or_else(|| Cgroup::open(&self.slot.cgroup(name)).ok());
            cgroup.map_or_else(Vec::new, |c| c.paths().into_iter().map(std::path::Path::to_owned).collect())
        } else {
            Vec::new()
        };
        Ok(Inspection {
            console_log: paths.console_log(name),
            vmm_log: paths.vmm_errors(name),
            spec: paths.spec(name),
            cgroups,
            pids,
            usage,
            record,
        })
    }

    /// The state of `name`, if it exists.
    pub fn state_of(&self, name: &str) -> Result<Option<(State, Option<i32>)>, OpError> {
        Ok(self.store.get(name)?.map(|r| (r.state, r.exit_code)))
    }

    /// Starts every compartment the policy marks `autostart`, identity and
    /// storage first, then communication, then apps.
    pub fn autostart(&self) -> Result<Vec<String>, OpError> {
        let policy = self.config.policy.load()?;
        let mut names: Vec<(u8, String)> = policy
            .spec()
            .compartments
            .iter()
            .filter(|(_, spec)| spec.autostart)
            .map(|(name, spec)| (role_order(spec.role), name.clone()))
            .collect();
        names.sort();
        let mut started = Vec::new();
        for (_, name) in names {
            if self.store.get(&name)?.is_none() {
                self.create(&CreateArgs::from_policy(&name))?;
            }
            if matches!(self.state_of(&name)?, Some((State::Created | State::Stopped, _))) {
                self.start(&name)?;
                started.push(name);
            }
        }
        Ok(started)
    }

    /// The IPC calls waiting for the user's answer.
    pub fn pending(&self) -> Vec<PendingAsk> {
        self.ipc.pending()
    }

    /// The user's answer to pending call `id`.
    pub fn answer(&self, id: u64, allow: bool) -> Result<(), OpError> {
        Ok(self.ipc.answer(id, allow)?)
    }

    /// The IPC router's process id, while it runs.
    pub fn ipc_router_pid(&self) -> Option<u32> {
        self.ipc.pid()
    }

    /// Stops the IPC router (daemon shutdown, after the compartments).
    pub fn stop_ipc(&self) {
        self.ipc.shutdown();
    }

    /// Stops every running compartment (daemon shutdown).
    pub fn stop_all(&self, timeout: Duration) {
        let running: Vec<String> = self
            .store
            .all()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| matches!(r.state, State::Running | State::Starting | State::Restarting))
            .map(|r| r.name)
            .collect();
        // In parallel, a bounded number at a time.
        for batch in running.chunks(64) {
            std::thread::scope(|s| {
                for name in batch {
                    s.spawn(move || {
                        if let Err(e) = self.stop(name, timeout, false) {
                            log::warn!("stopping {name}: {e}");
                        }
                    });
                }
            });
        }
    }
}

/// A process's end as a shell shows it: its exit code, or 128 + N when
/// signal N ended it (SIGKILL: 137, SIGTERM: 143).
pub fn shell_exit_code(status: ExitStatus) -> Option<i32> {
    status.code().or_else(|| status.signal().map(|signal| 128 + signal))
}

/// Dependency order of roles at autostart.
pub fn role_order(role: Role) -> u8 {
    match role {
        Role::Identity => 0,
        Role::Storage => 1,
        Role::Communication => 2,
        Role::App => 3,
    }
}

fn restart_of(policy: ward_policy::RestartPolicy) -> Restart {
    match policy {
        ward_policy::RestartPolicy::Never => Restart::Never,
        ward_policy::RestartPolicy::OnFailure => Restart::OnFailure,
        ward_policy::RestartPolicy::Always => Restart::Always,
    }
}

/// How long `start` waits for a new VMM to say it outlives the daemon
/// (it does so before it reads anything but its spec: about a millisecond).
const START_WAIT: Duration = Duration::from_secs(5);

/// Waits until the new VMM of `name` no longer dies with this daemon
/// (it wrote to its started socket) or ended (it closed it unwritten):
/// a daemon killed right after `start` answered must find it running.
fn wait_until_started(started: &std::os::unix::net::UnixStream, name: &str) {
    use std::io::Read;
    let mut byte = [0u8; 1];
    let read = started.set_read_timeout(Some(START_WAIT)).and_then(|()| (&*started).read(&mut byte));
    // A VMM that ended first closed it unwritten (a read of 0): the
    // supervision pass reaps it and says how.
    if let Err(e) = read {
        log::warn!("compartment {name}: the VMM did not say it started within {START_WAIT:?}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff_ms(0), 1000);
        assert_eq!(backoff_ms(1), 2000);
        assert_eq!(backoff_ms(4), 16_000);
        assert_eq!(backoff_ms(5), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(u32::MAX), MAX_BACKOFF_MS);
    }

    #[test]
    fn identity_and_storage_start_before_apps() {
        let mut roles = [Role::App, Role::Storage, Role::Communication, Role::Identity];
        roles.sort_by_key(|r| role_order(*r));
        assert_eq!(roles, [Role::Identity, Role::Storage, Role::Communication, Role::App]);
    }
}
