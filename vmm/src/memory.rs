//! Guest RAM and the memory map the guest is told about.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use ward_abi::boot::{MAX_MEMORY_REGIONS, MemoryKind, MemoryRegion};
use ward_abi::layout::{MAX_MEMORY_MIB, MIN_MEMORY_MIB, PAGE_SIZE};

/// Creating guest memory failed.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Asked for less than the kernel needs.
    #[error("memory of {0} MiB is too small: a compartment needs at least {MIN_MEMORY_MIB} MiB")]
    TooSmall(u64),
    /// Asked for more than fits below the MMIO window.
    #[error("memory of {0} MiB is too large: a compartment can have at most {MAX_MEMORY_MIB} MiB")]
    TooLarge(u64),
    /// mmap failed.
    #[error("cannot map {mib} MiB of guest memory: {source}")]
    Map {
        /// Size asked for.
        mib: u64,
        /// The error.
        source: vm_memory::mmap::FromRangesError,
    },
    /// More reserved ranges than the boot info can describe.
    #[error("the memory map needs more than {MAX_MEMORY_REGIONS} regions")]
    TooManyRegions,
}

/// Checks a memory size in MiB and returns it in bytes.
pub fn checked_size(mib: u64) -> Result<u64, MemoryError> {
    if mib < MIN_MEMORY_MIB {
        return Err(MemoryError::TooSmall(mib));
    }
    if mib > MAX_MEMORY_MIB {
        return Err(MemoryError::TooLarge(mib));
    }
    Ok(mib << 20)
}

/// Maps `mib` MiB of anonymous guest RAM at guest-physical 0. The pages are
/// zero and cost host memory only once the guest touches them.
pub fn create(mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let size = usize::try_from(checked_size(mib)?).map_err(|_| MemoryError::TooLarge(mib))?;
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).map_err(|source| MemoryError::Map { mib, source })
}

/// A range of guest memory that is not free, and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserved {
    /// First byte.
    pub base: u64,
    /// Length.
    pub size: u64,
    /// What it holds.
    pub kind: MemoryKind,
}

/// The memory map of `memory_size` bytes of RAM with `reserved` ranges
/// carved out: sorted, non-overlapping, covering all RAM, each reserved
/// range widened to whole pages, and the gaps between them usable.
pub fn memory_map(memory_size: u64, reserved: &[Reserved]) -> Result<Vec<MemoryRegion>, MemoryError> {
    let mut reserved: Vec<Reserved> = reserved
        .iter()
        .filter(|r| r.size > 0 && r.base < memory_size)
        .map(|r| {
            let base = r.base & !(PAGE_SIZE - 1);
            let end = r.base.saturating_add(r.size).min(memory_size).next_multiple_of(PAGE_SIZE);
            Reserved { base, size: end - base, kind: r.kind }
        })
        .collect();
    reserved.sort_by_key(|r| r.base);

    let mut map = Vec::new();
    let mut cursor = 0;
    for r in reserved {
        // Overlapping reservations: the earlier one keeps the overlap.
        let base = r.base.max(cursor);
        let end = r.base + r.size;
        if end <= base {
            continue;
        }
        if base > cursor {
            map.push(region(cursor, base - cursor, MemoryKind::Usable));
        }
        map.push(region(base, end - base, r.kind));
        cursor = end;
    }
    if cursor < memory_size {
        map.push(region(cursor, memory_size - cursor, MemoryKind::Usable));
    }
    if map.len() > MAX_MEMORY_REGIONS {
        return Err(MemoryError::TooManyRegions);
    }
    Ok(map)
}

fn region(base: u64, size: u64, kind: MemoryKind) -> MemoryRegion {
    MemoryRegion { base, size, kind: kind as u32, reserved: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_outside_the_limits_are_refused() {
        assert!(matches!(checked_size(4), Err(MemoryError::TooSmall(4))));
        assert!(matches!(checked_size(MAX_MEMORY_MIB + 1), Err(MemoryError::TooLarge(_))));
        assert_eq!(checked_size(64).unwrap(), 64 << 20);
    }

    #[test]
    fn reserved_ranges_split_ram_into_page_aligned_regions() {
        let map = memory_map(
            16 << 20,
            &[
                Reserved { base: 0x10_0000, size: 0x1_2345, kind: MemoryKind::Kernel },
                Reserved { base: 0, size: 0x1_0000, kind: MemoryKind::Boot },
            ],
        )
        .unwrap();
        let got: Vec<(u64, u64, u32)> = map.iter().map(|r| (r.base, r.size, r.kind)).collect();
        assert_eq!(
            got,
            [
                (0, 0x1_0000, MemoryKind::Boot as u32),
                (0x1_0000, 0xf_0000, MemoryKind::Usable as u32),
                (0x10_0000, 0x1_3000, MemoryKind::Kernel as u32),
                (0x11_3000, (16 << 20) - 0x11_3000, MemoryKind::Usable as u32),
            ]
        );
    }

    #[test]
    fn map_covers_all_ram_without_overlap() {
        let map = memory_map(
            8 << 20,
            &[
                Reserved { base: 0x2000, size: 0x3000, kind: MemoryKind::Boot },
                Reserved { base: 0x4000, size: 0x3000, kind: MemoryKind::Module },
            ],
        )
        .unwrap();
        let mut cursor = 0;
        for r in &map {
            assert_eq!(r.base, cursor);
            cursor += r.size;
        }
        assert_eq!(cursor, 8 << 20);
    }

    #[test]
    fn too_many_reservations_are_an_error() {
        let many: Vec<Reserved> =
            (0..20).map(|i| Reserved { base: i * 0x2000, size: 0x1000, kind: MemoryKind::Module }).collect();
        assert!(matches!(memory_map(1 << 20, &many), Err(MemoryError::TooManyRegions)));
    }
}
