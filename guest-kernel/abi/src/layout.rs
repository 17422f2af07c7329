//! Guest-physical and guest-virtual memory layout of a compartment.
//!
//! ```text
//! guest physical
//! 0x0000_0000  unused (null pages stay unmapped for the guest's own use)
//! 0x0000_0500  boot GDT                       (VMM, read by the CPU)
//! 0x0000_1000  boot info                      (VMM -> kernel)
//! 0x0000_3000  kernel command line            (VMM -> kernel)
//! 0x0000_9000  the kernel's page tables       (VMM, at most 23 pages)
//! 0x0002_0000  free
//! 0x0010_0000  kernel image (ELF PT_LOAD, physical addresses from the ELF)
//!     ...      boot modules, page aligned, after the kernel
//!     ...      free RAM up to the memory size
//! 0xd000_0000  MMIO window: debug console, then virtio-mmio devices
//! 0xfee0_0000  local APIC (in-kernel irqchip)
//! ```
//!
//! The VMM builds the kernel's page tables (ring-0 work is emulated on our
//! hosts; the host does it natively), with 2 MiB and 4 KiB pages only
//! (1 GiB pages fault here, see docs/PLATFORM.md), all supervisor-only:
//! - RAM at [`PHYS_MAP_BASE`] + physical (the direct map): read-write, not
//!   executable;
//! - each device's registers in the direct map: uncached, not executable;
//! - the kernel image at [`KERNEL_BASE`] + physical, each ELF segment with
//!   its own permissions (W^X);
//! - an empty table for the kernel stacks at [`KERNEL_STACKS_BASE`].
//!
//! Nothing is mapped in the lower half: it is the processes'.

/// Guest-physical address of the boot GDT.
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// Guest-physical address of the boot info ([`crate::boot::BootInfo`]).
pub const BOOT_INFO_ADDR: u64 = 0x1000;
/// Bytes reserved for the boot info.
pub const BOOT_INFO_MAX_SIZE: u64 = 0x2000;
/// Guest-physical address of the kernel command line.
pub const CMDLINE_ADDR: u64 = 0x3000;
/// Largest kernel command line, in bytes (no terminating NUL is written).
pub const CMDLINE_MAX_LEN: usize = 4096;
/// Guest-physical address of the kernel's PML4; the other tables follow it.
pub const BOOT_PAGE_TABLES_ADDR: u64 = 0x9000;
/// End of the room for the kernel's page tables.
pub const BOOT_PAGE_TABLES_END: u64 = 0x2_0000;
/// End of the boot area: everything below is reserved for boot structures.
pub const BOOT_AREA_END: u64 = 0x10_0000;
/// Lowest guest-physical address a kernel segment may be loaded at.
pub const KERNEL_LOAD_MIN: u64 = BOOT_AREA_END;

/// Virtual base of the kernel image window (top 2 GiB, `-mcmodel=kernel`).
pub const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;
/// Virtual base of the kernel's direct map of physical memory.
pub const PHYS_MAP_BASE: u64 = 0xffff_8000_0000_0000;
/// Largest physical address the kernel window maps (the top 2 GiB).
pub const KERNEL_WINDOW_SIZE: u64 = 2 << 30;

/// Start of the MMIO window, above the largest RAM size.
pub const MMIO_BASE: u64 = 0xd000_0000;
/// Size of each device's MMIO slot.
pub const MMIO_SLOT_SIZE: u64 = 0x1000;
/// Guest-physical base of the local APIC (xAPIC mode).
pub const LAPIC_BASE: u64 = 0xfee0_0000;
/// Guest-physical base of the I/O APIC (the in-kernel irqchip's): routes
/// device interrupt lines (GSIs) to vectors.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;

/// Size of a small page.
pub const PAGE_SIZE: u64 = 0x1000;
/// Size of a large page.
pub const LARGE_PAGE_SIZE: u64 = 0x20_0000;

/// Smallest compartment memory, in MiB.
pub const MIN_MEMORY_MIB: u64 = 8;
/// Largest compartment memory, in MiB: RAM must end below [`MMIO_BASE`].
pub const MAX_MEMORY_MIB: u64 = MMIO_BASE >> 20;

/// Lowest address of a guest program's image (programs are linked here).
pub const USER_IMAGE_BASE: u64 = 0x40_0000;
/// Where [`crate::syscall::MAP`] places anonymous memory (the program heap).
pub const USER_HEAP_BASE: u64 = 0x0000_1000_0000_0000;
/// Where pages shared with a process ([`crate::syscall::SHARE`]) appear.
pub const USER_SHARE_BASE: u64 = 0x0000_2000_0000_0000;
/// One past the top of a program's stack.
pub const USER_STACK_TOP: u64 = 0x0000_7fff_fff0_0000;
/// Largest program stack; the pages below it stay unmapped (the guard).
pub const USER_STACK_MAX: u64 = 1 << 20;
/// One past the highest user address (the lower canonical half).
pub const USER_END: u64 = 0x0000_8000_0000_0000;
/// Virtual base of the kernel stacks of processes (one slot each, with
/// unmapped guard pages under every stack).
pub const KERNEL_STACKS_BASE: u64 = 0xffff_c000_0000_0000;
