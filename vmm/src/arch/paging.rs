//! The kernel's page tables, built by the VMM.
//!
//! Every ring-0 instruction is emulated on our hosts (docs/PLATFORM.md,
//! "Ring-0 costs"), so the host builds the kernel's final page tables natively before
//! entry; the kernel only adjusts a few entries. The layout is
//! `ward_abi::layout`'s: the direct map of RAM (2 MiB pages, read-write,
//! not executable), device registers (4 KiB pages, uncached), the kernel
//! image with each ELF segment's permissions (W^X), and an empty table for
//! kernel stacks. All supervisor-only; the lower half is empty. 2 MiB and
//! 4 KiB pages only: 1 GiB pages make the guest triple-fault here.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use ward_abi::layout::{
    BOOT_PAGE_TABLES_ADDR, BOOT_PAGE_TABLES_END, KERNEL_BASE, KERNEL_STACKS_BASE, LARGE_PAGE_SIZE, PAGE_SIZE,
    PHYS_MAP_BASE,
};

/// Present.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Writable.
pub const PTE_WRITABLE: u64 = 1 << 1;
/// Reachable from ring 3 (only on intermediate entries: leaves decide).
pub const PTE_USER: u64 = 1 << 2;
/// Write-through.
pub const PTE_WRITE_THROUGH: u64 = 1 << 3;
/// Cache disable.
pub const PTE_CACHE_DISABLE: u64 = 1 << 4;
/// Large page (2 MiB in a page directory).
pub const PTE_LARGE: u64 = 1 << 7;
/// Global.
pub const PTE_GLOBAL: u64 = 1 << 8;
/// No execute.
pub const PTE_NO_EXECUTE: u64 = 1 << 63;

const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// A page, as a `usize` for slices and steps.
const PAGE: usize = 4096;
const _: () = assert!(PAGE as u64 == PAGE_SIZE);
/// Intermediate entries allow everything; the leaf decides.
const TABLE_FLAGS: u64 = PTE_PRESENT | PTE_WRITABLE | PTE_USER;

/// Flags of the direct map of RAM.
pub const RAM_FLAGS: u64 = PTE_PRESENT | PTE_WRITABLE | PTE_GLOBAL | PTE_NO_EXECUTE;
/// Flags of device registers.
pub const MMIO_FLAGS: u64 = RAM_FLAGS | PTE_CACHE_DISABLE | PTE_WRITE_THROUGH;

/// Building the tables failed.
#[derive(Debug, thiserror::Error)]
pub enum PagingError {
    /// More tables than the room reserved for them.
    #[error("the kernel's page tables need more than {0} pages")]
    OutOfRoom(u64),
    /// Two mappings of the same page.
    #[error("virtual address {0:#x} is mapped twice")]
    Overlap(u64),
    /// Writing guest memory failed.
    #[error("cannot write page tables into guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// A kernel segment to map, with its permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSegment {
    /// Virtual start (page aligned).
    pub vaddr: u64,
    /// Physical start.
    pub paddr: u64,
    /// Size in memory.
    pub size: u64,
    /// Writable.
    pub writable: bool,
    /// Executable.
    pub executable: bool,
}

/// Index of `virt` in the table at `level` (4 = PML4 .. 1 = PT).
pub const fn table_index(virt: u64, level: u32) -> u64 {
    (virt >> (12 + 9 * (level - 1))) & 0x1ff
}

/// Writes page tables into the reserved room of guest memory.
struct Builder<'a, M: GuestMemory> {
    mem: &'a M,
    next: u64,
    root: u64,
}

impl<'a, M: GuestMemory> Builder<'a, M> {
    fn new(mem: &'a M) -> Result<Self, PagingError> {
        let mut b = Self { mem, next: BOOT_PAGE_TABLES_ADDR, root: 0 };
        b.root = b.table()?;
        Ok(b)
    }

    /// A fresh zeroed table page.
    fn table(&mut self) -> Result<u64, PagingError> {
        if self.next >= BOOT_PAGE_TABLES_END {
            return Err(PagingError::OutOfRoom((BOOT_PAGE_TABLES_END - BOOT_PAGE_TABLES_ADDR) / PAGE_SIZE));
        }
        let table = self.next;
        self.next += PAGE_SIZE;
        self.mem.write_slice(&[0u8; PAGE], GuestAddress(table))?;
        Ok(table)
    }

    /// The table below `table` for `virt`, created if missing.
    fn descend(&mut self, table: u64, virt: u64, level: u32) -> Result<u64, PagingError> {
        let slot = GuestAddress(table + 8 * table_index(virt, level));
        let entry: u64 = self.mem.read_obj(slot)?;
        if entry & PTE_PRESENT != 0 {
            if entry & PTE_LARGE != 0 {
                return Err(PagingError::Overlap(virt));
            }
            return Ok(entry & ADDR_MASK);
        }
        let next = self.table()?;
        self.mem.write_obj(next | TABLE_FLAGS, slot)?;
        Ok(next)
    }

    fn leaf(&mut self, table: u64, virt: u64, level: u32, value: u64) -> Result<(), PagingError> {
        let slot = GuestAddress(table + 8 * table_index(virt, level));
        let old: u64 = self.mem.read_obj(slot)?;
        if old & PTE_PRESENT != 0 {
            return Err(PagingError::Overlap(virt));
        }
        self.mem.write_obj(value, slot)?;
        Ok(())
    }

    fn map_4k(&mut self, virt: u64, phys: u64, flags: u64) -> Result<(), PagingError> {
        let mut table = self.root;
        for level in [4, 3, 2] {
            table = self.descend(table, virt, level)?;
        }
        self.leaf(table, virt, 1, phys | flags)
    }

    fn map_2m(&mut self, virt: u64, phys: u64, flags: u64) -> Result<(), PagingError> {
        let mut table = self.root;
        for level in [4, 3] {
            table = self.descend(table, virt, level)?;
        }
        self.leaf(table, virt, 2, phys | flags | PTE_LARGE)
    }
}

/// Builds the kernel's page tables for `memory_size` bytes of RAM, the
/// device windows `mmio` (base, size) and the kernel `segments`; returns the
/// value for CR3.
pub fn write_kernel_tables<M: GuestMemory>(
    mem: &M,
    memory_size: u64,
    mmio: &[(u64, u64)],
    segments: &[KernelSegment],
) -> Result<u64, PagingError> {
    let mut b = Builder::new(mem)?;
    let mut phys = 0;
    while phys < memory_size {
        if phys % LARGE_PAGE_SIZE == 0 && memory_size - phys >= LARGE_PAGE_SIZE {
            b.map_2m(PHYS_MAP_BASE + phys, phys, RAM_FLAGS)?;
            phys += LARGE_PAGE_SIZE;
        } else {
            b.map_4k(PHYS_MAP_BASE + phys, phys, RAM_FLAGS)?;
            phys += PAGE_SIZE;
        }
    }
    for &(base, size) in mmio {
        let start = base & !(PAGE_SIZE - 1);
        for page in (start..base + size).step_by(PAGE) {
            b.map_4k(PHYS_MAP_BASE + page, page, MMIO_FLAGS)?;
        }
    }
    for seg in segments {
        let mut flags = PTE_PRESENT | PTE_GLOBAL;
        if seg.writable {
            flags |= PTE_WRITABLE;
        }
        if !seg.executable {
            flags |= PTE_NO_EXECUTE;
        }
        let offset = seg.vaddr & (PAGE_SIZE - 1);
        for page in (0..offset + seg.size).step_by(PAGE) {
            b.map_4k((seg.vaddr - offset) + page, (seg.paddr - offset) + page, flags)?;
        }
    }
    // The kernel-stack region's PDPT exists from the start, so the PML4
    // entry every process copies never changes.
    let root = b.root;
    b.descend(root, KERNEL_STACKS_BASE, 4)?;
    Ok(root)
}

/// Walks tables in guest memory the way the MMU does: the physical address
/// and leaf entry `virt` maps to. 2 MiB and 4 KiB pages.
pub fn translate<M: GuestMemory>(mem: &M, cr3: u64, virt: u64) -> Option<(u64, u64)> {
    let mut table = cr3 & ADDR_MASK;
    for level in (1..=4).rev() {
        let entry: u64 = mem.read_obj(GuestAddress(table + 8 * table_index(virt, level))).ok()?;
        if entry & PTE_PRESENT == 0 {
            return None;
        }
        if level == 2 && entry & PTE_LARGE != 0 {
            return Some(((entry & 0x000f_ffff_ffe0_0000) | (virt & 0x1f_ffff), entry));
        }
        if level == 1 {
            return Some(((entry & ADDR_MASK) | (virt & 0xfff), entry));
        }
        table = entry & ADDR_MASK;
    }
    None
}

/// Virtual address of a kernel physical address in the kernel window.
pub const fn kernel_virt(phys: u64) -> u64 {
    KERNEL_BASE + phys
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    const MEM: u64 = 32 << 20;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), usize::try_from(MEM).unwrap())]).unwrap()
    }

    fn segments() -> [KernelSegment; 3] {
        [
            KernelSegment {
                vaddr: kernel_virt(0x10_0000),
                paddr: 0x10_0000,
                size: 0x8000,
                writable: false,
                executable: true,
            },
            KernelSegment {
                vaddr: kernel_virt(0x10_8000),
                paddr: 0x10_8000,
                size: 0x1000,
                writable: false,
                executable: false,
            },
            KernelSegment {
                vaddr: kernel_virt(0x10_9000),
                paddr: 0x10_9000,
                size: 0x2_0000,
                writable: true,
                executable: false,
            },
        ]
    }

    fn build(mem: &GuestMemoryMmap) -> u64 {
        write_kernel_tables(mem, MEM, &[(0xd000_0000, 0x2000), (0xfee0_0000, 0x1000)], &segments()).unwrap()
    }

    #[test]
    fn hand_computed_entries() {
        let mem = memory();
        let cr3 = build(&mem);
        assert_eq!(cr3, 0x9000);
        let read = |addr: u64| mem.read_obj::<u64>(GuestAddress(addr)).unwrap();
        // PML4[256] (direct map) -> the next table, user/writable/present.
        let pdpt = read(0x9000 + 8 * 256);
        assert_eq!(pdpt & 0xfff, 0x007);
        // Its PD maps 0..2 MiB as one large, global, no-execute page.
        let pd = read(pdpt & ADDR_MASK) & ADDR_MASK;
        assert_eq!(read(pd), 0x8000_0000_0000_0183);
        assert_eq!(read(pd + 8 * 15), 0x8000_0000_01e0_0183);
    }

    #[test]
    fn kernel_segments_keep_their_permissions() {
        let mem = memory();
        let cr3 = build(&mem);
        let flags = |virt| translate(&mem, cr3, virt).map(|(_, e)| e & (PTE_WRITABLE | PTE_NO_EXECUTE | PTE_USER));
        assert_eq!(flags(kernel_virt(0x10_0000)), Some(0), "text: read, execute");
        assert_eq!(flags(kernel_virt(0x10_8000)), Some(PTE_NO_EXECUTE), "rodata: read only");
        assert_eq!(flags(kernel_virt(0x12_8fff)), Some(PTE_WRITABLE | PTE_NO_EXECUTE), "data: read, write");
        assert_eq!(flags(kernel_virt(0x12_9000)), None, "nothing past the image");
        assert_eq!(translate(&mem, cr3, kernel_virt(0x10_8123)).map(|(p, _)| p), Some(0x10_8123));
    }

    #[test]
    fn direct_map_and_devices_cover_ram_and_registers_only() {
        let mem = memory();
        let cr3 = build(&mem);
        assert_eq!(translate(&mem, cr3, PHYS_MAP_BASE + MEM - 8).map(|(p, _)| p), Some(MEM - 8));
        assert_eq!(translate(&mem, cr3, PHYS_MAP_BASE + MEM), None);
        let (phys, entry) = translate(&mem, cr3, PHYS_MAP_BASE + 0xd000_1010).unwrap();
        assert_eq!((phys, entry & PTE_CACHE_DISABLE), (0xd000_1010, PTE_CACHE_DISABLE));
        assert!(translate(&mem, cr3, PHYS_MAP_BASE + 0xd000_2000).is_none());
        assert!(translate(&mem, cr3, PHYS_MAP_BASE + 0xfee0_0020).is_some());
    }

    #[test]
    fn lower_half_is_empty_and_stack_table_exists() {
        let mem = memory();
        let cr3 = build(&mem);
        for virt in [0, 0x40_0000, 0x10_0000, 0x7fff_ffff_f000] {
            assert_eq!(translate(&mem, cr3, virt), None, "{virt:#x} is mapped");
        }
        let stacks: u64 = mem.read_obj(GuestAddress(cr3 + 8 * table_index(KERNEL_STACKS_BASE, 4))).unwrap();
        assert_eq!(stacks & PTE_PRESENT, PTE_PRESENT);
    }

    #[test]
    fn odd_memory_sizes_end_with_small_pages() {
        let mem = memory();
        let cr3 = write_kernel_tables(&mem, 9 << 20, &[], &segments()).unwrap();
        assert!(translate(&mem, cr3, PHYS_MAP_BASE + (9 << 20) - 8).is_some());
        assert!(translate(&mem, cr3, PHYS_MAP_BASE + (9 << 20)).is_none());
    }

    #[test]
    fn overlapping_segments_are_refused() {
        let mem = memory();
        let mut segs = segments().to_vec();
        segs.push(segs[0]);
        assert!(matches!(write_kernel_tables(&mem, MEM, &[], &segs), Err(PagingError::Overlap(_))));
    }
}
