//! Exits at once with 0: the smallest process.

#![no_std]
#![no_main]

ward_rt::entry!(main);

fn main(_args: &[u8]) -> i32 {
    0
}
