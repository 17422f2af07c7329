//! Measures, in ring 3: the system-call round trip (`null`), reading the
//! time stamp counter (what a ring-3 clock would cost), and spawning and
//! reaping a process.

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

    // `rdtsc` in ring 3 (CR4.TSD is clear): does the nested host let it
    // run natively, or does each one exit?
    const READS: u64 = 100_000;
    let start = sys::clock_ns();
    for _ in 0..READS {
        // SAFETY: `rdtsc` only reads the counter; ring 3 may use it while
        // CR4.TSD is clear, which Ward's kernel never sets.
        core::hint::black_box(unsafe { core::arch::x86_64::_rdtsc() });
    }
    let per_read = (sys::clock_ns() - start) * 1000 / READS;
    println!("bench: rdtsc in ring 3: {}.{:03} ns ({READS} reads)", per_read / 1000, per_read % 1000);

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
