//! Address spaces: the kernel's page tables, and one set per process.
//!
//! The upper half belongs to the kernel and is the same in every address
//! space: a process's PML4 copies the kernel's upper 256 entries, whose
//! lower-level tables are shared, so kernel mappings made later (kernel
//! stacks) appear everywhere. The kernel is supervisor-only and W^X; the
//! lower half is the process's, user-only and W^X as well.

use alloc::vec::Vec;

use ward_abi::layout::{KERNEL_BASE, KERNEL_STACKS_BASE, PHYS_MAP_BASE};

use super::frame::FrameAllocator;
use super::paging::{
    self, CACHE_DISABLE, GLOBAL, HUGE_PAGE_SIZE, MapError, NO_EXECUTE, PRESENT, Translation, USER, WRITABLE,
    WRITE_THROUGH,
};
use super::phys::{PAGE_SIZE, PhysMemory};

/// The kernel image's sections, as the linker placed them (virtual).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelSections {
    /// Start of `.text`.
    pub text: u64,
    /// End of `.text`, start of `.rodata`.
    pub rodata: u64,
    /// End of `.rodata`, start of `.data`/`.bss`.
    pub data: u64,
    /// End of the image.
    pub end: u64,
    /// Pages left unmapped inside `.bss`: the guards under boot-time stacks.
    pub guards: [u64; 2],
    /// The `syscall` entry page(s): executable from ring 3 too, so that
    /// hosts whose `syscall` stays in ring 3 fault there (see `traps`).
    pub user_entry: (u64, u64),
}

/// A range of physical MMIO to map uncached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioRange {
    /// Physical base, page aligned.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The kernel PML4 entries: direct map, kernel stacks, kernel image. The
/// kernel maps nothing else in the upper half.
pub const KERNEL_PML4_SLOTS: [u64; 3] =
    [paging::index(PHYS_MAP_BASE, 4), paging::index(KERNEL_STACKS_BASE, 4), paging::index(KERNEL_BASE, 4)];

const KERNEL_TEXT: u64 = GLOBAL;
const KERNEL_RODATA: u64 = GLOBAL | NO_EXECUTE;
const KERNEL_DATA: u64 = GLOBAL | NO_EXECUTE | WRITABLE;
const KERNEL_MMIO: u64 = GLOBAL | NO_EXECUTE | WRITABLE | CACHE_DISABLE | WRITE_THROUGH;

/// Builds the kernel's page tables and returns their root: the direct map
/// of `memory_size` bytes of RAM (2 MiB pages where aligned), `mmio`
/// uncached, the kernel image with per-section permissions, and an empty
/// kernel-stack region. Nothing in the lower half.
pub fn build_kernel_tables(
    mem: &mut impl PhysMemory,
    alloc: &mut FrameAllocator,
    memory_size: u64,
    sections: &KernelSections,
    mmio: &[MmioRange],
) -> Result<u64, MapError> {
    let root = alloc.alloc_zeroed(mem).ok_or(MapError::NoMemory)?;
    let mut phys = 0;
    while phys < memory_size {
        let virt = PHYS_MAP_BASE + phys;
        if phys % HUGE_PAGE_SIZE == 0 && memory_size - phys >= HUGE_PAGE_SIZE {
            paging::map_huge_page(mem, alloc, root, virt, phys, KERNEL_DATA)?;
            phys += HUGE_PAGE_SIZE;
        } else {
            paging::map_page(mem, alloc, root, virt, phys, KERNEL_DATA)?;
            phys += PAGE_SIZE;
        }
    }
    for range in mmio {
        for offset in (0..range.size).step_by(PAGE_SIZE as usize) {
            let phys = range.base + offset;
            paging::map_page(mem, alloc, root, PHYS_MAP_BASE + phys, phys, KERNEL_MMIO)?;
        }
    }
    let mut virt = sections.text;
    while virt < sections.end {
        let flags = if (sections.user_entry.0..sections.user_entry.1).contains(&virt) {
            KERNEL_TEXT | USER
        } else if virt < sections.rodata {
            KERNEL_TEXT
        } else if virt < sections.data {
            KERNEL_RODATA
        } else {
            KERNEL_DATA
        };
        if !sections.guards.contains(&virt) {
            paging::map_page(mem, alloc, root, virt, virt - KERNEL_BASE, flags)?;
        }
        virt += PAGE_SIZE;
    }
    // The kernel-stack region's PDPT exists from the start, so the PML4
    // entry every process copies never changes.
    let slot = root + 8 * paging::index(KERNEL_STACKS_BASE, 4);
    let pdpt = alloc.alloc_zeroed(mem).ok_or(MapError::NoMemory)?;
    mem.write_u64(slot, pdpt | PRESENT | WRITABLE);
    Ok(root)
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
    use crate::mem::phys::fake::FakeMemory;
    use ward_abi::boot::{MemoryKind, MemoryRegion};

    fn setup() -> (FakeMemory, FrameAllocator) {
        let mut mem = FakeMemory::default();
        let map = [MemoryRegion { base: 0x10_0000, size: 0x1f0_0000, kind: MemoryKind::Usable as u32, reserved: 0 }];
        let alloc = FrameAllocator::new(&map, &mut mem).unwrap();
        (mem, alloc)
    }

    fn sections() -> KernelSections {
        KernelSections {
            text: KERNEL_BASE + 0x10_0000,
            rodata: KERNEL_BASE + 0x10_8000,
            data: KERNEL_BASE + 0x10_9000,
            end: KERNEL_BASE + 0x11_0000,
            guards: [KERNEL_BASE + 0x10_a000, 0],
            user_entry: (KERNEL_BASE + 0x10_1000, KERNEL_BASE + 0x10_2000),
        }
    }

    #[test]
    fn kernel_tables_are_w_xor_x_and_supervisor_only() {
        let (mut mem, mut alloc) = setup();
        let mmio = [MmioRange { base: 0xd000_0000, size: 0x1000 }];
        let root = build_kernel_tables(&mut mem, &mut alloc, 32 << 20, &sections(), &mmio).unwrap();
        let t = |mem: &mut FakeMemory, v: u64| paging::translate(mem, root, v);
        let text = t(&mut mem, KERNEL_BASE + 0x10_0000).unwrap();
        assert_eq!((text.phys, text.flags & (WRITABLE | NO_EXECUTE | USER)), (0x10_0000, 0));
        let rodata = t(&mut mem, KERNEL_BASE + 0x10_8000).unwrap();
        assert_eq!(rodata.flags & (WRITABLE | NO_EXECUTE), NO_EXECUTE);
        let data = t(&mut mem, KERNEL_BASE + 0x10_9000).unwrap();
        assert_eq!(data.flags & (WRITABLE | NO_EXECUTE), WRITABLE | NO_EXECUTE);
        assert_eq!(t(&mut mem, KERNEL_BASE + 0x10_a000), None, "the guard page is mapped");
        let entry = t(&mut mem, KERNEL_BASE + 0x10_1000).unwrap();
        assert_eq!(entry.flags & (USER | WRITABLE | NO_EXECUTE), USER, "the syscall entry page is user RX");
        let direct = t(&mut mem, PHYS_MAP_BASE + 0x1ff_fff8).unwrap();
        assert_eq!((direct.phys, direct.flags & (USER | NO_EXECUTE)), (0x1ff_fff8, NO_EXECUTE));
        let console = t(&mut mem, PHYS_MAP_BASE + 0xd000_0008).unwrap();
        assert_eq!(console.flags & CACHE_DISABLE, CACHE_DISABLE);
        assert_eq!(t(&mut mem, 0x40_0000), None, "the lower half is the process's");
    }

    #[test]
    fn process_sees_the_kernel_half_and_returns_every_frame() {
        let (mut mem, mut alloc) = setup();
        let kernel = build_kernel_tables(&mut mem, &mut alloc, 32 << 20, &sections(), &[]).unwrap();
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
        assert!(space.translate(&mut mem, PHYS_MAP_BASE + 0x10_0000).is_some());
        space.unmap(&mut mem, &mut alloc, 0x40_0000).unwrap();
        space.destroy(&mut mem, &mut alloc);
        alloc.release(&mut mem, module).unwrap();
        assert_eq!(alloc.free_frames(), start);
    }
}
