//! Booting the guest kernel on /dev/kvm: banner, boot stages, exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use ward_abi::debug_console::{EXIT_EXCEPTION, EXIT_PANIC};
use ward_tests::{boot, config};
use ward_vmm::GuestExit;

#[test]
fn kernel_prints_banner_and_stages_then_powers_off_with_zero() {
    let (outcome, console) = boot(&config("boot-ok", 48, "quiet log=1"));
    assert_eq!(outcome.exit, GuestExit::PowerOff(0), "console:\n{console}");
    let lines: Vec<&str> = console.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(concat!("Ward kernel ", env!("CARGO_PKG_VERSION"), " | memory 48 MiB | cmdline \"quiet log=1\"")),
        "console:\n{console}"
    );
    for stage in ["[boot] boot info: version 1,", "[boot] memory: ", "[boot] traps: IDT loaded", "[boot] ready after"] {
        assert!(lines.iter().any(|l| l.starts_with(stage)), "no stage line {stage:?} in:\n{console}");
    }
}

#[test]
fn usable_memory_matches_the_size_given() {
    let (outcome, console) = boot(&config("boot-mem", 16, ""));
    assert_eq!(outcome.exit, GuestExit::PowerOff(0));
    let line = console.lines().find(|l| l.starts_with("[boot] memory: ")).unwrap_or_default();
    let kib: u64 = line["[boot] memory: ".len()..].split(' ').next().unwrap_or("0").parse().unwrap_or(0);
    // 16 MiB less the boot area and the kernel image: a few hundred KiB.
    assert!(kib > 15 * 1024 && kib < 16 * 1024, "{line}");
}

#[test]
fn kernel_panic_reports_message_and_location_and_exits_non_zero() {
    let (outcome, console) = boot(&config("boot-panic", 16, "ward.panic"));
    assert_eq!(outcome.exit, GuestExit::PowerOff(EXIT_PANIC), "console:\n{console}");
    let panic_line = console.lines().find(|l| l.starts_with("kernel panic: ")).unwrap_or_default();
    assert!(panic_line.contains("panic requested by ward.panic on the command line"), "{console}");
    assert!(panic_line.contains(" at guest-kernel/kernel/src/start.rs:"), "{console}");
    assert!(!console.contains("[boot] ready"), "the kernel went on after panicking:\n{console}");
}

#[test]
fn kernel_page_fault_reports_address_and_rip() {
    let (outcome, console) = boot(&config("boot-fault", 16, "ward.fault"));
    assert_eq!(outcome.exit, GuestExit::PowerOff(EXIT_EXCEPTION), "console:\n{console}");
    assert!(console.contains("kernel panic: page fault (#PF) (vector 14"), "{console}");
    assert!(console.contains("faulting address 0x00007ffffffff000"), "{console}");
    assert!(console.contains("at rip 0xffffffff8"), "{console}");
}

#[test]
fn boot_timings_are_recorded_in_order() {
    let (outcome, _) = boot(&config("boot-timing", 16, ""));
    let t = outcome.timings;
    let (Some(created), Some(first), Some(line), Some(off)) =
        (t.vm_created, t.first_instruction, t.first_console_line, t.power_off)
    else {
        panic!("a milestone is missing: {t:?}");
    };
    assert!(created <= first && first <= line && line <= off, "{t:?}");
}

#[test]
fn compartments_boot_side_by_side() {
    let handles: Vec<_> = (0..4)
        .map(|i| std::thread::spawn(move || boot(&config(&format!("side-{i}"), 16, &format!("id={i}")))))
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (outcome, console) = h.join().unwrap();
        assert_eq!(outcome.exit, GuestExit::PowerOff(0));
        assert!(console.contains(&format!("cmdline \"id={i}\"")), "{console}");
    }
}
