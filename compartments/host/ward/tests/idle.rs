//! An idle compartment (every program asleep) costs the host almost no CPU:
//! the kernel disarms its timer and halts the vCPU.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// utime + stime of `pid`, in clock ticks, from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn idle_compartment_uses_under_two_percent_of_a_core() {
    assert!(std::path::Path::new("/dev/kvm").exists(), "/dev/kvm is missing: this test needs it and never skips");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["run", "idle", "--image", "idle"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let asleep = lines.by_ref().map_while(Result::ok).any(|l| l.contains("sleeper: sleeping"));
    assert!(asleep, "the idle program never said it sleeps");

    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = u64::try_from(unsafe {
        libc_sysconf(2 /* _SC_CLK_TCK */)
    })
    .unwrap();
    let window = Duration::from_secs(3);
    let before = cpu_ticks(pid);
    let start = Instant::now();
    std::thread::sleep(window);
    let used = cpu_ticks(pid) - before;
    let elapsed = start.elapsed();
    child.kill().unwrap();
    let _ = child.wait();

    let used_secs = used as f64 / ticks_per_second as f64;
    let share = used_secs / elapsed.as_secs_f64();
    assert!(share < 0.02, "the idle compartment used {:.1}% of a core ({used} ticks in {elapsed:?})", share * 100.0);
}

unsafe extern "C" {
    #[link_name = "sysconf"]
    fn libc_sysconf(name: i32) -> i64;
}
