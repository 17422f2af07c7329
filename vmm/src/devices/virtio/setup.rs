//! Giving a compartment its virtio devices: which devices a configuration
//! asks for, and where each goes (MMIO slot, interrupt line, KVM wiring,
//! boot-info entry).
//!
//! Device `i` (console first, then the entropy source, then the disks in
//! order) sits at `ward_abi::virtio::FIRST_SLOT_BASE + i * 4 KiB` with
//! interrupt line (GSI) `FIRST_GSI + i`, an IOAPIC input the guest programs
//! edge-triggered. Its interrupt is an irqfd on that GSI; each of its queues
//! has an ioeventfd on QueueNotify matching the queue index, so a notify
//! wakes the device thread without an exit to the VMM.

use std::sync::{Arc, Mutex};

use kvm_bindings::{
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQCHIP_IOAPIC, KvmIrqRouting, kvm_irq_routing_entry,
    kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip,
};
use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;
use ward_abi::boot::{DeviceInfo, DeviceKind};
use ward_abi::layout::MMIO_SLOT_SIZE;
use ward_abi::virtio::{FIRST_GSI, FIRST_SLOT_BASE, MAX_DEVICES, reg};

use super::VirtioDevice;
use super::block::{Block, DiskConfig, DiskError};
use super::console::{Console, ConsoleConfig, SharedSink};
use super::event_loop::DeviceWorker;
use super::rng::Rng;
use super::transport::{MmioTransport, TransportError};
use super::vsock::{VhostUserVsock, VsockConfig, VsockError};
use crate::devices::{BusError, MmioBus};

/// Input pins of the in-kernel I/O APIC (KVM's `KVM_IOAPIC_NUM_PINS`).
const IOAPIC_PINS: u32 = 24;

/// The virtio devices a compartment asks for. The default is none.
#[derive(Clone, Debug, Default)]
pub struct VirtioConfig {
    /// A virtio console; its output goes to the compartment's console sink.
    pub console: Option<ConsoleConfig>,
    /// An entropy source.
    pub rng: bool,
    /// Disks, in the order the guest sees them.
    pub disks: Vec<DiskConfig>,
    /// A vsock device served by a vhost-user backend (the IPC router); it
    /// makes guest memory shared (memfd-backed). Last in slot order.
    pub vsock: Option<VsockConfig>,
}

impl VirtioConfig {
    /// Whether it asks for no device at all.
    pub fn is_empty(&self) -> bool {
        self.console.is_none() && !self.rng && self.disks.is_empty() && self.vsock.is_none()
    }
}

/// Giving the compartment its virtio devices failed.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    /// A disk file cannot be used.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The vsock backend cannot be used.
    #[error(transparent)]
    Vsock(#[from] VsockError),
    /// More devices than MMIO slots.
    #[error("{0} virtio devices asked for; a compartment has at most {MAX_DEVICES}")]
    TooManyDevices(usize),
    /// A transport's eventfds could not be created.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// An irqfd could not be created.
    #[error("cannot create the interrupt eventfd of virtio device {slot}: {source}")]
    InterruptEventFd {
        /// Its slot.
        slot: usize,
        /// The error.
        source: std::io::Error,
    },
    /// KVM refused the GSI routing.
    #[error("cannot route interrupt lines to the I/O APIC: {0}")]
    Routing(kvm_ioctls::Error),
    /// KVM refused an irqfd.
    #[error("cannot attach interrupt line {gsi} to its eventfd: {source}")]
    Irqfd {
        /// The line.
        gsi: u32,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// KVM refused an ioeventfd.
    #[error("cannot attach queue {queue}'s notification at {addr:#x} to its eventfd: {source}")]
    Ioeventfd {
        /// The queue.
        queue: u32,
        /// Its QueueNotify address.
        addr: u64,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// The transport could not be placed on the bus.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Where device `index` sits: its MMIO base and interrupt line.
pub fn slot(index: usize) -> Option<(u64, u32)> {
    if index >= MAX_DEVICES {
        return None;
    }
    let index32 = u32::try_from(index).ok()?;
    Some((FIRST_SLOT_BASE + u64::from(index32) * MMIO_SLOT_SIZE, FIRST_GSI + index32))
}

/// A device made from the configuration, not yet placed.
#[derive(Debug)]
pub struct NamedDevice {
    /// What it is, for logs.
    pub name: String,
    /// The device.
    pub device: Box<dyn VirtioDevice>,
}

/// Makes the devices `config` asks for (disk files are opened and checked
/// here, before anything touches KVM). The console writes to `sink`.
pub fn build(
    compartment: &str,
    config: &VirtioConfig,
    sink: Option<&SharedSink>,
) -> Result<Vec<NamedDevice>, VirtioError> {
    let mut devices: Vec<NamedDevice> = Vec::new();
    let count = usize::from(config.console.is_some())
        + usize::from(config.rng)
        + config.disks.len()
        + usize::from(config.vsock.is_some());
    if count > MAX_DEVICES {
        return Err(VirtioError::TooManyDevices(count));
    }
    if let (Some(console), Some(sink)) = (&config.console, sink) {
        let device = Console::new(compartment, sink.clone(), console.input.clone());
        devices.push(NamedDevice { name: "console".into(), device: Box::new(device) });
    }
    if config.rng {
        devices.push(NamedDevice { name: "rng".into(), device: Box::new(Rng::new(compartment)) });
    }
    for (index, disk) in config.disks.iter().enumerate() {
        let device = Block::open(compartment, index, disk)?;
        devices.push(NamedDevice { name: format!("block {}", disk.path.display()), device: Box::new(device) });
    }
    Ok(devices)
}

/// Makes the vsock device `config` asks for, if any, over `mem` (which must
/// be shared): it talks to its backend here, before the guest runs.
pub fn build_vsock(
    compartment: &str,
    config: &VirtioConfig,
    mem: &GuestMemoryMmap,
) -> Result<Option<NamedDevice>, VirtioError> {
    let Some(vsock) = &config.vsock else { return Ok(None) };
    let device = VhostUserVsock::new(compartment, vsock, mem.clone())?;
    Ok(Some(NamedDevice { name: "vsock".into(), device: Box::new(device) }))
}

/// The placed devices: boot-info entries and what the device thread runs.
#[derive(Debug, Default)]
pub struct Attached {
    /// One boot-info entry per device, in slot order.
    pub infos: Vec<DeviceInfo>,
    /// One worker per device, for the event loop.
    pub workers: Vec<DeviceWorker>,
}

/// Places `devices` in consecutive slots on `bus`, wires their interrupts
/// and notifications into KVM, and returns their boot-info entries and
/// workers.
pub fn attach(
    vm: &VmFd,
    bus: &mut MmioBus,
    mem: &GuestMemoryMmap,
    compartment: &str,
    devices: Vec<NamedDevice>,
) -> Result<Attached, VirtioError> {
    let mut attached = Attached::default();
    if devices.is_empty() {
        return Ok(attached);
    }
    route_lines_to_ioapic(vm)?;
    let count = devices.len();
    for (index, NamedDevice { name, device }) in devices.into_iter().enumerate() {
        let (base, gsi) = slot(index).ok_or(VirtioError::TooManyDevices(count))?;
        let irqfd =
            EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VirtioError::InterruptEventFd { slot: index, source })?;
        vm.register_irqfd(&irqfd, gsi).map_err(|source| VirtioError::Irqfd { gsi, source })?;
        let (transport, channels) = MmioTransport::new(compartment, &name, device, mem.clone(), irqfd)?;
        let addr = base + reg::QUEUE_NOTIFY;
        for (queue, notifier) in transport.notifiers().iter().enumerate() {
            let queue = u32::try_from(queue).map_err(|_| VirtioError::TooManyDevices(count))?;
            // A 32-bit write of the queue index, as the specification
            // requires, completes in KVM; anything else exits to the
            // transport.
            vm.register_ioevent(notifier, &IoEventAddress::Mmio(addr), queue)
                .map_err(|source| VirtioError::Ioeventfd { queue, addr, source })?;
        }
        bus.insert(base, MMIO_SLOT_SIZE, Arc::new(Mutex::new(transport)))?;
        attached.infos.push(DeviceInfo {
            kind: DeviceKind::VirtioMmio as u32,
            irq: gsi,
            mmio_base: base,
            mmio_size: MMIO_SLOT_SIZE,
        });
        attached.workers.push(DeviceWorker::new(format!("compartment {compartment}: virtio {name}"), channels));
    }
    Ok(attached)
}

/// Routes every GSI to the I/O APIC pin of the same number, and nowhere
/// else. KVM's default routing also sends GSIs 0-15 to the legacy PIC,
/// whose output reaches the vCPU through LINT0 (ExtINT, unmasked): a
/// device line would then arrive a second time, as vector `base + line`
/// of a PIC nobody programmed (vector 5, say, a #BR). Ward has no PIC
/// devices, so the PIC gets no line.
fn route_lines_to_ioapic(vm: &VmFd) -> Result<(), VirtioError> {
    let entries: Vec<kvm_irq_routing_entry> = (0..IOAPIC_PINS)
        .map(|pin| kvm_irq_routing_entry {
            gsi: pin,
            type_: KVM_IRQ_ROUTING_IRQCHIP,
            u: kvm_irq_routing_entry__bindgen_ty_1 {
                irqchip: kvm_irq_routing_irqchip { irqchip: KVM_IRQCHIP_IOAPIC, pin },
            },
            ..kvm_irq_routing_entry::default()
        })
        .collect();
    let routing =
        KvmIrqRouting::from_entries(&entries).map_err(|_| VirtioError::Routing(kvm_ioctls::Error::new(libc::E2BIG)))?;
    vm.set_gsi_routing(&routing).map_err(VirtioError::Routing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::memory;

    #[test]
    fn slots_follow_the_shared_contract() {
        assert_eq!(slot(0), Some((FIRST_SLOT_BASE, FIRST_GSI)));
        assert_eq!(slot(2), Some((FIRST_SLOT_BASE + 0x2000, FIRST_GSI + 2)));
        assert_eq!(slot(MAX_DEVICES), None);
    }

    #[test]
    fn too_many_disks_are_refused_before_any_file_is_opened() {
        let disk = DiskConfig::at("/nonexistent", true);
        let config = VirtioConfig { console: None, rng: true, disks: vec![disk; MAX_DEVICES], vsock: None };
        assert!(matches!(build("t", &config, None), Err(VirtioError::TooManyDevices(9))));
    }

    #[test]
    fn devices_are_wired_into_kvm_and_announced() {
        let kvm = kvm_ioctls::Kvm::new().expect("/dev/kvm is needed");
        let vm = kvm.create_vm().unwrap();
        vm.create_irq_chip().unwrap();
        let sink = SharedSink::new(Box::new(std::io::sink()));
        let config =
            VirtioConfig { console: Some(ConsoleConfig::default()), rng: true, disks: Vec::new(), vsock: None };
        let devices = build("t", &config, Some(&sink)).unwrap();
        let mut bus = MmioBus::new();
        let attached = attach(&vm, &mut bus, &memory(), "t", devices).unwrap();
        assert_eq!(attached.workers.len(), 2);
        let bases: Vec<(u64, u32, u32)> = attached.infos.iter().map(|d| (d.mmio_base, d.irq, d.kind)).collect();
        let kind = DeviceKind::VirtioMmio as u32;
        assert_eq!(bases, [(FIRST_SLOT_BASE, FIRST_GSI, kind), (FIRST_SLOT_BASE + 0x1000, FIRST_GSI + 1, kind)]);
        // The console's registers answer at its slot.
        let mut magic = [0u8; 4];
        assert!(bus.read(FIRST_SLOT_BASE, &mut magic));
        assert_eq!(u32::from_le_bytes(magic), ward_abi::virtio::MAGIC);
    }
}
