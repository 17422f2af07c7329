//! Sequential throughput of block device 0 from ring 3: `diskbench SIZE_KIB`
//! writes then reads the whole device with that request size, and prints
//! MiB/s. The data lands in the program's pages in place (no copy in ring 0).

#![no_std]
#![no_main]

extern crate alloc;

use ward_programs::{arg, parse_u64};
use ward_rt::{println, sys};

ward_rt::entry!(main);

fn main(args: &[u8]) -> i32 {
    let request = usize::try_from(arg(args, 0).and_then(parse_u64).unwrap_or(1024) * 1024).unwrap_or(1 << 20);
    let Ok(info) = sys::blk_info(0) else {
        println!("diskbench: no block device 0");
        return 1;
    };
    let total = info.sectors * 512;
    let mut buf = alloc::vec![0x5au8; request];
    for (what, write) in [("write", true), ("read", false)] {
        let start = sys::clock_ns();
        let mut at = 0u64;
        while at + request as u64 <= total {
            let result = if write { sys::blk_write(0, at / 512, &buf) } else { sys::blk_read(0, at / 512, &mut buf) };
            if let Err(e) = result {
                println!("diskbench: {what} failed at byte {at}: {}", e.as_str());
                return 1;
            }
            at += request as u64;
        }
        if write && sys::blk_flush(0).is_err() {
            return 1;
        }
        let ns = (sys::clock_ns() - start).max(1);
        let mib_s = at * 1_000_000_000 / ns / (1 << 20);
        println!(
            "diskbench: {what} {} MiB in {} ms with {} KiB requests: {mib_s} MiB/s",
            at >> 20,
            ns / 1_000_000,
            request / 1024
        );
    }
    0
}
