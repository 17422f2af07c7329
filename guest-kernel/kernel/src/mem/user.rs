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

use alloc::vec::Vec;

use super::aspace::AddressSpace;
use super::paging::{self, PRESENT, USER, WRITABLE};
use super::phys::{PAGE_SIZE, PhysMemory};

/// How the kernel will use a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read it.
    Read,
    /// Write it.
    Write,
}

/// What [`UserRange::resolve`] is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    /// The program's address.
    pub addr: u64,
    /// Bytes.
    pub len: u64,
    /// Most bytes the call allows.
    pub max_len: u64,
    /// How the device will use it.
    pub access: Access,
    /// Most pieces (descriptors) to return.
    pub max_pieces: usize,
    /// Round the length down to a multiple of this (block sectors; 1).
    pub granule: u64,
}

/// A range resolved by [`UserRange::resolve`]: guest-physical pieces, and
/// the bytes they cover.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// (physical address, length), in order, contiguous runs merged.
    pub pieces: Vec<(u64, u64)>,
    /// Bytes covered.
    pub len: u64,
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

    /// The range as physical pieces, checked for `access` and merged where
    /// physically contiguous, in one pass: one table walk per 2 MiB and one
    /// entry read per page (each a few emulated instructions). At most
    /// `max_pieces` pieces; the length is cut to a multiple of `granule`.
    pub fn resolve(mem: &mut impl PhysMemory, space: &AddressSpace, want: &Want) -> Result<Resolved, Error> {
        let Want { addr, len, max_len, access, max_pieces, granule } = *want;
        if len > max_len {
            return Err(Error::BadArgument);
        }
        let end = addr.checked_add(len).ok_or(Error::BadAddress)?;
        if end > USER_END {
            return Err(Error::BadAddress);
        }
        let need = match access {
            Access::Read => USER,
            Access::Write => USER | WRITABLE,
        };
        let mut out = Resolved::default();
        let mut table: Option<(u64, u64, u64)> = None; // (region, table, allowed)
        let mut at = addr;
        while at < end {
            let region = at >> 21;
            let (pt, allowed) = match table {
                Some((r, pt, allowed)) if r == region => (pt, allowed),
                _ => {
                    let (pt, allowed) = paging::leaf_table(mem, space.root(), at).ok_or(Error::BadAddress)?;
                    table = Some((region, pt, allowed));
                    (pt, allowed)
                }
            };
            let entry = mem.read_u64(pt + 8 * paging::index(at, 1));
            if entry & PRESENT == 0 || (entry & allowed) & need != need {
                return Err(Error::BadAddress);
            }
            let piece_end = ((at & !(PAGE_SIZE - 1)) + PAGE_SIZE).min(end);
            let phys = (entry & paging::ADDR_MASK) | (at & (PAGE_SIZE - 1));
            let n = piece_end - at;
            let count = out.pieces.len();
            match out.pieces.last_mut() {
                Some(last) if last.0 + last.1 == phys && last.1 + n <= u64::from(u32::MAX) => last.1 += n,
                _ if count < max_pieces => out.pieces.push((phys, n)),
                _ => break,
            }
            out.len += n;
            at = piece_end;
        }
        // Whole granules only (block sectors).
        let mut excess = out.len % granule.max(1);
        out.len -= excess;
        while excess > 0 {
            let Some(last) = out.pieces.last_mut() else { break };
            let cut = excess.min(last.1);
            last.1 -= cut;
            excess -= cut;
            if last.1 == 0 {
                out.pieces.pop();
            }
        }
        Ok(out)
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

    fn want(addr: u64, len: u64, access: Access, max_pieces: usize, granule: u64) -> Want {
        Want { addr, len, max_len: 1 << 20, access, max_pieces, granule }
    }

    #[test]
    fn resolve_merges_contiguous_pages_and_checks_every_one() {
        let (mut mem, _, space) = setup();
        // 0x40_1000 and 0x40_2000 were mapped one after the other: their
        // frames are contiguous (bump allocation).
        let r = UserRange::resolve(&mut mem, &space, &want(0x40_1800, 0x1000, Access::Write, 8, 1)).unwrap();
        assert_eq!(r.len, 0x1000);
        assert_eq!(r.pieces.len(), 1);
        assert_eq!(r.pieces[0].1, 0x1000);
        let pages = space.translate(&mut mem, 0x40_1800).unwrap().phys;
        assert_eq!(r.pieces[0].0, pages);
        // The read-only page refuses writing; the unmapped one everything.
        assert_eq!(
            UserRange::resolve(&mut mem, &space, &want(0x40_0000, 8, Access::Write, 8, 1)),
            Err(Error::BadAddress)
        );
        assert_eq!(
            UserRange::resolve(&mut mem, &space, &want(0x40_2ff8, 16, Access::Read, 8, 1)),
            Err(Error::BadAddress)
        );
        assert_eq!(
            UserRange::resolve(&mut mem, &space, &want(0xffff_ffff_8010_0000, 8, Access::Read, 8, 1)),
            Err(Error::BadAddress)
        );
    }

    #[test]
    fn resolve_stops_at_the_piece_budget_and_whole_granules() {
        let (mut mem, _, space) = setup();
        let r = UserRange::resolve(&mut mem, &space, &want(0x40_0000, 0x3000, Access::Read, 1, 512)).unwrap();
        // Page 0 is not contiguous with page 1 in every layout: at most one
        // piece, and a multiple of 512 bytes.
        assert_eq!(r.pieces.len(), 1);
        assert_eq!(r.len % 512, 0);
        assert!(r.len >= 0x1000);
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
