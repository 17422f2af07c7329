//! Writing the boot info and command line into guest memory.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::IntoBytes;

use ward_abi::boot::{BootInfo, DeviceInfo, MAX_DEVICES, MemoryKind};
use ward_abi::layout::{BOOT_AREA_END, BOOT_INFO_ADDR, BOOT_PML4_ADDR, CMDLINE_ADDR, CMDLINE_MAX_LEN};

use crate::loader::LoadedKernel;
use crate::memory::{MemoryError, Reserved, memory_map};

/// Writing the boot info failed.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Command line longer than the space reserved for it.
    #[error("the kernel command line is {0} bytes; at most {CMDLINE_MAX_LEN} are allowed")]
    CmdlineTooLong(usize),
    /// Command line contains a NUL byte.
    #[error("the kernel command line contains a NUL byte")]
    CmdlineNul,
    /// More devices than the boot info can list.
    #[error("{0} devices; the boot info lists at most {MAX_DEVICES}")]
    TooManyDevices(usize),
    /// The memory map could not be built.
    #[error(transparent)]
    MemoryMap(#[from] MemoryError),
    /// Writing guest memory failed.
    #[error("cannot write the boot info into guest memory: {0}")]
    Write(#[from] vm_memory::GuestMemoryError),
}

/// Where the VMM's own boot structures lie: GDT, boot info, command line
/// and boot page tables, all below this address.
pub const BOOT_STRUCTURES_END: u64 =
    BOOT_PML4_ADDR + ward_abi::layout::BOOT_PAGE_TABLE_PAGES * ward_abi::layout::PAGE_SIZE;

const _: () = assert!(BOOT_STRUCTURES_END <= BOOT_AREA_END);

/// Builds the boot info for a guest of `memory_size` bytes.
pub fn build_boot_info(
    memory_size: u64,
    kernel: &LoadedKernel,
    cmdline: &[u8],
    devices: &[DeviceInfo],
) -> Result<BootInfo, BootError> {
    check_cmdline(cmdline)?;
    if devices.len() > MAX_DEVICES {
        return Err(BootError::TooManyDevices(devices.len()));
    }
    let reserved = [
        Reserved { base: 0, size: BOOT_STRUCTURES_END, kind: MemoryKind::Boot },
        Reserved { base: kernel.phys_start, size: kernel.phys_end - kernel.phys_start, kind: MemoryKind::Kernel },
    ];
    let map = memory_map(memory_size, &reserved)?;

    let mut info = BootInfo::new(memory_size);
    info.cmdline_addr = CMDLINE_ADDR;
    // Each count was checked against its array's capacity above.
    info.cmdline_len = u32::try_from(cmdline.len()).map_err(|_| BootError::CmdlineTooLong(cmdline.len()))?;
    info.memory_count = u32::try_from(map.len()).map_err(|_| MemoryError::TooManyRegions)?;
    info.memory[..map.len()].copy_from_slice(&map);
    info.device_count = u32::try_from(devices.len()).map_err(|_| BootError::TooManyDevices(devices.len()))?;
    info.devices[..devices.len()].copy_from_slice(devices);
    Ok(info)
}

fn check_cmdline(cmdline: &[u8]) -> Result<(), BootError> {
    if cmdline.len() > CMDLINE_MAX_LEN {
        return Err(BootError::CmdlineTooLong(cmdline.len()));
    }
    if cmdline.contains(&0) {
        return Err(BootError::CmdlineNul);
    }
    Ok(())
}

/// Writes the boot info and command line to their places in guest memory
/// and returns the boot info's guest-physical address.
pub fn write(mem: &GuestMemoryMmap, info: &BootInfo, cmdline: &[u8]) -> Result<u64, BootError> {
    check_cmdline(cmdline)?;
    mem.write_slice(cmdline, GuestAddress(CMDLINE_ADDR))?;
    mem.write_slice(info.as_bytes(), GuestAddress(BOOT_INFO_ADDR))?;
    Ok(BOOT_INFO_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromBytes;

    fn kernel() -> LoadedKernel {
        LoadedKernel { entry: 0, phys_start: 0x10_0000, phys_end: 0x12_0000 }
    }

    #[test]
    fn boot_info_describes_memory_cmdline_and_devices() {
        let dev = DeviceInfo { kind: 1, irq: 0, mmio_base: 0xd000_0000, mmio_size: 0x1000 };
        let info = build_boot_info(32 << 20, &kernel(), b"ward.panic", &[dev]).unwrap();
        assert!(info.is_valid());
        assert_eq!((info.cmdline_addr, info.cmdline_len), (CMDLINE_ADDR, 10));
        assert_eq!(info.devices(), &[dev]);
        let kinds: Vec<u32> = info.memory_regions().iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [2, 1, 3, 1]);
    }

    #[test]
    fn boot_info_round_trips_through_guest_memory() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let info = build_boot_info(32 << 20, &kernel(), b"a=b", &[]).unwrap();
        let addr = write(&mem, &info, b"a=b").unwrap();
        let mut bytes = vec![0u8; std::mem::size_of::<BootInfo>()];
        mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
        let back = BootInfo::read_from_bytes(&bytes).unwrap();
        assert_eq!(back.memory_regions(), info.memory_regions());
        let mut cmdline = [0u8; 3];
        mem.read_slice(&mut cmdline, GuestAddress(back.cmdline_addr)).unwrap();
        assert_eq!(&cmdline, b"a=b");
    }

    #[test]
    fn overlong_or_nul_cmdline_is_refused() {
        let long = vec![b'x'; CMDLINE_MAX_LEN + 1];
        assert!(matches!(build_boot_info(32 << 20, &kernel(), &long, &[]), Err(BootError::CmdlineTooLong(4097))));
        assert!(matches!(build_boot_info(32 << 20, &kernel(), b"a\0b", &[]), Err(BootError::CmdlineNul)));
    }
}
