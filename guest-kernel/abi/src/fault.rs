//! Why the kernel ended a program, as data: the kernel keeps a [`Fault`]
//! with the dead process, [`crate::syscall::WAIT`] hands it to the parent
//! and [`crate::syscall::PS`] shows it, as a [`FaultRecord`]. The text the
//! kernel prints on the console is for people; programs and tests read
//! this.
//!
//! [`Fault`]'s `Display` is one line of `key=value` words that `FromStr`
//! reads back, so a program can print a fault and a test on the host can
//! compare it field by field.

use core::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The CPU exception vector of a page fault.
pub const VECTOR_PAGE_FAULT: u8 = 14;

/// How a faulting access touched memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
    /// An instruction fetch.
    Execute,
}

/// Why a program was killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A memory access its pages do not allow (a page fault no stack
    /// growth could answer): `address` is what it touched, `rip` where.
    Memory {
        /// The address touched.
        address: u64,
        /// The instruction.
        rip: u64,
        /// How.
        access: Access,
        /// Whether a page was there (it was the permission that failed).
        present: bool,
    },
    /// Another CPU exception (`#GP`, `#UD`, `#DE`, ...).
    Exception {
        /// Its vector.
        vector: u8,
        /// The instruction.
        rip: u64,
        /// The error code the CPU pushed (0 if none).
        error_code: u64,
    },
    /// A `syscall` the kernel could not take: it returned to an address
    /// outside the program's half of memory. (A system call number the
    /// kernel does not know is not a fault: it returns an error.)
    BadSyscall {
        /// Where the program would have resumed.
        rip: u64,
    },
}

/// A page-fault error code's bits.
const PF_PRESENT: u64 = 1 << 0;
const PF_WRITE: u64 = 1 << 1;
const PF_FETCH: u64 = 1 << 4;

impl Fault {
    /// The fault a CPU exception `vector` with `error_code` at `rip` is
    /// (`address`: CR2, for a page fault).
    pub fn from_exception(vector: u8, error_code: u64, rip: u64, address: u64) -> Self {
        if vector != VECTOR_PAGE_FAULT {
            return Self::Exception { vector, rip, error_code };
        }
        let access = if error_code & PF_FETCH != 0 {
            Access::Execute
        } else if error_code & PF_WRITE != 0 {
            Access::Write
        } else {
            Access::Read
        };
        Self::Memory { address, rip, access, present: error_code & PF_PRESENT != 0 }
    }

    /// The CPU exception vector behind it, if any (the low byte of a
    /// killed process's status).
    pub fn vector(&self) -> Option<u8> {
        match self {
            Self::Memory { .. } => Some(VECTOR_PAGE_FAULT),
            Self::Exception { vector, .. } => Some(*vector),
            Self::BadSyscall { .. } => None,
        }
    }

    /// The instruction it happened at.
    pub fn rip(&self) -> u64 {
        match self {
            Self::Memory { rip, .. } | Self::Exception { rip, .. } | Self::BadSyscall { rip } => *rip,
        }
    }

    /// As the ABI carries it.
    pub fn record(&self) -> FaultRecord {
        let (kind, vector, address, detail) = match *self {
            Self::Memory { address, access, present, .. } => {
                let access = match access {
                    Access::Read => 0,
                    Access::Write => PF_WRITE,
                    Access::Execute => PF_FETCH,
                };
                (FaultRecord::MEMORY, VECTOR_PAGE_FAULT, address, access | if present { PF_PRESENT } else { 0 })
            }
            Self::Exception { vector, error_code, .. } => (FaultRecord::EXCEPTION, vector, 0, error_code),
            Self::BadSyscall { .. } => (FaultRecord::BAD_SYSCALL, 0, 0, 0),
        };
        FaultRecord { kind, vector: u32::from(vector), rip: self.rip(), address, detail }
    }
}

/// A [`Fault`] as the ABI carries it (in [`crate::syscall::ProcessInfo`]
/// and through `wait`'s out pointer); `kind` 0 is no fault.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct FaultRecord {
    /// [`Self::NONE`], [`Self::MEMORY`], [`Self::EXCEPTION`] or
    /// [`Self::BAD_SYSCALL`].
    pub kind: u32,
    /// The CPU exception vector.
    pub vector: u32,
    /// The faulting instruction.
    pub rip: u64,
    /// The address touched (memory faults).
    pub address: u64,
    /// The page-fault or exception error code.
    pub detail: u64,
}

impl FaultRecord {
    /// No fault: the process is alive or exited.
    pub const NONE: u32 = 0;
    /// [`Fault::Memory`].
    pub const MEMORY: u32 = 1;
    /// [`Fault::Exception`].
    pub const EXCEPTION: u32 = 2;
    /// [`Fault::BadSyscall`].
    pub const BAD_SYSCALL: u32 = 3;

    /// The fault it carries, if any (an unknown kind reads as none).
    pub fn fault(&self) -> Option<Fault> {
        let vector = u8::try_from(self.vector).unwrap_or(u8::MAX);
        match self.kind {
            Self::MEMORY => Some(Fault::from_exception(VECTOR_PAGE_FAULT, self.detail, self.rip, self.address)),
            Self::EXCEPTION => Some(Fault::Exception { vector, rip: self.rip, error_code: self.detail }),
            Self::BAD_SYSCALL => Some(Fault::BadSyscall { rip: self.rip }),
            _ => None,
        }
    }
}

impl fmt::Display for Fault {
    /// `memory address=0x… rip=0x… access=write present=no`,
    /// `exception vector=13 rip=0x… error=0x0`, `bad-syscall rip=0x…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory { address, rip, access, present } => {
                let access = match access {
                    Access::Read => "read",
                    Access::Write => "write",
                    Access::Execute => "execute",
                };
                let present = if *present { "yes" } else { "no" };
                write!(f, "memory address={address:#x} rip={rip:#x} access={access} present={present}")
            }
            Self::Exception { vector, rip, error_code } => {
                write!(f, "exception vector={vector} rip={rip:#x} error={error_code:#x}")
            }
            Self::BadSyscall { rip } => write!(f, "bad-syscall rip={rip:#x}"),
        }
    }
}

/// A line that is not a [`Fault`]'s `Display`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotAFault;

impl core::str::FromStr for Fault {
    type Err = NotAFault;

    fn from_str(text: &str) -> Result<Self, NotAFault> {
        let mut words = text.split_whitespace();
        let kind = words.next().ok_or(NotAFault)?;
        let mut field = |key: &str| -> Result<&str, NotAFault> {
            let word = words.next().ok_or(NotAFault)?;
            word.strip_prefix(key).and_then(|w| w.strip_prefix('=')).ok_or(NotAFault)
        };
        let hex = |value: &str| value.strip_prefix("0x").and_then(|v| u64::from_str_radix(v, 16).ok()).ok_or(NotAFault);
        Ok(match kind {
            "memory" => {
                let address = hex(field("address")?)?;
                let rip = hex(field("rip")?)?;
                let access = match field("access")? {
                    "read" => Access::Read,
                    "write" => Access::Write,
                    "execute" => Access::Execute,
                    _ => return Err(NotAFault),
                };
                let present = match field("present")? {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(NotAFault),
                };
                Self::Memory { address, rip, access, present }
            }
            "exception" => {
                let vector = field("vector")?.parse().map_err(|_| NotAFault)?;
                let rip = hex(field("rip")?)?;
                let error_code = hex(field("error")?)?;
                Self::Exception { vector, rip, error_code }
            }
            "bad-syscall" => Self::BadSyscall { rip: hex(field("rip")?)? },
            _ => return Err(NotAFault),
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn page_fault_error_codes_say_how_memory_was_touched() {
        let write = Fault::from_exception(14, 0b111, 0x40_1000, 0xffff_ffff_8010_0000);
        assert_eq!(
            write,
            Fault::Memory { address: 0xffff_ffff_8010_0000, rip: 0x40_1000, access: Access::Write, present: true }
        );
        let fetch = Fault::from_exception(14, 0b1_0100, 0xdead_0000, 0xdead_0000);
        assert!(matches!(fetch, Fault::Memory { access: Access::Execute, present: false, .. }));
        assert_eq!(
            Fault::from_exception(13, 0, 0x40_0000, 0),
            Fault::Exception { vector: 13, rip: 0x40_0000, error_code: 0 }
        );
    }

    #[test]
    fn faults_round_trip_through_the_abi_record_and_their_text() {
        for fault in [
            Fault::Memory { address: 0xdead_0000, rip: 0xdead_0000, access: Access::Execute, present: false },
            Fault::Memory { address: 8, rip: 0x40_0123, access: Access::Read, present: true },
            Fault::Exception { vector: 6, rip: 0x40_0000, error_code: 0 },
            Fault::BadSyscall { rip: 0xffff_8000_0000_0000 },
        ] {
            assert_eq!(fault.record().fault(), Some(fault));
            assert_eq!(fault.to_string().parse::<Fault>(), Ok(fault), "{fault}");
        }
        assert_eq!(FaultRecord::default().fault(), None);
        assert_eq!("memory address=1".parse::<Fault>(), Err(NotAFault));
    }
}
