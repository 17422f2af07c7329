//! Virtio drivers: the virtio-mmio transport, split virtqueues, and the
//! console, entropy, block and vsock devices the VMM gives a compartment.
//!
//! Every buffer a device reads or writes is a program's own memory: the
//! kernel checks the range (one table walk per 2 MiB, one entry per page)
//! and hands the device its physical pieces. The process waits
//! (`State::Io`) until the device's interrupt says the chain is done. Data
//! never crosses ring 0 by copying.
//!
//! The pages need no pinning: a process waiting for a device cannot run,
//! so it cannot unmap them, fault or exit, and nothing else ends a process.
//! (A future `kill` must wait for the process's I/O first.)

pub mod blk;
pub mod console;
pub mod queue;
pub mod rng;
pub mod vsock;

use alloc::vec::Vec;
use ward_abi::width::{high_u32, low_u32};

use ward_abi::boot::{DeviceInfo, DeviceKind};
use ward_abi::virtio::{self as abi, feature, reg, status};

use crate::mem::frame::FrameAllocator;
use crate::mem::phys::{PAGE_SIZE, PhysMemory};
use crate::proc::Pid;
use queue::{Buffer, RingMemory, Virtqueue};

/// Why a device could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// Wrong magic or version: not a virtio-mmio v2 device.
    NotVirtio,
    /// The device refused the features we need.
    Features,
    /// The queue does not exist or has no room.
    Queue,
    /// No memory for the rings.
    NoMemory,
}

/// The rings through the direct map.
#[derive(Debug, Default)]
pub struct DirectRings;

impl RingMemory for DirectRings {
    fn read16(&self, phys: u64) -> u16 {
        // SAFETY: ring memory is RAM the kernel allocated for this queue,
        // mapped in the direct map; `u16` fields are 2-byte aligned.
        unsafe { core::ptr::read_volatile(crate::addr::phys_to_virt(phys) as *const u16) }
    }
    fn read32(&self, phys: u64) -> u32 {
        // SAFETY: as for `read16`, 4-byte aligned.
        unsafe { core::ptr::read_volatile(crate::addr::phys_to_virt(phys) as *const u32) }
    }
    fn write16(&mut self, phys: u64, value: u16) {
        // SAFETY: as for `read16`; the driver owns this part of the ring.
        unsafe { core::ptr::write_volatile(crate::addr::phys_to_virt(phys) as *mut u16, value) }
    }
    fn write32(&mut self, phys: u64, value: u32) {
        // SAFETY: as for `write16`.
        unsafe { core::ptr::write_volatile(crate::addr::phys_to_virt(phys) as *mut u32, value) }
    }
    fn write64(&mut self, phys: u64, value: u64) {
        // SAFETY: as for `write16`, 8-byte aligned (descriptor addresses).
        unsafe { core::ptr::write_volatile(crate::addr::phys_to_virt(phys) as *mut u64, value) }
    }
}

/// A virtio-mmio device's registers.
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    base: u64,
    /// Its interrupt line.
    pub gsi: u32,
    /// Its IDT vector.
    pub vector: u8,
}

impl Transport {
    /// The device announced by `info`, if it is a virtio-mmio device in a
    /// virtio slot.
    pub fn from_info(info: &DeviceInfo) -> Option<Self> {
        if DeviceKind::from_raw(info.kind) != Some(DeviceKind::VirtioMmio) || info.mmio_base < abi::FIRST_SLOT_BASE {
            return None;
        }
        let slot = (info.mmio_base - abi::FIRST_SLOT_BASE) / PAGE_SIZE;
        let slot = u8::try_from(slot).ok().filter(|s| usize::from(*s) < abi::MAX_DEVICES)?;
        Some(Self { base: crate::addr::phys_to_virt(info.mmio_base), gsi: info.irq, vector: abi::FIRST_VECTOR + slot })
    }

    fn read(&self, register: u64) -> u32 {
        // SAFETY: the device's register window is mapped uncached in the
        // direct map (the VMM maps every device it announces).
        unsafe { core::ptr::read_volatile((self.base + register) as *const u32) }
    }

    fn write(&self, register: u64, value: u32) {
        // SAFETY: as for `read`.
        unsafe { core::ptr::write_volatile((self.base + register) as *mut u32, value) }
    }

    /// The device type, once magic and version check out.
    pub fn device_id(&self) -> Option<u32> {
        (self.read(reg::MAGIC_VALUE) == abi::MAGIC && self.read(reg::VERSION) == 2).then(|| self.read(reg::DEVICE_ID))
    }

    /// Resets the device and negotiates features: VERSION_1 plus whatever of
    /// `wanted` the device offers. Returns the features agreed.
    pub fn negotiate(&self, wanted: u64) -> Result<u64, InitError> {
        self.write(reg::STATUS, 0);
        self.write(reg::STATUS, status::ACKNOWLEDGE);
        self.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        let mut offered = 0u64;
        for word in 0..2u32 {
            self.write(reg::DEVICE_FEATURES_SEL, word);
            offered |= u64::from(self.read(reg::DEVICE_FEATURES)) << (32 * word);
        }
        if offered & feature::VERSION_1 == 0 {
            self.write(reg::STATUS, status::FAILED);
            return Err(InitError::Features);
        }
        let agreed = offered & (wanted | feature::VERSION_1);
        for word in 0..2u32 {
            self.write(reg::DRIVER_FEATURES_SEL, word);
            self.write(reg::DRIVER_FEATURES, low_u32(agreed >> (32 * word)));
        }
        let features_ok = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.write(reg::STATUS, features_ok);
        if self.read(reg::STATUS) & status::FEATURES_OK == 0 {
            self.write(reg::STATUS, status::FAILED);
            return Err(InitError::Features);
        }
        Ok(agreed)
    }

    /// Sets up queue `index` with up to [`queue::MAX_QUEUE_SIZE`] entries, on
    /// three zeroed frames.
    pub fn setup_queue(
        &self,
        mem: &mut impl PhysMemory,
        frames: &mut FrameAllocator,
        index: u32,
    ) -> Result<Virtqueue, InitError> {
        self.write(reg::QUEUE_SEL, index);
        let max = self.read(reg::QUEUE_NUM_MAX);
        let size = u16::try_from(max.min(u32::from(queue::MAX_QUEUE_SIZE))).map_err(|_| InitError::Queue)?;
        if size == 0 || self.read(reg::QUEUE_READY) != 0 {
            return Err(InitError::Queue);
        }
        let mut ring = || frames.alloc_zeroed(mem).ok_or(InitError::NoMemory);
        let (desc, avail, used) = (ring()?, ring()?, ring()?);
        self.write(reg::QUEUE_NUM, u32::from(size));
        for (low, value) in [(reg::QUEUE_DESC_LOW, desc), (reg::QUEUE_AVAIL_LOW, avail), (reg::QUEUE_USED_LOW, used)] {
            self.write(low, low_u32(value));
            self.write(low + 4, high_u32(value));
        }
        let q = Virtqueue::new(&mut DirectRings, size, desc, avail, used);
        self.write(reg::QUEUE_READY, 1);
        Ok(q)
    }

    /// Tells the device the driver is ready.
    pub fn driver_ok(&self) {
        self.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    }

    /// Tells the device queue `index` has new buffers.
    pub fn notify(&self, index: u32) {
        self.write(reg::QUEUE_NOTIFY, index);
    }

    /// Acknowledges the device's interrupt; returns its status bits.
    pub fn ack_interrupt(&self) -> u32 {
        let bits = self.read(reg::INTERRUPT_STATUS);
        if bits != 0 {
            self.write(reg::INTERRUPT_ACK, bits);
        }
        bits
    }

    /// A 32-bit word of the device's configuration space.
    pub fn config32(&self, offset: u64) -> u32 {
        self.read(reg::CONFIG + offset)
    }
}

/// A chain in flight: who waits for it.
#[derive(Debug)]
pub struct InFlight {
    /// The waiting process.
    pub pid: Pid,
    /// Bytes asked for (returned on success by most requests).
    pub len: u64,
}

/// A finished request: who waited and what to return.
#[derive(Debug)]
pub struct Done {
    /// The waiting process.
    pub pid: Pid,
    /// The system call's result (`rax`).
    pub result: u64,
}

/// In-flight chains of one queue, by head descriptor.
#[derive(Debug, Default)]
pub struct InFlightTable(Vec<Option<InFlight>>);

impl InFlightTable {
    /// A table for a queue of `size`.
    pub fn new(size: u16) -> Self {
        Self((0..size).map(|_| None).collect())
    }

    /// Records `what` for chain `head`.
    pub fn insert(&mut self, head: u16, what: InFlight) {
        if let Some(slot) = self.0.get_mut(usize::from(head)) {
            *slot = Some(what);
        }
    }

    /// Takes the record of chain `head`.
    pub fn take(&mut self, head: u16) -> Option<InFlight> {
        self.0.get_mut(usize::from(head)).and_then(Option::take)
    }
}

/// A program's buffer made ready for a device: physical pieces
/// (contiguous runs merged), borrowed from the resolver's reusable list,
/// and the bytes they cover. Nothing is pinned: a process waiting in
/// `State::Io` cannot run, unmap or exit.
#[derive(Clone, Copy, Debug, Default)]
pub struct IoBuffer<'a> {
    /// (physical address, length), each under 4 GiB.
    pub pieces: &'a [(u64, u64)],
    /// Bytes covered (may be less than asked if the piece budget ran out).
    pub len: u64,
    /// The device writes it (the program reads).
    pub device_writes: bool,
}

impl IoBuffer<'_> {
    /// The pieces as descriptors.
    pub fn descriptors(&self) -> impl Iterator<Item = Buffer> + '_ {
        let device_writes = self.device_writes;
        self.pieces.iter().map(move |&(phys, n)| {
            // `UserRange::resolve` refuses ranges of 4 GiB or more.
            debug_assert!(n <= u64::from(u32::MAX));
            Buffer { phys, len: low_u32(n), device_writes }
        })
    }
}

/// The devices the kernel drives.
#[derive(Debug, Default)]
pub struct Devices {
    /// The console, if the compartment has one.
    pub console: Option<console::Console>,
    /// The entropy device.
    pub rng: Option<rng::Rng>,
    /// Block devices, in boot-info order.
    pub blocks: Vec<blk::Block>,
    /// The vsock device (inter-compartment IPC), if the compartment has one.
    pub vsock: Option<vsock::Vsock>,
    /// The program buffer of the request being made, resolved in place:
    /// kept so the I/O path reuses its allocation.
    pub io: crate::mem::user::Resolved,
    /// Requests finished by the interrupt being handled (likewise kept).
    pub done: Vec<Done>,
}

impl Devices {
    /// Sets up every virtio device in `infos`; routes its line in the I/O
    /// APIC. A device that fails to start is reported and left alone.
    pub fn probe(mem: &mut impl PhysMemory, frames: &mut FrameAllocator, infos: &[DeviceInfo]) -> Self {
        let mut devices = Self::default();
        // The most pieces and completions a request or interrupt can have:
        // reserved now, so no request allocates.
        devices.io.pieces.reserve(usize::from(queue::MAX_QUEUE_SIZE));
        // The console has two queues; one interrupt drains both.
        devices.done.reserve(2 * usize::from(queue::MAX_QUEUE_SIZE));
        for transport in infos.iter().filter_map(Transport::from_info) {
            let started = match transport.device_id() {
                Some(abi::device_id::CONSOLE) if devices.console.is_none() => {
                    console::Console::start(transport, mem, frames).map(|d| devices.console = Some(d))
                }
                Some(abi::device_id::RNG) if devices.rng.is_none() => {
                    rng::Rng::start(transport, mem, frames).map(|d| devices.rng = Some(d))
                }
                Some(abi::device_id::VSOCK) if devices.vsock.is_none() => {
                    vsock::Vsock::start(transport, mem, frames).map(|d| devices.vsock = Some(d))
                }
                Some(abi::device_id::BLOCK) => {
                    blk::Block::start(transport, mem, frames).map(|d| devices.blocks.push(d))
                }
                _ => Err(InitError::NotVirtio),
            };
            match started {
                Ok(()) => crate::arch::ioapic::route(transport.gsi, transport.vector),
                Err(e) => crate::kprintln!(
                    "ward-kernel: virtio device on line ",
                    transport.gsi,
                    " not started: ",
                    match e {
                        InitError::NotVirtio => "not a device we drive",
                        InitError::Features => "features refused",
                        InitError::Queue => "no usable queue",
                        InitError::NoMemory => "out of memory",
                    }
                ),
            }
        }
        devices
    }

    /// Handles the interrupt of the device on `vector`; returns the
    /// requests it finished.
    pub fn interrupt(&mut self, vector: u8, done: &mut Vec<Done>) {
        if let Some(c) = self.console.as_mut().filter(|c| c.transport.vector == vector) {
            c.interrupt(done);
        }
        if let Some(r) = self.rng.as_mut().filter(|r| r.transport.vector == vector) {
            r.interrupt(done);
        }
        for b in self.blocks.iter_mut().filter(|b| b.transport.vector == vector) {
            b.interrupt(done);
        }
        if let Some(v) = self.vsock.as_mut().filter(|v| v.transport.vector == vector) {
            v.interrupt(done);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_pieces_become_descriptors() {
        let pieces = [(0x20_0800, 0x1800), (0x50_0000, 0x200)];
        let io = IoBuffer { pieces: &pieces, len: 0x1a00, device_writes: true };
        assert_eq!(
            io.descriptors().collect::<Vec<_>>(),
            [
                Buffer { phys: 0x20_0800, len: 0x1800, device_writes: true },
                Buffer { phys: 0x50_0000, len: 0x200, device_writes: true }
            ]
        );
    }

    #[test]
    fn in_flight_records_are_taken_once() {
        let mut t = InFlightTable::new(4);
        t.insert(2, InFlight { pid: 7, len: 1 });
        assert_eq!(t.take(2).map(|f| f.pid), Some(7));
        assert!(t.take(2).is_none());
        assert!(t.take(99).is_none());
    }
}
