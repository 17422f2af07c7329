//! Four-level x86_64 page tables: entries, mapping, walking, teardown.
//!
//! Written against [`PhysMemory`] and a frame source, so the same code runs
//! on the host in tests. 4 KiB and 2 MiB pages only (1 GiB pages fault on
//! our hosts). The caller flushes the TLB where a mapping it changed may be
//! cached.

use super::frame::FrameAllocator;
use super::phys::{PAGE_SIZE, PhysMemory};

/// Present.
pub const PRESENT: u64 = 1 << 0;
/// Writable.
pub const WRITABLE: u64 = 1 << 1;
/// Reachable from ring 3.
pub const USER: u64 = 1 << 2;
/// Write-through (with [`CACHE_DISABLE`]: uncached, for MMIO).
pub const WRITE_THROUGH: u64 = 1 << 3;
/// Cache disable.
pub const CACHE_DISABLE: u64 = 1 << 4;
/// A 2 MiB page (in a page directory entry).
pub const HUGE: u64 = 1 << 7;
/// Global: survives CR3 switches (kernel mappings).
pub const GLOBAL: u64 = 1 << 8;
/// Software bit: the frame is a boot module's, shared and never freed.
pub const MODULE_FRAME: u64 = 1 << 9;
/// No execute.
pub const NO_EXECUTE: u64 = 1 << 63;

/// Physical address bits of an entry.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Mapping failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// No frame for a page table.
    NoMemory,
    /// Something is already mapped there.
    AlreadyMapped(u64),
    /// The address is not aligned to the page size.
    Misaligned(u64),
}

/// Index of `virt` in the table at `level` (4 = PML4 ... 1 = page table).
pub const fn index(virt: u64, level: u32) -> u64 {
    (virt >> (12 + 9 * (level - 1))) & 0x1ff
}

/// What [`translate`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Physical address `virt` maps to.
    pub phys: u64,
    /// Flags of the leaf entry, with [`USER`] and [`WRITABLE`] cleared
    /// unless every level allows them.
    pub flags: u64,
}

/// Page tables a mapping had to create (at most three: PDPT, PD, PT), so
/// an address space can free exactly those.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewTables {
    frames: [u64; 3],
    count: usize,
}

impl NewTables {
    /// The new tables' frames.
    pub fn frames(&self) -> &[u64] {
        &self.frames[..self.count]
    }

    fn push(&mut self, frame: u64) {
        if self.count < self.frames.len() {
            self.frames[self.count] = frame;
            self.count += 1;
        }
    }
}

/// Where the table at the next level for `virt` is, creating it (and
/// noting it in `new`) if missing. Intermediate entries are permissive
/// (user, writable); the leaf decides.
fn next_table(
    mem: &mut impl PhysMemory,
    alloc: &mut FrameAllocator,
    table: u64,
    virt: u64,
    level: u32,
    new: &mut NewTables,
) -> Result<u64, MapError> {
    let slot = table + 8 * index(virt, level);
    let entry = mem.read_u64(slot);
    if entry & PRESENT != 0 {
        if entry & HUGE != 0 {
            return Err(MapError::AlreadyMapped(virt));
        }
        return Ok(entry & ADDR_MASK);
    }
    let frame = alloc.alloc_zeroed(mem).ok_or(MapError::NoMemory)?;
    mem.write_u64(slot, frame | PRESENT | WRITABLE | USER);
    new.push(frame);
    Ok(frame)
}

/// Maps the 4 KiB page at `virt` to `phys` with `flags` (plus [`PRESENT`]);
/// returns the page tables it created. On error, tables created so far stay
/// (empty) and are reported through `Err`'s caller only via the tree.
pub fn map_page(
    mem: &mut impl PhysMemory,
    alloc: &mut FrameAllocator,
    root: u64,
    virt: u64,
    phys: u64,
    flags: u64,
) -> Result<NewTables, MapError> {
    if !virt.is_multiple_of(PAGE_SIZE) || !phys.is_multiple_of(PAGE_SIZE) {
        return Err(MapError::Misaligned(virt));
    }
    let mut new = NewTables::default();
    let mut table = root;
    for level in [4, 3, 2] {
        table = next_table(mem, alloc, table, virt, level, &mut new)?;
    }
    let slot = table + 8 * index(virt, 1);
    if mem.read_u64(slot) & PRESENT != 0 {
        return Err(MapError::AlreadyMapped(virt));
    }
    mem.write_u64(slot, (phys & ADDR_MASK) | flags | PRESENT);
    Ok(new)
}

/// Walks the tables the way the MMU does.
pub fn translate(mem: &mut impl PhysMemory, root: u64, virt: u64) -> Option<Translation> {
    let mut table = root;
    let mut allowed = USER | WRITABLE;
    for level in [4, 3, 2, 1] {
        let entry = mem.read_u64(table + 8 * index(virt, level));
        if entry & PRESENT == 0 {
            return None;
        }
        allowed &= entry;
        let leaf = level == 1 || (level == 2 && entry & HUGE != 0);
        if leaf {
            let page_mask = if level == 2 { 0x1f_ffff } else { PAGE_SIZE - 1 };
            let base = entry & ADDR_MASK & !page_mask;
            let flags = (entry & !(ADDR_MASK | USER | WRITABLE)) | allowed;
            return Some(Translation { phys: base | (virt & page_mask), flags });
        }
        table = entry & ADDR_MASK;
    }
    None
}

/// The page table (level 1) that maps `virt`, and the permission bits
/// ([`USER`], [`WRITABLE`]) every level above allows; `None` if no page
/// table covers it (unmapped, or a 2 MiB page). Walking once per table and
/// then reading one entry per page is how long ranges are resolved cheaply.
pub fn leaf_table(mem: &mut impl PhysMemory, root: u64, virt: u64) -> Option<(u64, u64)> {
    let mut table = root;
    let mut allowed = USER | WRITABLE;
    for level in [4, 3, 2] {
        let entry = mem.read_u64(table + 8 * index(virt, level));
        if entry & PRESENT == 0 || entry & HUGE != 0 {
            return None;
        }
        allowed &= entry;
        table = entry & ADDR_MASK;
    }
    Some((table, allowed))
}

/// Sets `flags` on the 4 KiB leaf entry of `virt`; `false` if unmapped.
pub fn set_leaf_flags(mem: &mut impl PhysMemory, root: u64, virt: u64, flags: u64) -> bool {
    let mut table = root;
    for level in [4, 3, 2] {
        let entry = mem.read_u64(table + 8 * index(virt, level));
        if entry & PRESENT == 0 || entry & HUGE != 0 {
            return false;
        }
        table = entry & ADDR_MASK;
    }
    let slot = table + 8 * index(virt, 1);
    let entry = mem.read_u64(slot);
    if entry & PRESENT == 0 {
        return false;
    }
    mem.write_u64(slot, entry | flags);
    true
}

/// Removes the 4 KiB mapping at `virt`; returns its leaf entry.
pub fn unmap_page(mem: &mut impl PhysMemory, root: u64, virt: u64) -> Option<u64> {
    let mut table = root;
    for level in [4, 3, 2] {
        let entry = mem.read_u64(table + 8 * index(virt, level));
        if entry & PRESENT == 0 || entry & HUGE != 0 {
            return None;
        }
        table = entry & ADDR_MASK;
    }
    let slot = table + 8 * index(virt, 1);
    let entry = mem.read_u64(slot);
    if entry & PRESENT == 0 {
        return None;
    }
    mem.write_u64(slot, 0);
    Some(entry)
}

/// Unmaps everything under the first `entries` slots of `root` (the user
/// half: 256): releases each 4 KiB leaf frame (boot-module frames, marked
/// [`MODULE_FRAME`], are not the process's and stay) and frees the page
/// tables. The root itself is left to the caller. Returns the number of
/// leaves unmapped.
pub fn teardown(mem: &mut impl PhysMemory, alloc: &mut FrameAllocator, root: u64, entries: u64) -> u64 {
    teardown_level(mem, alloc, root, 4, entries)
}

fn teardown_level(mem: &mut impl PhysMemory, alloc: &mut FrameAllocator, table: u64, level: u32, entries: u64) -> u64 {
    let mut leaves = 0;
    for i in 0..entries {
        let slot = table + 8 * i;
        let entry = mem.read_u64(slot);
        if entry & PRESENT == 0 {
            continue;
        }
        mem.write_u64(slot, 0);
        if level == 1 {
            leaves += 1;
            if entry & MODULE_FRAME == 0 {
                let _ = alloc.release(mem, entry & ADDR_MASK);
            }
        } else if entry & HUGE == 0 {
            let child = entry & ADDR_MASK;
            leaves += teardown_level(mem, alloc, child, level - 1, 512);
            let _ = alloc.release(mem, child);
        }
    }
    leaves
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::phys::fake::FakeMemory;
    use ward_abi::boot::{MemoryKind, MemoryRegion};

    fn setup() -> (FakeMemory, FrameAllocator, u64) {
        let mut mem = FakeMemory::default();
        let map = [MemoryRegion { base: 0x10_0000, size: 0x100_0000, kind: MemoryKind::Usable as u32, reserved: 0 }];
        let mut alloc = FrameAllocator::new(&map, &mut mem).unwrap();
        let root = alloc.alloc_zeroed(&mut mem).unwrap();
        (mem, alloc, root)
    }

    #[test]
    fn mapped_page_translates_with_its_flags() {
        let (mut mem, mut alloc, root) = setup();
        map_page(&mut mem, &mut alloc, root, 0x40_1000, 0x20_3000, USER | NO_EXECUTE).unwrap();
        let t = translate(&mut mem, root, 0x40_1abc).unwrap();
        assert_eq!(t.phys, 0x20_3abc);
        assert_eq!(t.flags & (USER | WRITABLE | NO_EXECUTE | PRESENT), USER | NO_EXECUTE | PRESENT);
        assert_eq!(translate(&mut mem, root, 0x40_2000), None);
    }

    #[test]
    fn entries_match_hand_computed_values() {
        let (mut mem, mut alloc, root) = setup();
        let virt = 0xffff_c000_0020_3000u64; // PML4 384, PDPT 0, PD 1, PT 3
        map_page(&mut mem, &mut alloc, root, virt, 0x55_5000, WRITABLE | NO_EXECUTE).unwrap();
        let pml4e = mem.read_u64(root + 8 * 384);
        assert_eq!(pml4e & 0xfff, PRESENT | WRITABLE | USER);
        let pdpt = pml4e & ADDR_MASK;
        let pd = mem.read_u64(pdpt) & ADDR_MASK;
        let pt = mem.read_u64(pd + 8) & ADDR_MASK;
        assert_eq!(mem.read_u64(pt + 8 * 3), 0x8000_0000_0055_5003);
    }

    #[test]
    fn huge_page_translates_offsets_within_2_mib() {
        // The VMM maps the direct map with 2 MiB pages; build one by hand.
        let (mut mem, mut alloc, root) = setup();
        let virt = 0xffff_8000_0020_0000u64;
        let pdpt = alloc.alloc_zeroed(&mut mem).unwrap();
        let pd = alloc.alloc_zeroed(&mut mem).unwrap();
        mem.write_u64(root + 8 * index(virt, 4), pdpt | PRESENT | WRITABLE);
        mem.write_u64(pdpt + 8 * index(virt, 3), pd | PRESENT | WRITABLE);
        mem.write_u64(pd + 8 * index(virt, 2), 0x20_0000 | PRESENT | WRITABLE | HUGE);
        let t = translate(&mut mem, root, 0xffff_8000_003f_fff8).unwrap();
        assert_eq!(t.phys, 0x3f_fff8);
        assert_eq!(t.flags & USER, 0);
        // A 4 KiB mapping inside a huge page is refused.
        assert_eq!(
            map_page(&mut mem, &mut alloc, root, virt + 0x1000, 0, 0),
            Err(MapError::AlreadyMapped(virt + 0x1000))
        );
    }

    #[test]
    fn double_mapping_is_refused() {
        let (mut mem, mut alloc, root) = setup();
        map_page(&mut mem, &mut alloc, root, 0x1000, 0x20_0000, 0).unwrap();
        assert_eq!(map_page(&mut mem, &mut alloc, root, 0x1000, 0x30_0000, 0), Err(MapError::AlreadyMapped(0x1000)));
    }

    #[test]
    fn user_flag_needs_every_level() {
        let (mut mem, mut alloc, root) = setup();
        map_page(&mut mem, &mut alloc, root, 0x1000, 0x20_0000, USER | WRITABLE).unwrap();
        // Clear USER on the PML4 entry: the page is no longer user-reachable.
        let e = mem.read_u64(root);
        mem.write_u64(root, e & !USER);
        assert_eq!(translate(&mut mem, root, 0x1000).unwrap().flags & USER, 0);
    }

    #[test]
    fn unmap_and_teardown_return_every_frame() {
        let (mut mem, mut alloc, root) = setup();
        let start = alloc.free_frames();
        let mut leaves = Vec::new();
        for i in 0..40u64 {
            let f = alloc.alloc(&mut mem).unwrap().phys;
            leaves.push(f);
            map_page(&mut mem, &mut alloc, root, 0x40_0000 + i * 0x20_0000, f, USER).unwrap();
        }
        assert_eq!(unmap_page(&mut mem, root, 0x40_0000), Some(leaves[0] | USER | PRESENT));
        alloc.release(&mut mem, leaves[0]).unwrap();
        // A module frame mapped too: unmapped but not freed.
        map_page(&mut mem, &mut alloc, root, 0x7000_0000, 0x100_0000, USER | MODULE_FRAME).unwrap();
        assert_eq!(teardown(&mut mem, &mut alloc, root, 256), 40);
        assert_eq!(alloc.free_frames(), start);
        assert_eq!(translate(&mut mem, root, 0x60_0000), None);
    }
}
