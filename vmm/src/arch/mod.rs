//! x86_64 specifics of entering our kernel directly in 64-bit mode.
//!
//! There is no firmware and no real-mode trampoline: the VMM writes a GDT and
//! boot page tables into guest memory and sets the vCPU's registers so the
//! first instruction the guest runs is the kernel's entry point, in long mode
//! with paging on.

pub mod cpu;
pub mod gdt;
pub mod paging;
