//! The kernel heap: `linked_list_allocator` over a contiguous run of frames
//! taken at boot, reached through the direct map.
//!
//! Kernel data (the process table, message queues, FPU areas) lives here.
//! The heap does not grow: its size is fixed at boot from the memory size,
//! and an allocation failure is a kernel panic, reported like any other.

use super::phys::PAGE_SIZE;

/// Heap size for a compartment of `memory_size` bytes: 1/32 of it, between
/// 256 KiB and 16 MiB.
pub const fn heap_size(memory_size: u64) -> u64 {
    let size = memory_size / 32;
    let size = if size < 256 * 1024 { 256 * 1024 } else { size };
    let size = if size > 16 << 20 { 16 << 20 } else { size };
    size & !(PAGE_SIZE - 1)
}

#[cfg(all(feature = "guest", not(test)))]
mod global {
    use linked_list_allocator::LockedHeap;
    use ward_abi::width::usize_from;

    #[global_allocator]
    static HEAP: LockedHeap = LockedHeap::empty();

    /// Hands the heap its memory.
    ///
    /// # Safety
    /// `start..start + size` is mapped, writable, unused memory that stays
    /// reserved for the heap; called once, before the first allocation.
    pub(crate) unsafe fn init(start: u64, size: u64) {
        // SAFETY: the caller guarantees the range; `LockedHeap::init` only
        // writes a free-block header at its start.
        unsafe { HEAP.lock().init(start as *mut u8, usize_from(size)) };
    }

    /// (used, size) in bytes.
    pub(crate) fn usage() -> (u64, u64) {
        let heap = HEAP.lock();
        (heap.used() as u64, heap.size() as u64)
    }
}

/// Gives the global allocator its memory.
///
/// # Safety
/// As for the global allocator's init: `start..start + size` is mapped,
/// writable and reserved for the heap; called once.
pub unsafe fn init(start: u64, size: u64) {
    #[cfg(all(feature = "guest", not(test)))]
    // SAFETY: forwarded from the caller.
    unsafe {
        global::init(start, size)
    };
    let _ = (start, size);
}

/// Bytes of heap in use and in all.
pub fn usage() -> (u64, u64) {
    #[cfg(all(feature = "guest", not(test)))]
    return global::usage();
    #[cfg(not(all(feature = "guest", not(test))))]
    (0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_scales_with_memory_within_bounds() {
        assert_eq!(heap_size(8 << 20), 256 * 1024);
        assert_eq!(heap_size(64 << 20), 2 << 20);
        assert_eq!(heap_size(3 << 30), 16 << 20);
    }
}
