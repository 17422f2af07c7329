//! Passes bad pointers and lengths to system calls: each must fail with an
//! error code while the kernel keeps running.

#![no_std]
#![no_main]

use ward_abi::syscall::{self as abi, Error};
use ward_rt::{println, sys};

ward_rt::entry!(main);

fn main(_args: &[u8]) -> i32 {
    let text = main as *const () as u64;
    let cases: [(&str, u64, [u64; 5], Error); 8] = [
        ("write from kernel memory", abi::WRITE, [0xffff_ffff_8010_0000, 16, 0, 0, 0], Error::BadAddress),
        ("write from unmapped memory", abi::WRITE, [0x5000_0000, 16, 0, 0, 0], Error::BadAddress),
        ("write with a huge length", abi::WRITE, [text, u64::MAX, 0, 0, 0], Error::BadArgument),
        (
            "write one byte over the most",
            abi::WRITE,
            [text, abi::MAX_WRITE_LEN as u64 + 1, 0, 0, 0],
            Error::BadArgument,
        ),
        ("write wrapping the address space", abi::WRITE, [u64::MAX - 8, 64, 0, 0, 0], Error::BadAddress),
        ("spawn with a kernel name pointer", abi::SPAWN, [0xffff_8000_0000_1000, 4, 0, 0, 0xff], Error::BadAddress),
        ("meminfo into read-only code", abi::MEMINFO, [text, 0, 0, 0, 0], Error::BadAddress),
        ("unknown system call", 999, [0; 5], Error::BadSyscall),
    ];
    let mut ok = true;
    for (what, nr, args, expected) in cases {
        let got = sys::raw(nr, args);
        let pass = got == Err(expected);
        ok &= pass;
        match got {
            Err(e) => println!("badptr: {what}: error {} ({})", e as i64, e.as_str()),
            Ok(v) => println!("badptr: {what}: succeeded with {v}!"),
        }
    }
    // Still alive, and the kernel still answers.
    println!("badptr: still running as process {}; {}", sys::getpid(), if ok { "all refused" } else { "UNEXPECTED" });
    i32::from(!ok)
}
