//! Spins for ever and never looks for a stop request: a compartment that
//! ignores `ward stop`, so its VMM is killed at the stop's deadline.

#![no_std]
#![no_main]

use ward_programs::burn;
use ward_rt::println;

ward_rt::entry!(main);

fn main(_args: &[u8]) -> i32 {
    println!("busy: spinning, deaf to stop requests");
    let mut acc = 0u64;
    loop {
        acc ^= burn(1_000_000);
        // Keep the work observable so it is not optimised away.
        if acc == 0xdead_beef {
            return 1;
        }
    }
}
