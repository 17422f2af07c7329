//! Address spaces: the kernel's page tables, and one set per process.
//!
//! The VMM builds the kernel's tables natively before entry (see
//! `ward_abi::layout`); the kernel finishes them in a few entries. The
//! upper half is the same in every address space: a process's PML4 copies
//! the kernel's few upper entries, whose lower-level tables are shared, so
//! kernel mappings made later (kernel stacks) appear everywhere. The kernel
//! is supervisor-only and W^X; the lower half is the process's, user-only
//! and W^X as well.

use alloc::vec::Vec;

use ward_abi::layout::{KERNEL_BASE, KERNEL_STACKS_BASE, PHYS_MAP_BASE};

use ward_abi::syscall::Error;

use super::frame::FrameAllocator;
use super::paging::{self, MapError, Translation, USER};
use super::phys::{PAGE_SIZE, PhysMemory};

/// The kernel PML4 entries: direct map, kernel stacks, kernel image. The
/// kernel (and the VMM, which builds its tables) maps nothing else in the
/// upper half.
pub const KERNEL_PML4_SLOTS: [u64; 3] =
    [paging::index(PHYS_MAP_BASE, 4), paging::index(KERNEL_STACKS_BASE, 4), paging::index(KERNEL_BASE, 4)];

/// Makes the kernel's tables (built by the VMM) final: unmaps the guard
/// pages under the boot-time stacks, and lets ring 3 execute the `syscall`
/// entry page(s) `user_entry` (see `traps::TrapKind::SyscallViaFault`).
/// A handful of entry updates instead of building tables in ring 0.
pub fn finish_kernel_tables(mem: &mut impl PhysMemory, root: u64, guards: &[u64], user_entry: (u64, u64)) -> bool {
    for &guard in guards {
        if paging::unmap_page(mem, root, guard).is_none() {
            return false;
        }
    }
    let mut page = user_entry.0;
    while page < user_entry.1 {
        if !paging::set_leaf_flags(mem, root, page, USER) {
            return false;
        }
        page += PAGE_SIZE;
    }
    true
}

/// A process's address space.
///
/// It remembers every page it maps and every page table it creates, so
/// tearing it down touches only those (walking whole 512-entry tables would
/// cost thousands of emulated instructions per process).
#[derive(Debug)]
pub struct AddressSpace {
    root: u64,
    /// Page tables created for the lower half.
    tables: Vec<u64>,
    /// Mapped user pages (virtual addresses).
    pages: Vec<u64>,
    /// How many of `pages` hold frames this space references (not the
    /// boot modules' frames).
    owned_pages: u64,
}

impl AddressSpace {
    /// A new address space sharing the kernel half of `kernel_root`: the
    /// few kernel PML4 entries in use are copied one by one (a 2 KiB copy
    /// costs far more in emulated ring 0).
    pub fn new(mem: &mut impl PhysMemory, alloc: &mut FrameAllocator, kernel_root: u64) -> Result<Self, MapError> {
        let root = alloc.alloc_zeroed(mem).ok_or(MapError::NoMemory)?;
        for slot in KERNEL_PML4_SLOTS {
            let entry = mem.read_u64(kernel_root + 8 * slot);
            mem.write_u64(root + 8 * slot, entry);
        }
        Ok(Self { root, tables: Vec::new(), pages: Vec::new(), owned_pages: 0 })
    }

    /// The PML4's physical address, for CR3.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Frames this space holds: its pages, page tables and root (for `ps`).
    pub fn owned_frames(&self) -> u64 {
        self.owned_pages + self.tables.len() as u64 + 1
    }

    /// Maps `phys` at user address `virt`, taking over the caller's
    /// reference to the frame (unless it is a boot module's, marked
    /// [`paging::MODULE_FRAME`]). `flags` add to [`USER`]; the caller passes
    /// W^X-respecting flags.
    pub fn map(
        &mut self,
        mem: &mut impl PhysMemory,
        alloc: &mut FrameAllocator,
        virt: u64,
        phys: u64,
        flags: u64,
    ) -> Result<(), MapError> {
        let new = paging::map_page(mem, alloc, self.root, virt, phys, flags | USER)?;
        self.tables.extend_from_slice(new.frames());
        self.pages.push(virt);
        if flags & paging::MODULE_FRAME == 0 {
            self.owned_pages += 1;
        }
        Ok(())
    }

    /// Maps a fresh zeroed frame at `virt`.
    pub fn map_zeroed(
        &mut self,
        mem: &mut impl PhysMemory,
        alloc: &mut FrameAllocator,
        virt: u64,
        flags: u64,
    ) -> Result<u64, MapError> {
        let frame = alloc.alloc_zeroed(mem).ok_or(MapError::NoMemory)?;
        if let Err(e) = self.map(mem, alloc, virt, frame, flags) {
            let _ = alloc.release(mem, frame);
            return Err(e);
        }
        Ok(frame)
    }

    /// Unmaps the page at `virt`, dropping this space's reference to its
    /// frame; returns the old entry.
    pub fn unmap(&mut self, mem: &mut impl PhysMemory, alloc: &mut FrameAllocator, virt: u64) -> Option<u64> {
        let entry = paging::unmap_page(mem, self.root, virt)?;
        if let Some(i) = self.pages.iter().position(|&p| p == virt) {
            self.pages.swap_remove(i);
        }
        if entry & paging::MODULE_FRAME == 0 {
            let _ = alloc.release(mem, entry & paging::ADDR_MASK);
            self.owned_pages = self.owned_pages.saturating_sub(1);
        }
        Some(entry)
    }

    /// What `virt` maps to.
    pub fn translate(&self, mem: &mut impl PhysMemory, virt: u64) -> Option<Translation> {
        paging::translate(mem, self.root, virt)
    }

    /// The frames behind `pages` pages at `addr`, if every one may be
    /// shared: mapped for ring 3 (writable too, if `writable`), not a boot
    /// module's or a device's ([`paging::MODULE_FRAME`]), and able to take
    /// one more reference. Nothing changes: the check comes before any
    /// mapping ([`Self::map_shared`]).
    pub fn shareable_frames(
        &self,
        mem: &mut impl PhysMemory,
        alloc: &FrameAllocator,
        addr: u64,
        pages: u64,
        writable: bool,
    ) -> Result<Vec<u64>, Error> {
        let mut frames = Vec::new();
        for i in 0..pages {
            let t = self.translate(mem, addr + i * PAGE_SIZE).ok_or(Error::BadAddress)?;
            let allowed = t.flags & USER != 0 && (!writable || t.flags & paging::WRITABLE != 0);
            if !allowed || t.flags & paging::MODULE_FRAME != 0 {
                return Err(Error::BadAddress);
            }
            let phys = t.phys & paging::ADDR_MASK;
            if !alloc.can_share(mem, phys) {
                return Err(Error::BadAddress);
            }
            frames.push(phys);
        }
        Ok(frames)
    }

    /// Maps `frames` (from [`Self::shareable_frames`] of another space) at
    /// `base` onwards with `flags`, each gaining a reference: all of them,
    /// or, if one cannot be mapped, none (what this call mapped is unmapped
    /// again and the references dropped).
    pub fn map_shared(
        &mut self,
        mem: &mut impl PhysMemory,
        alloc: &mut FrameAllocator,
        base: u64,
        frames: &[u64],
        flags: u64,
    ) -> Result<(), Error> {
        for (i, &phys) in (0u64..).zip(frames) {
            alloc.share(mem, phys).map_err(|_| Error::BadAddress)?;
            if self.map(mem, alloc, base + i * PAGE_SIZE, phys, flags).is_err() {
                let _ = alloc.release(mem, phys);
                for j in 0..i {
                    self.unmap(mem, alloc, base + j * PAGE_SIZE);
                }
                return Err(Error::NoMemory);
            }
        }
        Ok(())
    }

    /// Releases every page, page table and the root. The caller must not be
    /// running on these tables.
    pub fn destroy(self, mem: &mut impl PhysMemory, alloc: &mut FrameAllocator) {
        for &virt in &self.pages {
            if let Some(entry) = paging::translate(mem, self.root, virt)
                && entry.flags & paging::MODULE_FRAME == 0
            {
                let _ = alloc.release(mem, entry.phys & paging::ADDR_MASK);
            }
        }
        for &table in &self.tables {
            let _ = alloc.release(mem, table);
        }
        let _ = alloc.release(mem, self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::paging::{NO_EXECUTE, WRITABLE};
    use crate::mem::phys::fake::FakeMemory;
    use ward_abi::boot::{MemoryKind, MemoryRegion};

    fn setup() -> (FakeMemory, FrameAllocator) {
        let mut mem = FakeMemory::default();
        let map = [MemoryRegion { base: 0x10_0000, size: 0x1f0_0000, kind: MemoryKind::Usable as u32, reserved: 0 }];
        let alloc = FrameAllocator::new(&map, &mut mem).unwrap();
        (mem, alloc)
    }

    /// A kernel root like the VMM's: kernel pages in the kernel window.
    fn kernel_root(mem: &mut FakeMemory, alloc: &mut FrameAllocator) -> u64 {
        let root = alloc.alloc_zeroed(mem).unwrap();
        for i in 0..4 {
            let virt = KERNEL_BASE + 0x10_0000 + i * PAGE_SIZE;
            paging::map_page(mem, alloc, root, virt, 0x10_0000 + i * PAGE_SIZE, paging::GLOBAL).unwrap();
        }
        root
    }

    #[test]
    fn finishing_unmaps_guards_and_opens_only_the_entry_page_to_ring_3() {
        let (mut mem, mut alloc) = setup();
        let root = kernel_root(&mut mem, &mut alloc);
        let guard = KERNEL_BASE + 0x10_3000;
        let entry = (KERNEL_BASE + 0x10_1000, KERNEL_BASE + 0x10_2000);
        assert!(finish_kernel_tables(&mut mem, root, &[guard], entry));
        assert_eq!(paging::translate(&mut mem, root, guard), None);
        let user = |mem: &mut FakeMemory, v| paging::translate(mem, root, v).map(|t| t.flags & USER);
        assert_eq!(user(&mut mem, entry.0), Some(USER));
        assert_eq!(user(&mut mem, KERNEL_BASE + 0x10_0000), Some(0));
        assert_eq!(user(&mut mem, KERNEL_BASE + 0x10_2000), Some(0));
        // A guard that is not mapped means the tables are not what we expect.
        assert!(!finish_kernel_tables(&mut mem, root, &[guard], entry));
    }

    #[test]
    fn a_share_that_fails_on_a_later_page_changes_nothing() {
        let (mut mem, mut alloc) = setup();
        let kernel = kernel_root(&mut mem, &mut alloc);
        let mut from = AddressSpace::new(&mut mem, &mut alloc, kernel).unwrap();
        let mut to = AddressSpace::new(&mut mem, &mut alloc, kernel).unwrap();
        for i in 0..2 {
            from.map_zeroed(&mut mem, &mut alloc, 0x40_0000 + i * PAGE_SIZE, WRITABLE | NO_EXECUTE).unwrap();
        }
        // The third page is a boot module's: it may not be shared.
        let module = alloc.alloc(&mut mem).unwrap().phys;
        from.map(&mut mem, &mut alloc, 0x40_2000, module, paging::MODULE_FRAME).unwrap();
        assert_eq!(from.shareable_frames(&mut mem, &alloc, 0x40_0000, 3, false), Err(Error::BadAddress));
        // The receiver has something at its second page already: mapping
        // fails after the first, and the first is taken back.
        to.map_zeroed(&mut mem, &mut alloc, 0x70_1000, WRITABLE | NO_EXECUTE).unwrap();
        let frames = from.shareable_frames(&mut mem, &alloc, 0x40_0000, 2, true).unwrap();
        let free = alloc.free_frames();
        assert_eq!(to.map_shared(&mut mem, &mut alloc, 0x70_0000, &frames, NO_EXECUTE), Err(Error::NoMemory));
        assert_eq!(to.translate(&mut mem, 0x70_0000), None, "nothing of the failed share stays mapped");
        assert_eq!(alloc.free_frames(), free);
        // Each frame has its one reference again: unmapping frees it.
        from.unmap(&mut mem, &mut alloc, 0x40_0000).unwrap();
        assert_eq!(alloc.free_frames(), free + 1);
        // A share that fits maps every page.
        let frames = from.shareable_frames(&mut mem, &alloc, 0x40_1000, 1, true).unwrap();
        to.map_shared(&mut mem, &mut alloc, 0x80_0000, &frames, NO_EXECUTE).unwrap();
        assert_eq!(to.translate(&mut mem, 0x80_0000).map(|t| t.phys & paging::ADDR_MASK), Some(frames[0]));
    }

    #[test]
    fn process_sees_the_kernel_half_and_returns_every_frame() {
        let (mut mem, mut alloc) = setup();
        let kernel = kernel_root(&mut mem, &mut alloc);
        let start = alloc.free_frames();
        let mut space = AddressSpace::new(&mut mem, &mut alloc, kernel).unwrap();
        for i in 0..10 {
            space.map_zeroed(&mut mem, &mut alloc, 0x40_0000 + i * PAGE_SIZE, WRITABLE | NO_EXECUTE).unwrap();
        }
        assert_eq!(space.owned_frames(), start - alloc.free_frames());
        // A module frame: mapped, not owned, not freed.
        let module = alloc.alloc(&mut mem).unwrap().phys;
        space.map(&mut mem, &mut alloc, 0x50_0000, module, paging::MODULE_FRAME).unwrap();
        assert_eq!(space.owned_frames(), start - alloc.free_frames() - 1);
        let user = space.translate(&mut mem, 0x40_3000).unwrap();
        assert_eq!(user.flags & USER, USER);
        assert!(space.translate(&mut mem, KERNEL_BASE + 0x10_2000).is_some(), "the kernel half is shared");
        space.unmap(&mut mem, &mut alloc, 0x40_0000).unwrap();
        space.destroy(&mut mem, &mut alloc);
        alloc.release(&mut mem, module).unwrap();
        assert_eq!(alloc.free_frames(), start);
    }
}
