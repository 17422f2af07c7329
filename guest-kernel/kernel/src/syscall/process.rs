//! The calls about processes and memory: exit, yield, sleep, spawn, wait,
//! messages, sharing and mapping pages, `ps` and `meminfo`.

use ward_abi::fault::FaultRecord;
use ward_abi::layout::{PAGE_SIZE, USER_HEAP_BASE, USER_SHARE_BASE, USER_STACK_TOP};
use ward_abi::syscall::{self as abi, Error, MemInfo, ProcessInfo};
use ward_abi::width::usize_from;
use zerocopy::IntoBytes;

use super::{Done, Priority, Span, Timeout, readable, writable};
use crate::kernel::{Kernel, cycles_to_ns};
use crate::mem::paging::{NO_EXECUTE, WRITABLE};
use crate::proc::{MAILBOX_CAPACITY, Message, Pid, State};

pub(super) fn exit(k: &mut Kernel, pid: Pid, code: u32) -> Result<Done, Error> {
    k.exit(pid, i64::from(code));
    Ok(Done::Gone)
}

pub(super) fn yield_now(k: &mut Kernel) -> Result<Done, Error> {
    k.resched = true;
    k.sched_dirty = true;
    Ok(Done::Value(0))
}

pub(super) fn sleep(k: &mut Kernel, ns: u64) -> Result<Done, Error> {
    let deadline = k.deadline_in(ns);
    k.block_current(State::Sleeping { deadline });
    Ok(Done::Blocked)
}

pub(super) fn spawn(k: &mut Kernel, pid: Pid, name: Span, args: Span, priority: Priority) -> Result<Done, Error> {
    let name = readable(k, name, abi::MAX_NAME_LEN as u64)?;
    let args = readable(k, args, abi::MAX_ARGS_LEN as u64)?;
    let priority = match priority {
        Priority::Inherit => k.procs.get(&pid).map_or(abi::PRIORITY_DEFAULT, |p| p.priority),
        Priority::Level(level) => level,
    };
    // SAFETY: the caller's address space is loaded and nothing remaps it
    // during this call; `spawn` copies what it needs before returning.
    let (name, args) = unsafe { (name.as_slice(), args.as_slice()) };
    crate::proc::spawn::spawn(k, name, args, priority, pid).map(|child| Done::Value(u64::from(child)))
}

pub(super) fn wait(k: &mut Kernel, pid: Pid, child: Pid, fault_out: u64) -> Result<Done, Error> {
    let (state, fault) = match k.procs.get(&child) {
        None => return Err(Error::NoSuchProcess),
        Some(c) if c.parent != pid => return Err(Error::NotChild),
        Some(c) => (c.state, c.fault),
    };
    let size = core::mem::size_of::<FaultRecord>() as u64;
    if fault_out != 0 {
        // Checked now, so a bad pointer fails the call before it waits.
        if !fault_out.is_multiple_of(8) {
            return Err(Error::BadAddress);
        }
        writable(k, Span { addr: fault_out, len: size }, size)?;
    }
    if let State::Zombie { status } = state {
        if fault_out != 0 {
            k.write_user(pid, fault_out, fault.map(|f| f.record()).unwrap_or_default().as_bytes())?;
        }
        k.reap(child);
        return Ok(Done::Value(status.cast_unsigned()));
    }
    if let Some(p) = k.procs.get_mut(&pid) {
        p.wait_fault_out = fault_out;
    }
    k.block_current(State::Waiting { child });
    Ok(Done::Blocked)
}

pub(super) fn send(k: &mut Kernel, pid: Pid, to: Pid, words: [u64; 4]) -> Result<Done, Error> {
    deliver(k, to, Message { from: pid, words })?;
    Ok(Done::Value(0))
}

/// Gives `msg` to `to`: straight into its registers if it is receiving,
/// else into its mailbox.
fn deliver(k: &mut Kernel, to: Pid, msg: Message) -> Result<(), Error> {
    let target = k.procs.get_mut(&to).filter(|p| !p.is_zombie()).ok_or(Error::NoSuchProcess)?;
    if let State::Receiving { .. } = target.state {
        // SAFETY: the target is alive and blocked: its kernel stack is
        // mapped and its frame is not in use.
        let f = unsafe { target.frame() };
        super::put_message(f, &msg);
        k.wake(to);
        return Ok(());
    }
    if target.mailbox.len() >= MAILBOX_CAPACITY {
        return Err(Error::QueueFull);
    }
    target.mailbox.push_back(msg);
    Ok(())
}

pub(super) fn recv(k: &mut Kernel, pid: Pid, timeout: Timeout) -> Result<Done, Error> {
    let p = k.procs.get_mut(&pid).ok_or(Error::NoSuchProcess)?;
    if core::mem::take(&mut p.stop_pending) {
        return Ok(Done::Message(Message { from: 0, words: [abi::STOP_TAG, 0, 0, 0] }));
    }
    if let Some(msg) = p.mailbox.pop_front() {
        return Ok(Done::Message(msg));
    }
    if timeout == 0 {
        return Err(Error::TimedOut);
    }
    let deadline = (timeout != abi::WAIT_FOREVER).then(|| k.deadline_in(timeout));
    k.block_current(State::Receiving { deadline });
    Ok(Done::Blocked)
}

/// `share`: every page is checked (the caller's, the receiver's room and
/// mailbox) before any is mapped, and a mapping that fails part way is
/// taken back: a failed share leaves both processes as they were.
pub(super) fn share(k: &mut Kernel, pid: Pid, to: Pid, addr: u64, pages: u64, writable: bool) -> Result<Done, Error> {
    if !addr.is_multiple_of(PAGE_SIZE) || pages == 0 || pages > abi::MAX_MAP_PAGES || to == pid {
        return Err(Error::BadArgument);
    }
    let Kernel { mem, frames, procs, .. } = &mut *k;
    let target = procs.get(&to).filter(|p| !p.is_zombie()).ok_or(Error::NoSuchProcess)?;
    if target.mailbox.len() >= MAILBOX_CAPACITY && !matches!(target.state, State::Receiving { .. }) {
        return Err(Error::QueueFull);
    }
    let base = target.share_next;
    if base + pages * PAGE_SIZE > USER_STACK_TOP - abi::MAX_MAP_PAGES * PAGE_SIZE {
        return Err(Error::NoMemory);
    }
    let from = procs.get(&pid).and_then(|p| p.space.as_ref()).ok_or(Error::NoSuchProcess)?;
    let shared = from.shareable_frames(mem, frames, addr, pages, writable)?;
    let flags = NO_EXECUTE | if writable { WRITABLE } else { 0 };
    let target = procs.get_mut(&to).ok_or(Error::NoSuchProcess)?;
    target.space.as_mut().ok_or(Error::NoSuchProcess)?.map_shared(mem, frames, base, &shared, flags)?;
    target.share_next = base + pages * PAGE_SIZE;
    deliver(k, to, Message { from: pid, words: [abi::SHARE_TAG, base, pages, u64::from(writable)] })?;
    Ok(Done::Value(0))
}

pub(super) fn map(k: &mut Kernel, pid: Pid, pages: u64) -> Result<Done, Error> {
    if pages == 0 || pages > abi::MAX_MAP_PAGES {
        return Err(Error::BadArgument);
    }
    let Kernel { mem, frames, procs, .. } = k;
    let p = procs.get_mut(&pid).ok_or(Error::NoSuchProcess)?;
    let base = p.heap_next;
    if base + pages * PAGE_SIZE > USER_SHARE_BASE {
        return Err(Error::NoMemory);
    }
    let space = p.space.as_mut().ok_or(Error::NoSuchProcess)?;
    for i in 0..pages {
        if space.map_zeroed(mem, frames, base + i * PAGE_SIZE, WRITABLE | NO_EXECUTE).is_err() {
            for j in 0..i {
                space.unmap(mem, frames, base + j * PAGE_SIZE);
            }
            return Err(Error::NoMemory);
        }
    }
    p.heap_next = base + pages * PAGE_SIZE;
    Ok(Done::Value(base))
}

pub(super) fn unmap(k: &mut Kernel, pid: Pid, addr: u64, pages: u64) -> Result<Done, Error> {
    let end = pages.checked_mul(PAGE_SIZE).and_then(|len| addr.checked_add(len)).ok_or(Error::BadArgument)?;
    if !addr.is_multiple_of(PAGE_SIZE) || addr < USER_HEAP_BASE || end > USER_STACK_TOP - abi::MAX_MAP_PAGES * PAGE_SIZE
    {
        return Err(Error::BadArgument);
    }
    let Kernel { mem, frames, procs, .. } = k;
    let space = procs.get_mut(&pid).and_then(|p| p.space.as_mut()).ok_or(Error::NoSuchProcess)?;
    let mut virt = addr;
    while virt < end {
        if space.unmap(mem, frames, virt).is_some() {
            crate::arch::invlpg(virt);
        }
        virt += PAGE_SIZE;
    }
    Ok(Done::Value(0))
}

pub(super) fn ps(k: &mut Kernel, buf: u64, capacity: u64) -> Result<Done, Error> {
    let size = core::mem::size_of::<ProcessInfo>() as u64;
    let len = capacity.checked_mul(size).ok_or(Error::BadArgument)?;
    let range = writable(k, Span { addr: buf, len }, 1024 * size)?;
    // SAFETY: checked writable in the current address space, stable for the
    // duration of this call.
    let out = unsafe { range.as_mut_slice() };
    let infos = k.procs.values().map(|p| process_info(k, p));
    for (slot, info) in out.chunks_exact_mut(usize_from(size)).zip(infos) {
        slot.copy_from_slice(info.as_bytes());
    }
    Ok(Done::Value(k.procs.len() as u64))
}

/// What `ps` reports of `p`.
pub fn process_info(k: &Kernel, p: &crate::proc::Process) -> ProcessInfo {
    let mut name = [0u8; 16];
    name.copy_from_slice(&p.name);
    let owned = p.space.as_ref().map_or(0, |s| s.owned_frames());
    let stack = if p.is_zombie() { 0 } else { crate::proc::KSTACK_PAGES };
    // The running process has not been charged since it was switched to.
    let running = if k.current == Some(p.pid) { crate::arch::rdtsc().wrapping_sub(k.last_charge) } else { 0 };
    ProcessInfo {
        pid: p.pid,
        parent: p.parent,
        state: p.state.abi() as u32,
        priority: u32::from(p.priority),
        cpu_ns: cycles_to_ns(p.cpu_cycles.wrapping_add(running), k.tsc_khz),
        pages: owned + stack,
        name,
        fault: p.fault.map(|f| f.record()).unwrap_or_default(),
    }
}

/// The memory figures `meminfo` reports.
pub fn mem_info(k: &Kernel) -> MemInfo {
    let (heap_used, heap_size) = crate::mem::heap::usage();
    MemInfo { total_frames: k.frames.total_frames(), free_frames: k.frames.free_frames(), heap_used, heap_size }
}

pub(super) fn meminfo(k: &mut Kernel, buf: u64) -> Result<Done, Error> {
    let size = core::mem::size_of::<MemInfo>() as u64;
    let range = writable(k, Span { addr: buf, len: size }, size)?;
    let info = mem_info(k);
    // SAFETY: checked writable in the current address space.
    unsafe { range.as_mut_slice() }.copy_from_slice(info.as_bytes());
    Ok(Done::Value(0))
}
