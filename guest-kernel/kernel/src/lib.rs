//! `ward-kernel`: the guest kernel of a Ward compartment.
//!
//! It is ours from the first instruction: the VMM enters it in 64-bit mode
//! with paging on and the guest-physical address of the boot info
//! ([`ward_abi::boot::BootInfo`]) in `rdi`, and nothing else runs before it.
//! It manages memory (frames, page tables, one address space per process,
//! a heap), schedules processes preemptively with priorities, takes system
//! calls, passes messages and shares pages between processes, and starts
//! the programs the compartment's image lists.
//!
//! Principles, in order:
//! - **Ring 0 stays small and quick.** On our hosts every ring-0 instruction
//!   is emulated (docs/PLATFORM.md, "Ring-0 costs"), so the kernel does
//!   memory, scheduling, system calls and interrupts, and nothing else;
//!   real work runs in ring 3 at native speed. Boot work is counted in
//!   instructions, memory is never cleared by loops (fresh frames are zero
//!   already; old ones are zeroed by the host's page service,
//!   `ward_abi::pages`), and bulk data is mapped, not copied.
//! - **No SSE in ring 0.** The crate is compiled with SSE disabled and never
//!   runs `core::fmt` (the precompiled `core` formats with SSE); output goes
//!   through [`console`], which formats integers itself.
//! - **Programs can only hurt themselves.** Every pointer a program passes
//!   is checked against its address space ([`mem::user`]); a fault in ring 3
//!   kills that process with a report; the kernel keeps running.
//! - **Plain logic is host-tested.** Allocators, page tables, the ELF
//!   parser, scheduler queues and trap classification run under `cargo
//!   test` on the host; the `guest` feature adds the freestanding runtime.

#![cfg_attr(not(test), no_std)]
// Narrowing casts are caught (`clippy::cast_possible_truncation`); the
// deliberate ones go through `ward_abi::width`, which names them.

extern crate alloc;

pub mod addr;
pub mod arch;
pub mod boot;
pub mod cmdline;
pub mod console;
#[cfg(all(feature = "guest", not(test)))]
mod guest_runtime;
pub mod kernel;
pub mod mem;
pub mod power;
pub mod proc;
pub mod stats;
pub mod syscall;
pub mod traps;
pub mod virtio;

#[cfg(all(feature = "guest", not(test)))]
mod start;

/// Kernel version, from Cargo.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The kernel's Rust entry point, called by the assembly entry stub on the
/// boot stack with the guest-physical address of the boot info.
///
/// # Safety
/// Called once, by the entry stub, with paging set up by the VMM as
/// `ward_abi::layout` describes.
#[cfg(all(feature = "guest", not(test)))]
pub unsafe extern "C" fn kmain(boot_info_phys: u64) -> ! {
    // SAFETY: forwarded from our caller's guarantee.
    unsafe { start::start(boot_info_phys) }
}
