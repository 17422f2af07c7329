//! Draws entropy from the host (virtio-rng) and checks it looks random.

#![no_std]
#![no_main]

use ward_rt::{println, sys};

ward_rt::entry!(main);

fn main(_args: &[u8]) -> i32 {
    let mut a = [0u8; 64];
    let mut b = [0u8; 64];
    if let Err(e) = sys::getrandom(&mut a).and_then(|()| sys::getrandom(&mut b)) {
        println!("entropy: getrandom failed: {}", e.as_str());
        return 1;
    }
    let ones: u32 = a.iter().chain(&b).map(|x| x.count_ones()).sum();
    println!("entropy: 128 bytes, {ones} of 1024 bits set, first {:02x}{:02x}{:02x}{:02x}", a[0], a[1], a[2], a[3]);
    // Two draws that agree, or a bit count far from half, are not random.
    let plausible = a != b && (384..=640).contains(&ones);
    println!("entropy: {}", if plausible { "looks random" } else { "NOT RANDOM" });
    i32::from(!plausible)
}
