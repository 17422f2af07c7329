//! Writes into kernel memory: the kernel must kill this process.

#![no_std]
#![no_main]

ward_rt::entry!(main);

fn main(_args: &[u8]) -> i32 {
    let kernel_text = 0xffff_ffff_8010_0000u64 as *mut u64;
    // SAFETY: not sound, on purpose: the page is supervisor-only and this
    // store must fault.
    unsafe { core::ptr::write_volatile(kernel_text, 0xdead_beef) };
    ward_rt::println!("bad-kernel-write: the write went through!");
    2
}
