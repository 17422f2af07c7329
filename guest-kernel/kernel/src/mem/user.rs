//! Guest-program memory as the kernel sees it: addresses and lengths a
//! program passed, checked once at the system-call boundary.
//!
//! A [`UserRange`] exists only if every page of it is mapped user-accessible
//! (and writable, when the kernel will write) in the caller's address space,
//! lies in the lower half and does not wrap. Kernel pointers, unmapped
//! pointers and huge lengths are refused with `Error::BadAddress` before the
//! kernel touches anything; the kernel never faults on a program's behalf.
//!
//! The access a range was checked for is part of its type, as in Hubris'
//! `USlice`: a [`UserRange<ForReading>`] can only be read, and only a
//! [`UserRange<ForWriting>`] (its pages checked writable) gives the kernel
//! a mutable slice.

use ward_abi::layout::USER_END;
use ward_abi::syscall::Error;
use ward_abi::width::usize_from;

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

/// What a range was checked for (the type parameter of [`UserRange`]).
pub trait Checked: sealed::Sealed {
    /// The page permissions every page of the range has.
    const NEED: u64;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ForReading {}
    impl Sealed for super::ForWriting {}
}

/// Checked for the kernel to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForReading;

/// Checked for the kernel to write (and read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForWriting;

impl Checked for ForReading {
    const NEED: u64 = USER;
}

impl Checked for ForWriting {
    const NEED: u64 = USER | WRITABLE;
}

/// A checked range of the current process's memory, for the access `A`.
///
/// Only a range checked for writing is writable:
///
/// ```no_run
/// use ward_kernel::mem::user::{ForWriting, UserRange};
/// fn fill(range: UserRange<ForWriting>) {
///     // SAFETY: (an example; see `as_mut_slice`).
///     unsafe { range.as_mut_slice() }.fill(0);
/// }
/// ```
///
/// ```compile_fail
/// use ward_kernel::mem::user::{ForReading, UserRange};
/// fn fill(range: UserRange<ForReading>) {
///     // SAFETY: (an example; see `as_mut_slice`).
///     unsafe { range.as_mut_slice() }.fill(0);
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserRange<A> {
    addr: u64,
    len: u64,
    access: core::marker::PhantomData<A>,
}

impl<A: Checked> UserRange<A> {
    /// Checks `addr..addr + len` in `space` for `A`; at most `max_len`
    /// bytes.
    pub fn new(
        mem: &mut impl PhysMemory,
        space: &AddressSpace,
        addr: u64,
        len: u64,
        max_len: u64,
    ) -> Result<Self, Error> {
        let range = Self { addr, len, access: core::marker::PhantomData };
        if len > max_len {
            return Err(Error::BadArgument);
        }
        if len == 0 {
            // Nothing will be touched; Rust passes dangling pointers for
            // empty slices.
            return Ok(range);
        }
        let end = addr.checked_add(len).ok_or(Error::BadAddress)?;
        if end > USER_END {
            return Err(Error::BadAddress);
        }
        let need = A::NEED;
        let mut page = addr & !(PAGE_SIZE - 1);
        while page < end {
            let t = space.translate(mem, page).ok_or(Error::BadAddress)?;
            if t.flags & need != need {
                return Err(Error::BadAddress);
            }
            page += PAGE_SIZE;
        }
        Ok(range)
    }
}

impl<A> UserRange<A> {
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
    ) -> impl Iterator<Item = (u64, u64)> + use<'a, M, A> {
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
}

/// The range `want` names as physical pieces, checked for its access and merged where
/// physically contiguous: one table walk per 2 MiB, then a tight loop
/// over that table's entries (a handful of emulated instructions per
/// page). At most `max_pieces` pieces; the length is cut to a multiple
/// of `granule`.
pub fn resolve(mem: &mut impl PhysMemory, space: &AddressSpace, want: &Want) -> Result<Resolved, Error> {
    let mut out = Resolved::default();
    resolve_into(mem, space, want, &mut out)?;
    Ok(out)
}

/// [`resolve`] into `out`, whose allocation is reused: the I/O
/// path allocates nothing.
pub fn resolve_into(
    mem: &mut impl PhysMemory,
    space: &AddressSpace,
    want: &Want,
    out: &mut Resolved,
) -> Result<(), Error> {
    let Want { addr, len, max_len, access, max_pieces, granule } = *want;
    out.pieces.clear();
    out.len = 0;
    // Under 4 GiB, so no piece can outgrow a descriptor's length.
    if len > max_len.min(u64::from(u32::MAX)) {
        return Err(Error::BadArgument);
    }
    let end = addr.checked_add(len).ok_or(Error::BadAddress)?;
    if end > USER_END {
        return Err(Error::BadAddress);
    }
    if max_pieces == 0 {
        return Ok(());
    }
    let need = match access {
        Access::Read => USER | PRESENT,
        Access::Write => USER | WRITABLE | PRESENT,
    };
    // The piece being built, as physical start and end; the first page
    // never continues the (empty) sentinel piece.
    let (mut run_start, mut run_end) = (u64::MAX, u64::MAX);
    let mut at = addr;
    'tables: while at < end {
        let (pt, allowed) = paging::leaf_table(mem, space.root(), at).ok_or(Error::BadAddress)?;
        if (allowed | PRESENT) & need != need {
            return Err(Error::BadAddress);
        }
        let stop = end.min(((at >> 21) + 1) << 21);
        let mut slot = pt + 8 * paging::index(at, 1);
        while at < stop {
            // Whole pages that continue the piece: every instruction
            // here is emulated, once per page, so this loop is only a
            // read, a check and a comparison. Anything else (a new
            // piece, a bad entry, a partial page) takes the path below.
            if at & (PAGE_SIZE - 1) == 0 {
                while at + PAGE_SIZE <= stop {
                    let entry = mem.read_u64(slot);
                    if entry & need != need || entry & paging::ADDR_MASK != run_end {
                        break;
                    }
                    run_end += PAGE_SIZE;
                    at += PAGE_SIZE;
                    slot += 8;
                }
                if at >= stop {
                    break;
                }
            }
            let entry = mem.read_u64(slot);
            if entry & need != need {
                return Err(Error::BadAddress);
            }
            let phys = (entry & paging::ADDR_MASK) | (at & (PAGE_SIZE - 1));
            if phys != run_end {
                if run_end != run_start {
                    if out.pieces.len() + 1 >= max_pieces {
                        // The piece being built is the last one allowed.
                        break 'tables;
                    }
                    out.pieces.push((run_start, run_end - run_start));
                }
                (run_start, run_end) = (phys, phys);
            }
            let next = ((at | (PAGE_SIZE - 1)) + 1).min(stop);
            run_end += next - at;
            at = next;
            slot += 8;
        }
    }
    if run_end != run_start {
        out.pieces.push((run_start, run_end - run_start));
    }
    out.len = at - addr;
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
    Ok(())
}

impl<A> UserRange<A> {
    /// The bytes, read in place.
    ///
    /// # Safety
    /// `space` is the address space loaded in CR3 now, and no mapping of the
    /// range changes while the slice lives (true inside one system call: the
    /// kernel is not preempted and the caller is single-threaded).
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: checked mapped and user-readable at construction; the
        // caller guarantees it is the current address space and stable.
        unsafe { core::slice::from_raw_parts(self.addr as *const u8, usize_from(self.len)) }
    }
}

impl UserRange<ForWriting> {
    /// The bytes, writable in place.
    ///
    /// # Safety
    /// As [`Self::as_slice`].
    #[allow(clippy::mut_from_ref, reason = "the memory is the program's, not `self`'s")]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: as for `as_slice`; checked writable at construction.
        unsafe { core::slice::from_raw_parts_mut(self.addr as *mut u8, usize_from(self.len)) }
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
        let r = UserRange::<ForReading>::new(&mut mem, &space, 0x40_0ff0, 0x20, 4096).unwrap();
        assert_eq!((r.addr(), r.len()), (0x40_0ff0, 0x20));
        assert!(UserRange::<ForWriting>::new(&mut mem, &space, 0x40_1000, 0x2000, 1 << 20).is_ok());
    }

    #[test]
    fn kernel_unmapped_wrapping_and_huge_ranges_are_refused() {
        let (mut mem, _, space) = setup();
        let check = |mem: &mut FakeMemory, addr, len| UserRange::<ForReading>::new(mem, &space, addr, len, 1 << 20);
        assert_eq!(check(&mut mem, 0xffff_ffff_8010_0000, 8), Err(Error::BadAddress));
        assert_eq!(check(&mut mem, 0x50_0000, 8), Err(Error::BadAddress));
        assert_eq!(check(&mut mem, 0x40_2ff8, 16), Err(Error::BadAddress), "runs into an unmapped page");
        assert_eq!(check(&mut mem, u64::MAX - 4, 8), Err(Error::BadAddress));
        assert_eq!(check(&mut mem, 0x40_0000, u64::MAX), Err(Error::BadArgument));
    }

    #[test]
    fn empty_range_is_accepted_anywhere() {
        let (mut mem, _, space) = setup();
        assert!(UserRange::<ForWriting>::new(&mut mem, &space, 1, 0, 64).unwrap().is_empty());
    }

    #[test]
    fn read_only_page_is_refused_for_writing() {
        let (mut mem, _, space) = setup();
        assert_eq!(UserRange::<ForWriting>::new(&mut mem, &space, 0x40_0000, 8, 64), Err(Error::BadAddress));
    }

    fn want(addr: u64, len: u64, access: Access, max_pieces: usize, granule: u64) -> Want {
        Want { addr, len, max_len: 1 << 20, access, max_pieces, granule }
    }

    #[test]
    fn resolve_merges_contiguous_pages_and_checks_every_one() {
        let (mut mem, _, space) = setup();
        // 0x40_1000 and 0x40_2000 were mapped one after the other: their
        // frames are contiguous (bump allocation).
        let r = resolve(&mut mem, &space, &want(0x40_1800, 0x1000, Access::Write, 8, 1)).unwrap();
        assert_eq!(r.len, 0x1000);
        assert_eq!(r.pieces.len(), 1);
        assert_eq!(r.pieces[0].1, 0x1000);
        let pages = space.translate(&mut mem, 0x40_1800).unwrap().phys;
        assert_eq!(r.pieces[0].0, pages);
        // The read-only page refuses writing; the unmapped one everything.
        assert_eq!(resolve(&mut mem, &space, &want(0x40_0000, 8, Access::Write, 8, 1)), Err(Error::BadAddress));
        assert_eq!(resolve(&mut mem, &space, &want(0x40_2ff8, 16, Access::Read, 8, 1)), Err(Error::BadAddress));
        assert_eq!(
            resolve(&mut mem, &space, &want(0xffff_ffff_8010_0000, 8, Access::Read, 8, 1)),
            Err(Error::BadAddress)
        );
    }

    #[test]
    fn resolve_stops_at_the_piece_budget_and_whole_granules() {
        let (mut mem, _, space) = setup();
        let r = resolve(&mut mem, &space, &want(0x40_0000, 0x3000, Access::Read, 1, 512)).unwrap();
        // Page 0 is not contiguous with page 1 in every layout: at most one
        // piece, and a multiple of 512 bytes.
        assert_eq!(r.pieces.len(), 1);
        assert_eq!(r.len % 512, 0);
        assert!(r.len >= 0x1000);
    }

    #[test]
    fn resolve_crosses_page_tables_and_splits_where_frames_are_apart() {
        let (mut mem, mut alloc, mut space) = setup();
        // Three pages around a 2 MiB boundary (two leaf tables), the third
        // frame set apart from the second by a frame taken in between.
        space.map_zeroed(&mut mem, &mut alloc, 0x5f_f000, WRITABLE | NO_EXECUTE).unwrap();
        space.map_zeroed(&mut mem, &mut alloc, 0x60_0000, WRITABLE | NO_EXECUTE).unwrap();
        alloc.alloc_zeroed(&mut mem).unwrap();
        space.map_zeroed(&mut mem, &mut alloc, 0x60_1000, WRITABLE | NO_EXECUTE).unwrap();
        let phys = |mem: &mut FakeMemory, v: u64| space.translate(mem, v).unwrap().phys;
        let expected: Vec<(u64, u64)> = {
            let mut pieces: Vec<(u64, u64)> = Vec::new();
            for page in [0x5f_f000, 0x60_0000, 0x60_1000] {
                let p = phys(&mut mem, page);
                match pieces.last_mut() {
                    Some(last) if last.0 + last.1 == p => last.1 += 0x1000,
                    _ => pieces.push((p, 0x1000)),
                }
            }
            pieces
        };
        assert!(expected.len() >= 2, "the frame taken in between splits the run: {expected:x?}");
        let all = resolve(&mut mem, &space, &want(0x5f_f000, 0x3000, Access::Write, 8, 1)).unwrap();
        assert_eq!(all.pieces, expected);
        assert_eq!(all.len, 0x3000);
        // One piece fewer than needed: the range stops where the budget does.
        let cut = resolve(&mut mem, &space, &want(0x5f_f000, 0x3000, Access::Write, expected.len() - 1, 1)).unwrap();
        assert_eq!(cut.pieces, expected[..expected.len() - 1]);
        assert_eq!(cut.len, expected[..expected.len() - 1].iter().map(|p| p.1).sum::<u64>());
        // No budget at all: nothing.
        let none = resolve(&mut mem, &space, &want(0x5f_f000, 0x3000, Access::Write, 0, 1)).unwrap();
        assert_eq!((none.pieces.len(), none.len), (0, 0));
    }

    #[test]
    fn physical_pieces_split_at_pages() {
        let (mut mem, _, space) = setup();
        let r = UserRange::<ForReading>::new(&mut mem, &space, 0x40_1ff0, 0x20, 64).unwrap();
        let pieces: Vec<(u64, u64)> = r.physical_pieces(&mut mem, &space).collect();
        assert_eq!(pieces.len(), 2);
        assert_eq!((pieces[0].1, pieces[1].1), (0x10, 0x10));
        assert_eq!(pieces[0].0 % PAGE_SIZE, 0xff0);
        assert_eq!(pieces[1].0 % PAGE_SIZE, 0);
    }
}
