//! The boot page tables the kernel is entered with.
//!
//! 2 MiB pages only (1 GiB pages make the guest triple-fault on our hosts).
//! Seven 4 KiB tables from [`BOOT_PML4_ADDR`] map:
//! - virtual 0..4 GiB to physical 0..4 GiB (identity; RAM, MMIO window, LAPIC),
//! - [`PHYS_MAP_BASE`]`..+4 GiB` to the same (the kernel's direct map),
//! - [`KERNEL_BASE`]`..+2 GiB` to physical 0..2 GiB (the kernel image window).
//!
//! The identity and direct maps share one PDPT, and the kernel window reuses
//! the first two page directories, so the whole map costs seven pages.
//! The kernel replaces these tables with its own once it runs.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use ward_abi::layout::{BOOT_PML4_ADDR, KERNEL_BASE, PAGE_SIZE, PHYS_MAP_BASE};

/// Present.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Writable.
pub const PTE_WRITABLE: u64 = 1 << 1;
/// Large page (2 MiB in a page directory).
pub const PTE_LARGE: u64 = 1 << 7;

const TABLE_FLAGS: u64 = PTE_PRESENT | PTE_WRITABLE;
const PML4: u64 = BOOT_PML4_ADDR;
const PDPT_LOW: u64 = BOOT_PML4_ADDR + PAGE_SIZE;
const PD_FIRST: u64 = BOOT_PML4_ADDR + 2 * PAGE_SIZE;
const PD_COUNT: u64 = 4;
const PDPT_KERNEL: u64 = PD_FIRST + PD_COUNT * PAGE_SIZE;

/// Index of `virt` in the table at `level` (4 = PML4 .. 1 = PT).
pub const fn table_index(virt: u64, level: u32) -> u64 {
    (virt >> (12 + 9 * (level - 1))) & 0x1ff
}

/// Every entry of the boot tables, as (guest-physical address, value).
pub fn boot_page_table_entries() -> Vec<(u64, u64)> {
    let mut entries = Vec::with_capacity(3 + 4 + 2048 + 2);
    let pml4_slot = |virt: u64| PML4 + 8 * table_index(virt, 4);
    entries.push((pml4_slot(0), PDPT_LOW | TABLE_FLAGS));
    entries.push((pml4_slot(PHYS_MAP_BASE), PDPT_LOW | TABLE_FLAGS));
    entries.push((pml4_slot(KERNEL_BASE), PDPT_KERNEL | TABLE_FLAGS));
    for pd in 0..PD_COUNT {
        let pd_addr = PD_FIRST + pd * PAGE_SIZE;
        entries.push((PDPT_LOW + 8 * pd, pd_addr | TABLE_FLAGS));
        for i in 0..512 {
            let phys = ((pd * 512 + i) << 21) | PTE_PRESENT | PTE_WRITABLE | PTE_LARGE;
            entries.push((pd_addr + 8 * i, phys));
        }
    }
    // The kernel window: PDPT slots 510 and 511 cover physical 0..2 GiB.
    let first = table_index(KERNEL_BASE, 3);
    for pd in 0..2 {
        entries.push((PDPT_KERNEL + 8 * (first + pd), (PD_FIRST + pd * PAGE_SIZE) | TABLE_FLAGS));
    }
    entries
}

/// Writes the boot page tables into guest memory (which must be zeroed, as
/// fresh anonymous memory is) and returns the value for CR3.
pub fn write_boot_page_tables<M: GuestMemory>(mem: &M) -> Result<u64, vm_memory::GuestMemoryError> {
    for (addr, value) in boot_page_table_entries() {
        mem.write_obj(value, GuestAddress(addr))?;
    }
    Ok(PML4)
}

/// Walks tables in guest memory the way the MMU does and returns the
/// physical address `virt` maps to, if any. 2 MiB and 4 KiB pages.
pub fn translate<M: GuestMemory>(mem: &M, cr3: u64, virt: u64) -> Option<u64> {
    const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
    let mut table = cr3 & ADDR_MASK;
    for level in (1..=4).rev() {
        let entry: u64 = mem.read_obj(GuestAddress(table + 8 * table_index(virt, level))).ok()?;
        if entry & PTE_PRESENT == 0 {
            return None;
        }
        if level == 2 && entry & PTE_LARGE != 0 {
            return Some((entry & 0x000f_ffff_ffe0_0000) | (virt & 0x1f_ffff));
        }
        if level == 1 {
            return Some((entry & ADDR_MASK) | (virt & 0xfff));
        }
        table = entry & ADDR_MASK;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    #[test]
    fn tables_fit_the_reserved_pages() {
        let end = BOOT_PML4_ADDR + ward_abi::layout::BOOT_PAGE_TABLE_PAGES * PAGE_SIZE;
        assert!(boot_page_table_entries().iter().all(|&(a, _)| a >= BOOT_PML4_ADDR && a + 8 <= end));
    }

    #[test]
    fn hand_computed_entries() {
        let entries = boot_page_table_entries();
        let at = |addr: u64| entries.iter().find(|e| e.0 == addr).map(|e| e.1);
        // PML4[0] and PML4[256] -> PDPT at 0xa000; PML4[511] -> 0xf000.
        assert_eq!(at(0x9000), Some(0xa003));
        assert_eq!(at(0x9000 + 8 * 256), Some(0xa003));
        assert_eq!(at(0x9000 + 8 * 511), Some(0xf003));
        // PDPT_LOW[3] -> the fourth PD, at 0xe000.
        assert_eq!(at(0xa000 + 8 * 3), Some(0xe003));
        // PD 0 entry 1 maps 2 MiB; PD 3 entry 511 maps 4 GiB - 2 MiB.
        assert_eq!(at(0xb000 + 8), Some(0x20_0083));
        assert_eq!(at(0xe000 + 8 * 511), Some(0xffe0_0083));
        // Kernel window: PDPT_KERNEL[510] -> PD 0, [511] -> PD 1.
        assert_eq!(at(0xf000 + 8 * 510), Some(0xb003));
        assert_eq!(at(0xf000 + 8 * 511), Some(0xc003));
    }

    #[test]
    fn walking_the_written_tables_gives_the_three_maps() {
        let mem = memory();
        let cr3 = write_boot_page_tables(&mem).unwrap();
        assert_eq!(translate(&mem, cr3, 0x12_3456), Some(0x12_3456));
        assert_eq!(translate(&mem, cr3, 0xfee0_0020), Some(0xfee0_0020));
        assert_eq!(translate(&mem, cr3, PHYS_MAP_BASE + 0xd000_0018), Some(0xd000_0018));
        assert_eq!(translate(&mem, cr3, KERNEL_BASE + 0x10_0000), Some(0x10_0000));
        assert_eq!(translate(&mem, cr3, KERNEL_BASE + 0x7fff_ffff), Some(0x7fff_ffff));
    }

    #[test]
    fn nothing_else_is_mapped() {
        let mem = memory();
        let cr3 = write_boot_page_tables(&mem).unwrap();
        assert_eq!(translate(&mem, cr3, 4 << 30), None);
        assert_eq!(translate(&mem, cr3, 0x0000_7fff_ffff_f000), None);
        assert_eq!(translate(&mem, cr3, PHYS_MAP_BASE + (4 << 30)), None);
    }
}
