//! Exercises block device 0: its size and id, then writes a pattern, flushes,
//! reads it back and compares; on a read-only disk, checks writes are
//! refused.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;

use ward_programs::fnv1a;
use ward_rt::{Error, println, sys};

ward_rt::entry!(main);

fn main(_args: &[u8]) -> i32 {
    let info = match sys::blk_info(0) {
        Ok(info) => info,
        Err(e) => {
            println!("disk: no block device 0: {}", e.as_str());
            return 1;
        }
    };
    let id = sys::blk_id(0).unwrap_or([b'?'; 20]);
    let id_len = id.iter().position(|&b| b == 0).unwrap_or(id.len());
    println!(
        "disk: {} sectors ({} KiB), {}, id {:?}",
        info.sectors,
        info.sectors / 2,
        if info.read_only != 0 { "read-only" } else { "read-write" },
        core::str::from_utf8(&id[..id_len]).unwrap_or("?")
    );
    let mut first = vec![0u8; 4096];
    if let Err(e) = sys::blk_read(0, 0, &mut first) {
        println!("disk: read failed: {}", e.as_str());
        return 1;
    }
    println!("disk: first 4 KiB checksum {:#x}", fnv1a(&first));
    if info.read_only != 0 {
        return match sys::blk_write(0, 0, &first) {
            Err(Error::ReadOnly) => {
                println!("disk: writing is refused: read-only");
                0
            }
            other => {
                println!("disk: writing a read-only disk gave {other:?}");
                1
            }
        };
    }
    // A pattern over 64 KiB at the last sectors, then back again.
    let len: usize = 64 * 1024;
    let sector = info.sectors - (len as u64) / 512;
    let pattern: alloc::vec::Vec<u8> = (0..len).map(|i| (i * 31 % 251).to_le_bytes()[0]).collect();
    let mut back = vec![0u8; len];
    let result = sys::blk_write(0, sector, &pattern)
        .and_then(|()| sys::blk_flush(0))
        .and_then(|()| sys::blk_read(0, sector, &mut back));
    if let Err(e) = result {
        println!("disk: write/flush/read failed: {}", e.as_str());
        return 1;
    }
    let ok = back == pattern;
    println!(
        "disk: wrote, flushed and read back 64 KiB at sector {sector}: {}",
        if ok { "identical" } else { "DIFFERENT" }
    );
    let past_end = sys::blk_read(0, info.sectors, &mut back[..512]);
    println!("disk: reading past the end: {past_end:?}");
    i32::from(!ok || past_end != Err(Error::BadArgument))
}
