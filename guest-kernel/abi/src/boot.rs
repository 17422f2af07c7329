//! The boot info: what the VMM tells the guest kernel at entry.
//!
//! The VMM writes one [`BootInfo`] at [`crate::layout::BOOT_INFO_ADDR`] and
//! enters the kernel in 64-bit mode with its guest-physical address in `rdi`.
//! It is the guest's only source for its memory map, command line, devices and
//! boot modules: there is no firmware, no ACPI, no port I/O to probe.
//!
//! The kernel checks [`BootInfo::magic`], [`BootInfo::version`] and
//! [`BootInfo::size`] before trusting anything else, and clamps every count to
//! the capacity of its array.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `"WARDBOOT"`, little-endian.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"WARDBOOT");
/// Version of this layout. Bumped on any incompatible change.
pub const BOOT_INFO_VERSION: u32 = 1;

/// Capacity of [`BootInfo::memory`].
pub const MAX_MEMORY_REGIONS: usize = 16;
/// Capacity of [`BootInfo::devices`].
pub const MAX_DEVICES: usize = 16;
/// Capacity of [`BootInfo::modules`].
pub const MAX_MODULES: usize = 16;
/// Bytes of a module name (UTF-8, NUL padded).
pub const MODULE_NAME_LEN: usize = 32;

/// What a [`MemoryRegion`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MemoryKind {
    /// Free RAM the kernel may allocate.
    Usable = 1,
    /// Boot structures: GDT, boot info, command line, boot page tables.
    Boot = 2,
    /// The kernel image, `.bss` included.
    Kernel = 3,
    /// A boot module (a guest program image).
    Module = 4,
}

impl MemoryKind {
    /// The kind for a raw value, if it is one.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Usable),
            2 => Some(Self::Boot),
            3 => Some(Self::Kernel),
            4 => Some(Self::Module),
            _ => None,
        }
    }
}

/// A range of guest-physical memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemoryRegion {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
    /// A [`MemoryKind`] as `u32`.
    pub kind: u32,
    /// Zero.
    pub reserved: u32,
}

/// The kinds of device a compartment can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum DeviceKind {
    /// The debug console of [`crate::debug_console`].
    DebugConsole = 1,
    /// A virtio-mmio transport (version 2); the device type is in its registers.
    VirtioMmio = 2,
    /// The page service of [`crate::pages`].
    PageService = 3,
}

impl DeviceKind {
    /// The kind for a raw value, if it is one.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::DebugConsole),
            2 => Some(Self::VirtioMmio),
            3 => Some(Self::PageService),
            _ => None,
        }
    }
}

/// A device in the MMIO window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DeviceInfo {
    /// A [`DeviceKind`] as `u32`.
    pub kind: u32,
    /// Interrupt line (IOAPIC GSI); 0 when the device raises none.
    pub irq: u32,
    /// Guest-physical base of its registers.
    pub mmio_base: u64,
    /// Size of its register window.
    pub mmio_size: u64,
}

/// A boot module: a file the VMM placed in guest memory for the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ModuleInfo {
    /// Guest-physical base, page aligned.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
    /// Name, UTF-8, NUL padded.
    pub name: [u8; MODULE_NAME_LEN],
    /// Flags; bit 0 ([`MODULE_START_AT_BOOT`]) starts it at boot.
    pub flags: u64,
}

/// [`ModuleInfo::flags`]: the kernel starts this program at boot.
pub const MODULE_START_AT_BOOT: u64 = 1;

impl ModuleInfo {
    /// The module's name without its NUL padding.
    pub fn name(&self) -> &[u8] {
        let len = self.name.iter().position(|&b| b == 0).unwrap_or(MODULE_NAME_LEN);
        &self.name[..len]
    }
}

/// The boot info. See the module documentation.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BootInfo {
    /// [`BOOT_INFO_MAGIC`].
    pub magic: u64,
    /// [`BOOT_INFO_VERSION`].
    pub version: u32,
    /// `size_of::<BootInfo>()` as the VMM built it.
    pub size: u32,
    /// Total RAM in bytes.
    pub memory_size: u64,
    /// Time-stamp counter frequency in kHz (`KVM_GET_TSC_KHZ`); the kernel's
    /// clock and timer deadlines are in TSC cycles.
    pub tsc_khz: u64,
    /// Guest-physical address of the command line (UTF-8, no NUL).
    pub cmdline_addr: u64,
    /// Command line length in bytes.
    pub cmdline_len: u32,
    /// Valid entries in [`Self::memory`].
    pub memory_count: u32,
    /// Valid entries in [`Self::devices`].
    pub device_count: u32,
    /// Valid entries in [`Self::modules`].
    pub module_count: u32,
    /// The memory map: sorted, non-overlapping, covering all RAM.
    pub memory: [MemoryRegion; MAX_MEMORY_REGIONS],
    /// The devices, in MMIO order.
    pub devices: [DeviceInfo; MAX_DEVICES],
    /// The boot modules.
    pub modules: [ModuleInfo; MAX_MODULES],
}

impl BootInfo {
    /// An empty boot info with the magic, version and size filled in.
    pub fn new(memory_size: u64) -> Self {
        Self {
            magic: BOOT_INFO_MAGIC,
            version: BOOT_INFO_VERSION,
            // The struct is a few KiB; `size_of` fits in u32 by construction.
            size: BOOT_INFO_SIZE,
            memory_size,
            tsc_khz: 0,
            cmdline_addr: 0,
            cmdline_len: 0,
            memory_count: 0,
            device_count: 0,
            module_count: 0,
            memory: [MemoryRegion::default(); MAX_MEMORY_REGIONS],
            devices: [DeviceInfo::default(); MAX_DEVICES],
            modules: [ModuleInfo::default(); MAX_MODULES],
        }
    }

    /// Whether magic, version and size say this is a boot info we understand.
    pub fn is_valid(&self) -> bool {
        self.magic == BOOT_INFO_MAGIC && self.version == BOOT_INFO_VERSION && self.size == BOOT_INFO_SIZE
    }

    /// The valid memory regions.
    pub fn memory_regions(&self) -> &[MemoryRegion] {
        &self.memory[..clamp(self.memory_count, MAX_MEMORY_REGIONS)]
    }

    /// The valid devices.
    pub fn devices(&self) -> &[DeviceInfo] {
        &self.devices[..clamp(self.device_count, MAX_DEVICES)]
    }

    /// The valid modules.
    pub fn modules(&self) -> &[ModuleInfo] {
        &self.modules[..clamp(self.module_count, MAX_MODULES)]
    }
}

/// `size_of::<BootInfo>()`, checked at compile time to fit the boot area.
pub const BOOT_INFO_SIZE: u32 = {
    let size = core::mem::size_of::<BootInfo>();
    assert!(size as u64 <= crate::layout::BOOT_INFO_MAX_SIZE);
    #[allow(clippy::cast_possible_truncation, reason = "checked against BOOT_INFO_MAX_SIZE just above")]
    let size = size as u32;
    size
};

fn clamp(count: u32, capacity: usize) -> usize {
    let count = usize::try_from(count).unwrap_or(capacity);
    if count < capacity { count } else { capacity }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromBytes;

    #[test]
    fn boot_info_round_trips_through_bytes() {
        let mut info = BootInfo::new(64 << 20);
        info.memory_count = 1;
        info.memory[0] =
            MemoryRegion { base: 0x10_0000, size: 0x100_0000, kind: MemoryKind::Usable as u32, reserved: 0 };
        let bytes = info.as_bytes();
        let back = BootInfo::read_from_bytes(bytes).unwrap();
        assert!(back.is_valid());
        assert_eq!(back.memory_regions(), &info.memory[..1]);
    }

    #[test]
    fn counts_beyond_capacity_are_clamped() {
        let mut info = BootInfo::new(0);
        info.memory_count = u32::MAX;
        info.device_count = 17;
        info.module_count = 3;
        assert_eq!(info.memory_regions().len(), MAX_MEMORY_REGIONS);
        assert_eq!(info.devices().len(), MAX_DEVICES);
        assert_eq!(info.modules().len(), 3);
    }

    #[test]
    fn wrong_magic_or_version_is_invalid() {
        let mut info = BootInfo::new(0);
        info.magic ^= 1;
        assert!(!info.is_valid());
        let mut info = BootInfo::new(0);
        info.version += 1;
        assert!(!info.is_valid());
    }

    #[test]
    fn module_name_stops_at_nul() {
        let mut m = ModuleInfo::default();
        m.name[..5].copy_from_slice(b"hello");
        assert_eq!(m.name(), b"hello");
        m.name = [b'x'; MODULE_NAME_LEN];
        assert_eq!(m.name().len(), MODULE_NAME_LEN);
    }
}
