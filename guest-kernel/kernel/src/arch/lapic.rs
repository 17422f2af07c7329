//! The local APIC: the preemption timer (TSC-deadline mode) and EOI.
//!
//! The in-kernel LAPIC of KVM serves these registers. The timer is
//! one-shot: the scheduler arms it for the next event (end of a time slice,
//! or the earliest sleeper) and disarms it when nothing is due, so an idle
//! compartment takes no interrupts at all.

use ward_abi::layout::LAPIC_BASE;

/// Vector of the timer interrupt.
pub const TIMER_VECTOR: u8 = 32;
/// Vector of spurious interrupts.
pub const SPURIOUS_VECTOR: u8 = 0xff;

const REG_TPR: u64 = 0x80;
const REG_EOI: u64 = 0xb0;
const REG_SVR: u64 = 0xf0;
const REG_LVT_TIMER: u64 = 0x320;
const SVR_ENABLE: u32 = 1 << 8;
const LVT_TSC_DEADLINE: u32 = 0b10 << 17;
const MSR_TSC_DEADLINE: u32 = 0x6e0;

#[cfg(all(feature = "guest", not(test)))]
fn write(reg: u64, value: u32) {
    let ptr = crate::addr::phys_to_virt(LAPIC_BASE + reg) as *mut u32;
    // SAFETY: the LAPIC page is mapped (uncached) in the direct map; this is
    // an architectural register write.
    unsafe { core::ptr::write_volatile(ptr, value) };
}

#[cfg(not(all(feature = "guest", not(test))))]
fn write(reg: u64, value: u32) {
    let _ = (LAPIC_BASE, reg, value);
}

/// Enables the LAPIC and puts its timer in TSC-deadline mode, disarmed.
pub fn init() {
    write(REG_TPR, 0);
    write(REG_SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
    write(REG_LVT_TIMER, LVT_TSC_DEADLINE | u32::from(TIMER_VECTOR));
}

/// Fires the timer when the TSC reaches `deadline`; 0 disarms it.
pub fn arm_timer(deadline: u64) {
    #[cfg(all(feature = "guest", not(test)))]
    // SAFETY: IA32_TSC_DEADLINE exists when CPUID says TSC-deadline mode
    // (the VMM guarantees it); any value is valid.
    unsafe {
        crate::arch::wrmsr(MSR_TSC_DEADLINE, deadline)
    };
    let _ = (deadline, MSR_TSC_DEADLINE);
}

/// Signals the end of the interrupt being handled.
pub fn eoi() {
    write(REG_EOI, 0);
}
