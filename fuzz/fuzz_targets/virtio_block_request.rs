//! Fuzz target `virtio_block_request`: the virtio-blk device against a
//! guest-written queue. What it checks and its input layout:
//! `ward_fuzz::block` (fuzz/src/block.rs); seeds: fuzz/seeds/; how to run
//! it: docs/FUZZING.md, e.g. (in `fuzz/`)
//!
//! ```sh
//! cargo fuzz run --sanitizer none virtio_block_request corpus/virtio_block_request seeds/virtio_block_request -- -max_len=65536
//! ```

#![no_main]

ward_fuzz::symbolizer!();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ward_fuzz::block::run(data);
});
