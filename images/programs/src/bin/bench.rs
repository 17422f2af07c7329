//! Measures, in ring 3: the system-call round trip (`null`), and spawning
//! and reaping a process.

#![no_std]
#![no_main]

use ward_rt::{println, sys};

ward_rt::entry!(main);

fn main(_args: &[u8]) -> i32 {
    const CALLS: u64 = 2000;
    let start = sys::clock_ns();
    for _ in 0..CALLS {
        sys::null();
    }
    let per_call = (sys::clock_ns() - start) / CALLS;
    println!("bench: syscall round trip: {per_call} ns ({CALLS} null calls)");

    const SPAWNS: u64 = 50;
    let start = sys::clock_ns();
    for _ in 0..SPAWNS {
        if sys::spawn("true", b"", None).and_then(sys::wait).is_err() {
            return 1;
        }
    }
    let per_spawn = (sys::clock_ns() - start) / SPAWNS;
    println!("bench: spawn + wait of a process: {} us ({SPAWNS} runs)", per_spawn / 1000);
    0
}
