//! Reading and checking the boot info the VMM left for us.

use ward_abi::boot::{BootInfo, MemoryKind};
use ward_abi::layout::CMDLINE_MAX_LEN;
use zerocopy::FromBytes;

use crate::addr::phys_to_virt;
use crate::cmdline::Cmdline;

/// A boot info that passed its magic, version and size checks.
#[derive(Debug)]
pub struct BootInfoView {
    info: &'static BootInfo,
}

/// Usable memory, summed over the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsableMemory {
    /// Bytes.
    pub bytes: u64,
    /// Regions.
    pub regions: u64,
}

impl BootInfoView {
    /// Reads the boot info at guest-physical `phys`.
    ///
    /// # Safety
    /// `phys` and the command line it names must be mapped in the direct map
    /// and not written while the returned view is alive.
    pub unsafe fn from_phys(phys: u64) -> Option<Self> {
        let virt = phys_to_virt(phys) as *const u8;
        // SAFETY: the caller guarantees the bytes are mapped and stable;
        // `ref_from_bytes` checks size and alignment, and any bytes are a
        // valid `BootInfo` (it derives `FromBytes`).
        let bytes = unsafe { core::slice::from_raw_parts(virt, core::mem::size_of::<BootInfo>()) };
        let info = BootInfo::ref_from_bytes(bytes).ok()?;
        Self::new(info)
    }

    /// Checks an already mapped boot info.
    pub fn new(info: &'static BootInfo) -> Option<Self> {
        info.is_valid().then_some(Self { info })
    }

    /// The boot info itself.
    pub fn info(&self) -> &'static BootInfo {
        self.info
    }

    /// The command line, clamped to [`CMDLINE_MAX_LEN`].
    pub fn cmdline(&self) -> Cmdline<'static> {
        let len = usize::try_from(self.info.cmdline_len).unwrap_or(0).min(CMDLINE_MAX_LEN);
        if len == 0 {
            return Cmdline::new(&[]);
        }
        let virt = phys_to_virt(self.info.cmdline_addr) as *const u8;
        // SAFETY: the VMM wrote `cmdline_len` bytes at `cmdline_addr` in the
        // boot area, which stays mapped and unchanged; the length is clamped
        // to the area reserved for it.
        Cmdline::new(unsafe { core::slice::from_raw_parts(virt, len) })
    }

    /// Total usable memory in the memory map.
    pub fn usable_memory(&self) -> UsableMemory {
        usable_memory(self.info)
    }
}

/// Sums the usable regions of a memory map.
pub fn usable_memory(info: &BootInfo) -> UsableMemory {
    info.memory_regions().iter().filter(|r| MemoryKind::from_raw(r.kind) == Some(MemoryKind::Usable)).fold(
        UsableMemory { bytes: 0, regions: 0 },
        |acc, r| UsableMemory { bytes: acc.bytes.saturating_add(r.size), regions: acc.regions + 1 },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ward_abi::boot::MemoryRegion;

    fn region(base: u64, size: u64, kind: MemoryKind) -> MemoryRegion {
        MemoryRegion { base, size, kind: kind as u32, reserved: 0 }
    }

    #[test]
    fn usable_memory_counts_only_usable_regions() {
        let mut info = BootInfo::new(64 << 20);
        info.memory[0] = region(0, 0x10_0000, MemoryKind::Boot);
        info.memory[1] = region(0x10_0000, 0x8_0000, MemoryKind::Kernel);
        info.memory[2] = region(0x18_0000, 0x3e8_0000, MemoryKind::Usable);
        info.memory[3] = region(0x400_0000, 0x1000, MemoryKind::Usable);
        info.memory_count = 4;
        assert_eq!(usable_memory(&info), UsableMemory { bytes: 0x3e8_1000, regions: 2 });
    }

    #[test]
    fn invalid_boot_info_is_refused() {
        let mut info = BootInfo::new(0);
        info.magic = 0;
        let info: &'static BootInfo = Box::leak(Box::new(info));
        assert!(BootInfoView::new(info).is_none());
    }
}
