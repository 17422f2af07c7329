//! Writing the boot info and command line into guest memory.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::IntoBytes;

use ward_abi::boot::{
    BootInfo, DeviceInfo, MAX_DEVICES, MAX_MODULES, MODULE_NAME_LEN, MODULE_START_AT_BOOT, MemoryKind, ModuleInfo,
};
use ward_abi::layout::{BOOT_AREA_END, BOOT_INFO_ADDR, BOOT_PAGE_TABLES_END, CMDLINE_ADDR, CMDLINE_MAX_LEN, PAGE_SIZE};

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
    /// More boot modules than the boot info can list.
    #[error("{0} boot modules; the boot info lists at most {MAX_MODULES}")]
    TooManyModules(usize),
    /// A module name that is empty, too long or not plain ASCII.
    #[error("boot module name {0:?} must be 1-{MODULE_NAME_LEN} characters of a-z, 0-9, '-' and '_'")]
    BadModuleName(String),
    /// The kernel and modules do not fit in guest memory.
    #[error("the kernel and boot modules need {need} KiB; the compartment has {have} KiB of memory")]
    ModulesTooLarge {
        /// KiB needed.
        need: u64,
        /// KiB of guest memory.
        have: u64,
    },
    /// The memory map could not be built.
    #[error(transparent)]
    MemoryMap(#[from] MemoryError),
    /// Writing guest memory failed.
    #[error("cannot write the boot info into guest memory: {0}")]
    Write(#[from] vm_memory::GuestMemoryError),
}

/// Where the VMM's own boot structures lie: GDT, boot info, command line
/// and the kernel's page tables, all below this address.
pub const BOOT_STRUCTURES_END: u64 = BOOT_PAGE_TABLES_END;

const _: () = assert!(BOOT_STRUCTURES_END <= BOOT_AREA_END);

/// A program to place in guest memory as a boot module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleSpec {
    /// Its name, by which the guest finds it.
    pub name: String,
    /// The program image.
    /// Borrowed when built in (the common case: no copy of it is made in
    /// the VMM process; only the guest's own copy).
    pub image: std::borrow::Cow<'static, [u8]>,
    /// Whether the kernel starts it at boot.
    pub start_at_boot: bool,
}

/// Copies `modules` into guest memory, each page aligned, from the first
/// page after the kernel, and returns their boot-info entries.
pub fn place_modules(
    mem: &GuestMemoryMmap,
    memory_size: u64,
    kernel: &LoadedKernel,
    modules: &[ModuleSpec],
) -> Result<Vec<ModuleInfo>, BootError> {
    if modules.len() > MAX_MODULES {
        return Err(BootError::TooManyModules(modules.len()));
    }
    let mut next = kernel.phys_end.next_multiple_of(PAGE_SIZE);
    let mut infos = Vec::with_capacity(modules.len());
    for module in modules {
        let name = module.name.as_bytes();
        let plain = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_';
        if name.is_empty() || name.len() > MODULE_NAME_LEN || !name.iter().all(plain) {
            return Err(BootError::BadModuleName(module.name.clone()));
        }
        let size = module.image.len() as u64;
        let end = next.saturating_add(size).next_multiple_of(PAGE_SIZE);
        if end > memory_size {
            let need = modules.iter().map(|m| (m.image.len() as u64).next_multiple_of(PAGE_SIZE)).sum::<u64>()
                + kernel.phys_end.next_multiple_of(PAGE_SIZE);
            return Err(BootError::ModulesTooLarge { need: need >> 10, have: memory_size >> 10 });
        }
        mem.write_slice(&module.image, GuestAddress(next))?;
        let mut info = ModuleInfo {
            base: next,
            size,
            flags: if module.start_at_boot { MODULE_START_AT_BOOT } else { 0 },
            ..ModuleInfo::default()
        };
        info.name[..name.len()].copy_from_slice(name);
        infos.push(info);
        next = end;
    }
    Ok(infos)
}

/// Builds the boot info for a guest of `memory_size` bytes whose TSC runs
/// at `tsc_khz`.
pub fn build_boot_info(
    memory_size: u64,
    tsc_khz: u64,
    kernel: &LoadedKernel,
    cmdline: &[u8],
    devices: &[DeviceInfo],
    modules: &[ModuleInfo],
) -> Result<BootInfo, BootError> {
    check_cmdline(cmdline)?;
    if devices.len() > MAX_DEVICES {
        return Err(BootError::TooManyDevices(devices.len()));
    }
    if modules.len() > MAX_MODULES {
        return Err(BootError::TooManyModules(modules.len()));
    }
    let mut reserved = vec![
        Reserved { base: 0, size: BOOT_STRUCTURES_END, kind: MemoryKind::Boot },
        Reserved { base: kernel.phys_start, size: kernel.phys_end - kernel.phys_start, kind: MemoryKind::Kernel },
    ];
    reserved.extend(modules.iter().map(|m| Reserved { base: m.base, size: m.size, kind: MemoryKind::Module }));
    let map = memory_map(memory_size, &reserved)?;

    let mut info = BootInfo::new(memory_size);
    info.tsc_khz = tsc_khz;
    info.module_count = u32::try_from(modules.len()).map_err(|_| BootError::TooManyModules(modules.len()))?;
    info.modules[..modules.len()].copy_from_slice(modules);
    info.cmdline_addr = CMDLINE_ADDR;
    // Each count was checked against its array's capacity above.
    info.cmdline_len = u32::try_from(cmdline.len()).map_err(|_| BootError::CmdlineTooLong(cmdline.len()))?;
    info.memory_count = u32::try_from(map.len()).map_err(|_| MemoryError::TooManyRegions)?;
    info.memory[..map.len()].copy_from_slice(&map);
    info.device_count = u32::try_from(devices.len()).map_err(|_| BootError::TooManyDevices(devices.len()))?;
    info.devices[..devices.len()].copy_from_slice(devices);
    Ok(info)
}

/// Whether `cmdline` can be given to the guest: at most
/// [`CMDLINE_MAX_LEN`] bytes, no NUL. The VMM checks it before it touches
/// KVM; wardd checks it when a compartment is created.
pub fn check_cmdline(cmdline: &[u8]) -> Result<(), BootError> {
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
        LoadedKernel { entry: 0, phys_start: 0x10_0000, phys_end: 0x12_0000, segments: Vec::new() }
    }

    #[test]
    fn boot_info_describes_memory_cmdline_and_devices() {
        let dev = DeviceInfo { kind: 1, irq: 0, mmio_base: 0xd000_0000, mmio_size: 0x1000 };
        let info = build_boot_info(32 << 20, 1_000_000, &kernel(), b"ward.panic", &[dev], &[]).unwrap();
        assert!(info.is_valid());
        assert_eq!((info.cmdline_addr, info.cmdline_len), (CMDLINE_ADDR, 10));
        assert_eq!(info.devices(), &[dev]);
        let kinds: Vec<u32> = info.memory_regions().iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [2, 1, 3, 1]);
    }

    #[test]
    fn boot_info_round_trips_through_guest_memory() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let info = build_boot_info(32 << 20, 1_000_000, &kernel(), b"a=b", &[], &[]).unwrap();
        let addr = write(&mem, &info, b"a=b").unwrap();
        let mut bytes = vec![0u8; std::mem::size_of::<BootInfo>()];
        mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
        let back = BootInfo::read_from_bytes(&bytes).unwrap();
        assert_eq!(back.memory_regions(), info.memory_regions());
        let mut cmdline = [0u8; 3];
        mem.read_slice(&mut cmdline, GuestAddress(back.cmdline_addr)).unwrap();
        assert_eq!(&cmdline, b"a=b");
    }

    fn spec(name: &str, len: usize, start_at_boot: bool) -> ModuleSpec {
        ModuleSpec { name: name.into(), image: vec![0xab; len].into(), start_at_boot }
    }

    #[test]
    fn modules_are_placed_page_aligned_after_the_kernel_and_reserved() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let mods = place_modules(&mem, 4 << 20, &kernel(), &[spec("init", 5000, true), spec("ps", 10, false)]).unwrap();
        assert_eq!((mods[0].base, mods[0].size, mods[0].flags), (0x12_0000, 5000, MODULE_START_AT_BOOT));
        assert_eq!((mods[1].base, mods[1].flags, mods[1].name()), (0x12_2000, 0, &b"ps"[..]));
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x12_2009)).unwrap(), 0xab);
        let info = build_boot_info(4 << 20, 1, &kernel(), b"", &[], &mods).unwrap();
        let module_regions: Vec<(u64, u64)> = info
            .memory_regions()
            .iter()
            .filter(|r| r.kind == MemoryKind::Module as u32)
            .map(|r| (r.base, r.size))
            .collect();
        assert_eq!(module_regions, [(0x12_0000, 0x2000), (0x12_2000, 0x1000)]);
        assert_eq!(info.modules(), &mods[..]);
    }

    #[test]
    fn modules_that_do_not_fit_or_have_bad_names_are_refused() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        let big = place_modules(&mem, 2 << 20, &kernel(), &[spec("big", 4 << 20, true)]);
        assert!(matches!(big, Err(BootError::ModulesTooLarge { have: 2048, .. })), "{big:?}");
        for bad in ["", "Init", "a/b", &"x".repeat(33)] {
            let r = place_modules(&mem, 2 << 20, &kernel(), &[spec(bad, 1, true)]);
            assert!(matches!(r, Err(BootError::BadModuleName(_))), "{bad:?}: {r:?}");
        }
    }

    #[test]
    fn overlong_or_nul_cmdline_is_refused() {
        let long = vec![b'x'; CMDLINE_MAX_LEN + 1];
        assert!(matches!(
            build_boot_info(32 << 20, 1_000_000, &kernel(), &long, &[], &[]),
            Err(BootError::CmdlineTooLong(4097))
        ));
        assert!(matches!(
            build_boot_info(32 << 20, 1_000_000, &kernel(), b"a\0b", &[], &[]),
            Err(BootError::CmdlineNul)
        ));
    }
}
