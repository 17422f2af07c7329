//! `ward-kernel`: the guest kernel of a Ward compartment.
//!
//! It is ours from the first instruction: the VMM enters it in 64-bit mode
//! with paging on and the guest-physical address of the boot info
//! ([`ward_abi::boot::BootInfo`]) in `rdi`, and nothing else runs before it.
//!
//! Principles, in order:
//! - **Ring 0 stays small and quick.** On our hosts every ring-0 instruction
//!   is emulated (~300 ns each, see PLATFORM.md), so the kernel does memory,
//!   scheduling, system calls, interrupts and the fast paths of drivers, and
//!   nothing else. Boot work is counted in instructions.
//! - **No SSE in ring 0.** The crate is compiled with SSE disabled and never
//!   runs `core::fmt` (the precompiled `core` formats with SSE); output goes
//!   through [`console`], which formats integers itself.
//! - **Plain logic is host-tested.** Everything that is not an instruction
//!   sequence (parsing, bookkeeping) lives in modules that `cargo test` runs
//!   on the host; the `guest` feature adds the freestanding runtime.

#![cfg_attr(not(test), no_std)]

pub mod addr;
pub mod arch;
pub mod boot;
pub mod cmdline;
pub mod console;
#[cfg(all(feature = "guest", not(test)))]
mod guest_runtime;
pub mod power;
pub mod traps;

use ward_abi::debug_console::EXIT_BAD_BOOT_INFO;

/// Kernel version, from Cargo.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The kernel's Rust entry point, called by the assembly entry stub on the
/// boot stack with the guest-physical address of the boot info.
///
/// # Safety
/// Called once, by the entry stub, with paging set up by the VMM as
/// `ward_abi::layout` describes.
pub unsafe extern "C" fn kmain(boot_info_phys: u64) -> ! {
    let start = arch::rdtsc();
    // SAFETY: the VMM's boot tables map all low physical memory at the
    // direct map, and this is the only reader of the boot info.
    let Some(boot) = (unsafe { boot::BootInfoView::from_phys(boot_info_phys) }) else {
        kprintln!("ward-kernel: no valid boot info at ", console::Hex(boot_info_phys));
        power::power_off(EXIT_BAD_BOOT_INFO);
    };
    let cmdline = boot.cmdline();
    kprintln!(
        "Ward kernel ",
        VERSION,
        " | memory ",
        boot.info().memory_size >> 20,
        " MiB | cmdline \"",
        console::Bytes(cmdline.raw()),
        "\""
    );
    kprintln!(
        "[boot] boot info: version ",
        boot.info().version,
        ", ",
        boot.info().memory_regions().len(),
        " memory regions, ",
        boot.info().devices().len(),
        " devices, ",
        boot.info().modules().len(),
        " modules"
    );
    let usable = boot.usable_memory();
    kprintln!("[boot] memory: ", usable.bytes >> 10, " KiB usable in ", usable.regions, " regions");

    traps::init();
    kprintln!("[boot] traps: IDT loaded, ", traps::EXCEPTION_VECTORS, " exception vectors");

    if cmdline.has_flag("ward.panic") {
        requested_panic();
    }
    if cmdline.has_flag("ward.fault") {
        kprintln!("[boot] ward.fault: reading an unmapped address");
        arch::touch_unmapped();
    }

    let cycles = arch::rdtsc().wrapping_sub(start);
    kprintln!("[boot] ready after ", cycles, " TSC cycles in the kernel; powering off");
    power::power_off(0);
}

/// Panics on purpose: `ward.panic` on the command line tests the panic path.
#[allow(clippy::panic, reason = "a deliberate panic, to test the panic path")]
fn requested_panic() -> ! {
    panic!("panic requested by ward.panic on the command line");
}
