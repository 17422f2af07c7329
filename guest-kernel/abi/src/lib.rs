//! The contract between the host and the guest of a Ward compartment.
//!
//! `ward-abi` is plain data and constants only: the guest-physical memory
//! layout the VMM builds, the boot-info structure it writes into guest
//! memory, and the register maps of the devices our guest kernel drives.
//! It is `no_std`, has no I/O and no `unsafe`, and is the only crate the host
//! side (`ward-vmm`) and the guest side (`ward-kernel`, `ward-rt`) share.
//!
//! Every structure that crosses the boundary derives zerocopy's layout traits,
//! so the compiler proves it has no padding and any byte pattern is a value:
//! a hostile guest or a corrupt boot area can produce wrong numbers, never
//! undefined behaviour.

#![no_std]
#![forbid(unsafe_code)]

pub mod boot;
pub mod debug_console;
pub mod fault;
pub mod layout;
pub mod pages;
pub mod syscall;
pub mod virtio;
pub mod vsock;
pub mod width;
