//! The bodies of Ward's fuzz targets, and their seeds.
//!
//! Each module holds one target's `run`, which the libFuzzer binary in
//! `fuzz_targets/` calls on every input, and which returns what the input
//! reached (requests completed, the status the driver got to, the calls
//! the router decided). The seed generator (`examples/seeds.rs`) writes
//! the inputs of [`seeds`] to `fuzz/seeds/<target>/`, and the tests
//! (`tests/seeds.rs`) run each checked-in seed through the same `run` and
//! assert that it got where it was made to go. docs/FUZZING.md says how
//! to run them.

pub mod block;
pub mod image;
pub mod mmio;
pub mod policy;
pub mod router;
pub mod seeds;
#[cfg(feature = "symbolize")]
pub mod symbolize;

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};

/// Byte `n` of sector `sector` of a fresh disk: every sector is filled
/// with its own byte, so data read from it says where it came from.
pub fn disk_byte(sector: u64) -> u8 {
    0xa0 ^ (sector as u8)
}

/// A fresh in-memory disk (memfd) of `sectors` 512-byte sectors, sector
/// `n` filled with [`disk_byte`]`(n)`. Each input gets its own, so no
/// input sees what another one wrote.
pub fn fresh_disk(sectors: u64) -> File {
    use std::os::unix::fs::FileExt;
    // SAFETY: a constant NUL-terminated name and no flags; the result is
    // checked before it is owned.
    let fd = unsafe { libc::memfd_create(c"ward-fuzz-disk".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create failed: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let content: Vec<u8> = (0..sectors).flat_map(|sector| [disk_byte(sector); 512]).collect();
    file.write_all_at(&content, 0).expect("filling the disk");
    file
}

/// A fresh in-memory file holding `bytes`, read from its start.
pub fn memory_file(bytes: &[u8]) -> File {
    use std::os::unix::fs::FileExt;
    // SAFETY: as in `fresh_disk`.
    let fd = unsafe { libc::memfd_create(c"ward-fuzz-input".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create failed: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all_at(bytes, 0).expect("filling the file");
    file
}

/// Defines, in a fuzz target built with `--features symbolize`, the two
/// functions libFuzzer looks for to name program counters.
#[macro_export]
macro_rules! symbolizer {
    () => {
        /// libFuzzer's `__sanitizer_symbolize_pc`: `pc` described by `fmt`.
        ///
        /// # Safety
        ///
        /// As libFuzzer calls it: `fmt` a C string, `out` `size` bytes.
        #[cfg(feature = "symbolize")]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn __sanitizer_symbolize_pc(
            pc: *mut ::std::ffi::c_void,
            fmt: *const ::std::ffi::c_char,
            out: *mut ::std::ffi::c_char,
            size: usize,
        ) {
            if fmt.is_null() {
                return;
            }
            // SAFETY: libFuzzer passes a NUL-terminated format.
            let format = unsafe { ::std::ffi::CStr::from_ptr(fmt) }.to_string_lossy();
            let text = $crate::symbolize::describe(pc as usize, &format);
            // SAFETY: libFuzzer passes a buffer of `size` bytes.
            unsafe { $crate::symbolize::write_c(&text, out, size) };
        }

        /// libFuzzer's `__sanitizer_get_module_and_offset_for_pc`: 1 and
        /// the module's path and `pc`'s offset in it, or 0.
        ///
        /// # Safety
        ///
        /// As libFuzzer calls it: `path` `size` bytes, `offset` writable.
        #[cfg(feature = "symbolize")]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn __sanitizer_get_module_and_offset_for_pc(
            pc: *mut ::std::ffi::c_void,
            path: *mut ::std::ffi::c_char,
            size: usize,
            offset: *mut *mut ::std::ffi::c_void,
        ) -> ::std::ffi::c_int {
            let Some((module, at)) = $crate::symbolize::module_and_offset(pc as usize) else { return 0 };
            // SAFETY: libFuzzer passes a buffer of `size` bytes.
            unsafe { $crate::symbolize::write_c(&module, path, size) };
            if !offset.is_null() {
                // SAFETY: libFuzzer passes a pointer to its `void *`.
                unsafe { *offset = at as *mut ::std::ffi::c_void };
            }
            1
        }
    };
}
