//! Jumps to an unmapped address: the kernel must kill this process.

#![no_std]
#![no_main]

ward_rt::entry!(main);

fn main(_args: &[u8]) -> i32 {
    // SAFETY: not sound, on purpose: nothing is mapped there and the
    // instruction fetch must fault.
    let wild: extern "C" fn() = unsafe { core::mem::transmute(0xdead_0000usize) };
    wild();
    2
}
