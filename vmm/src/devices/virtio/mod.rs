//! Virtio devices (virtio 1.x, split virtqueues): the console, the entropy
//! source and block devices, and what carries them.
//!
//! A device ([`VirtioDevice`]) is written against its virtqueues, guest
//! memory and an [`Interrupt`]; it never sees a register. Two other parts
//! carry it:
//! - [`transport`]: the virtio-mmio (version 2) registers, served on the
//!   vCPU thread, which hand the device its queues when the driver is ready;
//! - [`event_loop`]: the thread the devices run on, woken by the queues'
//!   ioeventfds and by host files (console input).
//!
//! A vhost-user backend (issue 7) can drive the same devices: it builds an
//! [`ActiveQueues`] from the rings the frontend gives it and implements
//! [`Interrupt`] with the call eventfd.
//!
//! Everything in a virtqueue is the guest's and untrusted. Descriptor chains
//! are checked once where they enter ([`queue`]); a malformed request gets an
//! error status where the device has one (block), otherwise the device
//! reports `DEVICE_NEEDS_RESET` and stops using its queues until the driver
//! resets it. Each kind of misbehaviour is logged once per device.

pub mod block;
pub mod console;
pub mod event_loop;
pub mod queue;
pub mod rng;
pub mod setup;
pub mod transport;
pub mod vsock;

use std::os::fd::RawFd;
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use self::queue::{ChainError, GuestChain};
use super::WarnOnce;

/// Largest queue a device offers (QueueNumMax). The guest's queues are one
/// page of descriptors, 256 of them.
pub const QUEUE_MAX_SIZE: u16 = 256;

/// How a device tells the driver something happened, whatever carries it.
pub trait Interrupt: Send + Sync + std::fmt::Debug {
    /// The device put buffers in a used ring.
    fn used_buffers(&self);
    /// The device hit an error it cannot recover from without a reset (it
    /// sets `DEVICE_NEEDS_RESET` and tells the driver).
    fn needs_reset(&self);
}

/// A virtio device's own logic, independent of the transport: what every
/// device has. What only some have is behind [`Self::host_input`] and
/// [`Self::served_elsewhere`].
pub trait VirtioDevice: Send + std::fmt::Debug {
    /// Device type (`ward_abi::virtio::device_id`).
    fn device_type(&self) -> u32;
    /// Device-specific feature bits it offers (the transport adds
    /// `VIRTIO_F_VERSION_1`).
    fn features(&self) -> u64;
    /// Number of virtqueues.
    fn queue_count(&self) -> usize;
    /// Fills `data` from configuration space at `offset`; `false` if that
    /// lies outside it. (Ward's devices' configuration is read-only: the
    /// transport refuses writes.)
    fn read_config(&self, offset: u64, data: &mut [u8]) -> bool;
    /// The driver accepted the features in `queues` and is ready: these
    /// are its live queues (a device whose queues another process serves
    /// passes them on).
    fn activate(&mut self, _queues: &ActiveQueues) {}
    /// The driver reset the device.
    fn reset(&mut self) {}
    /// The driver made buffers available on queue `index`.
    fn process_queue(&mut self, index: usize, queues: &mut ActiveQueues);
    /// The host input the device reads, if it has one (console input, the
    /// vsock device's reconnect socket).
    fn host_input(&mut self) -> Option<&mut dyn HostInput> {
        None
    }
    /// Its queues, if another process serves them (vhost-user): the device
    /// thread then never watches them.
    fn served_elsewhere(&mut self) -> Option<&mut dyn ServedElsewhere> {
        None
    }
}

/// A host file a device reads when it has room for the data, watched by
/// the event loop.
pub trait HostInput {
    /// The file, while there is one to read.
    fn fd(&self) -> Option<RawFd>;
    /// Whether the device has room for input now.
    fn wants(&self, queues: &ActiveQueues) -> bool;
    /// The input is readable: take some. Returns whether it made progress
    /// (consumed input or reached its end).
    fn process(&mut self, queues: &mut ActiveQueues) -> bool;
}

/// A device whose queues another process serves.
pub trait ServedElsewhere {
    /// Each queue's notifier (its ioeventfd: the backend's kick) and the
    /// device's irqfd (the backend's call), to hand that process.
    fn set_eventfds(&mut self, kicks: Vec<EventFd>, call: EventFd);
}

/// The queues of an activated device: what the driver set up, with guest
/// memory and the interrupt to raise.
#[derive(Debug)]
pub struct ActiveQueues {
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    features: u64,
    interrupt: Arc<dyn Interrupt>,
    used: bool,
    broken: bool,
}

impl ActiveQueues {
    /// Live queues (index = queue index; a queue the driver did not set up is
    /// not ready) over `mem`, with the negotiated `features`.
    pub fn new(mem: GuestMemoryMmap, queues: Vec<Queue>, features: u64, interrupt: Arc<dyn Interrupt>) -> Self {
        Self { mem, queues, features, interrupt, used: false, broken: false }
    }

    /// Guest memory.
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The negotiated features.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Queue `index` as the driver set it up.
    pub fn queue(&self, index: usize) -> Option<&Queue> {
        self.queues.get(index)
    }

    /// Whether queue `index` exists and the driver set it up.
    pub fn is_ready(&self, index: usize) -> bool {
        !self.broken && self.queues.get(index).is_some_and(QueueT::ready)
    }

    /// Whether the driver made buffers available on queue `index` that the
    /// device has not taken.
    pub fn has_available(&self, index: usize) -> bool {
        if !self.is_ready(index) {
            return false;
        }
        self.queues.get(index).is_some_and(|queue| {
            queue
                .avail_idx(&self.mem, std::sync::atomic::Ordering::Acquire)
                .is_ok_and(|idx| idx.0 != queue.next_avail())
        })
    }

    /// Takes the next chain the driver made available on queue `index`,
    /// checked for shape and against guest memory ([`GuestChain::new`]):
    /// devices get nothing else. `None` when there is none.
    pub fn pop(&mut self, index: usize) -> Option<Result<GuestChain, ChainError>> {
        if !self.is_ready(index) {
            return None;
        }
        let Self { mem, queues, .. } = self;
        let queue = queues.get_mut(index)?;
        let size = queue.size();
        let mut available = match queue.iter(&*mem) {
            Ok(available) => available,
            Err(_) => return Some(Err(ChainError::AvailableRing)),
        };
        let chain = available.next()?;
        Some(GuestChain::new(chain, size, mem))
    }

    /// Gives back the chain last taken from queue `index` (the device could
    /// not use it yet).
    pub fn unpop(&mut self, index: usize) {
        if let Some(queue) = self.queues.get_mut(index) {
            queue.set_next_avail(queue.next_avail().wrapping_sub(1));
        }
    }

    /// Returns the chain at `head` to the driver with `len` bytes written.
    /// A head outside the queue cannot be returned: the device is broken.
    pub fn complete(&mut self, index: usize, head: u16, len: u32) {
        let Self { mem, queues, .. } = self;
        let done =
            queues.get_mut(index).is_some_and(|queue| head < queue.size() && queue.add_used(&*mem, head, len).is_ok());
        if done {
            self.used = true;
        } else {
            self.report_error();
        }
    }

    /// Raises the used-buffer interrupt if buffers were used since the last
    /// call.
    pub fn signal_used(&mut self) {
        if std::mem::take(&mut self.used) {
            self.interrupt.used_buffers();
        }
    }

    /// The driver broke the protocol: the device needs a reset and leaves its
    /// queues alone until then.
    pub fn report_error(&mut self) {
        if !self.broken {
            self.broken = true;
            self.interrupt.needs_reset();
        }
    }

    /// Whether the device reported an error and awaits a reset.
    pub fn is_broken(&self) -> bool {
        self.broken
    }
}

/// A device and, once the driver activated it, its queues: what the vCPU
/// thread (registers) and the device thread (queues) share, behind one
/// mutex per device.
#[derive(Debug)]
pub struct DeviceState {
    device: Box<dyn VirtioDevice>,
    active: Option<ActiveQueues>,
}

impl DeviceState {
    /// `device`, not yet activated.
    pub fn new(device: Box<dyn VirtioDevice>) -> Self {
        Self { device, active: None }
    }

    /// The device.
    pub fn device(&self) -> &dyn VirtioDevice {
        &*self.device
    }

    /// The device, mutably.
    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        &mut *self.device
    }

    /// Whether the driver activated the device.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Hands the device its queues.
    pub fn activate(&mut self, queues: ActiveQueues) {
        self.device.activate(&queues);
        self.active = Some(queues);
    }

    /// Takes the queues away and resets the device.
    pub fn reset(&mut self) {
        self.active = None;
        self.device.reset();
    }

    /// Runs the device on queue `index`; `false` if it is not active.
    pub fn process_queue(&mut self, index: usize) -> bool {
        let Some(queues) = self.active.as_mut() else { return false };
        if !queues.is_broken() {
            self.device.process_queue(index, queues);
            queues.signal_used();
        }
        true
    }

    /// Runs the device on every queue (after activation: buffers may have
    /// been made available before).
    pub fn process_all_queues(&mut self) {
        for index in 0..self.device.queue_count() {
            self.process_queue(index);
        }
    }

    /// The device's host input, if it has one.
    pub fn host_input(&mut self) -> Option<RawFd> {
        self.device.host_input().and_then(|input| input.fd())
    }

    /// Whether the device has room for host input now.
    pub fn wants_host_input(&mut self) -> bool {
        let Some(queues) = self.active.as_ref().filter(|queues| !queues.is_broken()) else { return false };
        self.device.host_input().is_some_and(|input| input.wants(queues))
    }

    /// Lets the device read its host input; whether it made progress.
    pub fn process_host_input(&mut self) -> bool {
        let Some(queues) = self.active.as_mut() else { return false };
        if queues.is_broken() {
            return false;
        }
        let Some(input) = self.device.host_input() else { return false };
        let progress = input.process(queues);
        queues.signal_used();
        progress
    }
}

/// Logs a malformed chain once per kind and tells the driver: the chain
/// goes back empty when its head is valid, and the device needs a reset.
pub(crate) fn refuse_chain(
    queues: &mut ActiveQueues,
    warned: &mut WarnOnce,
    who: &str,
    index: usize,
    head: Option<u16>,
    error: &ChainError,
) {
    warned.warn(error.kind(), || format!("{who}: queue {index}: {error}; the device needs a reset"));
    if let Some(head) = head {
        queues.complete(index, head, 0);
    }
    queues.report_error();
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the devices' tests: guest memory, a driver-side queue,
    //! and an interrupt that counts.

    use std::sync::atomic::{AtomicU32, Ordering};

    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor;
    use vm_memory::{Address, Bytes, GuestAddress};

    use super::*;

    /// Counts what a device raised.
    #[derive(Debug, Default)]
    pub(crate) struct CountingInterrupt {
        pub(crate) used: AtomicU32,
        pub(crate) resets: AtomicU32,
    }

    impl Interrupt for CountingInterrupt {
        fn used_buffers(&self) {
            self.used.fetch_add(1, Ordering::SeqCst);
        }
        fn needs_reset(&self) {
            self.resets.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl CountingInterrupt {
        pub(crate) fn used(&self) -> u32 {
            self.used.load(Ordering::SeqCst)
        }
        pub(crate) fn resets(&self) -> u32 {
            self.resets.load(Ordering::SeqCst)
        }
    }

    /// Installs (once per test process) a logger that keeps every message,
    /// and returns how many so far contain `needle` (tests give their
    /// compartment a unique name and count its warnings).
    pub(crate) fn logged(needle: &str) -> usize {
        use std::sync::{Mutex, OnceLock};
        struct Keep(Mutex<Vec<String>>);
        impl log::Log for Keep {
            fn enabled(&self, _: &log::Metadata<'_>) -> bool {
                true
            }
            fn log(&self, record: &log::Record<'_>) {
                self.0.lock().unwrap().push(record.args().to_string());
            }
            fn flush(&self) {}
        }
        static KEEP: OnceLock<&'static Keep> = OnceLock::new();
        let keep = KEEP.get_or_init(|| {
            let keep: &'static Keep = Box::leak(Box::new(Keep(Mutex::new(Vec::new()))));
            log::set_logger(keep).unwrap();
            log::set_max_level(log::LevelFilter::Warn);
            keep
        });
        keep.0.lock().unwrap().iter().filter(|m| m.contains(needle)).count()
    }

    /// 1 MiB of guest memory at 0.
    pub(crate) fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    /// Where the test queues live (one per queue index, 64 KiB apart): the
    /// descriptor table at the base, the available ring 4 KiB above, the
    /// used ring 8 KiB above.
    pub(crate) fn queue_base(index: usize) -> GuestAddress {
        GuestAddress(0x1_0000 * (index as u64 + 1))
    }

    fn avail_ring(index: usize) -> GuestAddress {
        queue_base(index).unchecked_add(0x1000)
    }

    fn used_ring(index: usize) -> GuestAddress {
        queue_base(index).unchecked_add(0x2000)
    }

    /// Queue size of the test queues.
    pub(crate) const TEST_QUEUE_SIZE: u16 = 16;

    /// A raw descriptor, as a driver writes it.
    pub(crate) fn raw_desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags, next))
    }

    /// A queue as the driver set it up at [`queue_base`]`(index)`.
    pub(crate) fn driver_queue(index: usize) -> Queue {
        let mut queue = Queue::new(QUEUE_MAX_SIZE).unwrap();
        queue.try_set_size(TEST_QUEUE_SIZE).unwrap();
        queue.try_set_desc_table_address(queue_base(index)).unwrap();
        queue.try_set_avail_ring_address(avail_ring(index)).unwrap();
        queue.try_set_used_ring_address(used_ring(index)).unwrap();
        queue.set_ready(true);
        queue
    }

    /// Live queues for a device with `count` queues over `mem`.
    pub(crate) fn active_queues(
        mem: &GuestMemoryMmap,
        count: usize,
        features: u64,
    ) -> (ActiveQueues, Arc<CountingInterrupt>) {
        let queues = (0..count).map(driver_queue).collect();
        let interrupt = Arc::new(CountingInterrupt::default());
        (ActiveQueues::new(mem.clone(), queues, features, interrupt.clone()), interrupt)
    }

    /// Makes a chain of buffers `(guest address, length, device-writable)`
    /// available on queue `index`, as the driver does: descriptors from
    /// slot `first` on, linked with NEXT.
    pub(crate) fn offer(mem: &GuestMemoryMmap, index: usize, first: u16, buffers: &[(u64, u32, bool)]) {
        use ward_abi::virtio::desc::{NEXT, WRITE};
        for (i, &(addr, len, writable)) in buffers.iter().enumerate() {
            let slot = first + u16::try_from(i).unwrap();
            let last = i + 1 == buffers.len();
            let flags = if writable { WRITE } else { 0 } | if last { 0 } else { NEXT };
            write_desc(mem, index, slot, raw_desc(addr, len, flags, if last { 0 } else { slot + 1 }));
        }
        make_available(mem, index, first);
    }

    /// The used ring's entry `slot` of queue `index`: (head, len).
    pub(crate) fn used_entry(mem: &GuestMemoryMmap, index: usize, slot: u16) -> (u32, u32) {
        let at = used_ring(index).unchecked_add(4 + 8 * u64::from(slot));
        (mem.read_obj(at).unwrap(), mem.read_obj(at.unchecked_add(4)).unwrap())
    }

    /// How many chains the device returned on queue `index`.
    pub(crate) fn used_count(mem: &GuestMemoryMmap, index: usize) -> u16 {
        mem.read_obj(used_ring(index).unchecked_add(2)).unwrap()
    }

    /// Writes a raw descriptor into queue `index`'s table at `slot`.
    pub(crate) fn write_desc(mem: &GuestMemoryMmap, index: usize, slot: u16, value: RawDescriptor) {
        mem.write_obj(value, queue_base(index).unchecked_add(16 * u64::from(slot))).unwrap();
    }

    /// Sets the available ring's index of queue `index`.
    pub(crate) fn set_avail_idx(mem: &GuestMemoryMmap, index: usize, idx: u16) {
        mem.write_obj(idx, avail_ring(index).unchecked_add(2)).unwrap();
    }

    /// Puts `head` in the available ring of queue `index` and publishes it.
    pub(crate) fn make_available(mem: &GuestMemoryMmap, index: usize, head: u16) {
        let idx: u16 = mem.read_obj(avail_ring(index).unchecked_add(2)).unwrap();
        let slot = avail_ring(index).unchecked_add(4 + 2 * u64::from(idx % TEST_QUEUE_SIZE));
        mem.write_obj(head, slot).unwrap();
        set_avail_idx(mem, index, idx.wrapping_add(1));
    }
}
