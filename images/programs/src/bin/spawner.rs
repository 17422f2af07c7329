//! Spawns and reaps `N` (default 1000) short-lived processes, one at a
//! time, and checks that free memory comes back to where it started.

#![no_std]
#![no_main]

use ward_programs::{arg, parse_u64};
use ward_rt::{println, sys};

ward_rt::entry!(main);

/// Frames the kernel may keep (its heap and bookkeeping grow slightly).
const TOLERANCE: u64 = 8;

fn main(args: &[u8]) -> i32 {
    let n = arg(args, 0).and_then(parse_u64).unwrap_or(1000);
    let Ok(before) = sys::meminfo() else { return 1 };
    let start = sys::clock_ns();
    for i in 0..n {
        match sys::spawn("true", b"", None).and_then(sys::wait) {
            Ok(sys::Status::Exited(0)) => {}
            other => {
                println!("spawner: process {i} ended badly: {other:?}");
                return 1;
            }
        }
    }
    let elapsed = sys::clock_ns() - start;
    let Ok(after) = sys::meminfo() else { return 1 };
    println!(
        "spawner: {n} processes spawned and reaped in {} ms ({} us each); free frames {} before, {} after",
        elapsed / 1_000_000,
        elapsed / n.max(1) / 1000,
        before.free_frames,
        after.free_frames
    );
    i32::from(before.free_frames.abs_diff(after.free_frames) > TOLERANCE)
}
