//! The debug console's control registers: boot marks and power-off.

use ward_abi::debug_console::{BASE, REG_MARK, REG_POWER_OFF, REG_STOP_REQUESTED};

use crate::addr::phys_to_virt;

/// Powers the compartment off with `code` as its exit code. Never returns:
/// if the VMM does not stop the vCPU, it halts with interrupts off.
pub fn power_off(code: u32) -> ! {
    let reg = phys_to_virt(BASE + REG_POWER_OFF) as *mut u32;
    // SAFETY: the debug console's registers are mapped in the direct map;
    // this store is an MMIO exit that ends the VM.
    #[cfg(not(test))]
    unsafe {
        core::ptr::write_volatile(reg, code)
    };
    let _ = (reg, code);
    crate::arch::halt_forever()
}

/// Tells the host a boot milestone was reached (it timestamps it).
pub fn mark(value: u32) {
    let reg = phys_to_virt(BASE + REG_MARK) as *mut u32;
    // SAFETY: as for `power_off`; the store only timestamps on the host.
    #[cfg(not(test))]
    unsafe {
        core::ptr::write_volatile(reg, value)
    };
    let _ = (reg, value);
}

/// Whether the host has asked the compartment to stop (pressed the power
/// button), read from the device: for a request made before the button's
/// line was routed.
pub fn stop_requested() -> bool {
    let reg = phys_to_virt(BASE + REG_STOP_REQUESTED) as *const u32;
    // SAFETY: as for `power_off`; the load is an MMIO exit the device
    // answers with 0 or 1.
    #[cfg(not(test))]
    let value = unsafe { core::ptr::read_volatile(reg) };
    #[cfg(test)]
    let value = {
        let _ = reg;
        0
    };
    value == 1
}
