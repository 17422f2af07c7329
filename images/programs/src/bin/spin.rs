//! CPU-bound work that never yields: `spin NAME LINES [ROUNDS]` prints
//! `NAME i` after each chunk of busy work, for i in 1..=LINES.

#![no_std]
#![no_main]

use ward_programs::{arg, burn, parse_u64};
use ward_rt::println;

ward_rt::entry!(main);

fn main(args: &[u8]) -> i32 {
    let name = arg(args, 0).and_then(|n| core::str::from_utf8(n).ok()).unwrap_or("spin");
    let lines = arg(args, 1).and_then(parse_u64).unwrap_or(5);
    let rounds = arg(args, 2).and_then(parse_u64).unwrap_or(20_000_000);
    let mut acc = 0u64;
    for i in 1..=lines {
        acc ^= burn(rounds);
        println!("{name} {i}");
    }
    // Keep the work observable so it is not optimised away.
    i32::from(acc == 0xdead_beef)
}
