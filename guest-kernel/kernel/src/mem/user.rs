//! Guest-program memory as the kernel sees it: addresses and lengths a
//! program passed, checked once at the system-call boundary.
//!
//! A [`UserRange`] exists only if every page of it is mapped user-accessible
//! (and writable, when the kernel will write) in the caller's address space,
//! lies in the lower half and does not wrap. Kernel pointers, unmapped
//! pointers and huge lengths are refused with `Error::BadAddress` before the
//! kernel touches anything; the kernel never faults on a program's behalf.

use ward_abi::layout::USER_END;
use ward_abi::syscall::Error;

use super::aspace::AddressSpace;
use super::paging::{USER, WRITABLE};
use super::phys::{PAGE_SIZE, PhysMemory};

/// How the kernel will use a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read it.
    Read,
    /// Write it.
    Write,
}

/// A checked range of the current process's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserRange {
    addr: u64,
    len: u64,
}

impl UserRange {
    /// Checks `addr..addr + len` in `space` for `access`; at most `max_len`
    /// bytes.
    pub fn new(
        mem: &mut impl PhysMemory,
        space: &AddressSpace,
        addr: u64,
        len: u64,
        max_len: u64,
        access: Access,
    ) -> Result<Self, Error> {
        if len > max_len {
            return Err(Error::BadArgument);
        }
        if len == 0 {
            // Nothing will be touched; Rust passes dangling pointers for
            // empty slices.
            return Ok(Self { addr, len });
        }
        let end = addr.checked_add(len).ok_or(Error::BadAddress)?;
        if end > USER_END {
            return Err(Error::BadAddress);
        }
        let need = match access {
            Access::Read => USER,
            Access::Write => USER | WRITABLE,
        };
        let mut page = addr & !(PAGE_SIZE - 1);
        while page < end {
            let t = space.translate(mem, page).ok_or(Error::BadAddress)?;
            if t.flags & need != need {
                return Err(Error::BadAddress);
            }
            page += PAGE_SIZE;
        }
        Ok(Self { addr, len })
    }

    /// The user address.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The range split at page boundaries, each piece as (guest-physical
    /// address, length): what a device may be told to read in place.
    pub fn physical_pieces<'a, M: PhysMemory>(
        &self,
        mem: &'a mut M,
        space: &'a AddressSpace,
    ) -> impl Iterator<Item = (u64, u64)> + use<'a, M> {
        let (mut addr, end) = (self.addr, self.addr + self.len);
        core::iter::from_fn(move || {
            if addr >= end {
                return None;
            }
            let piece_end = ((addr & !(PAGE_SIZE - 1)) + PAGE_SIZE).min(end);
            let phys = space.translate(mem, addr)?.phys;
            let piece = (phys, piece_end - addr);
            addr = piece_end;
            Some(piece)
        })
    }

    /// The bytes, read in place.
    ///
    /// # Safety
    /// `space` is the address space loaded in CR3 now, and no mapping of the
    /// range changes while the slice lives (true inside one system call: the
    /// kernel is not preempted and the caller is single-threaded).
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: checked mapped and user-readable at construction; the
        // caller guarantees it is the current address space and stable.
        unsafe { core::slice::from_raw_parts(self.addr as *const u8, self.len as usize) }
    }

    /// The bytes, writable in place.
    ///
    /// # Safety
    /// As [`Self::as_slice`], and the range was checked for [`Access::Write`].
    #[allow(clippy::mut_from_ref, reason = "the memory is the program's, not `self`'s")]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: as for `as_slice`; checked writable at construction.
        unsafe { core::slice::from_raw_parts_mut(self.addr as *mut u8, self.len as usize) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::frame::FrameAllocator;
    use crate::mem::paging::NO_EXECUTE;
    use crate::mem::phys::fake::FakeMemory;
    use ward_abi::boot::{MemoryKind, MemoryRegion};

    fn setup() -> (FakeMemory, FrameAllocator, AddressSpace) {
        let mut mem = FakeMemory::default();
        let map = [MemoryRegion { base: 0x10_0000, size: 0x100_0000, kind: MemoryKind::Usable as u32, reserved: 0 }];
        let mut alloc = FrameAllocator::new(&map, &mut mem).unwrap();
        let kernel = alloc.alloc_zeroed(&mut mem).unwrap();
        let mut space = AddressSpace::new(&mut mem, &mut alloc, kernel).unwrap();
        space.map_zeroed(&mut mem, &mut alloc, 0x40_0000, NO_EXECUTE).unwrap(); // read-only
        space.map_zeroed(&mut mem, &mut alloc, 0x40_1000, WRITABLE | NO_EXECUTE).unwrap();
        space.map_zeroed(&mut mem, &mut alloc, 0x40_2000, WRITABLE | NO_EXECUTE).unwrap();
        (mem, alloc, space)
    }

    #[test]
    fn mapped_ranges_are_accepted() {
        let (mut mem, _, space) = setup();
        let r = UserRange::new(&mut mem, &space, 0x40_0ff0, 0x20, 4096, Access::Read).unwrap();
        assert_eq!((r.addr(), r.len()), (0x40_0ff0, 0x20));
        assert!(UserRange::new(&mut mem, &space, 0x40_1000, 0x2000, 1 << 20, Access::Write).is_ok());
    }

    #[test]
    fn kernel_unmapped_wrapping_and_huge_ranges_are_refused() {
        let (mut mem, _, space) = setup();
        let check = |mem: &mut FakeMemory, addr, len| UserRange::new(mem, &space, addr, len, 1 << 20, Access::Read);
        assert_eq!(check(&mut mem, 0xffff_ffff_8010_0000, 8), Err(Error::BadAddress));
        assert_eq!(check(&mut mem, 0x50_0000, 8), Err(Error::BadAddress));
        assert_eq!(check(&mut mem, 0x40_2ff8, 16), Err(Error::BadAddress), "runs into an unmapped page");
        assert_eq!(check(&mut mem, u64::MAX - 4, 8), Err(Error::BadAddress));
        assert_eq!(check(&mut mem, 0x40_0000, u64::MAX), Err(Error::BadArgument));
    }

    #[test]
    fn empty_range_is_accepted_anywhere() {
        let (mut mem, _, space) = setup();
        assert!(UserRange::new(&mut mem, &space, 1, 0, 64, Access::Write).unwrap().is_empty());
    }

    #[test]
    fn read_only_page_is_refused_for_writing() {
        let (mut mem, _, space) = setup();
        assert_eq!(UserRange::new(&mut mem, &space, 0x40_0000, 8, 64, Access::Write), Err(Error::BadAddress));
    }

    #[test]
    fn physical_pieces_split_at_pages() {
        let (mut mem, _, space) = setup();
        let r = UserRange::new(&mut mem, &space, 0x40_1ff0, 0x20, 64, Access::Read).unwrap();
        let pieces: Vec<(u64, u64)> = r.physical_pieces(&mut mem, &space).collect();
        assert_eq!(pieces.len(), 2);
        assert_eq!((pieces[0].1, pieces[1].1), (0x10, 0x10));
        assert_eq!(pieces[0].0 % PAGE_SIZE, 0xff0);
        assert_eq!(pieces[1].0 % PAGE_SIZE, 0);
    }
}
