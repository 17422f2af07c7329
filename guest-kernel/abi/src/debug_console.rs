//! The debug console: the compartment's first MMIO device.
//!
//! It works before any driver is up and after everything else has failed, so
//! the guest kernel uses it for early boot and for panics, and to power the
//! compartment off with an exit code. It sits in the first MMIO slot.
//!
//! It is also the compartment's **power button**: when the host asks the
//! compartment to stop (`ward stop`, a SIGTERM to its VMM), the device
//! raises its interrupt line ([`POWER_BUTTON_GSI`], named as its `irq` in
//! the boot info) and [`REG_STOP_REQUESTED`] reads 1 from then on. The
//! kernel tells every program, and powers off when they have ended.
//!
//! Every register is 32 or 64 bits wide and write-only but
//! [`REG_STOP_REQUESTED`]; other reads return zero.

use crate::layout::MMIO_BASE;

/// Guest-physical base of the debug console.
pub const BASE: u64 = MMIO_BASE;
/// Size of its register window.
pub const SIZE: u64 = crate::layout::MMIO_SLOT_SIZE;

/// Write one byte (the low byte of the value) to the console.
pub const REG_BYTE: u64 = 0x00;
/// Write a buffer of guest memory to the console: one exit per line instead
/// of one per byte. The 64-bit value is [`write_request`]`(addr, len)`: the
/// guest-physical address in bits 0..48 and the length (at most
/// [`MAX_WRITE_LEN`]) in bits 48..64, so a request is one store and needs no
/// state in the device.
pub const REG_WRITE: u64 = 0x08;
/// A boot progress mark. The kernel's very first instruction writes
/// [`MARK_FIRST_INSTRUCTION`] here, which lets the host time guest entry.
pub const REG_MARK: u64 = 0x18;
/// Power the compartment off; the written value is its exit code.
pub const REG_POWER_OFF: u64 = 0x20;
/// Read: 1 once the host asked the compartment to stop, else 0. The kernel
/// reads it after routing the power button's line, so a request made before
/// then (while it booted) is not lost with the edge.
pub const REG_STOP_REQUESTED: u64 = 0x28;

/// The interrupt line of the power button (below the virtio devices').
pub const POWER_BUTTON_GSI: u32 = 4;
/// The vector the kernel routes it to (just below the virtio devices').
pub const POWER_BUTTON_VECTOR: u8 = crate::virtio::FIRST_VECTOR - 1;

/// Largest buffer one [`REG_WRITE`] request may name.
pub const MAX_WRITE_LEN: u32 = 4096;
/// Value of the first [`REG_MARK`] write.
pub const MARK_FIRST_INSTRUCTION: u32 = 1;
/// [`REG_MARK`] value the kernel writes just before a program's first
/// console output leaves the guest.
pub const MARK_FIRST_USER_OUTPUT: u32 = 2;

/// Exit code of a kernel panic.
pub const EXIT_PANIC: u32 = 101;
/// Exit code of an unexpected CPU exception in the kernel.
pub const EXIT_EXCEPTION: u32 = 102;
/// Exit code when the boot info is missing or malformed.
pub const EXIT_BAD_BOOT_INFO: u32 = 103;
/// Exit code when the first boot program was killed by a CPU exception.
pub const EXIT_INIT_KILLED: u32 = 104;
/// Exit code when a boot program could not be started.
pub const EXIT_BOOT_PROGRAM_FAILED: u32 = 105;

/// Bits of a [`REG_WRITE`] value that hold the address.
pub const WRITE_ADDR_BITS: u32 = 48;

/// Encodes a [`REG_WRITE`] request.
pub const fn write_request(addr: u64, len: u16) -> u64 {
    (addr & ((1 << WRITE_ADDR_BITS) - 1)) | ((len as u64) << WRITE_ADDR_BITS)
}

/// Decodes a [`REG_WRITE`] value into address and length.
pub const fn decode_write_request(value: u64) -> (u64, u64) {
    (value & ((1 << WRITE_ADDR_BITS) - 1), value >> WRITE_ADDR_BITS)
}
