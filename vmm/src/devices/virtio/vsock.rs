//! The vsock device (virtio 1.x, device 19), served by a vhost-user
//! backend: the `ward-ipc` router (docs/IPC.md).
//!
//! The VMM keeps only the control plane. Its transport serves the
//! registers and the configuration space (the compartment's CID); when the
//! driver sets DRIVER_OK, this device hands the backend the guest memory
//! (the memfd behind it), each queue's rings, the queue's ioeventfd as the
//! kick and the device's irqfd as the call. From then on notifications and
//! interrupts go between the guest and the backend through KVM; no packet
//! passes through the VMM.
//!
//! The backend may die. The VMM keeps running: the guest's queues simply
//! stop moving until `wardd` sends a new connection on the reconnect
//! socket (one `SOCK_SEQPACKET` message with the stream as `SCM_RIGHTS`).
//! The device then sets the queues up again, resuming each from the used
//! index in guest memory: the backend completes buffers in order, so what
//! it took and never returned is taken again by the new one.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;
use ward_abi::virtio::device_id;
use ward_abi::vsock::F_STREAM;

use super::{ActiveQueues, HostInput, QUEUE_MAX_SIZE, ServedElsewhere, VirtioDevice};
use crate::devices::WarnOnce;

/// Queues: receive, transmit, event.
const QUEUES: usize = 3;
/// `VHOST_USER_F_PROTOCOL_FEATURES`: with it, rings start disabled and are
/// enabled one by one.
const PROTOCOL_FEATURES: u64 = 1 << 30;
/// How long the VMM waits for the backend's answer to one message (some
/// are sent from the vCPU thread: a hung backend stalls the guest that
/// long, then loses its device until a new backend comes).
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// A compartment's vsock device, as the launcher gives it. The sockets
/// are handed over once: the device takes them when the VM is built, so
/// that when it drops a connection the backend sees it closed.
#[derive(Clone, Debug)]
pub struct VsockConfig {
    /// The compartment's CID (3 and up).
    pub cid: u64,
    sockets: Arc<Mutex<Option<Sockets>>>,
}

/// The vhost-user stream and the reconnect socket.
type Sockets = (OwnedFd, Option<OwnedFd>);

impl VsockConfig {
    /// CID `cid`, the connected vhost-user stream `backend`, and where new
    /// backend connections arrive after the backend restarted (a
    /// `SOCK_SEQPACKET` socket), if anyone sends them.
    pub fn new(cid: u64, backend: OwnedFd, reconnect: Option<OwnedFd>) -> Self {
        Self { cid, sockets: Arc::new(Mutex::new(Some((backend, reconnect)))) }
    }

    fn take(&self) -> Option<Sockets> {
        self.sockets.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The backend could not be reached or refused the device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// A vhost-user message failed.
    #[error("vhost-user backend: {what}: {source}")]
    Backend {
        /// Which step.
        what: &'static str,
        /// The error.
        source: vhost::Error,
    },
    /// The backend does not offer what the device needs.
    #[error("vhost-user backend offers features {0:#x}, without VERSION_1 and stream sockets")]
    Features(u64),
    /// Guest memory is not shared (not memfd-backed).
    #[error("guest memory is not shared with the backend (no memfd)")]
    NotShared,
    /// The socket could not be set up.
    #[error("vhost-user socket: {0}")]
    Socket(std::io::Error),
    /// The configuration's sockets were taken by an earlier VM.
    #[error("the vsock device's backend connection was already used by another VM")]
    Used,
}

fn step(what: &'static str) -> impl FnOnce(vhost::Error) -> VsockError {
    move |source| VsockError::Backend { what, source }
}

/// One queue as the driver set it up.
#[derive(Clone, Copy, Debug)]
struct Ring {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
}

/// The vsock device: configuration here, queues in the backend.
pub struct VhostUserVsock {
    who: String,
    cid: u64,
    mem: GuestMemoryMmap,
    frontend: Option<Frontend>,
    backend_features: u64,
    kicks: Vec<EventFd>,
    call: Option<EventFd>,
    /// What the driver set up, while it is active.
    rings: Option<(u64, Vec<Option<Ring>>)>,
    reconnect: Option<UnixDatagram>,
    warned: WarnOnce,
}

impl std::fmt::Debug for VhostUserVsock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserVsock").field("who", &self.who).field("cid", &self.cid).finish_non_exhaustive()
    }
}

impl VhostUserVsock {
    /// The device of `compartment`, connected to its backend (the first
    /// messages are exchanged here, so a dead backend fails the start).
    pub fn new(compartment: &str, config: &VsockConfig, mem: GuestMemoryMmap) -> Result<Self, VsockError> {
        if !crate::memory::is_shared(&mem) {
            return Err(VsockError::NotShared);
        }
        let (backend, reconnect) = config.take().ok_or(VsockError::Used)?;
        let (frontend, backend_features) = connect(UnixStream::from(backend))?;
        // A SOCK_SEQPACKET socket: message boundaries, like a datagram one.
        let reconnect = reconnect.map(UnixDatagram::from);
        Ok(Self {
            who: format!("compartment {compartment}: vsock"),
            cid: config.cid,
            mem,
            frontend: Some(frontend),
            backend_features,
            kicks: Vec::new(),
            call: None,
            rings: None,
            reconnect,
            warned: WarnOnce::default(),
        })
    }

    /// Sends the backend everything it needs to serve the queues.
    fn set_up_queues(&mut self, resume: bool) -> Result<(), VsockError> {
        let Some((features, rings)) = &self.rings else { return Ok(()) };
        let Some(frontend) = self.frontend.as_mut() else { return Ok(()) };
        let Some(call) = &self.call else { return Ok(()) };
        frontend.set_features(features | PROTOCOL_FEATURES).map_err(step("set features"))?;
        if self.backend_features & PROTOCOL_FEATURES != 0 {
            frontend
                .set_protocol_features(VhostUserProtocolFeatures::empty())
                .map_err(step("set protocol features"))?;
        }
        let regions = self
            .mem
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<Vec<_>, _>>()
            .map_err(step("describe guest memory"))?;
        frontend.set_mem_table(&regions).map_err(step("set the memory table"))?;
        for (index, ring) in rings.iter().enumerate() {
            let (Some(ring), Some(kick)) = (ring, self.kicks.get(index)) else { continue };
            let host = |addr: u64| {
                self.mem.get_host_address(GuestAddress(addr)).map(|p| p as u64).map_err(|_| VsockError::NotShared)
            };
            let config = VringConfigData {
                queue_max_size: QUEUE_MAX_SIZE,
                queue_size: ring.size,
                flags: 0,
                desc_table_addr: host(ring.desc)?,
                used_ring_addr: host(ring.used)?,
                avail_ring_addr: host(ring.avail)?,
                log_addr: None,
            };
            // A new backend resumes where the guest's used ring stands.
            let base = if resume { self.mem.read_obj::<u16>(GuestAddress(ring.used + 2)).unwrap_or(0) } else { 0 };
            frontend.set_vring_num(index, ring.size).map_err(step("set a queue's size"))?;
            frontend.set_vring_addr(index, &config).map_err(step("set a queue's rings"))?;
            frontend.set_vring_base(index, base).map_err(step("set a queue's base"))?;
            frontend.set_vring_call(index, call).map_err(step("set a queue's interrupt"))?;
            frontend.set_vring_kick(index, kick).map_err(step("set a queue's notifier"))?;
            if self.backend_features & PROTOCOL_FEATURES != 0 {
                frontend.set_vring_enable(index, true).map_err(step("enable a queue"))?;
            }
        }
        // Every queue once: buffers the driver made available before (or
        // while the old backend died) are served, and a new backend gets
        // to send its transport reset.
        for kick in &self.kicks {
            let _ = kick.write(1);
        }
        Ok(())
    }

    /// Takes one new backend connection from the reconnect socket.
    fn take_new_connection(&mut self) -> Option<UnixStream> {
        let socket = self.reconnect.as_ref()?;
        let mut message = [0u8; 64];
        match socket.recv_with_fd(&mut message) {
            Ok((_, Some(file))) => Some(UnixStream::from(OwnedFd::from(file))),
            Ok((0, None)) => {
                // wardd went away: no more reconnections.
                self.reconnect = None;
                None
            }
            Ok((_, None)) => {
                let who = &self.who;
                self.warned.warn("reconnect-empty", || format!("{who}: a reconnect message without a connection"));
                None
            }
            Err(e) => {
                let who = &self.who;
                self.warned.warn("reconnect-read", || format!("{who}: cannot read a new backend connection: {e}"));
                None
            }
        }
    }
}

impl VirtioDevice for VhostUserVsock {
    fn device_type(&self) -> u32 {
        device_id::VSOCK
    }

    fn features(&self) -> u64 {
        F_STREAM & self.backend_features
    }

    fn queue_count(&self) -> usize {
        QUEUES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) -> bool {
        let config = self.cid.to_le_bytes();
        let Ok(start) = usize::try_from(offset) else { return false };
        match start.checked_add(data.len()).and_then(|end| config.get(start..end)) {
            Some(bytes) => {
                data.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    fn served_elsewhere(&mut self) -> Option<&mut dyn ServedElsewhere> {
        Some(self)
    }

    fn host_input(&mut self) -> Option<&mut dyn HostInput> {
        Some(self)
    }

    fn activate(&mut self, queues: &ActiveQueues) {
        let rings = (0..QUEUES)
            .map(|index| {
                queues.queue(index).filter(|q| q.ready()).map(|q| Ring {
                    size: q.size(),
                    desc: q.desc_table(),
                    avail: q.avail_ring(),
                    used: q.used_ring(),
                })
            })
            .collect();
        self.rings = Some((queues.features(), rings));
        if let Err(e) = self.set_up_queues(false) {
            // The guest keeps its device; its queues wait for a backend.
            log::warn!("{}: {e}; waiting for the backend to come back", self.who);
            self.frontend = None;
        }
    }

    fn reset(&mut self) {
        let mut stopped = true;
        if let (Some(frontend), Some((_, rings))) = (self.frontend.as_mut(), self.rings.take()) {
            for (index, _) in rings.iter().enumerate().filter(|(_, ring)| ring.is_some()) {
                // Stops the ring; the answer (its base) is not needed. The
                // first failure ends it: a hung backend costs the vCPU one
                // time-out, not one per message.
                stopped = frontend.set_vring_enable(index, false).is_ok() && frontend.get_vring_base(index).is_ok();
                if !stopped {
                    break;
                }
            }
        }
        if !stopped {
            // A backend that did not confirm the stop might go on using
            // rings the guest reuses: close the connection (it sees EOF
            // and lets go); the device waits for a new one.
            log::warn!("{}: the backend did not stop its queues; connection closed", self.who);
            self.frontend = None;
        }
    }

    fn process_queue(&mut self, _index: usize, _queues: &mut ActiveQueues) {
        // The backend serves the queues; notifications never come here.
    }
}

impl ServedElsewhere for VhostUserVsock {
    fn set_eventfds(&mut self, kicks: Vec<EventFd>, call: EventFd) {
        self.kicks = kicks;
        self.call = Some(call);
    }
}

impl HostInput for VhostUserVsock {
    fn fd(&self) -> Option<RawFd> {
        self.reconnect.as_ref().map(AsRawFd::as_raw_fd)
    }

    fn wants(&self, _queues: &ActiveQueues) -> bool {
        self.reconnect.is_some()
    }

    fn process(&mut self, _queues: &mut ActiveQueues) -> bool {
        let Some(stream) = self.take_new_connection() else { return self.reconnect.is_none() };
        match connect(stream) {
            Ok((frontend, features)) => {
                self.frontend = Some(frontend);
                self.backend_features = features;
                match self.set_up_queues(true) {
                    Ok(()) => log::info!("{}: reconnected to the backend", self.who),
                    Err(e) => {
                        log::warn!("{}: {e}; waiting for the backend to come back", self.who);
                        self.frontend = None;
                    }
                }
            }
            Err(e) => log::warn!("{}: a new backend connection failed: {e}", self.who),
        }
        true
    }
}

/// Opens a vhost-user session on `stream`: owner, features.
fn connect(stream: UnixStream) -> Result<(Frontend, u64), VsockError> {
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(VsockError::Socket)?;
    stream.set_write_timeout(Some(REPLY_TIMEOUT)).map_err(VsockError::Socket)?;
    let mut frontend = Frontend::from_stream(stream, QUEUES as u64);
    frontend.set_owner().map_err(step("set owner"))?;
    let features = frontend.get_features().map_err(step("get features"))?;
    if features & ward_abi::virtio::feature::VERSION_1 == 0 || features & F_STREAM == 0 {
        return Err(VsockError::Features(features));
    }
    if features & PROTOCOL_FEATURES != 0 {
        frontend.get_protocol_features().map_err(step("get protocol features"))?;
    }
    Ok((frontend, features))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_space_is_the_cid() {
        // The config read path does not need a backend: build the device
        // by hand.
        let mem = crate::memory::create_shared("vsock-config", 16).unwrap();
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let device = VhostUserVsock {
            who: "test".into(),
            cid: 0x1122_3344_5566_7788,
            mem,
            frontend: Some(Frontend::from_stream(ours, 3)),
            backend_features: F_STREAM | PROTOCOL_FEATURES,
            kicks: Vec::new(),
            call: None,
            rings: None,
            reconnect: None,
            warned: WarnOnce::default(),
        };
        let mut word = [0u8; 4];
        assert!(device.read_config(4, &mut word));
        assert_eq!(u32::from_le_bytes(word), 0x1122_3344);
        assert!(!device.read_config(6, &mut word), "beyond the 8-byte configuration space");
        assert_eq!(device.features(), F_STREAM);
    }

    #[test]
    fn private_memory_or_a_silent_backend_is_an_error() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let private = crate::memory::create(16).unwrap();
        let config = VsockConfig::new(3, ours.into(), None);
        assert!(matches!(VhostUserVsock::new("t", &config, private), Err(VsockError::NotShared)));
        // A backend that hangs up fails the start with a clear error.
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let shared = crate::memory::create_shared("vsock-dead", 16).unwrap();
        let config = VsockConfig::new(3, ours.into(), None);
        let err = VhostUserVsock::new("t", &config, shared.clone()).unwrap_err();
        assert!(err.to_string().starts_with("vhost-user backend: set owner"), "{err}");
        // The sockets go to one VM only.
        assert!(matches!(VhostUserVsock::new("t", &config, shared), Err(VsockError::Used)));
    }
}
