//! The virtio-mmio transport, version 2 (virtio 1.x, section 4.2.2): the
//! registers a driver uses to find a device, negotiate features, set up
//! its queues and take interrupts. Register map in `ward_abi::virtio::reg`.
//!
//! The transport runs on the vCPU thread (an MMIO exit is a register
//! access). Until the driver sets DRIVER_OK it only records what the driver
//! writes; at DRIVER_OK it checks each queue and hands the device its live
//! queues ([`DeviceState::activate`]), after which the device thread owns
//! them. The two threads share, per device, one mutex (the [`DeviceState`]:
//! taken by the vCPU thread only to activate, reset, or read configuration
//! space) and an [`MmioInterrupt`] of atomics, so the interrupt registers a
//! driver reads on every interrupt never wait for device I/O. The device
//! thread never takes the transport's own lock, so the two cannot deadlock.
//!
//! Queue notifications normally never reach this code: the VMM registers an
//! ioeventfd per queue on QueueNotify, and KVM signals the device thread
//! directly. A notify KVM does not match (another width, or a queue that
//! does not exist) exits here and is handled the same way.
//!
//! Every driver error (a write to a read-only register, a queue set up
//! before features are negotiated or changed while live, a notify for a
//! queue that does not exist, a status bit cleared, an access of the wrong
//! width) is logged once per kind and sets `DEVICE_NEEDS_RESET`; the guest
//! can only break its own device.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use ward_abi::virtio::{MAGIC, feature, reg, status};

use super::queue::GuestRange;
use super::{ActiveQueues, DeviceState, Interrupt, QUEUE_MAX_SIZE, VirtioDevice};
use crate::devices::{BusDevice, WarnOnce};

/// virtio-mmio version 2 (virtio 1.x, no legacy).
pub const MMIO_VERSION: u32 = 2;
/// Vendor id: `"WARD"`.
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"WARD");

/// InterruptStatus bit: buffers were used.
pub const INT_USED_BUFFERS: u32 = 1;
/// InterruptStatus bit: the configuration changed (or the device needs a
/// reset).
pub const INT_CONFIG: u32 = 2;

/// Setting up a transport failed on the host side.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// An eventfd could not be created or duplicated.
    #[error("cannot create an eventfd for a virtio device: {0}")]
    EventFd(std::io::Error),
}

/// The interrupt of a virtio-mmio device: InterruptStatus and an irqfd.
#[derive(Debug)]
pub struct MmioInterrupt {
    status: AtomicU32,
    /// Bits that stay set while the driver is ready: INT_USED_BUFFERS for a
    /// device whose backend raises the irqfd itself (the VMM cannot know
    /// when), so a driver that checks the status always finds a cause.
    sticky: AtomicU32,
    needs_reset: AtomicBool,
    driver_ok: AtomicBool,
    irqfd: EventFd,
    signal_failed: AtomicBool,
}

impl MmioInterrupt {
    /// An interrupt raised by writing `irqfd` (registered with KVM on the
    /// device's GSI).
    pub fn new(irqfd: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            sticky: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
            driver_ok: AtomicBool::new(false),
            irqfd,
            signal_failed: AtomicBool::new(false),
        }
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    /// Whether the device needs a reset.
    pub fn needs_reset_set(&self) -> bool {
        self.needs_reset.load(Ordering::Acquire)
    }

    fn raise(&self, bit: u32) {
        // The status bit is set before the line is raised, so a driver
        // that takes the interrupt always finds its cause.
        self.status.fetch_or(bit, Ordering::AcqRel);
        if let Err(e) = self.irqfd.write(1)
            && !self.signal_failed.swap(true, Ordering::AcqRel)
        {
            log::error!("cannot raise a virtio interrupt: {e} (further failures are not logged)");
        }
    }

    fn acknowledge(&self, bits: u32) {
        let bits = bits & !self.sticky.load(Ordering::Acquire);
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }

    fn reset(&self) {
        self.driver_ok.store(false, Ordering::Release);
        self.needs_reset.store(false, Ordering::Release);
        self.status.store(0, Ordering::Release);
    }
}

impl Interrupt for MmioInterrupt {
    fn used_buffers(&self) {
        self.raise(INT_USED_BUFFERS);
    }

    fn needs_reset(&self) {
        if !self.needs_reset.swap(true, Ordering::AcqRel) && self.driver_ok.load(Ordering::Acquire) {
            // Spec 2.1.2: with DRIVER_OK set, DEVICE_NEEDS_RESET comes with a
            // configuration change notification.
            self.raise(INT_CONFIG);
        }
    }
}

/// What the driver wrote about one queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct QueueRegisters {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    ready: bool,
}

/// Why a queue the driver set up cannot be used.
#[derive(Debug, thiserror::Error)]
enum QueueSetupError {
    #[error("size {0} is not a power of two between 1 and {QUEUE_MAX_SIZE}")]
    Size(u16),
    #[error("a ring is misaligned")]
    Alignment,
    #[error("a ring lies outside guest memory")]
    OutsideMemory,
}

/// A virtio device behind virtio-mmio registers.
pub struct MmioTransport {
    who: String,
    device_type: u32,
    offered: u64,
    queue_count: usize,
    state: Arc<Mutex<DeviceState>>,
    interrupt: Arc<MmioInterrupt>,
    notifiers: Vec<EventFd>,
    wakeup: EventFd,
    mem: GuestMemoryMmap,
    status: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    queue_select: u32,
    queues: Vec<QueueRegisters>,
    warned: WarnOnce,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport").field("who", &self.who).field("status", &self.status).finish_non_exhaustive()
    }
}

/// What the device thread needs of a transport: the device, its queue
/// notifiers (one eventfd per queue, also registered as ioeventfds) and the
/// eventfd that tells it the driver activated or reset the device.
#[derive(Debug)]
pub struct DeviceChannels {
    /// The device and its queues.
    pub state: Arc<Mutex<DeviceState>>,
    /// Queue notifications, by queue index.
    pub notifiers: Vec<EventFd>,
    /// Activation and reset.
    pub wakeup: EventFd,
}

impl MmioTransport {
    /// A transport for `device` of `compartment` (`name` says which device
    /// in logs) over `mem`, interrupting through `irqfd`. Returns it with
    /// what the device thread needs.
    pub fn new(
        compartment: &str,
        name: &str,
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irqfd: EventFd,
    ) -> Result<(Self, DeviceChannels), TransportError> {
        let eventfd = || EventFd::new(libc::EFD_NONBLOCK).map_err(TransportError::EventFd);
        let duplicate = |fd: &EventFd| fd.try_clone().map_err(TransportError::EventFd);
        let device_type = device.device_type();
        // Version-2 transports are virtio 1.x only: VERSION_1 always.
        let offered = device.features() | feature::VERSION_1;
        let queue_count = device.queue_count();
        let notifiers = (0..queue_count).map(|_| eventfd()).collect::<Result<Vec<_>, _>>()?;
        let wakeup = eventfd()?;
        let mut device = device;
        let interrupt = MmioInterrupt::new(duplicate(&irqfd)?);
        // The device thread watches the queues unless another process does.
        let mut watched = Vec::new();
        if let Some(elsewhere) = device.served_elsewhere() {
            elsewhere.set_eventfds(notifiers.iter().map(duplicate).collect::<Result<_, _>>()?, irqfd);
            interrupt.sticky.store(INT_USED_BUFFERS, Ordering::Release);
        } else {
            watched = notifiers.iter().map(duplicate).collect::<Result<_, _>>()?;
        }
        let state = Arc::new(Mutex::new(DeviceState::new(device)));
        let channels = DeviceChannels { state: state.clone(), notifiers: watched, wakeup: duplicate(&wakeup)? };
        let transport = Self {
            who: format!("compartment {compartment}: virtio {name}"),
            device_type,
            offered,
            queue_count,
            state,
            interrupt: Arc::new(interrupt),
            notifiers,
            wakeup,
            mem,
            status: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            queue_select: 0,
            queues: vec![QueueRegisters::default(); queue_count],
            warned: WarnOnce::default(),
        };
        Ok((transport, channels))
    }

    /// The queue notifiers, by queue index (to register as ioeventfds).
    pub fn notifiers(&self) -> &[EventFd] {
        &self.notifiers
    }

    /// The device's interrupt (InterruptStatus and its irqfd).
    pub fn interrupt(&self) -> &Arc<MmioInterrupt> {
        &self.interrupt
    }

    /// The Status register as the driver reads it.
    pub fn status(&self) -> u32 {
        self.status | if self.interrupt.needs_reset_set() { status::DEVICE_NEEDS_RESET } else { 0 }
    }

    /// The driver broke the protocol: log once per kind, and the device
    /// needs a reset.
    fn violation(&mut self, kind: &'static str, what: impl FnOnce() -> String) {
        let who = &self.who;
        self.warned.warn(kind, || format!("{who}: {}; the device needs a reset", what()));
        self.interrupt.needs_reset();
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, DeviceState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn selected_queue(&self) -> Option<usize> {
        usize::try_from(self.queue_select).ok().filter(|&index| index < self.queue_count)
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        let selected = self.selected_queue().and_then(|index| self.queues.get(index));
        match offset {
            reg::MAGIC_VALUE => MAGIC,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device_type,
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_select {
                0 => low_half(self.offered),
                1 => high_half(self.offered),
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => selected.map_or(0, |_| u32::from(QUEUE_MAX_SIZE)),
            reg::QUEUE_READY => selected.map_or(0, |queue| u32::from(queue.ready)),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status(),
            reg::CONFIG_GENERATION => 0,
            _ => {
                let who = &self.who;
                self.warned.warn("read-write-only-register", || {
                    format!("{who}: read of write-only or unknown register {offset:#x}; reads as zero")
                });
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_select = value,
            reg::DRIVER_FEATURES => self.write_driver_features(value),
            reg::DRIVER_FEATURES_SEL => self.driver_features_select = value,
            reg::QUEUE_SEL => self.queue_select = value,
            reg::QUEUE_NUM => match u16::try_from(value) {
                Ok(size) => self.write_queue(|queue| queue.size = size),
                Err(_) => self.violation("queue-size", || format!("queue size {value} is larger than any queue")),
            },
            reg::QUEUE_DESC_LOW => self.write_queue(|queue| set_low(&mut queue.desc, value)),
            reg::QUEUE_DESC_HIGH => self.write_queue(|queue| set_high(&mut queue.desc, value)),
            reg::QUEUE_AVAIL_LOW => self.write_queue(|queue| set_low(&mut queue.avail, value)),
            reg::QUEUE_AVAIL_HIGH => self.write_queue(|queue| set_high(&mut queue.avail, value)),
            reg::QUEUE_USED_LOW => self.write_queue(|queue| set_low(&mut queue.used, value)),
            reg::QUEUE_USED_HIGH => self.write_queue(|queue| set_high(&mut queue.used, value)),
            reg::QUEUE_READY => self.write_queue_ready(value),
            reg::QUEUE_NOTIFY => self.notify(value),
            reg::INTERRUPT_ACK => self.interrupt.acknowledge(value),
            reg::STATUS => self.write_status(value),
            reg::MAGIC_VALUE
            | reg::VERSION
            | reg::DEVICE_ID
            | reg::VENDOR_ID
            | reg::DEVICE_FEATURES
            | reg::QUEUE_NUM_MAX
            | reg::INTERRUPT_STATUS
            | reg::CONFIG_GENERATION => {
                self.violation("write-read-only-register", || format!("write to read-only register {offset:#x}"));
            }
            _ => self.violation("write-unknown-register", || format!("write to unknown register {offset:#x}")),
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        // Features are negotiated after DRIVER and before FEATURES_OK.
        if self.status & status::DRIVER == 0 || self.status & status::FEATURES_OK != 0 {
            return self.violation("features-out-of-order", || {
                "driver features written outside feature negotiation".to_owned()
            });
        }
        match self.driver_features_select {
            0 => set_low(&mut self.driver_features, value),
            1 => set_high(&mut self.driver_features, value),
            // Bits the device never offers; accepting them fails FEATURES_OK.
            _ if value != 0 => self.driver_features |= 1 << 63,
            _ => {}
        }
    }

    /// Queue registers may change only after features are negotiated,
    /// before DRIVER_OK, on a queue that exists and is not yet live.
    fn write_queue(&mut self, change: impl FnOnce(&mut QueueRegisters)) {
        if self.status & status::FEATURES_OK == 0 || self.status & status::DRIVER_OK != 0 {
            return self.violation("queue-setup-out-of-order", || {
                "queue set up before features were negotiated or after DRIVER_OK".to_owned()
            });
        }
        let select = self.queue_select;
        match self.selected_queue() {
            None => {
                self.violation("queue-does-not-exist", || format!("set-up of queue {select}, which does not exist"))
            }
            Some(index) if self.queues[index].ready => {
                self.violation("queue-changed-while-ready", || format!("queue {index} changed while ready"));
            }
            Some(index) => change(&mut self.queues[index]),
        }
    }

    fn write_queue_ready(&mut self, value: u32) {
        let Some(index) = self.selected_queue() else {
            let select = self.queue_select;
            return self
                .violation("queue-does-not-exist", || format!("queue {select}, which does not exist, set ready"));
        };
        if self.status & status::FEATURES_OK == 0 || self.status & status::DRIVER_OK != 0 {
            return self.violation("queue-setup-out-of-order", || {
                format!("queue {index} enabled before features were negotiated or after DRIVER_OK")
            });
        }
        if value == 0 {
            self.queues[index].ready = false;
            return;
        }
        let mem = self.mem.clone();
        match build_queue(&self.queues[index], &mem) {
            Ok(_) => self.queues[index].ready = true,
            Err(e) => self.violation("bad-queue", || format!("queue {index} cannot be used: {e}")),
        }
    }

    fn notify(&mut self, value: u32) {
        match usize::try_from(value).ok().and_then(|index| self.notifiers.get(index)) {
            Some(notifier) => {
                if let Err(e) = notifier.write(1) {
                    log::error!("{}: cannot signal queue {value}: {e}", self.who);
                }
            }
            None => {
                self.violation("notify-unknown-queue", || format!("notify for queue {value}, which does not exist"))
            }
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            return self.reset();
        }
        // DEVICE_NEEDS_RESET is the device's; a driver writing back what it
        // read may carry it.
        let value = value & !status::DEVICE_NEEDS_RESET;
        if value & status::FAILED != 0 {
            // The driver gave up on the device; it resets it to try again.
            self.status |= status::FAILED;
            return;
        }
        let old = self.status;
        if value & old != old {
            return self.violation("status-bit-cleared", || {
                format!("status {value:#x} clears bits of {old:#x} without a reset")
            });
        }
        let mut value = value;
        let new = value & !self.status;
        if new & status::FEATURES_OK != 0 && !self.features_acceptable() {
            // The specification's way to refuse: FEATURES_OK stays clear.
            let (who, features) = (&self.who, self.driver_features);
            self.warned.warn("features-refused", || {
                format!("{who}: driver features {features:#x} refused (VERSION_1 missing or not offered)")
            });
            value &= !status::FEATURES_OK;
        }
        if new & status::DRIVER_OK != 0 {
            if value & status::FEATURES_OK == 0 {
                return self.violation("driver-ok-early", || "DRIVER_OK before FEATURES_OK".to_owned());
            }
            if let Err((index, e)) = self.activate() {
                return self.violation("bad-queue", || format!("queue {index} cannot be used: {e}"));
            }
        }
        self.status = value;
    }

    fn features_acceptable(&self) -> bool {
        self.driver_features & !self.offered == 0 && self.driver_features & feature::VERSION_1 != 0
    }

    /// DRIVER_OK: builds the live queues and hands them to the device.
    fn activate(&mut self) -> Result<(), (usize, QueueSetupError)> {
        let mut queues = Vec::with_capacity(self.queue_count);
        for (index, registers) in self.queues.iter().enumerate() {
            let queue = if registers.ready {
                build_queue(registers, &self.mem).map_err(|e| (index, e))?
            } else {
                // Not set up: never ready, never used.
                Queue::new(QUEUE_MAX_SIZE).map_err(|_| (index, QueueSetupError::Size(QUEUE_MAX_SIZE)))?
            };
            queues.push(queue);
        }
        let interrupt: Arc<dyn Interrupt> = self.interrupt.clone();
        let active = ActiveQueues::new(self.mem.clone(), queues, self.driver_features, interrupt);
        self.lock_state().activate(active);
        self.interrupt.driver_ok.store(true, Ordering::Release);
        self.interrupt.status.fetch_or(self.interrupt.sticky.load(Ordering::Acquire), Ordering::AcqRel);
        self.wake_device_thread();
        Ok(())
    }

    /// Status 0: back to the state after power-on. Waits for the device
    /// thread to finish what it is doing with the queues.
    fn reset(&mut self) {
        self.lock_state().reset();
        self.interrupt.reset();
        self.status = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        self.queues.fill(QueueRegisters::default());
        self.wake_device_thread();
    }

    fn wake_device_thread(&self) {
        if let Err(e) = self.wakeup.write(1) {
            log::error!("{}: cannot wake the device thread: {e}", self.who);
        }
    }

    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        if !self.lock_state().device().read_config(offset, data) {
            data.fill(0);
            let (who, len) = (&self.who, data.len());
            self.warned.warn("config-out-of-range", || {
                format!("{who}: read of {len} bytes at {offset:#x}, outside configuration space; reads as zero")
            });
        }
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        // Ward's devices' configuration spaces are read-only.
        self.violation("config-read-only", || format!("write to read-only configuration space at {offset:#x}"));
    }
}

/// The queue the driver described, checked: size, alignment, and each ring
/// inside guest memory.
fn build_queue(registers: &QueueRegisters, mem: &GuestMemoryMmap) -> Result<Queue, QueueSetupError> {
    let size = registers.size;
    let mut queue = Queue::new(QUEUE_MAX_SIZE).map_err(|_| QueueSetupError::Size(size))?;
    queue.try_set_size(size).map_err(|_| QueueSetupError::Size(size))?;
    queue.try_set_desc_table_address(GuestAddress(registers.desc)).map_err(|_| QueueSetupError::Alignment)?;
    queue.try_set_avail_ring_address(GuestAddress(registers.avail)).map_err(|_| QueueSetupError::Alignment)?;
    queue.try_set_used_ring_address(GuestAddress(registers.used)).map_err(|_| QueueSetupError::Alignment)?;
    // Checked here, before virtio-queue's own check (which logs every
    // failure: a guest could flood the log with it).
    let size = u32::from(size);
    let rings = [(registers.desc, 16 * size), (registers.avail, 6 + 2 * size), (registers.used, 6 + 8 * size)];
    if !rings.iter().all(|&(addr, len)| GuestRange::new(mem, GuestAddress(addr), len).is_some()) {
        return Err(QueueSetupError::OutsideMemory);
    }
    queue.set_ready(true);
    if !queue.is_valid(mem) {
        return Err(QueueSetupError::OutsideMemory);
    }
    Ok(queue)
}

fn low_half(value: u64) -> u32 {
    u32::try_from(value & 0xffff_ffff).unwrap_or(0)
}

fn high_half(value: u64) -> u32 {
    u32::try_from(value >> 32).unwrap_or(0)
}

fn set_low(target: &mut u64, value: u32) {
    *target = (*target & !0xffff_ffff) | u64::from(value);
}

fn set_high(target: &mut u64, value: u32) {
    *target = (*target & 0xffff_ffff) | (u64::from(value) << 32);
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            return self.read_config(offset - reg::CONFIG, data);
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0);
            let (who, len) = (&self.who, data.len());
            self.warned.warn("register-width", || {
                format!("{who}: {len}-byte read of register {offset:#x}; registers are 32-bit, reads as zero")
            });
            return;
        }
        let value = self.read_register(offset);
        data.copy_from_slice(&value.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            return self.write_config(offset - reg::CONFIG, data);
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            let len = data.len();
            return self.violation("register-width", || format!("{len}-byte write to register {offset:#x}"));
        };
        if !offset.is_multiple_of(4) {
            return self.violation("register-width", || format!("misaligned write to register {offset:#x}"));
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::rng::Rng;
    use crate::devices::virtio::testing::memory;
    use ward_abi::virtio::device_id;

    struct Driver {
        transport: MmioTransport,
        channels: DeviceChannels,
        irqfd: EventFd,
    }

    impl Driver {
        fn new() -> Self {
            let irqfd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            let (transport, channels) =
                MmioTransport::new("test", "rng", Box::new(Rng::new("test")), memory(), irqfd.try_clone().unwrap())
                    .unwrap();
            Self { transport, channels, irqfd }
        }

        fn read(&mut self, offset: u64) -> u32 {
            let mut data = [0u8; 4];
            self.transport.read(offset, &mut data);
            u32::from_le_bytes(data)
        }

        fn write(&mut self, offset: u64, value: u32) {
            self.transport.write(offset, &value.to_le_bytes());
        }

        fn needs_reset(&mut self) -> bool {
            self.read(reg::STATUS) & status::DEVICE_NEEDS_RESET != 0
        }

        /// ACKNOWLEDGE, DRIVER, features, FEATURES_OK.
        fn negotiate(&mut self, features: u64) {
            self.write(reg::STATUS, status::ACKNOWLEDGE);
            self.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
            self.write(reg::DRIVER_FEATURES_SEL, 0);
            self.write(reg::DRIVER_FEATURES, low_half(features));
            self.write(reg::DRIVER_FEATURES_SEL, 1);
            self.write(reg::DRIVER_FEATURES, high_half(features));
            self.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        }

        fn set_up_queue(&mut self, index: u32, base: u64) {
            self.write(reg::QUEUE_SEL, index);
            self.write(reg::QUEUE_NUM, 16);
            self.write(reg::QUEUE_DESC_LOW, low_half(base));
            self.write(reg::QUEUE_AVAIL_LOW, low_half(base + 0x1000));
            self.write(reg::QUEUE_USED_LOW, low_half(base + 0x2000));
            self.write(reg::QUEUE_READY, 1);
        }

        fn driver_ok(&mut self) {
            let current = self.read(reg::STATUS);
            self.write(reg::STATUS, current | status::DRIVER_OK);
        }

        fn active(&self) -> bool {
            self.channels.state.lock().unwrap().is_active()
        }
    }

    #[test]
    fn identity_registers_read_as_the_specification_says() {
        let mut d = Driver::new();
        assert_eq!(d.read(reg::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(d.read(reg::VERSION), 2);
        assert_eq!(d.read(reg::DEVICE_ID), device_id::RNG);
        assert_eq!(d.read(reg::VENDOR_ID), VENDOR_ID);
        d.write(reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(d.read(reg::DEVICE_FEATURES), 1, "VERSION_1 is bit 32");
        d.write(reg::QUEUE_SEL, 0);
        assert_eq!(d.read(reg::QUEUE_NUM_MAX), u32::from(QUEUE_MAX_SIZE));
        d.write(reg::QUEUE_SEL, 1);
        assert_eq!(d.read(reg::QUEUE_NUM_MAX), 0, "rng has one queue");
    }

    #[test]
    fn full_initialisation_activates_the_device() {
        let mut d = Driver::new();
        d.negotiate(feature::VERSION_1);
        assert_ne!(d.read(reg::STATUS) & status::FEATURES_OK, 0);
        d.set_up_queue(0, 0x1_0000);
        assert_eq!(d.read(reg::QUEUE_READY), 1);
        d.driver_ok();
        assert!(d.active());
        assert!(!d.needs_reset());
        assert_eq!(d.channels.wakeup.read().unwrap(), 1, "the device thread was woken");
    }

    #[test]
    fn features_without_version_1_or_not_offered_are_refused() {
        for features in [0, feature::VERSION_1 | feature::BLK_RO] {
            let mut d = Driver::new();
            d.negotiate(features);
            assert_eq!(d.read(reg::STATUS) & status::FEATURES_OK, 0, "features {features:#x}");
            assert!(!d.needs_reset(), "refusing FEATURES_OK is the specified answer");
        }
    }

    #[test]
    fn queue_enabled_before_features_are_negotiated_needs_reset() {
        let mut d = Driver::new();
        d.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        d.write(reg::QUEUE_SEL, 0);
        d.write(reg::QUEUE_READY, 1);
        assert_eq!(d.read(reg::QUEUE_READY), 0);
        assert!(d.needs_reset());
    }

    #[test]
    fn writes_to_read_only_registers_need_reset() {
        for offset in [reg::MAGIC_VALUE, reg::DEVICE_ID, reg::QUEUE_NUM_MAX, reg::INTERRUPT_STATUS] {
            let mut d = Driver::new();
            d.write(offset, 5);
            assert!(d.needs_reset(), "register {offset:#x}");
            assert_eq!(d.read(reg::MAGIC_VALUE), MAGIC);
        }
    }

    #[test]
    fn notify_for_a_queue_that_does_not_exist_needs_reset() {
        let mut d = Driver::new();
        d.negotiate(feature::VERSION_1);
        d.set_up_queue(0, 0x1_0000);
        d.driver_ok();
        d.write(reg::QUEUE_NOTIFY, 0);
        assert_eq!(d.channels.notifiers[0].read().unwrap(), 1, "a notify KVM did not catch still reaches the queue");
        assert!(!d.needs_reset());
        d.write(reg::QUEUE_NOTIFY, 7);
        assert!(d.needs_reset());
        assert_eq!(d.read(reg::INTERRUPT_STATUS), INT_CONFIG, "with DRIVER_OK the driver is told");
        assert_eq!(d.irqfd.read().unwrap(), 1);
    }

    #[test]
    fn queue_in_bad_memory_or_of_bad_size_is_refused() {
        for (size, base) in [(16, 0x10_0000 - 0x100), (3, 0x1_0000), (512, 0x1_0000)] {
            let mut d = Driver::new();
            d.negotiate(feature::VERSION_1);
            d.write(reg::QUEUE_SEL, 0);
            d.write(reg::QUEUE_NUM, size);
            d.write(reg::QUEUE_DESC_LOW, low_half(base));
            d.write(reg::QUEUE_AVAIL_LOW, low_half(base + 0x1000));
            d.write(reg::QUEUE_USED_LOW, low_half(base + 0x2000));
            d.write(reg::QUEUE_READY, 1);
            assert_eq!(d.read(reg::QUEUE_READY), 0, "size {size} at {base:#x}");
            assert!(d.needs_reset());
        }
    }

    #[test]
    fn queue_changes_after_driver_ok_need_reset() {
        let mut d = Driver::new();
        d.negotiate(feature::VERSION_1);
        d.set_up_queue(0, 0x1_0000);
        d.driver_ok();
        d.write(reg::QUEUE_DESC_LOW, 0x5000);
        assert!(d.needs_reset());
    }

    #[test]
    fn reset_returns_to_power_on_state() {
        let mut d = Driver::new();
        d.negotiate(feature::VERSION_1);
        d.set_up_queue(0, 0x1_0000);
        d.driver_ok();
        d.write(reg::QUEUE_NOTIFY, 9);
        assert!(d.needs_reset());
        d.write(reg::STATUS, 0);
        assert_eq!(d.read(reg::STATUS), 0);
        assert_eq!(d.read(reg::INTERRUPT_STATUS), 0);
        assert!(!d.active());
        d.write(reg::QUEUE_SEL, 0);
        assert_eq!(d.read(reg::QUEUE_READY), 0);
        // And it can be brought up again.
        d.negotiate(feature::VERSION_1);
        d.set_up_queue(0, 0x1_0000);
        d.driver_ok();
        assert!(d.active());
    }

    #[test]
    fn interrupt_status_is_set_before_signalling_and_acknowledged() {
        let d = Driver::new();
        d.transport.interrupt().used_buffers();
        assert_eq!(d.transport.interrupt().status(), INT_USED_BUFFERS);
        assert_eq!(d.irqfd.read().unwrap(), 1);
        let mut d = d;
        d.write(reg::INTERRUPT_ACK, INT_USED_BUFFERS);
        assert_eq!(d.read(reg::INTERRUPT_STATUS), 0);
    }

    #[test]
    fn clearing_status_bits_or_driver_ok_before_features_ok_need_reset() {
        let mut d = Driver::new();
        d.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        d.write(reg::STATUS, status::ACKNOWLEDGE);
        assert!(d.needs_reset());
        let mut d = Driver::new();
        d.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK);
        assert!(d.needs_reset());
        assert!(!d.active());
    }

    #[test]
    fn each_kind_of_driver_error_is_logged_once() {
        use crate::devices::virtio::testing::logged;
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let rng = Box::new(Rng::new("log-once"));
        let (mut transport, _channels) = MmioTransport::new("log-once", "rng", rng, memory(), irqfd).unwrap();
        logged("compartment log-once");
        for _ in 0..100 {
            transport.write(reg::MAGIC_VALUE, &1u32.to_le_bytes());
            transport.write(reg::QUEUE_NOTIFY, &9u32.to_le_bytes());
        }
        assert_eq!(logged("compartment log-once: virtio rng: write to read-only register"), 1);
        assert_eq!(logged("compartment log-once: virtio rng: notify for queue 9"), 1);
    }

    #[test]
    fn driver_giving_up_is_recorded_without_blame() {
        let mut d = Driver::new();
        d.negotiate(0);
        d.write(reg::STATUS, status::FAILED);
        assert_eq!(d.read(reg::STATUS), status::ACKNOWLEDGE | status::DRIVER | status::FAILED);
    }

    #[test]
    fn wrong_width_accesses_are_refused() {
        let mut d = Driver::new();
        let mut two = [0xffu8; 2];
        d.transport.read(reg::MAGIC_VALUE, &mut two);
        assert_eq!(two, [0, 0]);
        assert!(!d.needs_reset(), "a read changes nothing");
        d.transport.write(reg::STATUS, &[1u8; 8]);
        assert!(d.needs_reset());
    }

    #[test]
    fn config_writes_are_refused_and_reads_outside_are_zero() {
        let mut d = Driver::new();
        let mut data = [0xffu8; 4];
        d.transport.read(reg::CONFIG, &mut data);
        assert_eq!(data, [0; 4]);
        d.transport.write(reg::CONFIG, &[1]);
        assert!(d.needs_reset());
    }
}
