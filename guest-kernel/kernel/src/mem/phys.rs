//! Access to physical memory by physical address.
//!
//! The kernel reaches every frame through its direct map; host tests use a
//! map of fake frames instead. Allocators and page-table code are written
//! against [`PhysMemory`] so both run the same logic.

/// Page size.
pub const PAGE_SIZE: u64 = 4096;

/// Reading and writing physical memory a word at a time.
pub trait PhysMemory {
    /// Reads the 64-bit word at `phys` (8-byte aligned).
    fn read_u64(&self, phys: u64) -> u64;
    /// Writes the 64-bit word at `phys` (8-byte aligned).
    fn write_u64(&mut self, phys: u64, value: u64);
    /// Fills the frame at `phys` with zeros.
    fn zero_frame(&mut self, phys: u64);
    /// Fills every frame of `frames` with zeros.
    fn zero_frames(&mut self, frames: &[u64]) {
        for &frame in frames {
            self.zero_frame(frame);
        }
    }
    /// Copies the frame at `src` to the frame at `dst`.
    fn copy_frame(&mut self, dst: u64, src: u64);
    /// Copies `len` bytes from `src` to `dst` (within frames, no overlap).
    fn copy_bytes(&mut self, dst: u64, src: u64, len: u64);
}

/// Physical memory through the kernel's direct map.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectMap;

// Compiled on the host too (the kernel's state types name it), but only
// ever called in the guest. Bulk work goes to the host's page service:
// ring-0 byte copies cost ~0.8 µs a byte on our hosts.
impl PhysMemory for DirectMap {
    fn read_u64(&self, phys: u64) -> u64 {
        // SAFETY: every physical frame the kernel names is RAM covered by the
        // direct map; callers pass 8-byte aligned addresses.
        unsafe { core::ptr::read_volatile(crate::addr::phys_to_virt(phys) as *const u64) }
    }

    fn write_u64(&mut self, phys: u64, value: u64) {
        // SAFETY: as for `read_u64`; the frame belongs to the caller.
        unsafe { core::ptr::write_volatile(crate::addr::phys_to_virt(phys) as *mut u64, value) }
    }

    fn zero_frame(&mut self, phys: u64) {
        self.zero_frames(&[phys]);
    }

    fn zero_frames(&mut self, frames: &[u64]) {
        for &frame in frames {
            super::host::zero(frame, PAGE_SIZE);
        }
        super::host::submit();
    }

    fn copy_frame(&mut self, dst: u64, src: u64) {
        self.copy_bytes(dst, src, PAGE_SIZE);
    }

    fn copy_bytes(&mut self, dst: u64, src: u64, len: u64) {
        super::host::copy(dst, src, len);
        super::host::submit();
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! Fake physical memory for host tests: frames on the heap.
    use super::*;
    use std::collections::HashMap;

    #[derive(Default, Debug)]
    pub(crate) struct FakeMemory {
        pub(crate) frames: HashMap<u64, Box<[u64; 512]>>,
    }

    impl FakeMemory {
        fn frame(&mut self, phys: u64) -> &mut [u64; 512] {
            self.frames.entry(phys & !(PAGE_SIZE - 1)).or_insert_with(|| Box::new([0; 512]))
        }
    }

    impl PhysMemory for FakeMemory {
        fn read_u64(&self, phys: u64) -> u64 {
            self.frames.get(&(phys & !(PAGE_SIZE - 1))).map_or(0, |f| f[((phys % PAGE_SIZE) / 8) as usize])
        }
        fn write_u64(&mut self, phys: u64, value: u64) {
            self.frame(phys)[((phys % PAGE_SIZE) / 8) as usize] = value;
        }
        fn zero_frame(&mut self, phys: u64) {
            *self.frame(phys) = [0; 512];
        }
        fn copy_frame(&mut self, dst: u64, src: u64) {
            let copy = *self.frame(src);
            *self.frame(dst) = copy;
        }
        fn copy_bytes(&mut self, dst: u64, src: u64, len: u64) {
            // Word-granular is enough for the tests.
            for off in (0..len).step_by(8) {
                let v = self.read_u64(src + off);
                self.write_u64(dst + off, v);
            }
        }
    }
}
