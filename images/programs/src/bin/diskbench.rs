//! Sequential throughput of block device 0 from ring 3: for 64 KiB and
//! 1 MiB requests it writes the whole device, flushes, then reads it all
//! back, and prints MiB/s; then it times one-sector reads, the cost of a
//! request apart from its data. The device reads and writes the program's
//! own pages (no copy in ring 0).

#![no_std]
#![no_main]

extern crate alloc;

use ward_rt::{println, sys};

ward_rt::entry!(main);

fn main(_args: &[u8]) -> i32 {
    let Ok(info) = sys::blk_info(0) else {
        println!("diskbench: no block device 0");
        return 1;
    };
    let total = info.sectors * 512;
    for request in [64 * 1024usize, 1024 * 1024] {
        let mut buf = alloc::vec![0x5au8; request];
        for (what, write) in [("write", true), ("read", false)] {
            let start = sys::clock_ns();
            let mut at = 0u64;
            while at + request as u64 <= total {
                let result =
                    if write { sys::blk_write(0, at / 512, &buf) } else { sys::blk_read(0, at / 512, &mut buf) };
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
                "diskbench: {what} {} KiB requests: {} MiB in {} ms: {mib_s} MiB/s",
                request / 1024,
                at >> 20,
                ns / 1_000_000
            );
        }
    }
    // One-sector requests: what a request costs apart from moving data.
    let mut sector = [0u8; 512];
    let rounds = 200u64.min(info.sectors);
    let start = sys::clock_ns();
    for i in 0..rounds {
        if sys::blk_read(0, i, &mut sector).is_err() {
            println!("diskbench: 512-byte read of sector {i} failed");
            return 1;
        }
    }
    let us = (sys::clock_ns() - start) / 1000 / rounds.max(1);
    println!("diskbench: 512-byte read round trip: {us} us ({rounds} requests)");
    0
}
