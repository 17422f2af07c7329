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
    /// The guest halted with interrupts disabled: nothing can wake it.
    Halted {
        /// RIP after the `hlt`.
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
            Self::Halted { rip } => {
                write!(f, "crashed: halted with interrupts disabled at rip {rip:#x}; nothing can wake it")
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

/// The guest's accesses that no device answered, counted: the first of
/// each kind is logged when it happens, the count and the range of
/// addresses when the compartment stops (a hostile guest cannot flood the
/// log, and nothing it did is left out).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Strays {
    /// MMIO reads and writes outside every device.
    pub mmio: Tally,
    /// Port I/O (Ward has no port devices).
    pub ports: Tally,
}

/// How many accesses, and between which addresses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Accesses.
    pub count: u64,
    /// Lowest and highest address.
    pub range: Option<(u64, u64)>,
}

impl Tally {
    fn add(&mut self, addr: u64) {
        self.count += 1;
        self.range = Some(self.range.map_or((addr, addr), |(low, high)| (low.min(addr), high.max(addr))));
    }
}

impl Strays {
    /// The summary line, if there was any stray access.
    pub fn summary(&self, compartment: &str) -> Option<String> {
        let part = |tally: &Tally, what: &str| {
            tally.range.map(|(low, high)| format!("{} {what} between {low:#x} and {high:#x}", tally.count))
        };
        let parts: Vec<String> =
            [part(&self.mmio, "MMIO accesses no device owns"), part(&self.ports, "port I/O accesses")]
                .into_iter()
                .flatten()
                .collect();
        (!parts.is_empty()).then(|| format!("compartment {compartment}: {}", parts.join("; ")))
    }
}

/// Runs `vcpu` until the guest powers off or stops.
pub fn run(vcpu: &mut VcpuFd, bus: &MmioBus, power: &PowerControl, compartment: &str) -> Result<GuestExit, VcpuError> {
    let mut strays = Strays::default();
    let result = run_counting(vcpu, bus, power, compartment, &mut strays);
    if let Some(summary) = strays.summary(compartment) {
        log::warn!("{summary}");
    }
    result
}

fn run_counting(
    vcpu: &mut VcpuFd,
    bus: &MmioBus,
    power: &PowerControl,
    compartment: &str,
    strays: &mut Strays,
) -> Result<GuestExit, VcpuError> {
    let mut warned = WarnOnce::default();
    loop {
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            // A kick (`signals::kick`), or a signal of another kind: a
            // chance to see a vCPU that can never run again.
            Err(e) if e.errno() == libc::EINTR => match halted_for_good(vcpu) {
                Some(rip) => return Ok(GuestExit::Halted { rip }),
                None => continue,
            },
            Err(e) if e.errno() == libc::EAGAIN => continue,
            Err(e) => return Err(VcpuError::Run(e)),
        };
        match exit {
            VcpuExit::MmioWrite(addr, data) => {
                if !bus.write(addr, data) {
                    strays.mmio.add(addr);
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
                    strays.mmio.add(addr);
                    warned.warn("unowned-mmio-read", || {
                        format!("compartment {compartment}: MMIO read from {addr:#x}, which no device owns; all ones")
                    });
                }
            }
            VcpuExit::IoIn(port, data) => {
                data.fill(0xff);
                strays.ports.add(u64::from(port));
                warned.warn("port-io", || {
                    format!("compartment {compartment}: port I/O (in from {port:#x}); Ward has no port devices")
                });
            }
            VcpuExit::IoOut(port, _) => {
                strays.ports.add(u64::from(port));
                warned.warn("port-io", || {
                    format!("compartment {compartment}: port I/O (out to {port:#x}); Ward has no port devices")
                });
            }
            VcpuExit::Shutdown => return Ok(GuestExit::TripleFault { rip: rip(vcpu) }),
            VcpuExit::InternalError => return Ok(GuestExit::EmulationFailure { rip: rip(vcpu) }),
            VcpuExit::FailEntry(reason, _) => return Ok(GuestExit::FailEntry { reason }),
            // Only without the in-kernel irqchip; kept for completeness.
            VcpuExit::Hlt => return Ok(GuestExit::Halted { rip: rip(vcpu) }),
            VcpuExit::Intr => continue,
            other => return Ok(GuestExit::Unexpected(format!("{other:?}"))),
        }
    }
}

/// The RFLAGS interrupt-enable bit.
const RFLAGS_IF: u64 = 1 << 9;

/// `Some(rip)` if the vCPU is halted with interrupts disabled. Only a
/// maskable interrupt could end such a halt in a Ward guest (the VMM sends
/// no NMI, INIT or SIPI), and the guest masked them: it is over.
pub fn halted_for_good(vcpu: &VcpuFd) -> Option<u64> {
    let state = vcpu.get_mp_state().ok()?;
    if state.mp_state != kvm_bindings::KVM_MP_STATE_HALTED {
        return None;
    }
    let regs = vcpu.get_regs().ok()?;
    (regs.rflags & RFLAGS_IF == 0).then_some(regs.rip)
}

fn rip(vcpu: &VcpuFd) -> u64 {
    vcpu.get_regs().map(|r| r.rip).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strays_are_counted_with_their_range() {
        let mut strays = Strays::default();
        assert_eq!(strays.summary("mail"), None);
        for addr in [0xd000_5000, 0xd000_3008, 0xd000_9ffc] {
            strays.mmio.add(addr);
        }
        strays.ports.add(0x3f8);
        assert_eq!(
            strays.summary("mail").unwrap(),
            "compartment mail: 3 MMIO accesses no device owns between 0xd0003008 and 0xd0009ffc; \
             1 port I/O accesses between 0x3f8 and 0x3f8"
        );
    }
}
