//! Fault demonstration: three programs misbehave (write kernel memory, jump
//! to an unmapped address, execute a privileged instruction) and are
//! killed; a well-behaved one finishes. Exits 0 if each ended as expected.

#![no_std]
#![no_main]

use ward_rt::println;
use ward_rt::sys::{self, Status};

ward_rt::entry!(main);

fn main(_args: &[u8]) -> i32 {
    let cases: [(&str, &[u8], Status); 4] = [
        ("bad-kernel-write", b"", Status::Killed(14)),
        ("bad-jump", b"", Status::Killed(14)),
        ("bad-privileged", b"", Status::Killed(13)),
        ("spin", b"survivor 2 1000000", Status::Exited(0)),
    ];
    let mut pids = [0; 4];
    for (i, (program, args, _)) in cases.iter().enumerate() {
        match sys::spawn(program, args, None) {
            Ok(pid) => pids[i] = pid,
            Err(e) => {
                println!("faults: cannot spawn {program}: {}", e.as_str());
                return 1;
            }
        }
    }
    let mut ok = true;
    for (pid, (program, _, expected)) in pids.iter().zip(cases.iter()) {
        match sys::wait(*pid) {
            Ok(status) => {
                println!("faults: {program} ended: {status:?}");
                ok &= status == *expected;
            }
            Err(e) => {
                println!("faults: wait for {program} failed: {}", e.as_str());
                ok = false;
            }
        }
    }
    println!("faults: {}", if ok { "all ended as expected" } else { "UNEXPECTED" });
    i32::from(!ok)
}
