//! The vhost-user backend of one compartment's vsock device: it moves
//! packets between the guest's virtqueues (receive 0, transmit 1, event 2)
//! and the shared [`Router`].
//!
//! Each compartment's queues are served by its own worker thread (the
//! vhost-user-backend crate's epoll loop). A worker takes its own guest's
//! packets to the router and drains what the router has for its own guest;
//! when the router has packets for another compartment it writes that
//! compartment's wake-up eventfd, and that compartment's worker drains them
//! ([`WAKE_EVENT`]). Everything read from guest memory is checked here: a
//! malformed descriptor chain is the guest's problem (logged once, dropped)
//! and never an error of the worker, which would end it.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringMutex, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use ward_abi::vsock::{EVENT_TRANSPORT_RESET, F_STREAM, HEADER_SIZE, Header, MAX_PAYLOAD};
use ward_virtq::GuestChain;
use zerocopy::{FromBytes as _, IntoBytes as _};

use crate::router::{BadPacket, Router};
use crate::seccomp::{self, ThreadRole};

/// The receive queue.
const RX_QUEUE: u16 = 0;
/// The transmit queue.
const TX_QUEUE: u16 = 1;
/// The event queue.
const EVENT_QUEUE: u16 = 2;
/// Queues of a vsock device.
pub(crate) const NUM_QUEUES: usize = 3;
/// Largest queue the driver may set up.
pub(crate) const MAX_QUEUE_SIZE: usize = 256;
/// The epoll id of the wake-up eventfd (ids up to [`NUM_QUEUES`] belong to
/// the backend crate).
pub(crate) const WAKE_EVENT: u16 = 4;
/// Most transmit packets served per wake-up before the others get their
/// turn.
pub(crate) const TX_BUDGET: usize = 256;

/// The router and what the workers share with it: each compartment's
/// wake-up eventfd, and the control thread's.
#[derive(Debug)]
pub(crate) struct Hub {
    state: Mutex<HubState>,
    /// Written when the router has events for the control side.
    pub(crate) control_wake: EventFd,
}

/// What the hub's lock guards.
#[derive(Debug)]
pub(crate) struct HubState {
    /// The router.
    pub(crate) router: Router,
    /// Each attached compartment's wake-up eventfd, by CID.
    pub(crate) wakers: std::collections::HashMap<u64, EventFd>,
}

impl Hub {
    pub(crate) fn new(control_wake: EventFd) -> Self {
        Self {
            state: Mutex::new(HubState { router: Router::new(), wakers: std::collections::HashMap::new() }),
            control_wake,
        }
    }

    /// The state; a worker that panicked while holding it left the router
    /// consistent enough to go on (every operation is one call).
    pub(crate) fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl HubState {
    /// Wakes the compartments the router has packets for (but `except`,
    /// which is about to drain its own) and the control thread if it has
    /// events.
    pub(crate) fn wake(&mut self, control_wake: &EventFd, except: Option<u64>) {
        for cid in self.router.take_wakeups() {
            if Some(cid) != except
                && let Some(waker) = self.wakers.get(&cid)
            {
                let _ = waker.write(1);
            }
        }
        if self.router.has_events() {
            let _ = control_wake.write(1);
        }
    }
}

thread_local! {
    /// Whether this worker thread has installed its seccomp filter.
    static FILTERED: Cell<bool> = const { Cell::new(false) };
}

type Memory = GuestMemoryAtomic<GuestMemoryMmap>;

/// One compartment's device.
#[derive(Debug)]
struct Device {
    name: String,
    cid: u64,
    hub: Arc<Hub>,
    mem: Mutex<Option<Memory>>,
    wake: EventFd,
    /// Transmit packets are left over from the last wake-up.
    tx_more: AtomicBool,
    seccomp: bool,
}

/// The [`VhostUserBackend`] of one compartment's vsock device.
#[derive(Clone, Debug)]
pub(crate) struct IpcBackend(Arc<Device>);

impl IpcBackend {
    /// The device of compartment `name` with CID `cid`, waking on `wake`.
    pub(crate) fn new(name: &str, cid: u64, hub: Arc<Hub>, wake: EventFd, seccomp: bool) -> Self {
        Self(Arc::new(Device {
            name: name.to_owned(),
            cid,
            hub,
            mem: Mutex::new(None),
            wake,
            tx_more: AtomicBool::new(false),
            seccomp,
        }))
    }

    fn memory(&self) -> Option<Memory> {
        self.0.mem.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn bad(&self, kind: BadPacket) {
        self.0.hub.lock().router.bad_packet(self.0.cid, kind);
    }

    /// Serves up to [`TX_BUDGET`] packets of the transmit queue; returns
    /// whether more are waiting.
    fn process_tx(&self, vring: &VringMutex, mem: &Memory) -> bool {
        let mut state = vring.get_mut();
        if !state.get_queue().ready() || !state.is_enabled() {
            return false;
        }
        let guard = mem.memory();
        let mut served = 0;
        let mut payload = Vec::with_capacity(MAX_PAYLOAD);
        while served < TX_BUDGET {
            let size = state.get_queue().size();
            let Some(chain) = state.get_queue_mut().pop_descriptor_chain(guard.clone()) else { break };
            let head = chain.head_index();
            // Checked once, as in the VMM: shape and memory (ward-virtq).
            let packet = GuestChain::new(chain, size, &guard).ok().and_then(|chain| {
                let mut bytes = [0u8; HEADER_SIZE];
                if chain.read_into(&guard, &mut bytes) < HEADER_SIZE {
                    return None;
                }
                let header = Header::read_from_bytes(&bytes).ok()?;
                let len = usize::try_from(header.len).ok().filter(|&len| len <= MAX_PAYLOAD)?;
                let available = usize::try_from(chain.readable_len()).unwrap_or(usize::MAX) - HEADER_SIZE;
                if available < len {
                    return Some(Err(BadPacket::Length));
                }
                payload.clear();
                payload.resize(len, 0);
                if chain.read_at(&guard, HEADER_SIZE as u64, &mut payload) < len {
                    return None;
                }
                Some(Ok(header))
            });
            {
                let mut hub = self.0.hub.lock();
                match packet {
                    Some(Ok(header)) => {
                        log::trace!("cid {}: tx {header:?} ({} bytes)", self.0.cid, payload.len());
                        hub.router.receive(self.0.cid, &header, &payload, Instant::now())
                    }
                    Some(Err(kind)) => hub.router.bad_packet(self.0.cid, kind),
                    None => hub.router.bad_packet(self.0.cid, BadPacket::Chain),
                }
            }
            if state.add_used(head, 0).is_err() {
                self.bad(BadPacket::Chain);
            }
            served += 1;
        }
        if served > 0 {
            let _ = state.signal_used_queue();
            self.0.hub.lock().wake(&self.0.hub.control_wake, Some(self.0.cid));
        }
        served == TX_BUDGET
    }

    /// Fills the guest's receive buffers with what the router has for it.
    fn drain_rx(&self, vring: &VringMutex, mem: &Memory) {
        let mut state = vring.get_mut();
        if !state.get_queue().ready() || !state.is_enabled() {
            return;
        }
        let guard = mem.memory();
        let mut used = false;
        loop {
            let size = state.get_queue().size();
            let Some(chain) = state.get_queue_mut().pop_descriptor_chain(guard.clone()) else { break };
            let head = chain.head_index();
            let Ok(chain) = GuestChain::new(chain, size, &guard) else {
                self.bad(BadPacket::RxBuffer);
                let _ = state.add_used(head, 0);
                used = true;
                continue;
            };
            let room = usize::try_from(chain.writable_len()).unwrap_or(usize::MAX);
            if room < HEADER_SIZE {
                self.bad(BadPacket::RxBuffer);
                let _ = state.add_used(head, 0);
                used = true;
                continue;
            }
            let packet = self.0.hub.lock().router.next_packet(self.0.cid, room - HEADER_SIZE);
            let Some(packet) = packet else {
                state.get_queue_mut().go_to_previous_position();
                break;
            };
            log::trace!("cid {}: rx {:?} ({} bytes)", self.0.cid, packet.header, packet.payload.len());
            let written = chain.write_from(&guard, packet.header.as_bytes()) == HEADER_SIZE
                && chain.write_at(&guard, HEADER_SIZE as u64, &packet.payload) == packet.payload.len();
            let len = if written { u32::try_from(HEADER_SIZE + packet.payload.len()).unwrap_or(0) } else { 0 };
            if !written {
                self.bad(BadPacket::RxBuffer);
            }
            let _ = state.add_used(head, len);
            used = true;
        }
        if used {
            let _ = state.signal_used_queue();
            // Forwarding freed room in other guests' connections.
            self.0.hub.lock().wake(&self.0.hub.control_wake, Some(self.0.cid));
        }
    }

    /// Sends the transport reset the router owes the guest, if it has an
    /// event buffer.
    fn send_events(&self, vring: &VringMutex, mem: &Memory) {
        let mut state = vring.get_mut();
        if !state.get_queue().ready() || !state.is_enabled() {
            return;
        }
        if !self.0.hub.lock().router.transport_reset_pending(self.0.cid) {
            return;
        }
        let guard = mem.memory();
        let size = state.get_queue().size();
        let Some(chain) = state.get_queue_mut().pop_descriptor_chain(guard.clone()) else { return };
        let head = chain.head_index();
        let event = EVENT_TRANSPORT_RESET.to_le_bytes();
        let written =
            GuestChain::new(chain, size, &guard).ok().filter(|chain| chain.write_from(&guard, &event) == event.len());
        let len = if written.is_some() {
            self.0.hub.lock().router.take_transport_reset(self.0.cid);
            4
        } else {
            self.bad(BadPacket::RxBuffer);
            0
        };
        let _ = state.add_used(head, len);
        let _ = state.signal_used_queue();
    }

    fn install_filter(&self) {
        if !self.0.seccomp || FILTERED.get() {
            return;
        }
        if let Err(e) = seccomp::install(ThreadRole::Worker) {
            // Fail closed: a worker never touches guest memory unfiltered.
            // The router ends; wardd restarts it and reconnects everyone.
            log::error!("compartment {:?}: {e}; the router stops", self.0.name);
            std::process::exit(1);
        }
        FILTERED.set(true);
    }
}

impl VhostUserBackend for IpcBackend {
    type Bitmap = ();
    type Vring = VringMutex;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | F_STREAM | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::empty()
    }

    fn set_event_idx(&self, _enabled: bool) {}

    fn update_memory(&self, mem: Memory) -> std::io::Result<()> {
        *self.0.mem.lock().unwrap_or_else(PoisonError::into_inner) = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringMutex],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        self.install_filter();
        if device_event == WAKE_EVENT {
            let _ = self.0.wake.read();
        }
        let Some(mem) = self.memory() else { return Ok(()) };
        let [rx, tx, event] = vrings else { return Ok(()) };
        let tx_turn =
            device_event == TX_QUEUE || device_event == WAKE_EVENT && self.0.tx_more.swap(false, Ordering::AcqRel);
        if tx_turn && self.process_tx(tx, &mem) {
            // More to serve: after the others had their turn.
            self.0.tx_more.store(true, Ordering::Release);
            let _ = self.0.wake.write(1);
        }
        if matches!(device_event, RX_QUEUE | TX_QUEUE | WAKE_EVENT) {
            self.drain_rx(rx, &mem);
        }
        if matches!(device_event, EVENT_QUEUE | WAKE_EVENT) {
            self.send_events(event, &mem);
        }
        Ok(())
    }
}

/// A non-blocking eventfd for waking a worker.
pub(crate) fn new_waker() -> std::io::Result<EventFd> {
    EventFd::new(EFD_NONBLOCK)
}
