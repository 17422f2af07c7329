//! The control socket to `wardd` (docs/IPC.md, "The router process"): one
//! JSON object per `SOCK_SEQPACKET` message, the attach messages carrying
//! the compartment's vhost-user listener as `SCM_RIGHTS`.
//!
//! The control thread reads messages, starts one thread per attached
//! compartment (which accepts the single queued vhost-user connection and
//! runs the protocol; the crate's epoll worker serves the queues), sends
//! `ready`, `ask` and `audit` messages, and expires asks nobody answered.
//! A bad message is logged and ignored; the router ends when the control
//! socket closes.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vhost::vhost_user::Listener;
use vhost_user_backend::{ShutdownHandle, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;
use ward_policy::Policy;

use crate::device::{Hub, IpcBackend, WAKE_EVENT, new_waker};
use crate::host::HostSide;
use crate::router::{Answer, Event, HOST_CID};
use crate::seccomp::{self, SeccompError, ThreadRole};

/// Longest control message.
const MAX_MESSAGE: usize = 1 << 20;
/// How often the control thread looks at the asks' ages.
const TICK: Duration = Duration::from_secs(1);
/// How long a compartment's thread waits for its vhost-user connection.
const ACCEPT_WAIT: Duration = Duration::from_secs(30);

/// How the router runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Install a seccomp filter in every thread (the default; tests that
    /// run the router inside a test harness may turn it off).
    pub seccomp: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { seccomp: true }
    }
}

/// The router could not run at all (a bad message is never one of these).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// An eventfd could not be made.
    #[error("cannot make an eventfd: {0}")]
    EventFd(std::io::Error),
    /// Waiting on the control socket failed.
    #[error("cannot wait on the control socket: {0}")]
    Poll(std::io::Error),
    /// Reading the control socket failed.
    #[error("cannot read the control socket: {0}")]
    Receive(std::io::Error),
    /// The control thread's filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
}

/// A message `wardd` sent that the router ignores.
#[derive(Debug, thiserror::Error)]
enum MessageError {
    #[error("a message longer than {MAX_MESSAGE} bytes")]
    TooLong,
    #[error("a message that is not a known JSON request: {0}")]
    Json(serde_json::Error),
    #[error("{0} carries no descriptor")]
    MissingFd(&'static str),
    #[error("{0} carries descriptors it should not")]
    ExtraFd(&'static str),
    #[error("the policy does not load: {0}")]
    Policy(String),
    #[error("attach {0:?} before any policy")]
    NoPolicy(String),
    #[error("attach {0:?}: the policy gives it no vsock device")]
    NoVsock(String),
    #[error("attach {name:?}: {source}")]
    Attach { name: String, source: crate::router::AttachError },
    #[error("{0}")]
    Unknown(#[from] crate::router::UnknownError),
    #[error("cannot start the thread of {name:?}: {source}")]
    Thread { name: String, source: std::io::Error },
    #[error("cannot make the wake-up eventfd of {name:?}: {source}")]
    Waker { name: String, source: std::io::Error },
}

/// A message from `wardd`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    Policy {
        files: Vec<(String, String)>,
    },
    Attach {
        name: String,
        cid: u64,
        fresh: bool,
    },
    Detach {
        name: String,
    },
    Answer {
        id: u64,
        allow: bool,
        /// Nobody answered in this many seconds (wardd's time-out): denied,
        /// and the router audits it.
        #[serde(default)]
        no_answer_after_s: Option<u64>,
    },
    /// Host call `id` is connected to its service (the socket comes with
    /// the message).
    HostConnected {
        id: u64,
    },
    /// Host call `id` could not be connected.
    HostFailed {
        id: u64,
        reason: String,
    },
}

impl Request {
    fn what(&self) -> &'static str {
        match self {
            Self::Policy { .. } => "a policy message",
            Self::Attach { .. } => "an attach message",
            Self::Detach { .. } => "a detach message",
            Self::Answer { .. } => "an answer message",
            Self::HostConnected { .. } => "a host-connected message",
            Self::HostFailed { .. } => "a host-failed message",
        }
    }
}

/// A message to `wardd`.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Report<'a> {
    Ready,
    Ask {
        id: u64,
        from: &'a str,
        to: &'a str,
        service: &'a str,
    },
    Audit {
        line: &'a str,
    },
    /// Connect host call `id` to `service` (wardd knows the sockets).
    HostConnect {
        id: u64,
        from: &'a str,
        service: &'a str,
    },
}

/// What the control thread and a compartment's thread share about its
/// vhost-user connection.
#[derive(Default)]
struct SessionCtl {
    handle: Option<ShutdownHandle>,
    cancelled: bool,
}

impl SessionCtl {
    fn cancel(&mut self) {
        self.cancelled = true;
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
    }
}

type Sessions = HashMap<String, (u64, Arc<Mutex<SessionCtl>>)>;

/// The control thread's state.
struct Control {
    socket: UnixDatagram,
    hub: Arc<Hub>,
    /// Attached compartments: name to (generation, session).
    sessions: Arc<Mutex<Sessions>>,
    generation: u64,
    options: Options,
    /// Calls to host services.
    host: HostSide,
}

/// Runs the router on the control socket `control` (wardd's fd 3) with
/// [`Options::default`] until the socket closes.
pub fn serve(control: OwnedFd) -> Result<(), ControlError> {
    serve_with(control, Options::default())
}

/// [`serve`] with `options`.
pub fn serve_with(control: OwnedFd, options: Options) -> Result<(), ControlError> {
    let hub = Arc::new(Hub::new(new_waker().map_err(ControlError::EventFd)?));
    // The host side runs on this thread: packets for the host wake it.
    let host_waker = hub.control_wake.try_clone().map_err(ControlError::EventFd)?;
    {
        let mut state = hub.lock();
        state.router.attach_host();
        state.wakers.insert(HOST_CID, host_waker);
    }
    let mut state = Control {
        // A SOCK_SEQPACKET socket: message boundaries, as a datagram one.
        socket: UnixDatagram::from(control),
        hub,
        sessions: Arc::new(Mutex::new(HashMap::new())),
        generation: 0,
        options,
        host: HostSide::new(),
    };
    if options.seccomp {
        seccomp::install(ThreadRole::Control)?;
    }
    let result = state.run();
    for (_, (_, session)) in state.sessions.lock().unwrap_or_else(PoisonError::into_inner).drain() {
        session.lock().unwrap_or_else(PoisonError::into_inner).cancel();
    }
    result
}

impl Control {
    fn run(&mut self) -> Result<(), ControlError> {
        let mut buf = vec![0u8; MAX_MESSAGE + 1];
        loop {
            let mut fds = vec![
                libc::pollfd { fd: self.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.hub.control_wake.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            // Host services' sockets: their readiness moves bytes below.
            fds.extend(self.host.poll_fds());
            let timeout = i32::try_from(TICK.as_millis()).unwrap_or(1000);
            let count = libc::nfds_t::try_from(fds.len()).unwrap_or(2);
            // SAFETY: `fds` is a valid array of `count` pollfds for the call;
            // we check the result.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), count, timeout) };
            if ready < 0 {
                let error = std::io::Error::last_os_error();
                if error.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(ControlError::Poll(error));
            }
            if fds[1].revents != 0 {
                let _ = self.hub.control_wake.read();
            }
            if fds[0].revents != 0 {
                match receive(&self.socket, &mut buf) {
                    Ok(None) => return Ok(()),
                    Ok(Some((len, truncated, fd))) => {
                        let message = if truncated { Err(MessageError::TooLong) } else { Ok(&buf[..len]) };
                        if let Err(e) = message.and_then(|bytes| self.handle(bytes, fd)) {
                            log::warn!("ignored {e}");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(ControlError::Receive(e)),
                }
            }
            let events = {
                let mut hub = self.hub.lock();
                hub.router.expire(Instant::now());
                // The host's calls move until nothing moves (bounded: each
                // round is bounded by credit, and a few rounds suffice).
                for _ in 0..16 {
                    if !self.host.pump(&mut hub.router) {
                        break;
                    }
                }
                let events = hub.router.take_events();
                hub.wake(&self.hub.control_wake, Some(HOST_CID));
                events
            };
            for event in events {
                match &event {
                    Event::Ask { id, from, to, service } => {
                        self.send(&Report::Ask { id: *id, from, to, service });
                    }
                    Event::Audit(line) => self.send(&Report::Audit { line }),
                    Event::HostCall { service_port, router_port, from, service } => {
                        let id = self.host.begin(&mut self.hub.lock().router, *service_port, *router_port);
                        if let Some(id) = id {
                            self.send(&Report::HostConnect { id, from, service });
                        }
                    }
                }
            }
        }
    }

    fn send(&self, report: &Report<'_>) {
        let Ok(bytes) = serde_json::to_vec(report) else { return };
        // SAFETY: sends `bytes`, valid for the call, on our socket; we check
        // the result.
        let sent =
            unsafe { libc::send(self.socket.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
        if sent < 0 {
            log::warn!("cannot send a message to wardd: {}", std::io::Error::last_os_error());
        }
    }

    fn handle(&mut self, bytes: &[u8], fd: Option<OwnedFd>) -> Result<(), MessageError> {
        let request: Request = serde_json::from_slice(bytes).map_err(MessageError::Json)?;
        let what = request.what();
        let wants_fd = matches!(request, Request::Attach { .. } | Request::HostConnected { .. });
        match (wants_fd, fd.is_some()) {
            (true, false) => return Err(MessageError::MissingFd(what)),
            (false, true) => return Err(MessageError::ExtraFd(what)),
            _ => {}
        }
        match request {
            Request::Policy { files } => {
                let policy = Policy::from_files(&files).map_err(|e| MessageError::Policy(e.to_string()))?;
                self.hub.lock().router.set_policy(policy);
                log::info!("policy loaded ({} files)", files.len());
                self.send(&Report::Ready);
                Ok(())
            }
            Request::Attach { name, cid, fresh } => match fd {
                Some(fd) => self.attach(name, cid, fresh, fd),
                None => Err(MessageError::MissingFd(what)),
            },
            Request::Detach { name } => self.detach(&name),
            Request::Answer { id, allow, no_answer_after_s } => {
                let answer = match (allow, no_answer_after_s) {
                    (_, Some(seconds)) => Answer::NoAnswer(seconds),
                    (true, None) => Answer::Allowed,
                    (false, None) => Answer::Denied,
                };
                let mut hub = self.hub.lock();
                hub.router.answer(id, answer)?;
                hub.wake(&self.hub.control_wake, None);
                Ok(())
            }
            Request::HostConnected { id } => {
                let Some(stream) = fd else { return Err(MessageError::MissingFd(what)) };
                let mut hub = self.hub.lock();
                self.host.connected(&mut hub.router, id, stream);
                hub.wake(&self.hub.control_wake, None);
                Ok(())
            }
            Request::HostFailed { id, reason } => {
                log::info!("host call {id} not connected: {reason}");
                let mut hub = self.hub.lock();
                self.host.failed(&mut hub.router, id);
                hub.wake(&self.hub.control_wake, None);
                Ok(())
            }
        }
    }

    fn attach(&mut self, name: String, cid: u64, fresh: bool, listener: OwnedFd) -> Result<(), MessageError> {
        let waker = new_waker().map_err(|source| MessageError::Waker { name: name.clone(), source })?;
        let hub_waker = waker.try_clone().map_err(|source| MessageError::Waker { name: name.clone(), source })?;
        {
            let mut hub = self.hub.lock();
            let granted = match hub.router.policy() {
                None => return Err(MessageError::NoPolicy(name)),
                Some(policy) => policy.compartment(&name).spec().is_some_and(|spec| spec.devices.vsock),
            };
            if !granted {
                return Err(MessageError::NoVsock(name));
            }
            if let Some(old) = hub.router.cid_of(&name) {
                hub.wakers.remove(&old);
            }
            hub.router
                .attach(&name, cid, fresh)
                .map_err(|source| MessageError::Attach { name: name.clone(), source })?;
            hub.wakers.insert(cid, hub_waker);
            hub.wake(&self.hub.control_wake, None);
        }
        self.generation += 1;
        let generation = self.generation;
        let ctl = Arc::new(Mutex::new(SessionCtl::default()));
        let previous = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone(), (generation, Arc::clone(&ctl)));
        if let Some((_, old)) = previous {
            old.lock().unwrap_or_else(PoisonError::into_inner).cancel();
        }
        let session = Session {
            name: name.clone(),
            cid,
            generation,
            hub: Arc::clone(&self.hub),
            sessions: Arc::clone(&self.sessions),
            ctl,
            seccomp: self.options.seccomp,
        };
        let spawned =
            std::thread::Builder::new().name(format!("ipc-{name}")).spawn(move || session.run(waker, listener));
        if let Err(source) = spawned {
            let _ = self.detach(&name);
            return Err(MessageError::Thread { name, source });
        }
        log::info!("compartment {name:?} attached (CID {cid}{})", if fresh { "" } else { ", transport reset" });
        Ok(())
    }

    fn detach(&mut self, name: &str) -> Result<(), MessageError> {
        let session = self.sessions.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
        if let Some((_, ctl)) = session {
            ctl.lock().unwrap_or_else(PoisonError::into_inner).cancel();
        }
        let mut hub = self.hub.lock();
        let cid = hub.router.detach(name)?;
        hub.wakers.remove(&cid);
        hub.wake(&self.hub.control_wake, None);
        log::info!("compartment {name:?} detached");
        Ok(())
    }
}

/// One compartment's vhost-user connection, served in its own thread.
struct Session {
    name: String,
    cid: u64,
    generation: u64,
    hub: Arc<Hub>,
    sessions: Arc<Mutex<Sessions>>,
    ctl: Arc<Mutex<SessionCtl>>,
    seccomp: bool,
}

impl Session {
    fn run(self, waker: EventFd, listener: OwnedFd) {
        if let Err(e) = self.serve(waker, listener) {
            log::warn!("compartment {:?}: {e}", self.name);
        }
        // The VMM went away (or never came): its connections end.
        let current = {
            let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
            let current = sessions.get(&self.name).is_some_and(|(generation, _)| *generation == self.generation);
            if current {
                sessions.remove(&self.name);
            }
            current
        };
        if current {
            let mut hub = self.hub.lock();
            if hub.router.detach(&self.name).is_ok() {
                hub.wakers.remove(&self.cid);
            }
            hub.wake(&self.hub.control_wake, None);
            log::info!("compartment {:?}: its VMM disconnected", self.name);
        }
    }

    fn serve(&self, waker: EventFd, listener: OwnedFd) -> Result<(), String> {
        let waker_fd = waker.as_raw_fd();
        let backend = IpcBackend::new(&self.name, self.cid, Arc::clone(&self.hub), waker, self.seccomp);
        let memory = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let mut daemon = VhostUserDaemon::new(format!("ipc-{}", self.name), backend, memory)
            .map_err(|e| format!("cannot make its vhost-user daemon: {e}"))?;
        let handlers = daemon.get_epoll_handlers();
        for handler in &handlers {
            handler
                .register_listener(waker_fd, EventSet::IN, u64::from(WAKE_EVENT))
                .map_err(|e| format!("cannot register its wake-up eventfd: {e}"))?;
        }
        // The worker's first wake-up installs its filter, before any guest
        // work.
        wake_fd(waker_fd);
        if self.seccomp {
            seccomp::install(ThreadRole::VhostUser).map_err(|e| e.to_string())?;
        }
        let result = self.accept_and_serve(&mut daemon, listener);
        for handler in &handlers {
            handler.send_exit_event();
        }
        result
    }

    fn accept_and_serve(&self, daemon: &mut VhostUserDaemon<IpcBackend>, listener: OwnedFd) -> Result<(), String> {
        let deadline = Instant::now() + ACCEPT_WAIT;
        loop {
            if self.ctl.lock().unwrap_or_else(PoisonError::into_inner).cancelled {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err("no vhost-user connection came".to_owned());
            }
            let mut pollfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd for the call; we check the result.
            let ready = unsafe { libc::poll(&mut pollfd, 1, 500) };
            if ready > 0 {
                break;
            }
        }
        let mut listener = Listener::from(UnixListener::from(listener));
        daemon.start(&mut listener).map_err(|e| format!("cannot accept its vhost-user connection: {e}"))?;
        {
            let mut ctl = self.ctl.lock().unwrap_or_else(PoisonError::into_inner);
            ctl.handle = daemon.shutdown_handle();
            if ctl.cancelled {
                ctl.cancel();
            }
        }
        daemon.wait().map_err(|e| format!("vhost-user connection ended: {e}"))
    }
}

/// Writes 1 to the eventfd `fd`.
fn wake_fd(fd: RawFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a local array to an eventfd we own; the
    // result does not matter (a full counter is already a wake-up).
    let _ = unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
}

/// Reads one message from `socket` into `buf` (one byte longer than the
/// longest message, so a longer one shows): `None` when the socket
/// closed, else its length, whether it was too long, and the descriptor it
/// carried (more than one: the kernel closes them all, and the message
/// carries none).
fn receive(socket: &UnixDatagram, buf: &mut [u8]) -> std::io::Result<Option<(usize, bool, Option<OwnedFd>)>> {
    let (len, file) = socket.recv_with_fd(buf).map_err(std::io::Error::from)?;
    if len == 0 && file.is_none() {
        return Ok(None);
    }
    Ok(Some((len.min(MAX_MESSAGE), len > MAX_MESSAGE, file.map(OwnedFd::from))))
}
