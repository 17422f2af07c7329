//! System calls: the caller's registers decoded once into a [`Call`],
//! every argument checked, then done. The ABI is in `ward_abi::syscall`.
//!
//! Every handler has one shape: it takes the kernel, the caller and its
//! decoded arguments, and returns a [`Done`] or an [`Error`]; only
//! [`dispatch`] touches the caller's registers. A call either completes
//! (its result goes in `rax`) or blocks the caller (`sleep`, `wait`,
//! `recv`, device I/O); a blocked caller's result is written into its
//! saved registers when it wakes. A handler checks everything before it
//! changes anything (a `share` whose third page is bad maps none), so a
//! failed call leaves no trace. Nothing a program passes can make the
//! kernel fault.

mod io;
mod process;

use ward_abi::syscall::{self as abi, Error};
use ward_abi::width::{low_u8, low_u32};

use crate::kernel::Kernel;
use crate::mem::user::{Checked, ForReading, ForWriting, UserRange};
use crate::proc::{Message, Pid};
use crate::traps::TrapFrame;

pub use process::{mem_info, process_info};

/// How a call ended.
#[derive(Debug)]
pub enum Done {
    /// It returns this in `rax`.
    Value(u64),
    /// It returns a message: the sender in `rax`, the words in `rdi`,
    /// `rsi`, `rdx`, `r10` (`recv`).
    Message(Message),
    /// The caller blocks; whoever wakes it writes its result.
    Blocked,
    /// The caller is gone (`exit`).
    Gone,
}

/// A range of the caller's memory, as the registers gave it (unchecked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Its address.
    pub addr: u64,
    /// Its length in bytes.
    pub len: u64,
}

/// The priority `spawn` gives the child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// The caller's.
    Inherit,
    /// 0 (highest) to [`abi::PRIORITY_LOWEST`].
    Level(u8),
}

/// A timeout in nanoseconds: 0 does not wait, [`abi::WAIT_FOREVER`] never
/// ends.
pub type Timeout = u64;

/// A system call and its arguments, decoded from the registers (see
/// `ward_abi::syscall` for which register holds what).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `exit(code)`: the code is the low 32 bits of `rdi`.
    Exit { code: u32 },
    /// `yield()`.
    Yield,
    /// `sleep(ns)`.
    Sleep { ns: u64 },
    /// `spawn(name, args, priority)`.
    Spawn { name: Span, args: Span, priority: Priority },
    /// `wait(child, fault)`: `fault` is where the child's fault goes (0:
    /// nowhere).
    Wait { child: Pid, fault: u64 },
    /// `getpid()`.
    GetPid,
    /// `write(buf)`: to the console.
    Write { buf: Span },
    /// `read(buf)`: console input.
    Read { buf: Span },
    /// `getrandom(buf)`.
    GetRandom { buf: Span },
    /// `clock()`.
    Clock,
    /// `send(to, words)`.
    Send { to: Pid, words: [u64; 4] },
    /// `recv(timeout)`.
    Recv { timeout: Timeout },
    /// `share(to, addr, pages, writable)`.
    Share { to: Pid, addr: u64, pages: u64, writable: bool },
    /// `map(pages)`.
    Map { pages: u64 },
    /// `unmap(addr, pages)`.
    Unmap { addr: u64, pages: u64 },
    /// `ps(buf, capacity)`.
    Ps { buf: u64, capacity: u64 },
    /// `meminfo(buf)`.
    MemInfo { buf: u64 },
    /// `null()`.
    Null,
    /// `blk_info(dev, buf)`.
    BlkInfo { dev: u64, buf: u64 },
    /// `blk_read(dev, sector, buf)` or `blk_write(...)`.
    BlkTransfer { write: bool, dev: u64, sector: u64, buf: Span },
    /// `blk_flush(dev)`.
    BlkFlush { dev: u64 },
    /// `blk_id(dev, buf)`: 20 bytes.
    BlkId { dev: u64, buf: u64 },
    /// `vsock_attach(info)`.
    VsockAttach { info: u64 },
    /// `vsock_recv(done, timeout)`.
    VsockRecv { done: u64, timeout: Timeout },
    /// `vsock_send(packet)`.
    VsockSend { packet: Span },
}

/// A pid argument: one that cannot be a pid names no process.
fn pid(value: u64) -> Result<Pid, Error> {
    Pid::try_from(value).map_err(|_| Error::NoSuchProcess)
}

impl Call {
    /// Decodes the call in `frame`'s registers. Only the shape is checked
    /// here (numbers in range); pointers are checked by the handlers,
    /// against the caller's address space.
    pub fn decode(frame: &TrapFrame) -> Result<Self, Error> {
        let (a0, a1, a2, a3, a4) = (frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8);
        let span = |addr, len| Span { addr, len };
        Ok(match frame.rax {
            abi::EXIT => Self::Exit { code: low_u32(a0) },
            abi::YIELD => Self::Yield,
            abi::SLEEP => Self::Sleep { ns: a0 },
            abi::SPAWN => {
                let priority = match a4 {
                    abi::PRIORITY_INHERIT => Priority::Inherit,
                    p if p <= u64::from(abi::PRIORITY_LOWEST) => Priority::Level(low_u8(p)),
                    _ => return Err(Error::BadArgument),
                };
                Self::Spawn { name: span(a0, a1), args: span(a2, a3), priority }
            }
            abi::WAIT => Self::Wait { child: pid(a0)?, fault: a1 },
            abi::GETPID => Self::GetPid,
            abi::WRITE => Self::Write { buf: span(a0, a1) },
            abi::READ => Self::Read { buf: span(a0, a1) },
            abi::GETRANDOM => Self::GetRandom { buf: span(a0, a1) },
            abi::CLOCK => Self::Clock,
            abi::SEND => Self::Send { to: pid(a0)?, words: [a1, a2, a3, a4] },
            abi::RECV => Self::Recv { timeout: a0 },
            abi::SHARE => Self::Share { to: pid(a0)?, addr: a1, pages: a2, writable: a3 != 0 },
            abi::MAP => Self::Map { pages: a0 },
            abi::UNMAP => Self::Unmap { addr: a0, pages: a1 },
            abi::PS => Self::Ps { buf: a0, capacity: a1 },
            abi::MEMINFO => Self::MemInfo { buf: a0 },
            abi::NULL => Self::Null,
            abi::BLK_INFO => Self::BlkInfo { dev: a0, buf: a1 },
            abi::BLK_READ | abi::BLK_WRITE => {
                Self::BlkTransfer { write: frame.rax == abi::BLK_WRITE, dev: a0, sector: a1, buf: span(a2, a3) }
            }
            abi::BLK_FLUSH => Self::BlkFlush { dev: a0 },
            abi::BLK_ID => Self::BlkId { dev: a0, buf: a1 },
            abi::VSOCK_ATTACH => Self::VsockAttach { info: a0 },
            abi::VSOCK_RECV => Self::VsockRecv { done: a0, timeout: a1 },
            abi::VSOCK_SEND => Self::VsockSend { packet: span(a0, a1) },
            _ => return Err(Error::BadSyscall),
        })
    }

    /// Does the call for `pid`, the running process.
    pub fn run(self, k: &mut Kernel, pid: Pid) -> Result<Done, Error> {
        match self {
            Self::Exit { code } => process::exit(k, pid, code),
            Self::Yield => process::yield_now(k),
            Self::Sleep { ns } => process::sleep(k, ns),
            Self::Spawn { name, args, priority } => process::spawn(k, pid, name, args, priority),
            Self::Wait { child, fault } => process::wait(k, pid, child, fault),
            Self::GetPid => Ok(Done::Value(u64::from(pid))),
            Self::Clock => Ok(Done::Value(k.now_ns())),
            Self::Send { to, words } => process::send(k, pid, to, words),
            Self::Recv { timeout } => process::recv(k, pid, timeout),
            Self::Share { to, addr, pages, writable } => process::share(k, pid, to, addr, pages, writable),
            Self::Map { pages } => process::map(k, pid, pages),
            Self::Unmap { addr, pages } => process::unmap(k, pid, addr, pages),
            Self::Ps { buf, capacity } => process::ps(k, buf, capacity),
            Self::MemInfo { buf } => process::meminfo(k, buf),
            Self::Null => Ok(Done::Value(0)),
            Self::Write { buf } => io::write(k, pid, buf),
            Self::Read { buf } => io::transfer(k, pid, io::Io::ConsoleRead, buf),
            Self::GetRandom { buf } => io::transfer(k, pid, io::Io::Random, buf),
            Self::BlkInfo { dev, buf } => io::blk_info(k, dev, buf),
            Self::BlkTransfer { write, dev, sector, buf } => io::blk_transfer(k, pid, write, dev, sector, buf),
            Self::BlkFlush { dev } => {
                io::blk_simple(k, pid, dev, ward_abi::virtio::blk::T_FLUSH, Span { addr: 0, len: 0 })
            }
            Self::BlkId { dev, buf } => {
                io::blk_simple(k, pid, dev, ward_abi::virtio::blk::T_GET_ID, Span { addr: buf, len: 20 })
            }
            Self::VsockAttach { info } => io::vsock_attach(k, pid, info),
            Self::VsockRecv { done, timeout } => io::vsock_recv(k, pid, done, timeout),
            Self::VsockSend { packet } => io::vsock_send(k, pid, packet),
        }
    }
}

/// Handles the system call in `frame` for the running process.
pub fn dispatch(k: &mut Kernel, frame: &mut TrapFrame) {
    let Some(pid) = k.current else { return };
    match Call::decode(frame).and_then(|call| call.run(k, pid)) {
        Ok(Done::Value(value)) => frame.rax = value,
        Ok(Done::Message(msg)) => put_message(frame, &msg),
        // Until a waker writes the result, a blocked call returns 0
        // (`sleep`'s result: nobody writes it).
        Ok(Done::Blocked) => frame.rax = 0,
        Ok(Done::Gone) => {}
        Err(e) => frame.rax = e.to_return(),
    }
}

/// Writes `msg` into a receiver's registers.
pub(crate) fn put_message(f: &mut TrapFrame, msg: &Message) {
    f.rax = u64::from(msg.from);
    f.rdi = msg.words[0];
    f.rsi = msg.words[1];
    f.rdx = msg.words[2];
    f.r10 = msg.words[3];
}

/// The running process's `span`, checked for `A` (at most `max` bytes),
/// or `BadAddress`.
fn user_range<A: Checked>(k: &mut Kernel, span: Span, max: u64) -> Result<UserRange<A>, Error> {
    let pid = k.current.ok_or(Error::NoSuchProcess)?;
    let space = k.procs.get(&pid).and_then(|p| p.space.as_ref()).ok_or(Error::NoSuchProcess)?;
    UserRange::new(&mut k.mem, space, span.addr, span.len, max)
}

/// [`user_range`] for the kernel to read.
fn readable(k: &mut Kernel, span: Span, max: u64) -> Result<UserRange<ForReading>, Error> {
    user_range(k, span, max)
}

/// [`user_range`] for the kernel to write.
fn writable(k: &mut Kernel, span: Span, max: u64) -> Result<UserRange<ForWriting>, Error> {
    user_range(k, span, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(rax: u64, args: [u64; 5]) -> TrapFrame {
        let mut f = TrapFrame::default();
        (f.rax, f.rdi, f.rsi, f.rdx, f.r10, f.r8) = (rax, args[0], args[1], args[2], args[3], args[4]);
        f
    }

    #[test]
    fn registers_decode_into_calls_with_their_types() {
        assert_eq!(Call::decode(&frame(abi::EXIT, [0x1_0000_0007, 0, 0, 0, 0])), Ok(Call::Exit { code: 7 }));
        let spawn = Call::decode(&frame(abi::SPAWN, [0x1000, 5, 0x2000, 3, 2]));
        let (name, args) = (Span { addr: 0x1000, len: 5 }, Span { addr: 0x2000, len: 3 });
        assert_eq!(spawn, Ok(Call::Spawn { name, args, priority: Priority::Level(2) }));
        let inherit = Call::decode(&frame(abi::SPAWN, [0, 0, 0, 0, abi::PRIORITY_INHERIT]));
        assert!(matches!(inherit, Ok(Call::Spawn { priority: Priority::Inherit, .. })));
        let send = Call::decode(&frame(abi::SEND, [3, 1, 2, 3, 4]));
        assert_eq!(send, Ok(Call::Send { to: 3, words: [1, 2, 3, 4] }));
        let write = Call::decode(&frame(abi::BLK_WRITE, [1, 8, 0x3000, 512, 0]));
        assert_eq!(
            write,
            Ok(Call::BlkTransfer { write: true, dev: 1, sector: 8, buf: Span { addr: 0x3000, len: 512 } })
        );
    }

    #[test]
    fn arguments_out_of_range_are_refused_at_decoding() {
        assert_eq!(Call::decode(&frame(abi::SPAWN, [0, 0, 0, 0, 8])), Err(Error::BadArgument));
        assert_eq!(Call::decode(&frame(abi::WAIT, [1 << 40, 0, 0, 0, 0])), Err(Error::NoSuchProcess));
        assert_eq!(Call::decode(&frame(abi::SEND, [u64::MAX, 0, 0, 0, 0])), Err(Error::NoSuchProcess));
        assert_eq!(Call::decode(&frame(9999, [0; 5])), Err(Error::BadSyscall));
    }
}
