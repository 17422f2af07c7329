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
    /// The memfd behind shared guest memory could not be made.
    #[error("cannot create a memfd of {mib} MiB for shared guest memory: {source}")]
    Memfd {
        /// Size asked for.
        mib: u64,
        /// The error.
        source: std::io::Error,
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

/// Maps `mib` MiB of guest RAM at guest-physical 0 backed by a memfd
/// (shared), so a vhost-user backend can map the same pages from the file
/// descriptor the VMM sends it. Like [`create`], pages cost host memory
/// only once touched; the page service frees them with `MADV_REMOVE`.
pub fn create_shared(name: &str, mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let size = usize::try_from(checked_size(mib)?).map_err(|_| MemoryError::TooLarge(mib))?;
    let label = std::ffi::CString::new(format!("ward-guest-{name}"))
        .map_err(|_| MemoryError::Memfd { mib, source: std::io::Error::from(std::io::ErrorKind::InvalidInput) })?;
    // SAFETY: `label` is a NUL-terminated string alive for the call; the
    // result is checked and owned below.
    let fd = unsafe { libc::memfd_create(label.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(MemoryError::Memfd { mib, source: std::io::Error::last_os_error() });
    }
    // SAFETY: `fd` was just returned by memfd_create and nothing else owns it.
    let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.set_len(size as u64).map_err(|source| MemoryError::Memfd { mib, source })?;
    // The backend gets this file: sealed, it can neither shrink it (the
    // VMM would die of SIGBUS touching guest memory) nor grow it.
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on our own open descriptor with plain integers; checked.
    if unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(MemoryError::Memfd { mib, source: std::io::Error::last_os_error() });
    }
    let ranges = [(GuestAddress(0), size, Some(vm_memory::FileOffset::new(file, 0)))];
    GuestMemoryMmap::from_ranges_with_files(ranges).map_err(|source| MemoryError::Map { mib, source })
}

/// Whether `mem` is shared with another process (memfd-backed, see
/// [`create_shared`]) rather than private anonymous memory.
pub fn is_shared(mem: &GuestMemoryMmap) -> bool {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    mem.iter().any(|region| region.file_offset().is_some())
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
    fn shared_memory_is_one_memfd_the_guest_sees_whole() {
        use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};
        let mem = create_shared("test", 16).unwrap();
        assert!(is_shared(&mem));
        assert!(!is_shared(&create(16).unwrap()));
        mem.write_obj(0x1234_5678_u32, GuestAddress(15 << 20)).unwrap();
        let region = mem.iter().next().unwrap();
        let file = region.file_offset().unwrap().file();
        let mut word = [0u8; 4];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut word, 15 << 20).unwrap();
        assert_eq!(u32::from_le_bytes(word), 0x1234_5678, "the file holds what the guest wrote");
        assert!(file.set_len(1 << 20).is_err(), "sealed: a backend cannot shrink guest memory");
    }

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
