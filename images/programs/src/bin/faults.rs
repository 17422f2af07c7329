//! Fault demonstration: three programs misbehave (write kernel memory, jump
//! to an unmapped address, execute a privileged instruction) and are
//! killed; a well-behaved one finishes. For each, the fault the kernel
//! recorded (`wait` returns it) is printed as `faults: NAME killed: FAULT`
//! in `ward_abi::fault::Fault`'s text form, which the host's tests read
//! back. Exits 0 if each ended as expected.

#![no_std]
#![no_main]

use ward_rt::println;
use ward_rt::sys::{self, Access, Fault, Status};

ward_rt::entry!(main);

/// How a case must end.
#[derive(Clone, Copy)]
enum Expect {
    /// Killed for a store to memory it may not write.
    Write,
    /// Killed for fetching an instruction where nothing is mapped.
    Fetch,
    /// Killed by a general protection fault.
    Protection,
    /// Exits 0.
    Success,
}

fn as_expected(status: Status, expect: Expect) -> bool {
    matches!(
        (status, expect),
        (Status::Killed(Fault::Memory { access: Access::Write, .. }), Expect::Write)
            | (Status::Killed(Fault::Memory { access: Access::Execute, .. }), Expect::Fetch)
            | (Status::Killed(Fault::Exception { vector: 13, .. }), Expect::Protection)
            | (Status::Exited(0), Expect::Success)
    )
}

fn main(_args: &[u8]) -> i32 {
    let cases: [(&str, &[u8], Expect); 4] = [
        ("bad-kernel-write", b"", Expect::Write),
        ("bad-jump", b"", Expect::Fetch),
        ("bad-privileged", b"", Expect::Protection),
        ("spin", b"survivor 2 1000000", Expect::Success),
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
    for (pid, (program, _, expect)) in pids.iter().zip(cases.iter()) {
        match sys::wait(*pid) {
            Ok(status) => {
                match status {
                    Status::Killed(fault) => println!("faults: {program} killed: {fault}"),
                    Status::Exited(code) => println!("faults: {program} exited: {code}"),
                }
                ok &= as_expected(status, *expect);
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
