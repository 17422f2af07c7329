//! The system call ABI between guest programs (`ward-rt`) and `ward-kernel`.
//!
//! A program calls the kernel with the `syscall` instruction: the number in
//! `rax`, arguments in `rdi`, `rsi`, `rdx`, `r10`, `r8`, `r9` (the Linux
//! register order). The kernel returns with `iretq` (our hosts fault on
//! `sysretq`), the result in `rax`: zero or positive on success, the negated
//! [`Error`] code on failure. `rcx` and `r11` are clobbered, as the
//! instruction defines. [`RECV`] also returns the message words in `rdi`,
//! `rsi`, `rdx` and `r10`.
//!
//! Each call costs a round trip through emulated ring 0 on our hosts
//! (docs/PLATFORM.md), so calls are few and coarse: a whole buffer per
//! [`WRITE`], pages moved by mapping instead of copying.
//!
//! Every pointer argument is checked against the caller's address space
//! before use; a bad one returns [`Error::BadAddress`], never a kernel fault.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `exit(code) -> !`: ends the calling process with `code`.
pub const EXIT: u64 = 0;
/// `yield()`: gives the CPU to another runnable process of the same priority.
pub const YIELD: u64 = 1;
/// `sleep(ns)`: blocks for at least `ns` nanoseconds.
pub const SLEEP: u64 = 2;
/// `spawn(name, name_len, args, args_len, priority) -> pid`: starts the boot
/// module `name` as a new child process with argument bytes `args`.
/// `priority` 0 (highest) to 7, or [`PRIORITY_INHERIT`].
pub const SPAWN: u64 = 3;
/// `wait(pid, fault) -> status`: blocks until child `pid` ends and reaps
/// it; see [`STATUS_KILLED`]. If `fault` is not 0 it is where the kernel
/// writes a [`crate::fault::FaultRecord`] (8-byte aligned): why the child was
/// killed, or kind 0 if it exited.
pub const WAIT: u64 = 4;
/// `getpid() -> pid`.
pub const GETPID: u64 = 5;
/// `write(buf, len) -> len`: writes bytes to the compartment's console.
pub const WRITE: u64 = 6;
/// `clock() -> ns`: nanoseconds since boot, monotonic.
pub const CLOCK: u64 = 7;
/// `send(pid, w0, w1, w2, w3)`: queues a four-word message to `pid`; fails
/// with [`Error::QueueFull`] rather than blocking.
pub const SEND: u64 = 8;
/// `recv(timeout_ns) -> sender`: blocks until a message arrives (or the
/// timeout passes: [`Error::TimedOut`]; [`WAIT_FOREVER`] never times out).
/// The words come back in `rdi`, `rsi`, `rdx`, `r10`. Once the compartment
/// is asked to stop, every process's next `recv` returns the stop request
/// first: sender 0 (the kernel), words `[STOP_TAG, 0, 0, 0]`.
pub const RECV: u64 = 9;
/// `share(pid, addr, pages, writable)`: maps the caller's `pages` pages at
/// `addr` into `pid` as well (no copy), and sends `pid` a message
/// `[SHARE_TAG, addr_in_receiver, pages, writable]` from the caller.
pub const SHARE: u64 = 10;
/// `map(pages) -> addr`: maps `pages` fresh zeroed pages, read-write.
pub const MAP: u64 = 11;
/// `unmap(addr, pages)`: unmaps pages mapped by [`MAP`] or [`SHARE`].
pub const UNMAP: u64 = 12;
/// `ps(buf, capacity) -> count`: fills `buf` with up to `capacity`
/// [`ProcessInfo`] records; returns how many processes there are.
pub const PS: u64 = 13;
/// `meminfo(buf)`: fills `buf` with one [`MemInfo`].
pub const MEMINFO: u64 = 14;
/// `null()`: does nothing; measures the round trip.
pub const NULL: u64 = 15;
/// `read(buf, len) -> n`: reads console input (blocks until some arrives;
/// the device fills `buf` in place).
pub const READ: u64 = 16;
/// `getrandom(buf, len) -> n`: fills `buf` with entropy from the host.
pub const GETRANDOM: u64 = 17;
/// `blk_info(dev, buf)`: fills `buf` with one [`BlockInfo`] for block
/// device `dev` (0, 1, ...).
pub const BLK_INFO: u64 = 18;
/// `blk_read(dev, sector, buf, len) -> n`: reads `len` bytes (a multiple of
/// 512) from `sector`; the device writes `buf` in place. May transfer less
/// than asked (a queue's worth); returns how much.
pub const BLK_READ: u64 = 19;
/// `blk_write(dev, sector, buf, len) -> n`: as [`BLK_READ`], writing.
pub const BLK_WRITE: u64 = 20;
/// `blk_flush(dev)`: makes earlier writes durable on the host.
pub const BLK_FLUSH: u64 = 21;
/// `blk_id(dev, buf)`: fills 20 bytes of `buf` with the device's id.
pub const BLK_ID: u64 = 22;
/// `vsock_attach(info)`: makes the caller the owner of the compartment's
/// vsock device (until it exits) and fills `info` with one
/// [`crate::vsock::VsockInfo`]: the CID and the receive area, mapped
/// read-only into the caller, whose buffers the device fills. Fails with
/// [`Error::NoSuchDevice`] without the device, [`Error::Busy`] if another
/// process owns it.
pub const VSOCK_ATTACH: u64 = 23;
/// `vsock_recv(done, timeout_ns) -> (index << 32) | len`: gives receive
/// buffer `done` back to the device (or none:
/// [`crate::vsock::NO_BUFFER`]), then blocks until the device fills one
/// (or the timeout passes: [`Error::TimedOut`]) and returns its index and
/// the bytes written (header included), with [`crate::vsock::RECV_MORE`]
/// set if more filled buffers wait. Returns
/// [`crate::vsock::RECV_TRANSPORT_RESET`] once after the device dropped
/// every connection. Owner only.
pub const VSOCK_RECV: u64 = 24;
/// `vsock_send(buf, len) -> len`: sends one packet, a
/// [`crate::vsock::Header`] followed by its payload, from the caller's
/// memory (no copy); returns when the device has taken it. Owner only.
pub const VSOCK_SEND: u64 = 25;

/// [`SPAWN`] priority meaning "the caller's".
pub const PRIORITY_INHERIT: u64 = 0xff;
/// Lowest priority number (highest priority).
pub const PRIORITY_HIGHEST: u8 = 0;
/// Priority of boot programs and the default.
pub const PRIORITY_DEFAULT: u8 = 4;
/// Highest priority number (lowest priority).
pub const PRIORITY_LOWEST: u8 = 7;

/// [`RECV`] timeout that never expires.
pub const WAIT_FOREVER: u64 = u64::MAX;
/// First word of the message [`SHARE`] sends.
pub const SHARE_TAG: u64 = 0x5348_4152_4544_0000; // "SHARED\0\0"
/// First word of the message [`RECV`] returns, from sender 0, when the
/// compartment is asked to stop: the program should finish what it must
/// (flush its disk, say) and exit; the compartment powers off when every
/// program has ended, with the first boot program's exit code.
pub const STOP_TAG: u64 = 0x5354_4f50_0000_0000; // "STOP\0\0\0\0"

/// Largest [`SPAWN`] argument block, in bytes.
pub const MAX_ARGS_LEN: usize = 1024;
/// Largest program name, in bytes.
pub const MAX_NAME_LEN: usize = 32;
/// Largest [`WRITE`], in bytes.
pub const MAX_WRITE_LEN: usize = 64 * 1024;
/// Largest [`READ`], [`GETRANDOM`], [`BLK_READ`] or [`BLK_WRITE`].
pub const MAX_IO_LEN: usize = 4 << 20;
/// Largest [`MAP`], in pages.
pub const MAX_MAP_PAGES: u64 = 16 * 1024;

/// A [`WAIT`] status with this bit set means the process was killed by
/// the CPU exception in the low byte; otherwise it is the exit code.
pub const STATUS_KILLED: i64 = 1 << 32;

/// Why a system call failed; returned negated in `rax`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum Error {
    /// No such system call.
    BadSyscall = 1,
    /// A pointer argument names memory the caller may not use that way.
    BadAddress = 2,
    /// An argument is out of range.
    BadArgument = 3,
    /// No process with that pid.
    NoSuchProcess = 4,
    /// The process is not the caller's child.
    NotChild = 5,
    /// Out of memory.
    NoMemory = 6,
    /// No boot module with that name.
    NoSuchProgram = 7,
    /// The timeout passed.
    TimedOut = 8,
    /// The receiver's message queue is full.
    QueueFull = 9,
    /// The program image is not a valid static x86_64 ELF.
    BadProgram = 10,
    /// The process table is full.
    TooManyProcesses = 11,
    /// No such device.
    NoSuchDevice = 12,
    /// The device is read-only.
    ReadOnly = 13,
    /// The device reported an I/O error.
    IoError = 14,
    /// The device's queue is full now; try again.
    Busy = 15,
}

impl Error {
    /// The error for a negated `rax` value, if it is one.
    pub const fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => Self::BadSyscall,
            2 => Self::BadAddress,
            3 => Self::BadArgument,
            4 => Self::NoSuchProcess,
            5 => Self::NotChild,
            6 => Self::NoMemory,
            7 => Self::NoSuchProgram,
            8 => Self::TimedOut,
            9 => Self::QueueFull,
            10 => Self::BadProgram,
            11 => Self::TooManyProcesses,
            12 => Self::NoSuchDevice,
            13 => Self::ReadOnly,
            14 => Self::IoError,
            15 => Self::Busy,
            _ => return None,
        })
    }

    /// A short description.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadSyscall => "no such system call",
            Self::BadAddress => "bad address",
            Self::BadArgument => "bad argument",
            Self::NoSuchProcess => "no such process",
            Self::NotChild => "not a child of the caller",
            Self::NoMemory => "out of memory",
            Self::NoSuchProgram => "no such program",
            Self::TimedOut => "timed out",
            Self::QueueFull => "message queue full",
            Self::BadProgram => "not a valid program image",
            Self::TooManyProcesses => "too many processes",
            Self::NoSuchDevice => "no such device",
            Self::ReadOnly => "read-only device",
            Self::IoError => "I/O error",
            Self::Busy => "device busy",
        }
    }

    /// The value the kernel puts in `rax`.
    pub const fn to_return(self) -> u64 {
        (-(self as i64)) as u64
    }
}

/// Decodes a raw `rax` return value.
pub const fn decode(rax: u64) -> Result<u64, Error> {
    let signed = rax as i64;
    if signed < 0 {
        match Error::from_code(-signed) {
            Some(e) => Err(e),
            None => Err(Error::BadSyscall),
        }
    } else {
        Ok(rax)
    }
}

/// Process states in [`ProcessInfo::state`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ProcessState {
    /// Running or ready to run.
    Runnable = 1,
    /// In [`SLEEP`].
    Sleeping = 2,
    /// In [`WAIT`].
    Waiting = 3,
    /// In [`RECV`].
    Receiving = 4,
    /// Ended, not yet reaped.
    Zombie = 5,
    /// Waiting for a device to finish its I/O.
    Io = 6,
}

impl ProcessState {
    /// The state for a raw value.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Runnable,
            2 => Self::Sleeping,
            3 => Self::Waiting,
            4 => Self::Receiving,
            5 => Self::Zombie,
            6 => Self::Io,
            _ => return None,
        })
    }

    /// A short name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Runnable => "run",
            Self::Sleeping => "sleep",
            Self::Waiting => "wait",
            Self::Receiving => "recv",
            Self::Zombie => "zombie",
            Self::Io => "io",
        }
    }
}

/// One process, as [`PS`] reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Parent's pid (0 for boot programs).
    pub parent: u32,
    /// A [`ProcessState`].
    pub state: u32,
    /// Priority, 0 (highest) to 7.
    pub priority: u32,
    /// CPU time used, in nanoseconds.
    pub cpu_ns: u64,
    /// Frames the process owns: its memory, page tables and kernel stack.
    pub pages: u64,
    /// Program name, NUL padded.
    pub name: [u8; 16],
    /// Why the kernel killed it (kind 0: it was not killed).
    pub fault: crate::fault::FaultRecord,
}

/// A block device, as [`BLK_INFO`] reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BlockInfo {
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    /// 1 if read-only.
    pub read_only: u32,
    /// Zero.
    pub reserved: u32,
}

/// Physical memory, as [`MEMINFO`] reports it, in 4 KiB frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemInfo {
    /// Frames the kernel may allocate, in all.
    pub total_frames: u64,
    /// Frames free now.
    pub free_frames: u64,
    /// Bytes of kernel heap in use.
    pub heap_used: u64,
    /// Bytes of kernel heap in all.
    pub heap_size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip_through_rax() {
        for code in 1..=15 {
            let e = Error::from_code(code).unwrap();
            assert_eq!(decode(e.to_return()), Err(e));
        }
        assert_eq!(decode(42), Ok(42));
        assert_eq!(Error::from_code(0), None);
    }

    #[test]
    fn records_have_fixed_sizes() {
        assert_eq!(core::mem::size_of::<ProcessInfo>(), 48 + 32);
        assert_eq!(core::mem::size_of::<crate::fault::FaultRecord>(), 32);
        assert_eq!(core::mem::size_of::<MemInfo>(), 32);
    }
}
