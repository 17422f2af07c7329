//! The physical frame allocator.
//!
//! Built from the boot info's memory map, it hands out only `Usable` frames:
//! never the kernel image, the boot structures, the boot page tables or the
//! boot modules (those regions have other kinds).
//!
//! Three sources, all O(1) and none needing a pass over memory at boot
//! (every ring-0 instruction is emulated on our hosts):
//! - a **bump cursor** through the usable regions: frames never handed out
//!   before, still zero as the host gave them;
//! - a **dirty list** of returned frames, linked through their first word;
//! - a **clean pool** of returned frames the host has zeroed, in batches
//!   ([`FrameAllocator::clean_dirty`], one page-service exit for up to
//!   [`CLEAN_BATCH`] frames). [`FrameAllocator::alloc_zeroed`] takes from
//!   it, so the kernel never clears a page itself.
//!
//! Every allocated frame has a reference count (a `u16` in a table carved
//! from the first usable frames), so pages shared between processes are
//! freed when the last user lets go.

use ward_abi::boot::{MemoryKind, MemoryRegion};
use ward_abi::width::usize_from;

use super::phys::{PAGE_SIZE, PhysMemory};

/// Most usable regions tracked.
const MAX_REGIONS: usize = 16;
/// Dirty frames zeroed per host request.
pub const CLEAN_BATCH: usize = 64;

/// Frame bookkeeping went wrong: a kernel bug, never a guest's doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Released a frame that was not allocated.
    NotAllocated(u64),
    /// A frame outside the tracked memory.
    OutOfRange(u64),
    /// The reference count would overflow.
    TooManyReferences(u64),
}

/// A frame handed out by [`FrameAllocator::alloc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Physical address.
    pub phys: u64,
    /// Whether its contents are known to be zero.
    pub zeroed: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Region {
    start: u64,
    end: u64,
}

/// The frame allocator. See the module documentation.
#[derive(Debug)]
pub struct FrameAllocator {
    regions: [Region; MAX_REGIONS],
    region_count: usize,
    /// Region the bump cursor is in, and the cursor.
    bump_region: usize,
    bump: u64,
    /// First dirty-list frame, 0 for none (frame 0 is never usable).
    free_head: u64,
    free_listed: u64,
    /// Zeroed free frames.
    clean: alloc::vec::Vec<u64>,
    total: u64,
    /// Physical base of the reference-count table, and frames it covers.
    refcounts: u64,
    covered_frames: u64,
}

impl FrameAllocator {
    /// Builds the allocator from `map`, carving its reference-count table
    /// from the first usable frames. `None` if there is not enough memory.
    pub fn new(map: &[MemoryRegion], mem: &mut impl PhysMemory) -> Option<Self> {
        let mut regions = [Region::default(); MAX_REGIONS];
        let mut region_count = 0;
        let mut top = 0;
        for r in map.iter().filter(|r| MemoryKind::from_raw(r.kind) == Some(MemoryKind::Usable)) {
            let start = r.base.next_multiple_of(PAGE_SIZE);
            let end = r.base.saturating_add(r.size) & !(PAGE_SIZE - 1);
            if end > start && region_count < MAX_REGIONS {
                regions[region_count] = Region { start, end };
                region_count += 1;
                top = top.max(end);
            }
        }
        let mut alloc = Self {
            regions,
            region_count,
            bump_region: 0,
            bump: regions[0].start,
            free_head: 0,
            free_listed: 0,
            clean: alloc::vec::Vec::new(),
            total: 0,
            refcounts: 0,
            covered_frames: top / PAGE_SIZE,
        };
        // Two bytes per frame of RAM, in whole frames from the bump cursor
        // (zero already: no initialisation pass).
        let table_frames = (alloc.covered_frames * 2).div_ceil(PAGE_SIZE);
        alloc.refcounts = alloc.bump_contiguous(table_frames)?;
        alloc.total =
            alloc.regions[..region_count].iter().map(|r| (r.end - r.start) / PAGE_SIZE).sum::<u64>() - table_frames;
        let _ = mem;
        Some(alloc)
    }

    /// Frames the allocator manages in all (not counting its own table).
    pub fn total_frames(&self) -> u64 {
        self.total
    }

    /// Frames free now.
    pub fn free_frames(&self) -> u64 {
        self.free_listed + self.clean.len() as u64 + self.bump_remaining()
    }

    /// Reserves the clean pool's room for every frame, so it never grows
    /// (a reallocation would copy in ring 0). Call once the heap exists.
    pub fn reserve_clean_pool(&mut self) {
        self.clean.reserve_exact(usize_from(self.total));
    }

    /// Has the host zero every dirty frame, in batches, and moves them to
    /// the clean pool.
    pub fn clean_dirty(&mut self, mem: &mut impl PhysMemory) {
        while self.free_head != 0 {
            let mut batch = [0u64; CLEAN_BATCH];
            let mut n = 0;
            while n < CLEAN_BATCH && self.free_head != 0 {
                batch[n] = self.free_head;
                self.free_head = mem.read_u64(self.free_head);
                self.free_listed -= 1;
                n += 1;
            }
            mem.zero_frames(&batch[..n]);
            self.clean.extend_from_slice(&batch[..n]);
        }
    }

    fn bump_remaining(&self) -> u64 {
        if self.bump_region >= self.region_count {
            return 0;
        }
        let current = (self.regions[self.bump_region].end - self.bump) / PAGE_SIZE;
        let later: u64 =
            self.regions[self.bump_region + 1..self.region_count].iter().map(|r| (r.end - r.start) / PAGE_SIZE).sum();
        current + later
    }

    /// `pages` contiguous never-used frames from the bump cursor, for boot
    /// structures that need contiguous memory (the heap, the table). Their
    /// reference counts are not set: they are never freed.
    pub fn bump_contiguous(&mut self, pages: u64) -> Option<u64> {
        let bytes = pages.checked_mul(PAGE_SIZE)?;
        while self.bump_region < self.region_count {
            let region = self.regions[self.bump_region];
            if region.end - self.bump >= bytes {
                let start = self.bump;
                self.bump += bytes;
                return Some(start);
            }
            self.bump_region += 1;
            self.bump = self.regions.get(self.bump_region).map_or(0, |r| r.start);
        }
        None
    }

    /// Allocates one frame with reference count 1, dirty ones first (for
    /// memory the caller overwrites anyway).
    pub fn alloc(&mut self, mem: &mut impl PhysMemory) -> Option<Frame> {
        let frame = if self.free_head != 0 {
            let phys = self.free_head;
            self.free_head = mem.read_u64(phys);
            self.free_listed -= 1;
            Frame { phys, zeroed: false }
        } else if let Some(phys) = self.clean.pop() {
            Frame { phys, zeroed: true }
        } else {
            Frame { phys: self.bump_contiguous(1)?, zeroed: true }
        };
        self.set_refcount(mem, frame.phys, 1);
        Some(frame)
    }

    /// Allocates one zero-filled frame with reference count 1: from the
    /// clean pool, else never-used memory, else dirty frames cleaned by the
    /// host first.
    pub fn alloc_zeroed(&mut self, mem: &mut impl PhysMemory) -> Option<u64> {
        let phys = match self.clean.pop() {
            Some(phys) => phys,
            None => match self.bump_contiguous(1) {
                Some(phys) => phys,
                None => {
                    self.clean_dirty(mem);
                    self.clean.pop()?
                }
            },
        };
        self.set_refcount(mem, phys, 1);
        Some(phys)
    }

    /// Whether [`Self::share`] would take another reference to `phys`.
    pub fn can_share(&self, mem: &mut impl PhysMemory, phys: u64) -> bool {
        self.refcount(mem, phys).is_ok_and(|count| count != 0 && count != u16::MAX)
    }

    /// Adds a reference to an allocated frame (it is now shared).
    pub fn share(&mut self, mem: &mut impl PhysMemory, phys: u64) -> Result<(), FrameError> {
        let count = self.refcount(mem, phys)?;
        if count == 0 {
            return Err(FrameError::NotAllocated(phys));
        }
        if count == u16::MAX {
            return Err(FrameError::TooManyReferences(phys));
        }
        self.set_refcount(mem, phys, count + 1);
        Ok(())
    }

    /// Drops a reference; frees the frame when it was the last. Returns
    /// whether it was freed.
    pub fn release(&mut self, mem: &mut impl PhysMemory, phys: u64) -> Result<bool, FrameError> {
        let count = self.refcount(mem, phys)?;
        match count {
            0 => Err(FrameError::NotAllocated(phys)),
            1 => {
                self.set_refcount(mem, phys, 0);
                mem.write_u64(phys, self.free_head);
                self.free_head = phys;
                self.free_listed += 1;
                Ok(true)
            }
            _ => {
                self.set_refcount(mem, phys, count - 1);
                Ok(false)
            }
        }
    }

    /// The reference count of `phys`.
    pub fn refcount(&self, mem: &impl PhysMemory, phys: u64) -> Result<u16, FrameError> {
        let (word, shift) = self.slot(phys)?;
        Ok(((mem.read_u64(word) >> shift) & 0xffff) as u16)
    }

    fn set_refcount(&self, mem: &mut impl PhysMemory, phys: u64, count: u16) {
        if let Ok((word, shift)) = self.slot(phys) {
            let old = mem.read_u64(word);
            mem.write_u64(word, (old & !(0xffff << shift)) | (u64::from(count) << shift));
        }
    }

    /// The table word holding `phys`'s count, and the bit shift within it.
    fn slot(&self, phys: u64) -> Result<(u64, u64), FrameError> {
        let index = phys / PAGE_SIZE;
        if !phys.is_multiple_of(PAGE_SIZE) || index >= self.covered_frames {
            return Err(FrameError::OutOfRange(phys));
        }
        Ok((self.refcounts + (index / 4) * 8, (index % 4) * 16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::phys::fake::FakeMemory;

    fn usable(base: u64, size: u64) -> MemoryRegion {
        MemoryRegion { base, size, kind: MemoryKind::Usable as u32, reserved: 0 }
    }

    fn other(base: u64, size: u64, kind: MemoryKind) -> MemoryRegion {
        MemoryRegion { base, size, kind: kind as u32, reserved: 0 }
    }

    fn allocator(map: &[MemoryRegion]) -> (FrameAllocator, FakeMemory) {
        let mut mem = FakeMemory::default();
        let alloc = FrameAllocator::new(map, &mut mem).unwrap();
        (alloc, mem)
    }

    #[test]
    fn only_usable_frames_are_handed_out() {
        let map = [
            other(0, 0x10_0000, MemoryKind::Boot),
            other(0x10_0000, 0x1_0000, MemoryKind::Kernel),
            usable(0x11_0000, 0x4000),
            other(0x11_4000, 0x2000, MemoryKind::Module),
            usable(0x11_6000, 0x2000),
        ];
        let (mut alloc, mut mem) = allocator(&map);
        let mut got = Vec::new();
        while let Some(f) = alloc.alloc(&mut mem) {
            got.push(f.phys);
        }
        // The first usable frame holds the reference-count table.
        assert_eq!(got, [0x11_1000, 0x11_2000, 0x11_3000, 0x11_6000, 0x11_7000]);
        assert_eq!(alloc.total_frames(), 5);
        assert_eq!(alloc.free_frames(), 0);
    }

    #[test]
    fn freed_frames_are_reused_and_zeroed_on_request() {
        // The table takes the first frame; two are left.
        let (mut alloc, mut mem) = allocator(&[usable(0x10_0000, 0x3000)]);
        let a = alloc.alloc_zeroed(&mut mem).unwrap();
        mem.write_u64(a + 8, 0xdead);
        assert_eq!(alloc.release(&mut mem, a), Ok(true));
        // A dirty frame serves a caller that overwrites it anyway...
        let again = alloc.alloc(&mut mem).unwrap();
        assert_eq!(again, Frame { phys: a, zeroed: false });
        alloc.release(&mut mem, a).unwrap();
        // ...while zeroed requests take never-used memory first...
        let b = alloc.alloc_zeroed(&mut mem).unwrap();
        assert_ne!(b, a);
        // ...and, once that is gone, dirty frames cleaned by the host.
        let zeroed = alloc.alloc_zeroed(&mut mem).unwrap();
        assert_eq!((zeroed, mem.read_u64(a + 8)), (a, 0));
        assert_eq!(alloc.alloc_zeroed(&mut mem), None);
    }

    #[test]
    fn dirty_frames_are_cleaned_in_batches_and_counted_free() {
        let (mut alloc, mut mem) = allocator(&[usable(0x10_0000, 0x10_0000)]);
        let start = alloc.free_frames();
        let frames: Vec<u64> = (0..100).map(|_| alloc.alloc(&mut mem).unwrap().phys).collect();
        for &f in &frames {
            mem.write_u64(f + 16, 0x55);
            alloc.release(&mut mem, f).unwrap();
        }
        alloc.clean_dirty(&mut mem);
        assert_eq!(alloc.free_frames(), start);
        let f = alloc.alloc_zeroed(&mut mem).unwrap();
        assert!(frames.contains(&f), "a cleaned frame is reused first");
        assert_eq!(mem.read_u64(f + 16), 0);
    }

    #[test]
    fn free_count_returns_to_start_after_alloc_and_release() {
        let (mut alloc, mut mem) = allocator(&[usable(0x10_0000, 0x40_0000)]);
        let start = alloc.free_frames();
        let frames: Vec<u64> = (0..300).map(|_| alloc.alloc(&mut mem).unwrap().phys).collect();
        assert_eq!(alloc.free_frames(), start - 300);
        for f in frames {
            alloc.release(&mut mem, f).unwrap();
        }
        assert_eq!(alloc.free_frames(), start);
    }

    #[test]
    fn shared_frame_is_freed_by_its_last_release() {
        let (mut alloc, mut mem) = allocator(&[usable(0x10_0000, 0x10_0000)]);
        let f = alloc.alloc(&mut mem).unwrap().phys;
        alloc.share(&mut mem, f).unwrap();
        assert_eq!(alloc.refcount(&mem, f), Ok(2));
        assert_eq!(alloc.release(&mut mem, f), Ok(false));
        assert_eq!(alloc.release(&mut mem, f), Ok(true));
        assert_eq!(alloc.release(&mut mem, f), Err(FrameError::NotAllocated(f)));
    }

    #[test]
    fn bad_addresses_are_errors_not_corruption() {
        let (mut alloc, mut mem) = allocator(&[usable(0x10_0000, 0x10_0000)]);
        assert_eq!(alloc.release(&mut mem, 0x10_0001), Err(FrameError::OutOfRange(0x10_0001)));
        assert_eq!(alloc.release(&mut mem, 1 << 40), Err(FrameError::OutOfRange(1 << 40)));
        assert_eq!(alloc.share(&mut mem, 0x15_0000), Err(FrameError::NotAllocated(0x15_0000)));
    }

    #[test]
    fn contiguous_boot_ranges_skip_to_a_region_that_fits() {
        let (mut alloc, _) = allocator(&[usable(0x10_0000, 0x3000), usable(0x20_0000, 0x10_0000)]);
        // 0x10_0000 holds the table; two frames are left there.
        assert_eq!(alloc.bump_contiguous(4), Some(0x20_0000));
        assert_eq!(alloc.bump_contiguous(1 << 20), None);
    }
}
