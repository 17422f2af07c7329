//! Guest programs on the real kernel, on /dev/kvm: the demonstrations of
//! scheduling, fault isolation, memory reclaim, checked system calls and
//! IPC. Each boots a built-in image and checks what a user would see on
//! the console and the compartment's exit code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use ward_abi::fault::{Access, Fault};
use ward_tests::{boot, config_with_image};
use ward_vmm::GuestExit;

fn run(image: &str) -> String {
    let (outcome, console) = boot(&config_with_image(image, image, 32, ""));
    assert_eq!(outcome.exit, GuestExit::PowerOff(0), "image {image} failed; console:\n{console}");
    console
}

/// Lines that are exactly `<name> <n>`: the spinners' progress.
fn progress<'a>(console: &'a str, names: &[&str]) -> Vec<&'a str> {
    console
        .lines()
        .filter(|l| l.split_once(' ').is_some_and(|(n, i)| names.contains(&n) && i.parse::<u32>().is_ok()))
        .map(|l| l.split_once(' ').map_or(l, |(n, _)| n))
        .collect()
}

#[test]
fn hello_runs_in_ring_3_and_lists_processes_and_memory() {
    let console = run("hello");
    assert!(console.contains("hello from ring 3: process 1"), "{console}");
    let table: Vec<&str> = console.lines().skip_while(|l| !l.contains("PID PARENT STATE")).collect();
    assert!(table.iter().any(|l| l.ends_with(" hello") && l.contains(" wait ")), "{console}");
    assert!(table.iter().any(|l| l.ends_with(" ps") && l.contains(" run ")), "{console}");
    assert!(console.lines().any(|l| l.starts_with("memory: ") && l.contains(" frames free")), "{console}");
}

#[test]
fn cpu_bound_programs_that_never_yield_both_make_progress() {
    let console = run("sched-demo");
    let order = progress(&console, &["a", "b"]);
    assert_eq!(order.iter().filter(|n| **n == "a").count(), 6, "{console}");
    assert_eq!(order.iter().filter(|n| **n == "b").count(), 6, "{console}");
    // Preemption interleaves them: the output is not all of one, then all
    // of the other.
    let switches = order.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches >= 3, "no interleaving ({switches} switches): {order:?}");
}

#[test]
fn higher_priority_program_runs_first() {
    let console = run("sched-demo");
    let order = progress(&console, &["high", "low"]);
    assert_eq!(order, ["high", "high", "high", "low", "low", "low"], "{console}");
}

/// Asserts that `fault` matches `pattern` (fields not named are any),
/// printing both when it does not: the faults tests compare data, not the
/// kernel's text.
macro_rules! assert_fault {
    ($fault:expr, $pattern:pat) => {
        match $fault {
            $pattern => {}
            other => panic!("fault {other:?} is not {}", stringify!($pattern)),
        }
    };
}

/// The fault `faults` reported for `program`, read back from its text.
fn fault_of(console: &str, program: &str) -> Fault {
    let prefix = format!("faults: {program} killed: ");
    let line = console.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("{program}: {console}"));
    line.parse().unwrap_or_else(|_| panic!("not a fault: {line:?}"))
}

#[test]
fn misbehaving_programs_are_killed_with_their_fault_while_others_finish() {
    let console = run("fault-demo");
    assert_fault!(
        fault_of(&console, "bad-kernel-write"),
        Fault::Memory { address: 0xffff_ffff_8010_0000, access: Access::Write, present: true, .. }
    );
    assert_fault!(
        fault_of(&console, "bad-jump"),
        Fault::Memory { address: 0xdead_0000, rip: 0xdead_0000, access: Access::Execute, present: false }
    );
    assert_fault!(fault_of(&console, "bad-privileged"), Fault::Exception { vector: 13, .. });
    // The kernel's own report, for people, says the same.
    assert!(console.contains("faulting address 0xffffffff80100000"), "{console}");
    assert!(console.contains("survivor 2"), "the well-behaved program did not finish:\n{console}");
    assert!(console.contains("faults: spin exited: 0"), "{console}");
    assert!(console.contains("faults: all ended as expected"), "{console}");
}

#[test]
fn a_thousand_short_lived_processes_give_their_memory_back() {
    let console = run("spawn-demo");
    let line = console.lines().find(|l| l.starts_with("spawner: 1000 processes")).expect("no spawner summary");
    let numbers: Vec<u64> =
        line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    let (before, after) = (numbers[numbers.len() - 2], numbers[numbers.len() - 1]);
    assert!(before.abs_diff(after) <= 8, "free frames {before} before, {after} after: {line}");
}

#[test]
fn bad_pointers_and_lengths_get_error_codes_and_the_kernel_runs_on() {
    let console = run("badptr-demo");
    for (what, error) in [
        ("write from kernel memory", "bad address"),
        ("write from unmapped memory", "bad address"),
        ("write with a huge length", "bad argument"),
        ("write one byte over the most", "bad argument"),
        ("write wrapping the address space", "bad address"),
        ("spawn with a kernel name pointer", "bad address"),
        ("meminfo into read-only code", "bad address"),
        ("unknown system call", "no such system call"),
    ] {
        let line = console.lines().find(|l| l.starts_with(&format!("badptr: {what}:"))).unwrap_or_default();
        assert!(line.contains(&format!("({error})")), "{what}: {line:?}\n{console}");
    }
    assert!(console.contains("badptr: still running as process 1; all refused"), "{console}");
    assert!(!console.contains("kernel panic"), "{console}");
}

#[test]
fn processes_exchange_messages_share_pages_and_time_out() {
    let console = run("ipc-demo");
    assert!(console.contains("ipc-ping: 100 request/reply round trips"), "{console}");
    assert!(console.contains("16384 shared bytes checksummed"), "{console}");
    assert!(console.contains("ipc-ping: an empty receive timed out after"), "{console}");
}

#[test]
fn killed_init_gives_the_compartment_a_distinct_exit_code() {
    // A compartment whose first program faults exits with EXIT_INIT_KILLED.
    let mut config = config_with_image("init-killed", "fault-demo", 32, "");
    for m in &mut config.modules {
        m.start_at_boot = m.name == "bad-jump";
    }
    let (outcome, console) = boot(&config);
    assert_eq!(outcome.exit, GuestExit::PowerOff(ward_abi::debug_console::EXIT_INIT_KILLED), "{console}");
}

#[test]
fn kernel_prints_process_table_and_memory_with_ward_stats() {
    let (outcome, console) = boot(&config_with_image("stats", "hello", 32, "ward.stats"));
    assert_eq!(outcome.exit, GuestExit::PowerOff(0));
    let tail: Vec<&str> = console.lines().skip_while(|l| !l.starts_with("  PID  PARENT STATE")).collect();
    assert!(tail.iter().any(|l| l.trim_start().starts_with("memory: ") && l.contains(" frames free")), "{console}");
}
