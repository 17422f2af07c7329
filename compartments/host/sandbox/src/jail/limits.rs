//! Resource limits (`setrlimit`) of the jailed VMM.
//!
//! Each limit is set as both soft and hard (an unprivileged process can
//! lower a hard limit, never raise it), and never above the hard limit the
//! process already had: the jail only takes away. The values:
//!
//! - **core dumps: 0.** A dump of a VMM would hold the guest's memory.
//! - **file size** (`RLIMIT_FSIZE`): the highest offset the VMM may write in
//!   any file, which bounds the console log and disk images it writes
//!   through descriptors it holds. Raise it to the largest disk image.
//!   `SIGXFSZ` is ignored, so a write past the limit fails with `EFBIG`
//!   (an I/O error the VMM reports) instead of killing the VMM.
//! - **address space** (`RLIMIT_AS`): guest RAM is one anonymous mapping of
//!   the compartment's size, made after `enter`, so the limit is the guest
//!   memory plus the VMM's own overhead (see `VMM_BASE_ADDRESS_SPACE` and
//!   `PER_THREAD_ADDRESS_SPACE`). It counts address space, not memory:
//!   reserved, untouched ranges count in full. The host memory a
//!   compartment really uses is bounded by the cgroup's `memory.max`.
//!   `enter` refuses a limit below what the process has mapped already
//!   (`/proc/self/statm`), which would make every later allocation fail.
//! - **open files** (`RLIMIT_NOFILE`): the VMM's descriptors are few; a
//!   descriptor already open above the limit stays usable.
//! - **processes** (`RLIMIT_NPROC`): the kernel counts every task (thread)
//!   of the *real uid* on the host, so with the shared `nobody` identity it
//!   caps all compartments together, a host-wide guard against a fork bomb
//!   of compromised VMMs. The per-compartment thread limit is the cgroup's
//!   `pids.max`. The kernel does not apply it to root, so it takes effect
//!   at the uid drop.

use super::error::JailError;
use super::report::{JailReport, Measure};
use super::sys;

/// One MiB.
const MIB: u64 = 1 << 20;

/// The page size `/proc/self/statm` counts in (x86_64).
const PAGE_SIZE: u64 = 4096;

/// Address space of the VMM besides guest RAM and threads: the binary and
/// its libraries (tens of MiB), the main thread's stack (up to
/// `RLIMIT_STACK`, 8 MiB), the main malloc arena, KVM's `kvm_run` mappings
/// (pages). Measured: `ward run idle --memory 64` peaks at 224,128 KiB of
/// address space (`VmPeak`) with 3 threads: 64 MiB of guest RAM, a 64 MiB
/// malloc arena reservation, a 37 MiB binary with every image embedded.
pub const VMM_BASE_ADDRESS_SPACE: u64 = 256 * MIB;

/// Address space each thread may add: glibc reserves 64 MiB for each
/// thread's malloc arena (`HEAP_MAX_SIZE` on 64-bit; up to 8 arenas per
/// core, one per thread in practice) and a thread stack is 2 to 8 MiB.
pub const PER_THREAD_ADDRESS_SPACE: u64 = 72 * MIB;

/// Threads a VMM needs at most by default: main, vCPU, device event loop
/// and vhost-user helpers, with room to spare.
pub const DEFAULT_THREADS: u64 = 16;

/// Default largest file offset the VMM may write.
pub const DEFAULT_FILE_SIZE: u64 = 16 << 30;

/// Default descriptor limit.
pub const DEFAULT_OPEN_FILES: u64 = 256;

/// Default cap on the tasks of the compartments' shared uid, host-wide.
pub const DEFAULT_UID_TASKS: u64 = 4096;

/// The `setrlimit` limits of a jailed VMM (each soft = hard). Core dumps
/// are always 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JailLimits {
    /// `RLIMIT_AS`, bytes: guest memory plus the VMM's overhead.
    pub address_space: u64,
    /// `RLIMIT_FSIZE`, bytes: the largest offset written in any file.
    pub file_size: u64,
    /// `RLIMIT_NOFILE`: descriptors.
    pub open_files: u64,
    /// `RLIMIT_NPROC`: tasks of the real uid, host-wide (see the module doc).
    pub processes: u64,
}

impl JailLimits {
    /// Limits for a compartment with `memory` bytes of guest RAM and the
    /// default thread count.
    pub fn for_guest(memory: u64) -> Self {
        Self {
            address_space: address_space_for(memory, DEFAULT_THREADS),
            file_size: DEFAULT_FILE_SIZE,
            open_files: DEFAULT_OPEN_FILES,
            processes: DEFAULT_UID_TASKS,
        }
    }
}

/// The address-space limit for `memory` bytes of guest RAM and `threads`
/// threads: guest RAM, the VMM's base and each thread's share.
pub fn address_space_for(memory: u64, threads: u64) -> u64 {
    memory.saturating_add(VMM_BASE_ADDRESS_SPACE).saturating_add(threads.saturating_mul(PER_THREAD_ADDRESS_SPACE))
}

/// Sets every limit, or fails naming the one that could not be set.
pub(super) fn apply(limits: &JailLimits, report: &mut JailReport) -> Result<(), JailError> {
    let table: [(libc::__rlimit_resource_t, &'static str, &'static str, u64); 5] = [
        (libc::RLIMIT_CORE, "RLIMIT_CORE", "core dumps", 0),
        (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE", "file size", limits.file_size),
        (libc::RLIMIT_AS, "RLIMIT_AS", "address space", limits.address_space),
        (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE", "open files", limits.open_files),
        (libc::RLIMIT_NPROC, "RLIMIT_NPROC", "uid tasks", limits.processes),
    ];
    if let Some(mapped) = mapped_bytes()
        && mapped >= limits.address_space
    {
        return Err(JailError::InvalidSpec(format!(
            "RLIMIT_AS of {} bytes is below the {mapped} bytes this process has mapped already",
            limits.address_space
        )));
    }
    // A write past RLIMIT_FSIZE fails with EFBIG rather than killing the VMM.
    sys::set_disposition(libc::SIGXFSZ, libc::SIG_IGN)
        .map_err(|e| JailError::syscall("signal(SIGXFSZ, SIG_IGN)", e))?;
    for (resource, resource_name, name, wanted) in table {
        let set = set_limit(resource, resource_name, wanted)?;
        let mut detail = format!("{resource_name} {set}");
        if set < wanted {
            detail.push_str(&format!(" (asked {wanted}; the inherited hard limit is lower)"));
        }
        if resource == libc::RLIMIT_FSIZE {
            detail.push_str("; SIGXFSZ ignored, a write past it fails with EFBIG");
        }
        report.push(Measure::applied(name, detail));
    }
    Ok(())
}

/// The address space this process has mapped now (`/proc/self/statm`),
/// if `/proc` can tell.
fn mapped_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().next()?.parse().ok()?;
    Some(pages.saturating_mul(PAGE_SIZE))
}

/// Sets `resource` to `min(wanted, current hard)`, soft and hard; returns
/// the value set.
fn set_limit(resource: libc::__rlimit_resource_t, name: &'static str, wanted: u64) -> Result<u64, JailError> {
    let rlimit_error = |source| JailError::Rlimit { resource: name, value: wanted, source };
    let (_, hard) = sys::getrlimit(resource).map_err(rlimit_error)?;
    let value = wanted.min(hard);
    sys::setrlimit(resource, value, value).map_err(rlimit_error)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_space_is_guest_memory_plus_overhead() {
        let memory = 64 * MIB;
        assert_eq!(address_space_for(memory, 0), memory + VMM_BASE_ADDRESS_SPACE);
        assert_eq!(address_space_for(memory, 3), memory + VMM_BASE_ADDRESS_SPACE + 3 * PER_THREAD_ADDRESS_SPACE);
    }

    #[test]
    fn address_space_covers_the_measured_peak() {
        // `ward run idle --memory 64`: VmPeak 224,128 KiB with 3 threads.
        assert!(address_space_for(64 * MIB, 3) > 224_128 * 1024);
    }

    #[test]
    fn address_space_saturates_instead_of_overflowing() {
        assert_eq!(address_space_for(u64::MAX, DEFAULT_THREADS), u64::MAX);
    }

    #[test]
    fn for_guest_uses_the_defaults() {
        let l = JailLimits::for_guest(256 * MIB);
        assert_eq!(l.address_space, address_space_for(256 * MIB, DEFAULT_THREADS));
        assert_eq!(l.file_size, DEFAULT_FILE_SIZE);
        assert_eq!(l.open_files, DEFAULT_OPEN_FILES);
        assert_eq!(l.processes, DEFAULT_UID_TASKS);
    }
}
