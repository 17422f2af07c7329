//! System calls: decoding a program's request, checking every argument,
//! and doing it. The ABI is in `ward_abi::syscall`.
//!
//! A call either completes (its result goes in `rax`) or blocks the caller
//! (`sleep`, `wait`, `recv`); a blocked caller's result is written into its
//! saved registers when it wakes. Bad arguments return error codes: nothing
//! a program passes can make the kernel fault.

use ward_abi::debug_console::{self, REG_WRITE, write_request};
use ward_abi::layout::{PAGE_SIZE, USER_HEAP_BASE, USER_SHARE_BASE, USER_STACK_TOP};
use ward_abi::syscall::{self as abi, Error, MemInfo, ProcessInfo};
use zerocopy::IntoBytes;

use crate::kernel::{Kernel, cycles_to_ns};
use crate::mem::paging::{self, NO_EXECUTE, WRITABLE};
use crate::mem::user::{Access, UserRange, Want};
use crate::proc::spawn::spawn;
use crate::proc::{MAILBOX_CAPACITY, Message, Pid, State};
use crate::traps::TrapFrame;
use crate::virtio::IoBuffer;
use ward_abi::virtio::blk;
use ward_abi::vsock::{HEADER_SIZE, MAX_PAYLOAD, NO_BUFFER, VsockInfo};

use crate::virtio::vsock::{Owner, RX_BUFFER_SIZE, RX_BUFFERS};

/// Handles the system call in `frame` for the running process.
pub fn dispatch(k: &mut Kernel, frame: &mut TrapFrame) {
    let Some(pid) = k.current else { return };
    let args = [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8];
    let result = match frame.rax {
        abi::EXIT => {
            k.exit(pid, i64::from(args[0] as u32));
            return;
        }
        abi::YIELD => {
            k.resched = true;
            k.sched_dirty = true;
            Ok(0)
        }
        abi::SLEEP => {
            let deadline = k.deadline_in(args[0]);
            k.block_current(State::Sleeping { deadline });
            Ok(0)
        }
        abi::SPAWN => sys_spawn(k, pid, args),
        abi::WAIT => return sys_wait(k, pid, frame, args[0]),
        abi::GETPID => Ok(u64::from(pid)),
        abi::WRITE if k.devices.console.is_some() => return sys_io(k, frame, Io::ConsoleWrite, args[0], args[1]),
        abi::WRITE => sys_write(k, args[0], args[1]),
        abi::READ => return sys_io(k, frame, Io::ConsoleRead, args[0], args[1]),
        abi::GETRANDOM => return sys_io(k, frame, Io::Random, args[0], args[1]),
        abi::BLK_INFO => sys_blk_info(k, args[0], args[1]),
        abi::BLK_READ | abi::BLK_WRITE => return sys_blk_rw(k, frame, args),
        abi::BLK_FLUSH => return sys_blk_simple(k, frame, args[0], blk::T_FLUSH, 0, 0),
        abi::BLK_ID => return sys_blk_simple(k, frame, args[0], blk::T_GET_ID, args[1], 20),
        abi::CLOCK => Ok(k.now_ns()),
        abi::SEND => sys_send(k, pid, args),
        abi::RECV => return sys_recv(k, frame, args[0]),
        abi::SHARE => sys_share(k, pid, args),
        abi::MAP => sys_map(k, pid, args[0]),
        abi::UNMAP => sys_unmap(k, pid, args[0], args[1]),
        abi::PS => sys_ps(k, args[0], args[1]),
        abi::MEMINFO => sys_meminfo(k, args[0]),
        abi::NULL => Ok(0),
        abi::VSOCK_ATTACH => sys_vsock_attach(k, pid, args[0]),
        abi::VSOCK_RECV => return sys_vsock_recv(k, pid, frame, args[0], args[1]),
        abi::VSOCK_SEND => return sys_vsock_send(k, pid, frame, args[0], args[1]),
        _ => Err(Error::BadSyscall),
    };
    frame.rax = match result {
        Ok(value) => value,
        Err(e) => e.to_return(),
    };
}

/// The running process's checked range, or `BadAddress`.
fn user_range(k: &mut Kernel, addr: u64, len: u64, max: u64, access: Access) -> Result<UserRange, Error> {
    let pid = k.current.ok_or(Error::NoSuchProcess)?;
    let space = k.procs.get(&pid).and_then(|p| p.space.as_ref()).ok_or(Error::NoSuchProcess)?;
    UserRange::new(&mut k.mem, space, addr, len, max, access)
}

fn sys_spawn(k: &mut Kernel, pid: Pid, a: [u64; 5]) -> Result<u64, Error> {
    let name = user_range(k, a[0], a[1], abi::MAX_NAME_LEN as u64, Access::Read)?;
    let args = user_range(k, a[2], a[3], abi::MAX_ARGS_LEN as u64, Access::Read)?;
    let priority = match a[4] {
        abi::PRIORITY_INHERIT => k.procs.get(&pid).map_or(abi::PRIORITY_DEFAULT, |p| p.priority),
        p if p <= u64::from(abi::PRIORITY_LOWEST) => p as u8,
        _ => return Err(Error::BadArgument),
    };
    // SAFETY: the caller's address space is loaded and nothing remaps it
    // during this call; `spawn` copies what it needs before returning.
    let (name, args) = unsafe { (name.as_slice(), args.as_slice()) };
    spawn(k, name, args, priority, pid).map(u64::from)
}

fn sys_wait(k: &mut Kernel, pid: Pid, frame: &mut TrapFrame, child: u64) {
    let child = Pid::try_from(child).unwrap_or(0);
    let status = match k.procs.get(&child) {
        None => Err(Error::NoSuchProcess),
        Some(c) if c.parent != pid => Err(Error::NotChild),
        Some(c) => Ok(c.state),
    };
    frame.rax = match status {
        Ok(State::Zombie { status }) => {
            k.reap(child);
            status as u64
        }
        Ok(_) => {
            k.block_current(State::Waiting { child });
            0
        }
        Err(e) => e.to_return(),
    };
}

fn sys_write(k: &mut Kernel, addr: u64, len: u64) -> Result<u64, Error> {
    let range = user_range(k, addr, len, abi::MAX_WRITE_LEN as u64, Access::Read)?;
    let pid = k.current.ok_or(Error::NoSuchProcess)?;
    k.mark_user_output();
    let Kernel { mem, procs, .. } = k;
    let space = procs.get(&pid).and_then(|p| p.space.as_ref()).ok_or(Error::NoSuchProcess)?;
    // Each piece lies in one page; the console device reads it in place.
    for (phys, piece) in range.physical_pieces(mem, space) {
        console_write_phys(phys, piece);
    }
    Ok(len)
}

#[cfg(not(test))]
fn console_write_phys(phys: u64, len: u64) {
    let reg = crate::addr::phys_to_virt(debug_console::BASE + REG_WRITE) as *mut u64;
    // SAFETY: the console register is mapped in the direct map; the store
    // makes the VMM read `len` (<= one page) bytes at guest-physical `phys`.
    unsafe { core::ptr::write_volatile(reg, write_request(phys, len as u16)) };
}

#[cfg(test)]
fn console_write_phys(_phys: u64, _len: u64) {
    let _ = (debug_console::BASE, REG_WRITE, write_request(0, 0));
}

fn sys_send(k: &mut Kernel, pid: Pid, a: [u64; 5]) -> Result<u64, Error> {
    let to = Pid::try_from(a[0]).map_err(|_| Error::NoSuchProcess)?;
    deliver(k, to, Message { from: pid, words: [a[1], a[2], a[3], a[4]] })?;
    Ok(0)
}

/// Gives `msg` to `to`: straight into its registers if it is receiving,
/// else into its mailbox.
fn deliver(k: &mut Kernel, to: Pid, msg: Message) -> Result<(), Error> {
    let target = k.procs.get_mut(&to).filter(|p| !p.is_zombie()).ok_or(Error::NoSuchProcess)?;
    if let State::Receiving { .. } = target.state {
        // SAFETY: the target is alive and blocked: its kernel stack is
        // mapped and its frame is not in use.
        let f = unsafe { target.frame() };
        put_message(f, &msg);
        k.wake(to);
        return Ok(());
    }
    if target.mailbox.len() >= MAILBOX_CAPACITY {
        return Err(Error::QueueFull);
    }
    target.mailbox.push_back(msg);
    Ok(())
}

fn put_message(f: &mut TrapFrame, msg: &Message) {
    f.rax = u64::from(msg.from);
    f.rdi = msg.words[0];
    f.rsi = msg.words[1];
    f.rdx = msg.words[2];
    f.r10 = msg.words[3];
}

fn sys_recv(k: &mut Kernel, frame: &mut TrapFrame, timeout_ns: u64) {
    let Some(p) = k.current.and_then(|pid| k.procs.get_mut(&pid)) else { return };
    if let Some(msg) = p.mailbox.pop_front() {
        put_message(frame, &msg);
        return;
    }
    if timeout_ns == 0 {
        frame.rax = Error::TimedOut.to_return();
        return;
    }
    let deadline = (timeout_ns != abi::WAIT_FOREVER).then(|| k.deadline_in(timeout_ns));
    k.block_current(State::Receiving { deadline });
}

fn sys_share(k: &mut Kernel, pid: Pid, a: [u64; 5]) -> Result<u64, Error> {
    let (to, addr, pages, writable) = (Pid::try_from(a[0]).map_err(|_| Error::NoSuchProcess)?, a[1], a[2], a[3] != 0);
    if addr % PAGE_SIZE != 0 || pages == 0 || pages > abi::MAX_MAP_PAGES || to == pid {
        return Err(Error::BadArgument);
    }
    let access = if writable { Access::Write } else { Access::Read };
    user_range(k, addr, pages * PAGE_SIZE, abi::MAX_MAP_PAGES * PAGE_SIZE, access)?;
    let target = k.procs.get(&to).filter(|p| !p.is_zombie()).ok_or(Error::NoSuchProcess)?;
    if target.mailbox.len() >= MAILBOX_CAPACITY && !matches!(target.state, State::Receiving { .. }) {
        return Err(Error::QueueFull);
    }
    let base = target.share_next;
    if base + pages * PAGE_SIZE > USER_STACK_TOP - abi::MAX_MAP_PAGES * PAGE_SIZE {
        return Err(Error::NoMemory);
    }
    let flags = NO_EXECUTE | if writable { WRITABLE } else { 0 };
    for i in 0..pages {
        let Kernel { mem, frames, procs, .. } = &mut *k;
        let from = procs.get(&pid).and_then(|p| p.space.as_ref()).ok_or(Error::NoSuchProcess)?;
        let t = from.translate(mem, addr + i * PAGE_SIZE).ok_or(Error::BadAddress)?;
        if t.flags & paging::MODULE_FRAME != 0 {
            return Err(Error::BadAddress);
        }
        let phys = t.phys & paging::ADDR_MASK;
        frames.share(mem, phys).map_err(|_| Error::BadAddress)?;
        let space = procs.get_mut(&to).and_then(|p| p.space.as_mut()).ok_or(Error::NoSuchProcess)?;
        if space.map(mem, frames, base + i * PAGE_SIZE, phys, flags).is_err() {
            let _ = frames.release(mem, phys);
            return Err(Error::NoMemory);
        }
    }
    if let Some(t) = k.procs.get_mut(&to) {
        t.share_next = base + pages * PAGE_SIZE;
    }
    deliver(k, to, Message { from: pid, words: [abi::SHARE_TAG, base, pages, u64::from(writable)] })?;
    Ok(0)
}

fn sys_map(k: &mut Kernel, pid: Pid, pages: u64) -> Result<u64, Error> {
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
    Ok(base)
}

fn sys_unmap(k: &mut Kernel, pid: Pid, addr: u64, pages: u64) -> Result<u64, Error> {
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
    Ok(0)
}

fn sys_ps(k: &mut Kernel, buf: u64, capacity: u64) -> Result<u64, Error> {
    let size = core::mem::size_of::<ProcessInfo>() as u64;
    let len = capacity.checked_mul(size).ok_or(Error::BadArgument)?;
    let range = user_range(k, buf, len, 1024 * size, Access::Write)?;
    // SAFETY: checked writable in the current address space, stable for the
    // duration of this call.
    let out = unsafe { range.as_mut_slice() };
    let infos = k.procs.values().map(|p| process_info(k, p));
    for (slot, info) in out.chunks_exact_mut(size as usize).zip(infos) {
        slot.copy_from_slice(info.as_bytes());
    }
    Ok(k.procs.len() as u64)
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
    }
}

/// The memory figures `meminfo` reports.
pub fn mem_info(k: &Kernel) -> MemInfo {
    let (heap_used, heap_size) = crate::mem::heap::usage();
    MemInfo { total_frames: k.frames.total_frames(), free_frames: k.frames.free_frames(), heap_used, heap_size }
}

fn sys_meminfo(k: &mut Kernel, buf: u64) -> Result<u64, Error> {
    let size = core::mem::size_of::<MemInfo>() as u64;
    let range = user_range(k, buf, size, size, Access::Write)?;
    let info = mem_info(k);
    // SAFETY: checked writable in the current address space.
    unsafe { range.as_mut_slice() }.copy_from_slice(info.as_bytes());
    Ok(0)
}

/// The transfers `sys_io` starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Io {
    /// Console output from the program's buffer.
    ConsoleWrite,
    /// Console input into the program's buffer.
    ConsoleRead,
    /// Entropy into the program's buffer.
    Random,
}

/// [`user_buffers`] for a request the device must take whole (in at most
/// `max_pieces` pieces): a range it would cut short is a bad argument.
fn whole_user_buffer(k: &mut Kernel, addr: u64, len: u64, device_writes: bool, max_pieces: usize) -> Result<(), Error> {
    match user_buffers(k, addr, len, device_writes, max_pieces, 1)? {
        got if got == len => Ok(()),
        _ => Err(Error::BadArgument),
    }
}

/// Checks the running process's `addr..addr + len` for a device and
/// resolves it into `k.devices.io` (at most `max_pieces` pieces, whole
/// `granule`s); returns the bytes covered.
fn user_buffers(
    k: &mut Kernel,
    addr: u64,
    len: u64,
    device_writes: bool,
    max_pieces: usize,
    granule: u64,
) -> Result<u64, Error> {
    let access = if device_writes { Access::Write } else { Access::Read };
    let pid = k.current.ok_or(Error::NoSuchProcess)?;
    let Kernel { mem, procs, devices, .. } = &mut *k;
    let space = procs.get(&pid).and_then(|p| p.space.as_ref()).ok_or(Error::NoSuchProcess)?;
    let want = Want { addr, len, max_len: abi::MAX_IO_LEN as u64, access, max_pieces, granule };
    UserRange::resolve_into(mem, space, &want, &mut devices.io)?;
    Ok(devices.io.len)
}

/// The buffer [`user_buffers`] resolved last.
fn resolved(io: &crate::mem::user::Resolved, device_writes: bool) -> IoBuffer<'_> {
    IoBuffer { pieces: &io.pieces, len: io.len, device_writes }
}

/// Blocks the caller until the device finishes, or fails the call at once.
fn wait_for_device(k: &mut Kernel, frame: &mut TrapFrame, queued: Result<(), Error>) {
    match queued {
        Ok(()) => k.block_current(State::Io),
        Err(e) => frame.rax = e.to_return(),
    }
}

/// Console output, console input and entropy: one buffer each, in place.
fn sys_io(k: &mut Kernel, frame: &mut TrapFrame, io: Io, addr: u64, len: u64) {
    let Some(pid) = k.current else { return };
    let max_pieces = match io {
        Io::ConsoleWrite | Io::ConsoleRead => k.devices.console.as_ref().map(|c| c.max_pieces()),
        Io::Random => k.devices.rng.as_ref().map(|r| r.max_pieces()),
    };
    let Some(max_pieces) = max_pieces else {
        frame.rax = Error::NoSuchDevice.to_return();
        return;
    };
    if len == 0 {
        frame.rax = 0;
        return;
    }
    // A write is at most what the console device takes in one buffer, as
    // with the debug console: more would be cut short by the device.
    if io == Io::ConsoleWrite && len > abi::MAX_WRITE_LEN as u64 {
        frame.rax = Error::BadArgument.to_return();
        return;
    }
    let device_writes = io != Io::ConsoleWrite;
    if let Err(e) = user_buffers(k, addr, len, device_writes, max_pieces, 1) {
        frame.rax = e.to_return();
        return;
    }
    if io == Io::ConsoleWrite {
        k.mark_user_output();
    }
    let crate::virtio::Devices { console, rng, io: resolved_io, .. } = &mut k.devices;
    let buf = resolved(resolved_io, device_writes);
    let queued = match io {
        Io::ConsoleWrite => console.as_mut().map(|c| c.write(pid, buf)),
        Io::ConsoleRead => console.as_mut().map(|c| c.read(pid, buf)),
        Io::Random => rng.as_mut().map(|r| r.fill(pid, buf)),
    };
    if let Some(queued) = queued {
        wait_for_device(k, frame, queued);
    }
}

fn sys_blk_info(k: &mut Kernel, dev: u64, buf: u64) -> Result<u64, Error> {
    let info =
        usize::try_from(dev).ok().and_then(|d| k.devices.blocks.get(d)).map(|b| b.info()).ok_or(Error::NoSuchDevice)?;
    let size = core::mem::size_of::<abi::BlockInfo>() as u64;
    let range = user_range(k, buf, size, size, Access::Write)?;
    // SAFETY: checked writable in the current address space.
    unsafe { range.as_mut_slice() }.copy_from_slice(info.as_bytes());
    Ok(0)
}

/// `blk_read` and `blk_write`: whole sectors, the program's pages in place.
fn sys_blk_rw(k: &mut Kernel, frame: &mut TrapFrame, a: [u64; 5]) {
    let Some(pid) = k.current else { return };
    let write = frame.rax == abi::BLK_WRITE;
    let (dev, sector, addr, len) = (a[0], a[1], a[2], a[3]);
    let sector_size = blk::SECTOR_SIZE;
    let device = usize::try_from(dev).ok().filter(|&d| d < k.devices.blocks.len());
    let checked = match device.map(|d| &k.devices.blocks[d]) {
        None => Err(Error::NoSuchDevice),
        Some(b) if write && b.read_only => Err(Error::ReadOnly),
        Some(_) if len == 0 || len % sector_size != 0 => Err(Error::BadArgument),
        Some(b) if sector.checked_add(len / sector_size).is_none_or(|end| end > b.sectors) => Err(Error::BadArgument),
        Some(b) => Ok(b.max_pieces()),
    };
    let (Some(d), Ok(max_pieces)) = (device, checked) else {
        frame.rax = checked.err().unwrap_or(Error::NoSuchDevice).to_return();
        return;
    };
    let done = match user_buffers(k, addr, len, !write, max_pieces, sector_size) {
        Ok(0) => Err(Error::BadArgument),
        result => result,
    };
    let done = match done {
        Ok(done) => done,
        Err(e) => {
            frame.rax = e.to_return();
            return;
        }
    };
    let kind = if write { blk::T_OUT } else { blk::T_IN };
    let crate::virtio::Devices { blocks, io, .. } = &mut k.devices;
    let queued = blocks[d].submit(pid, kind, sector, resolved(io, !write), done);
    wait_for_device(k, frame, queued);
}

/// `blk_flush` (no data) and `blk_id` (`len` bytes into the program).
fn sys_blk_simple(k: &mut Kernel, frame: &mut TrapFrame, dev: u64, kind: u32, addr: u64, len: u64) {
    let Some(pid) = k.current else { return };
    let Some(d) = usize::try_from(dev).ok().filter(|&d| d < k.devices.blocks.len()) else {
        frame.rax = Error::NoSuchDevice.to_return();
        return;
    };
    if len > 0
        && let Err(e) = whole_user_buffer(k, addr, len, true, 2)
    {
        frame.rax = e.to_return();
        return;
    }
    let crate::virtio::Devices { blocks, io, .. } = &mut k.devices;
    let data = if len == 0 { IoBuffer::default() } else { resolved(io, true) };
    let queued = blocks[d].submit(pid, kind, 0, data, len);
    wait_for_device(k, frame, queued);
}

/// `vsock_attach`: the caller becomes the device's owner and gets the
/// receive area mapped read-only (each frame gains a reference, so the
/// area outlives the owner's address space and stays the device's).
fn sys_vsock_attach(k: &mut Kernel, pid: Pid, info_addr: u64) -> Result<u64, Error> {
    let size = core::mem::size_of::<VsockInfo>() as u64;
    // Checked before anything is mapped, so a bad pointer changes nothing.
    let range = user_range(k, info_addr, size, size, Access::Write)?;
    let v = k.devices.vsock.as_ref().ok_or(Error::NoSuchDevice)?;
    let area = match v.owner {
        Some(o) if o.pid == pid => o.area,
        Some(_) => return Err(Error::Busy),
        None => {
            let Kernel { mem, frames, procs, devices, .. } = &mut *k;
            let v = devices.vsock.as_mut().ok_or(Error::NoSuchDevice)?;
            let p = procs.get_mut(&pid).ok_or(Error::NoSuchProcess)?;
            let pages = v.rings.pages();
            let base = p.share_next;
            let end = base + pages.len() as u64 * PAGE_SIZE;
            if end > USER_STACK_TOP - abi::MAX_MAP_PAGES * PAGE_SIZE {
                return Err(Error::NoMemory);
            }
            let space = p.space.as_mut().ok_or(Error::NoSuchProcess)?;
            for (i, &phys) in pages.iter().enumerate() {
                let virt = base + i as u64 * PAGE_SIZE;
                // The frames stay the device's (as boot modules' stay the
                // kernel's): the owner's exit or unmap leaves them, and
                // `share` refuses them, so no other process keeps a view of
                // the next owner's packets.
                let mapped = space.map(mem, frames, virt, phys, NO_EXECUTE | paging::MODULE_FRAME);
                if let Err(e) = mapped.map_err(|_| Error::NoMemory) {
                    for j in 0..i as u64 {
                        space.unmap(mem, frames, base + j * PAGE_SIZE);
                    }
                    return Err(e);
                }
            }
            // Share addresses only grow: the area's range is never reused.
            p.share_next = end;
            v.owner = Some(Owner { pid, area: base });
            base
        }
    };
    let guest_cid = k.devices.vsock.as_ref().map_or(0, |v| v.guest_cid);
    let info = VsockInfo { guest_cid, area, buffers: RX_BUFFERS as u32, buffer_size: RX_BUFFER_SIZE as u32 };
    // SAFETY: checked writable in the current address space above; mapping
    // the area added pages elsewhere and removed none.
    unsafe { range.as_mut_slice() }.copy_from_slice(info.as_bytes());
    Ok(0)
}

/// The vsock device, if `pid` owns it.
fn owned_vsock(k: &mut Kernel, pid: Pid) -> Result<&mut crate::virtio::vsock::Vsock, Error> {
    k.devices.vsock.as_mut().filter(|v| v.owner_pid() == Some(pid)).ok_or(Error::NoSuchDevice)
}

/// `vsock_recv`: gives a buffer back, then returns the next filled one or
/// blocks for it.
fn sys_vsock_recv(k: &mut Kernel, pid: Pid, frame: &mut TrapFrame, done: u64, timeout_ns: u64) {
    let v = match owned_vsock(k, pid) {
        Ok(v) => v,
        Err(e) => {
            frame.rax = e.to_return();
            return;
        }
    };
    if done != NO_BUFFER
        && let Err(e) = v.give_back(done)
    {
        frame.rax = e.to_return();
        return;
    }
    if let Some(result) = v.next_ready() {
        frame.rax = result;
        return;
    }
    if timeout_ns == 0 {
        frame.rax = Error::TimedOut.to_return();
        return;
    }
    let deadline = (timeout_ns != abi::WAIT_FOREVER).then(|| k.deadline_in(timeout_ns));
    k.block_current(State::VsockRecv { deadline });
}

/// `vsock_send`: one packet from the owner's memory, in place.
fn sys_vsock_send(k: &mut Kernel, pid: Pid, frame: &mut TrapFrame, addr: u64, len: u64) {
    let max_pieces = match owned_vsock(k, pid) {
        Ok(v) => v.rings.max_tx_pieces(),
        Err(e) => {
            frame.rax = e.to_return();
            return;
        }
    };
    if len < HEADER_SIZE as u64 || len > (HEADER_SIZE + MAX_PAYLOAD) as u64 {
        frame.rax = Error::BadArgument.to_return();
        return;
    }
    if let Err(e) = whole_user_buffer(k, addr, len, false, max_pieces) {
        frame.rax = e.to_return();
        return;
    }
    let crate::virtio::Devices { vsock, io, .. } = &mut k.devices;
    let queued = vsock.as_mut().map_or(Err(Error::NoSuchDevice), |v| v.send(pid, resolved(io, false)));
    wait_for_device(k, frame, queued);
}
