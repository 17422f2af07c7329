//! Prints the compartment's processes and memory (the `ps` and `meminfo`
//! system calls).

#![no_std]
#![no_main]

use ward_abi::syscall::{ProcessInfo, ProcessState};
use ward_rt::{println, sys};

ward_rt::entry!(main);

fn main(_args: &[u8]) -> i32 {
    let mut table = [ProcessInfo::default(); 64];
    let Ok(count) = sys::ps(&mut table) else {
        println!("ps: the ps system call failed");
        return 1;
    };
    println!("  PID PARENT STATE  PRI    CPU(us)  PAGES NAME");
    for p in &table[..count.min(table.len())] {
        let state = ProcessState::from_raw(p.state).map_or("?", ProcessState::as_str);
        let len = p.name.iter().position(|&b| b == 0).unwrap_or(p.name.len());
        let name = core::str::from_utf8(&p.name[..len]).unwrap_or("?");
        println!(
            "{:>5} {:>6} {:<6} {:>3} {:>10} {:>6} {}",
            p.pid,
            p.parent,
            state,
            p.priority,
            p.cpu_ns / 1000,
            p.pages,
            name
        );
    }
    match sys::meminfo() {
        Ok(m) => {
            println!(
                "memory: {} of {} frames free ({} KiB of {} KiB); kernel heap {} of {} KiB used",
                m.free_frames,
                m.total_frames,
                m.free_frames * 4,
                m.total_frames * 4,
                m.heap_used / 1024,
                m.heap_size / 1024
            );
            0
        }
        Err(e) => {
            println!("ps: meminfo failed: {}", e.as_str());
            1
        }
    }
}
