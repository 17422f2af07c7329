//! Fuzz target `virtio_mmio_registers`: register access sequences against
//! the virtio-mmio transport with an rng, console or block device behind
//! it, optionally after a driver handshake the target makes itself. What
//! it checks and its input layout: `ward_fuzz::mmio` (fuzz/src/mmio.rs);
//! seeds: fuzz/seeds/; how to run it: docs/FUZZING.md, e.g. (in `fuzz/`)
//!
//! ```sh
//! cargo fuzz run --sanitizer none virtio_mmio_registers corpus/virtio_mmio_registers seeds/virtio_mmio_registers -- -max_len=16384
//! ```

#![no_main]

ward_fuzz::symbolizer!();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ward_fuzz::mmio::run(data);
});
