//! Executes a privileged instruction in ring 3: the kernel must kill this
//! process.

#![no_std]
#![no_main]

ward_rt::entry!(main);

fn main(_args: &[u8]) -> i32 {
    // SAFETY: not sound, on purpose: `hlt` in ring 3 raises #GP.
    unsafe { core::arch::asm!("hlt") };
    2
}
