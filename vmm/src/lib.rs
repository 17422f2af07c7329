//! `ward-vmm`: runs one compartment as a KVM micro-VM.
//!
//! A compartment's VM has one memory slot of anonymous guest RAM, an
//! in-kernel irqchip, our own kernel loaded from an ELF, and an MMIO bus; no
//! firmware, no PCI, no port I/O. [`Vm::new`] builds it (KVM, memory, kernel,
//! boot info, boot page tables, virtio devices) and [`Vm::run`] runs its vCPU
//! on a thread of its own, and its virtio devices on another, each under its
//! own seccomp filter, until the guest powers off or crashes.
//!
//! Layout of the crate, one concern per module:
//! - [`kvm`]: opening `/dev/kvm` with errors a user can act on;
//! - [`memory`]: guest RAM and the memory map the guest is told about;
//! - [`loader`]: checking and loading the kernel ELF;
//! - [`boot`]: the boot info and command line written into guest memory;
//! - [`arch`]: x86_64 specifics: GDT, page tables, CPUID, MSRs, registers;
//! - [`devices`]: the MMIO bus and the devices on it, virtio devices
//!   included (their transport, event loop and KVM wiring);
//! - [`seccomp`]: the system calls each VMM thread may make;
//! - [`vcpu`]: the vCPU run loop and what each exit means;
//! - [`vm`]: putting it together, and the timings of a boot.

pub mod arch;
pub mod boot;
pub mod devices;
pub mod kvm;
pub mod loader;
pub mod memory;
pub mod seccomp;
pub mod signals;
pub mod vcpu;
pub mod vm;

pub use devices::virtio::block::DiskConfig;
pub use devices::virtio::console::{ConsoleConfig, ConsoleInput};
pub use devices::virtio::setup::VirtioConfig;
pub use devices::virtio::vsock::VsockConfig;
pub use loader::KernelSource;
pub use seccomp::SeccompMode;
pub use vm::{BootTimings, GuestExit, Vm, VmConfig, VmError, VmOutcome};
