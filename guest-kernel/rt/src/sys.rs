//! The system calls, typed. Numbers and error codes are in
//! `ward_abi::syscall`; each call here is one `syscall` instruction.

use core::arch::asm;
use ward_abi::width::{high_u32, low_u8, low_u32, usize_from};

use ward_abi::syscall::{self as abi, Error, MemInfo, ProcessInfo};

/// Scheduling priorities for [`spawn`]: 0 is the highest.
pub use ward_abi::fault::{Access, Fault, FaultRecord};
pub use ward_abi::syscall::{PRIORITY_DEFAULT, PRIORITY_HIGHEST, PRIORITY_LOWEST};
use zerocopy::IntoBytes;

/// A process id.
pub type Pid = u32;

/// How a child ended, as [`wait`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// It exited with this code.
    Exited(u32),
    /// The kernel killed it, for this.
    Killed(Fault),
}

impl Status {
    /// Decodes a raw status and the fault record `wait` wrote.
    pub fn from_raw(raw: u64, fault: &FaultRecord) -> Self {
        let raw = raw.cast_signed();
        match fault.fault() {
            Some(fault) if raw & abi::STATUS_KILLED != 0 => Self::Killed(fault),
            // A kernel that killed without a record: the exception vector
            // (the low byte) is all there is.
            None if raw & abi::STATUS_KILLED != 0 => {
                Self::Killed(Fault::Exception { vector: low_u8(raw.cast_unsigned()), rip: 0, error_code: 0 })
            }
            // An exit code is the low 32 bits.
            _ => Self::Exited(low_u32(raw.cast_unsigned())),
        }
    }
}

/// A received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: Pid,
    /// Payload.
    pub words: [u64; 4],
}

impl Message {
    /// Whether this is the kernel's request to stop (the host pressed the
    /// compartment's power button: `ward stop`): finish what must be
    /// finished (flush the disk), then exit. The compartment powers off
    /// when every program has ended, with the first one's exit code.
    pub fn is_stop_request(&self) -> bool {
        self.from == 0 && self.words[0] == abi::STOP_TAG
    }
}

#[inline]
fn syscall5(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> Result<u64, Error> {
    let ret: u64;
    // SAFETY: `syscall` enters the kernel, which checks every argument; it
    // clobbers rcx and r11 and returns in rax.
    unsafe {
        asm!("syscall", inlateout("rax") nr => ret, in("rdi") a0, in("rsi") a1, in("rdx") a2, in("r10") a3,
             in("r8") a4, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    abi::decode(ret)
}

#[inline]
fn syscall0(nr: u64) -> Result<u64, Error> {
    syscall5(nr, 0, 0, 0, 0, 0)
}

/// Ends this process with `code`.
pub fn exit(code: i32) -> ! {
    let _ = syscall5(abi::EXIT, code as u32 as u64, 0, 0, 0, 0);
    // The kernel never returns from `exit`.
    loop {
        core::hint::spin_loop();
    }
}

/// Lets another process of the same priority run.
pub fn yield_now() {
    let _ = syscall0(abi::YIELD);
}

/// Sleeps at least `ns` nanoseconds.
pub fn sleep_ns(ns: u64) {
    let _ = syscall5(abi::SLEEP, ns, 0, 0, 0, 0);
}

/// Starts boot module `program` as a child with `args`, at `priority`
/// (0 highest, 7 lowest; `None` inherits).
pub fn spawn(program: &str, args: &[u8], priority: Option<u8>) -> Result<Pid, Error> {
    let prio = priority.map_or(abi::PRIORITY_INHERIT, u64::from);
    let name = program.as_bytes();
    syscall5(abi::SPAWN, name.as_ptr() as u64, name.len() as u64, args.as_ptr() as u64, args.len() as u64, prio)
        .map(low_u32)
}

/// Waits for child `pid` to end and reaps it.
pub fn wait(pid: Pid) -> Result<Status, Error> {
    let mut fault = FaultRecord::default();
    let raw = syscall5(abi::WAIT, u64::from(pid), core::ptr::from_mut(&mut fault) as u64, 0, 0, 0)?;
    Ok(Status::from_raw(raw, &fault))
}

/// This process's id.
pub fn getpid() -> Pid {
    syscall0(abi::GETPID).map_or(0, low_u32)
}

/// Writes bytes to the console.
pub fn write(bytes: &[u8]) -> Result<u64, Error> {
    write_raw(bytes.as_ptr() as u64, bytes.len() as u64)
}

/// Writes `len` bytes at `addr` to the console, unchecked on our side (the
/// kernel checks): for tests of the kernel's pointer checks.
pub fn write_raw(addr: u64, len: u64) -> Result<u64, Error> {
    syscall5(abi::WRITE, addr, len, 0, 0, 0)
}

/// Nanoseconds since boot.
pub fn clock_ns() -> u64 {
    syscall0(abi::CLOCK).unwrap_or(0)
}

/// Sends a four-word message to `pid`.
pub fn send(pid: Pid, words: [u64; 4]) -> Result<(), Error> {
    syscall5(abi::SEND, u64::from(pid), words[0], words[1], words[2], words[3]).map(|_| ())
}

/// Receives a message, waiting at most `timeout_ns` (`None`: forever).
pub fn recv(timeout_ns: Option<u64>) -> Result<Message, Error> {
    let (ret, w0, w1, w2, w3): (u64, u64, u64, u64, u64);
    // SAFETY: as `syscall5`; `recv` also returns the words in rdi, rsi,
    // rdx and r10.
    unsafe {
        asm!("syscall", inlateout("rax") abi::RECV => ret, inlateout("rdi") timeout_ns.unwrap_or(abi::WAIT_FOREVER) => w0,
             lateout("rsi") w1, lateout("rdx") w2, lateout("r10") w3, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    abi::decode(ret).map(|from| Message { from: low_u32(from), words: [w0, w1, w2, w3] })
}

/// Blocks until the compartment is asked to stop, for a program that waits
/// for nothing else: messages that arrive meanwhile are dropped. A program
/// that also serves messages looks for [`Message::is_stop_request`] in its
/// own [`recv`] loop instead.
pub fn wait_for_stop() {
    while !recv(None).is_ok_and(|m| m.is_stop_request()) {}
}

/// Shares `pages` pages at `addr` with `pid` (no copy); `pid` gets a
/// message `[SHARE_TAG, its address, pages, writable]`.
pub fn share(pid: Pid, addr: u64, pages: u64, writable: bool) -> Result<(), Error> {
    syscall5(abi::SHARE, u64::from(pid), addr, pages, u64::from(writable), 0).map(|_| ())
}

/// Maps `pages` fresh zeroed pages; returns their address.
pub fn map(pages: u64) -> Result<u64, Error> {
    syscall5(abi::MAP, pages, 0, 0, 0, 0)
}

/// Unmaps pages from [`map`] or [`share`].
pub fn unmap(addr: u64, pages: u64) -> Result<(), Error> {
    syscall5(abi::UNMAP, addr, pages, 0, 0, 0).map(|_| ())
}

/// Fills `out` with process records; returns how many processes exist.
pub fn ps(out: &mut [ProcessInfo]) -> Result<usize, Error> {
    syscall5(abi::PS, out.as_mut_ptr() as u64, out.len() as u64, 0, 0, 0).map(usize_from)
}

/// Physical memory figures.
pub fn meminfo() -> Result<MemInfo, Error> {
    let mut info = MemInfo::default();
    syscall5(abi::MEMINFO, info.as_mut_bytes().as_mut_ptr() as u64, 0, 0, 0, 0)?;
    Ok(info)
}

/// A system call that does nothing: the round-trip cost.
pub fn null() {
    let _ = syscall0(abi::NULL);
}

/// A raw system call, for tests of the kernel's argument checks.
pub fn raw(nr: u64, args: [u64; 5]) -> Result<u64, Error> {
    syscall5(nr, args[0], args[1], args[2], args[3], args[4])
}

/// Retries a device call while the device's queue is full.
fn retry_busy(mut call: impl FnMut() -> Result<u64, Error>) -> Result<u64, Error> {
    loop {
        match call() {
            Err(Error::Busy) => yield_now(),
            other => return other,
        }
    }
}

/// Reads console input into `buf`; blocks until some arrives. 0 means the
/// input ended.
pub fn read(buf: &mut [u8]) -> Result<usize, Error> {
    retry_busy(|| syscall5(abi::READ, buf.as_mut_ptr() as u64, buf.len() as u64, 0, 0, 0)).map(usize_from)
}

/// Fills `buf` with entropy from the host.
pub fn getrandom(buf: &mut [u8]) -> Result<(), Error> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let n = retry_busy(|| syscall5(abi::GETRANDOM, rest.as_mut_ptr() as u64, rest.len() as u64, 0, 0, 0))?;
        if n == 0 {
            return Err(Error::IoError);
        }
        done += usize_from(n);
    }
    Ok(())
}

/// What block device `dev` is.
pub fn blk_info(dev: u32) -> Result<abi::BlockInfo, Error> {
    let mut info = abi::BlockInfo::default();
    syscall5(abi::BLK_INFO, u64::from(dev), info.as_mut_bytes().as_mut_ptr() as u64, 0, 0, 0)?;
    Ok(info)
}

/// Reads `buf.len()` bytes (whole sectors) from `sector` of device `dev`.
pub fn blk_read(dev: u32, sector: u64, buf: &mut [u8]) -> Result<(), Error> {
    let mut done = 0usize;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let at = sector + (done as u64) / 512;
        let n =
            retry_busy(|| syscall5(abi::BLK_READ, u64::from(dev), at, rest.as_mut_ptr() as u64, rest.len() as u64, 0))?;
        done += usize_from(n);
    }
    Ok(())
}

/// Writes `buf` (whole sectors) at `sector` of device `dev`.
pub fn blk_write(dev: u32, sector: u64, buf: &[u8]) -> Result<(), Error> {
    let mut done = 0usize;
    while done < buf.len() {
        let rest = &buf[done..];
        let at = sector + (done as u64) / 512;
        let n =
            retry_busy(|| syscall5(abi::BLK_WRITE, u64::from(dev), at, rest.as_ptr() as u64, rest.len() as u64, 0))?;
        done += usize_from(n);
    }
    Ok(())
}

/// Makes earlier writes to device `dev` durable.
pub fn blk_flush(dev: u32) -> Result<(), Error> {
    retry_busy(|| syscall5(abi::BLK_FLUSH, u64::from(dev), 0, 0, 0, 0)).map(|_| ())
}

/// The device's 20-byte id.
pub fn blk_id(dev: u32) -> Result<[u8; 20], Error> {
    let mut id = [0u8; 20];
    retry_busy(|| syscall5(abi::BLK_ID, u64::from(dev), id.as_mut_ptr() as u64, 20, 0, 0))?;
    Ok(id)
}

/// What [`vsock_recv`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VsockRecv {
    /// Receive buffer `index` of the area holds a packet of `len` bytes
    /// (header included); it is ours until given back.
    Packet {
        /// Buffer index.
        index: u32,
        /// Bytes the device wrote.
        len: u32,
        /// More filled buffers wait (another receive finds one at once).
        more: bool,
    },
    /// The device dropped every connection.
    TransportReset,
}

/// Makes this process the owner of the vsock device; returns the CID and
/// where the read-only receive area is mapped.
pub fn vsock_attach() -> Result<ward_abi::vsock::VsockInfo, Error> {
    let mut info = ward_abi::vsock::VsockInfo::default();
    syscall5(abi::VSOCK_ATTACH, info.as_mut_bytes().as_mut_ptr() as u64, 0, 0, 0, 0)?;
    Ok(info)
}

/// Gives receive buffer `done` back (if any), then waits at most
/// `timeout_ns` (`None`: forever) for the next packet.
pub fn vsock_recv(done: Option<u32>, timeout_ns: Option<u64>) -> Result<VsockRecv, Error> {
    let done = done.map_or(ward_abi::vsock::NO_BUFFER, u64::from);
    let got = syscall5(abi::VSOCK_RECV, done, timeout_ns.unwrap_or(abi::WAIT_FOREVER), 0, 0, 0)?;
    if got == ward_abi::vsock::RECV_TRANSPORT_RESET {
        return Ok(VsockRecv::TransportReset);
    }
    let more = got & ward_abi::vsock::RECV_MORE != 0;
    let len = low_u32(got & !ward_abi::vsock::RECV_MORE);
    Ok(VsockRecv::Packet { index: high_u32(got), len, more })
}

/// Sends one packet (header and payload) from our memory; returns when the
/// device has it.
pub fn vsock_send(packet: &[u8]) -> Result<usize, Error> {
    retry_busy(|| syscall5(abi::VSOCK_SEND, packet.as_ptr() as u64, packet.len() as u64, 0, 0, 0)).map(usize_from)
}
