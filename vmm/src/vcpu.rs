//! The vCPU run loop: what each KVM exit means for the compartment.

use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::devices::debug_console::PowerControl;
use crate::devices::{MmioBus, WarnOnce};

/// Why a compartment's guest stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestExit {
    /// The guest powered off with this exit code.
    PowerOff(u32),
    /// The guest triple-faulted (a fault with no working handler).
    TripleFault {
        /// RIP when it happened.
        rip: u64,
    },
    /// KVM could not emulate an instruction (e.g. SSE in ring 0 on our hosts).
    EmulationFailure {
        /// RIP of the instruction.
        rip: u64,
    },
    /// The hardware refused to enter the guest.
    FailEntry {
        /// Hardware reason code.
        reason: u64,
    },
    /// Another exit the VMM does not expect.
    Unexpected(String),
}

impl GuestExit {
    /// The guest's exit code, if it powered off.
    pub fn exit_code(&self) -> Option<u32> {
        match self {
            Self::PowerOff(code) => Some(*code),
            _ => None,
        }
    }
}

impl std::fmt::Display for GuestExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PowerOff(code) => write!(f, "powered off with exit code {code}"),
            Self::TripleFault { rip } => write!(f, "crashed: triple fault at rip {rip:#x}"),
            Self::EmulationFailure { rip } => {
                write!(f, "crashed: KVM could not emulate the instruction at rip {rip:#x}")
            }
            Self::FailEntry { reason } => {
                write!(f, "crashed: KVM entry failed (hardware reason {reason:#x})")
            }
            Self::Unexpected(what) => write!(f, "stopped: unexpected exit {what}"),
        }
    }
}

/// Running the vCPU failed on the host side.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// KVM_RUN failed.
    #[error("KVM_RUN failed: {0}")]
    Run(kvm_ioctls::Error),
}

/// Runs `vcpu` until the guest powers off or stops.
pub fn run(vcpu: &mut VcpuFd, bus: &MmioBus, power: &PowerControl, compartment: &str) -> Result<GuestExit, VcpuError> {
    let mut warned = WarnOnce::default();
    loop {
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => return Err(VcpuError::Run(e)),
        };
        match exit {
            VcpuExit::MmioWrite(addr, data) => {
                if !bus.write(addr, data) {
                    warned.warn("unowned-mmio-write", || {
                        format!("compartment {compartment}: MMIO write to {addr:#x}, which no device owns; ignored")
                    });
                }
                if let Some(code) = power.requested() {
                    return Ok(GuestExit::PowerOff(code));
                }
            }
            VcpuExit::MmioRead(addr, data) => {
                if !bus.read(addr, data) {
                    data.fill(0xff);
                    warned.warn("unowned-mmio-read", || {
                        format!("compartment {compartment}: MMIO read from {addr:#x}, which no device owns; all ones")
                    });
                }
            }
            VcpuExit::IoIn(port, data) => {
                data.fill(0xff);
                warned.warn("port-io", || {
                    format!("compartment {compartment}: port I/O (in from {port:#x}); Ward has no port devices")
                });
            }
            VcpuExit::IoOut(port, _) => {
                warned.warn("port-io", || {
                    format!("compartment {compartment}: port I/O (out to {port:#x}); Ward has no port devices")
                });
            }
            VcpuExit::Shutdown => return Ok(GuestExit::TripleFault { rip: rip(vcpu) }),
            VcpuExit::InternalError => return Ok(GuestExit::EmulationFailure { rip: rip(vcpu) }),
            VcpuExit::FailEntry(reason, _) => return Ok(GuestExit::FailEntry { reason }),
            VcpuExit::Hlt => return Ok(GuestExit::Unexpected("hlt with interrupts off".into())),
            VcpuExit::Intr => continue,
            other => return Ok(GuestExit::Unexpected(format!("{other:?}"))),
        }
    }
}

fn rip(vcpu: &VcpuFd) -> u64 {
    vcpu.get_regs().map(|r| r.rip).unwrap_or(0)
}
