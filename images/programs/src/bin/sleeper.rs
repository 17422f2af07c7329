//! Sleeps, forever: an idle compartment.

#![no_std]
#![no_main]

use ward_rt::{println, sys};

ward_rt::entry!(main);

fn main(_args: &[u8]) -> i32 {
    println!("sleeper: sleeping");
    loop {
        sys::sleep_ns(3_600_000_000_000);
    }
}
