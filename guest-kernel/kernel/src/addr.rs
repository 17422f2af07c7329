//! Translation between the kernel's two windows and physical addresses.
//!
//! The kernel image runs at [`KERNEL_BASE`] + physical, and all physical
//! memory is reachable at [`PHYS_MAP_BASE`] + physical (see
//! `ward_abi::layout`). Both are fixed offsets, so translating costs one
//! subtraction and no page-table walk.

use ward_abi::layout::{KERNEL_BASE, PHYS_MAP_BASE};

/// The direct-map virtual address of a physical address.
#[inline]
pub const fn phys_to_virt(phys: u64) -> u64 {
    PHYS_MAP_BASE + phys
}

/// The physical address behind a kernel virtual address in either window,
/// or `None` for an address in neither.
#[inline]
pub const fn virt_to_phys(virt: u64) -> Option<u64> {
    if virt >= KERNEL_BASE {
        Some(virt - KERNEL_BASE)
    } else if virt >= PHYS_MAP_BASE && virt - PHYS_MAP_BASE < (1 << 46) {
        Some(virt - PHYS_MAP_BASE)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_window_translates_to_low_physical() {
        assert_eq!(virt_to_phys(0xffff_ffff_8010_0000), Some(0x10_0000));
    }

    #[test]
    fn direct_map_round_trips() {
        assert_eq!(virt_to_phys(phys_to_virt(0xd000_0000)), Some(0xd000_0000));
    }

    #[test]
    fn user_half_address_has_no_kernel_translation() {
        assert_eq!(virt_to_phys(0x40_0000), None);
    }
}
