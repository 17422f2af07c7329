//! Where a compartment's virtio devices are, and the virtio-mmio (version 2)
//! register map the guest driver and the VMM's transport share.
//!
//! Devices sit in consecutive MMIO slots from [`FIRST_SLOT_BASE`], each with
//! its own interrupt line from [`FIRST_GSI`] (IOAPIC input, edge triggered,
//! raised by the VMM through an irqfd). The boot info lists each one as a
//! `DeviceKind::VirtioMmio` with its base and line; the device type is in
//! its registers. Layout and semantics are those of the virtio 1.x
//! specification, section 4.2.2.

use crate::layout::{MMIO_BASE, MMIO_SLOT_SIZE};

/// MMIO base of the first virtio device (slot 2: after the debug console
/// and the page service).
pub const FIRST_SLOT_BASE: u64 = MMIO_BASE + 2 * MMIO_SLOT_SIZE;
/// Interrupt line (GSI) of the first virtio device.
pub const FIRST_GSI: u32 = 5;
/// Most virtio devices a compartment has.
pub const MAX_DEVICES: usize = 8;
/// The IDT vector the guest routes the first device's line to.
pub const FIRST_VECTOR: u8 = 48;

/// `"virt"`.
pub const MAGIC: u32 = 0x7472_6976;

/// Register offsets.
pub mod reg {
    /// Magic value (`"virt"`), read-only.
    pub const MAGIC_VALUE: u64 = 0x000;
    /// Version (2), read-only.
    pub const VERSION: u64 = 0x004;
    /// Device type, read-only.
    pub const DEVICE_ID: u64 = 0x008;
    /// Vendor, read-only.
    pub const VENDOR_ID: u64 = 0x00c;
    /// Device features, 32 bits selected by [`DEVICE_FEATURES_SEL`].
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// Selects the device feature word.
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// Driver features, 32 bits selected by [`DRIVER_FEATURES_SEL`].
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// Selects the driver feature word.
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// Selects the queue the queue registers refer to.
    pub const QUEUE_SEL: u64 = 0x030;
    /// Largest size of the selected queue, read-only.
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// Size of the selected queue.
    pub const QUEUE_NUM: u64 = 0x038;
    /// Whether the selected queue is in use.
    pub const QUEUE_READY: u64 = 0x044;
    /// Write a queue index: buffers are available.
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// Why the device interrupted (bit 0: used buffers; bit 1: config).
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// Acknowledges interrupt bits.
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// Device status.
    pub const STATUS: u64 = 0x070;
    /// Descriptor table address, low and high halves.
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// See [`QUEUE_DESC_LOW`].
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// Available ring address, low and high halves.
    pub const QUEUE_AVAIL_LOW: u64 = 0x090;
    /// See [`QUEUE_AVAIL_LOW`].
    pub const QUEUE_AVAIL_HIGH: u64 = 0x094;
    /// Used ring address, low and high halves.
    pub const QUEUE_USED_LOW: u64 = 0x0a0;
    /// See [`QUEUE_USED_LOW`].
    pub const QUEUE_USED_HIGH: u64 = 0x0a4;
    /// Configuration generation, read-only.
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Device-specific configuration space.
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits.
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is done.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 128;
}

/// Device types.
pub mod device_id {
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Console.
    pub const CONSOLE: u32 = 3;
    /// Entropy source.
    pub const RNG: u32 = 4;
    /// Socket (vsock).
    pub const VSOCK: u32 = 19;
}

/// Feature bits.
pub mod feature {
    /// Virtio 1.x (required by version-2 transports).
    pub const VERSION_1: u64 = 1 << 32;
    /// Block: the device is read-only.
    pub const BLK_RO: u64 = 1 << 5;
    /// Block: the device supports flush.
    pub const BLK_FLUSH: u64 = 1 << 9;
}

/// Split virtqueue descriptor flags.
pub mod desc {
    /// The chain continues at `next`.
    pub const NEXT: u16 = 1;
    /// The device writes this buffer.
    pub const WRITE: u16 = 2;
}

/// virtio-blk request types and status values.
pub mod blk {
    /// Read sectors.
    pub const T_IN: u32 = 0;
    /// Write sectors.
    pub const T_OUT: u32 = 1;
    /// Flush.
    pub const T_FLUSH: u32 = 4;
    /// Device id string (20 bytes).
    pub const T_GET_ID: u32 = 8;
    /// Success.
    pub const S_OK: u8 = 0;
    /// I/O error.
    pub const S_IOERR: u8 = 1;
    /// Unsupported request.
    pub const S_UNSUPP: u8 = 2;
    /// Sector size.
    pub const SECTOR_SIZE: u64 = 512;
}
