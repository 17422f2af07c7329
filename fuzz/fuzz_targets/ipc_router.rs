//! Fuzz target `ipc_router`: two hostile guests' packets, drained receive
//! queues of any size, answers and ticks against the IPC router's core.
//! What it checks and its input layout: `ward_fuzz::router`
//! (fuzz/src/router.rs); seeds: fuzz/seeds/; dictionary: ipc_router.dict;
//! how to run it: docs/FUZZING.md, e.g. (in `fuzz/`)
//!
//! ```sh
//! cargo fuzz run --sanitizer none ipc_router corpus/ipc_router seeds/ipc_router -- -dict=ipc_router.dict -max_len=8192
//! ```

#![no_main]

ward_fuzz::symbolizer!();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ward_fuzz::router::run(data);
});
