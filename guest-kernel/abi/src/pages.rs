//! The page service: bulk memory work the guest kernel hands to the host.
//!
//! On our hosts ring 0 is emulated, `rep movsb`/`rep stosb` included
//! (docs/PLATFORM.md, "Ring-0 costs"), so clearing or copying one 4 KiB
//! page in the kernel costs milliseconds. The
//! host does the same work natively in one MMIO exit: it zeroes whole pages
//! with `madvise(MADV_DONTNEED)` (which also gives the memory back to the
//! host until the guest touches it again) and copies with `memcpy`.
//!
//! The kernel writes an array of [`PageOp`] into its memory and submits it
//! with one 64-bit store to [`REG_SUBMIT`]: the array's guest-physical
//! address in bits 0..48 and the number of operations (at most
//! [`MAX_OPS`]) in bits 48..64. Every range is checked against guest RAM;
//! [`REG_FAILED`] then reads how many operations were refused. Like all
//! device input, a bad request only fails that request.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::layout::{MMIO_BASE, MMIO_SLOT_SIZE};

/// Guest-physical base of the page service (the second MMIO slot).
pub const BASE: u64 = MMIO_BASE + MMIO_SLOT_SIZE;
/// Size of its register window.
pub const SIZE: u64 = MMIO_SLOT_SIZE;

/// Write: submit an operation array (see the module documentation).
pub const REG_SUBMIT: u64 = 0x00;
/// Read: operations of the last submission that were refused.
pub const REG_FAILED: u64 = 0x08;

/// Most operations in one submission.
pub const MAX_OPS: u64 = 256;

/// [`PageOp::kind`]: fill `dst..dst + len` with zeros.
pub const OP_ZERO: u32 = 1;
/// [`PageOp::kind`]: copy `src..src + len` to `dst..dst + len` (no overlap).
pub const OP_COPY: u32 = 2;

/// One operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PageOp {
    /// [`OP_ZERO`] or [`OP_COPY`].
    pub kind: u32,
    /// Zero.
    pub reserved: u32,
    /// Destination, guest-physical.
    pub dst: u64,
    /// Source, guest-physical ([`OP_COPY`] only).
    pub src: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Encodes a [`REG_SUBMIT`] value.
pub const fn submit_request(addr: u64, count: u16) -> u64 {
    (addr & ((1 << 48) - 1)) | ((count as u64) << 48)
}

/// Decodes a [`REG_SUBMIT`] value into address and count.
pub const fn decode_submit(value: u64) -> (u64, u64) {
    (value & ((1 << 48) - 1), value >> 48)
}
