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
