//! The I/O APIC: routes device interrupt lines (GSIs) to IDT vectors.
//!
//! The VMM raises a device's line through an irqfd; the in-kernel I/O APIC
//! delivers it to our LAPIC as the vector we program here: fixed delivery,
//! physical destination 0 (our only vCPU), active high, edge triggered.

use ward_abi::layout::IOAPIC_BASE;

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
/// First redirection-table register.
const REDIRECTION_BASE: u32 = 0x10;

/// The two redirection-table words for routing a line to `vector`:
/// fixed delivery, physical mode, active high, edge triggered, unmasked,
/// destination APIC 0.
pub const fn redirection(vector: u8) -> (u32, u32) {
    (vector as u32, 0)
}

fn write(register: u32, value: u32) {
    #[cfg(all(feature = "guest", not(test)))]
    {
        let base = crate::addr::phys_to_virt(IOAPIC_BASE);
        // SAFETY: the I/O APIC's page is mapped uncached in the direct map
        // (the kernel maps it at boot); selecting a register then writing
        // the window is the architectural protocol.
        unsafe {
            core::ptr::write_volatile((base + IOREGSEL) as *mut u32, register);
            core::ptr::write_volatile((base + IOWIN) as *mut u32, value);
        }
    }
    let _ = (IOAPIC_BASE, IOREGSEL, IOWIN, register, value);
}

/// Routes interrupt line `gsi` to `vector`.
pub fn route(gsi: u32, vector: u8) {
    let (low, high) = redirection(vector);
    let register = REDIRECTION_BASE + 2 * gsi;
    // High word (destination) first, so the entry is never live half-set.
    write(register + 1, high);
    write(register, low);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirection_is_fixed_physical_edge_unmasked() {
        let (low, high) = redirection(49);
        assert_eq!(low, 49, "vector only: delivery 0, dest mode 0, polarity 0, edge, not masked");
        assert_eq!(high, 0, "destination APIC 0");
    }
}
