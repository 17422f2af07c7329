//! x86_64 instructions the kernel needs, as small safe or documented-unsafe
//! functions. Only general-purpose instructions: no SSE, no `cmpxchg16b`
//! (both are emulation failures in ring 0 on our hosts).

use core::arch::asm;

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: `rdtsc` reads a counter; it has no memory effects.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Reads CR2, the address of the last page fault.
#[inline]
pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effects; we run in ring 0.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Disables interrupts and halts forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` stops this vCPU; nothing is left to run.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Reads an address no page table maps, to test the page-fault path.
pub fn touch_unmapped() {
    // The top of the lower half is never mapped by the boot tables.
    let addr: u64 = 0x0000_7fff_ffff_f000;
    // SAFETY: not sound by design: this faults, and the fault handler
    // reports it and powers off. Used only when `ward.fault` is given.
    unsafe { asm!("mov {tmp}, qword ptr [{addr}]", addr = in(reg) addr, tmp = out(reg) _, options(nostack, readonly)) };
}
