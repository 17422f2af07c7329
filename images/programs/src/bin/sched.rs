//! Scheduler demonstration: two CPU-bound programs of the same priority
//! share the CPU (their lines interleave); then a high-priority one runs
//! before a low-priority one started earlier.

#![no_std]
#![no_main]

use ward_rt::{println, sys};

ward_rt::entry!(main);

fn run(name: &str, args: &[u8], priority: u8) -> Option<sys::Pid> {
    match sys::spawn("spin", args, Some(priority)) {
        Ok(pid) => Some(pid),
        Err(e) => {
            println!("sched: cannot spawn {name}: {}", e.as_str());
            None
        }
    }
}

fn main(_args: &[u8]) -> i32 {
    println!("sched: phase 1: two spinners at priority 4");
    let a = run("a", b"a 6", 4);
    let b = run("b", b"b 6", 4);
    for pid in [a, b].into_iter().flatten() {
        let _ = sys::wait(pid);
    }
    println!("sched: phase 2: low (priority 6) started before high (priority 2)");
    let low = run("low", b"low 3", 6);
    let high = run("high", b"high 3", 2);
    for pid in [high, low].into_iter().flatten() {
        let _ = sys::wait(pid);
    }
    println!("sched: done");
    if a.is_some() && b.is_some() && low.is_some() && high.is_some() { 0 } else { 1 }
}
