//! The calls that move data through devices: console output and input,
//! entropy, block devices, vsock. Data never passes through a kernel
//! buffer: each call checks and resolves the caller's pages
//! (`mem::user::resolve_into`), and the device reads or writes them in
//! place while the caller blocks.

use ward_abi::debug_console::{self, REG_WRITE, write_request};
use ward_abi::layout::{PAGE_SIZE, USER_STACK_TOP};
use ward_abi::syscall::{self as abi, Error};
use ward_abi::virtio::blk;
use ward_abi::vsock::{HEADER_SIZE, MAX_PAYLOAD, NO_BUFFER, VsockInfo};
use ward_abi::width::{low_u16, low_u32, u64_from};
use zerocopy::IntoBytes;

use super::{Done, Span, Timeout, readable, writable};
use crate::kernel::Kernel;
use crate::mem::paging::{self, NO_EXECUTE};
use crate::mem::user::{self, Access, Want};
use crate::proc::{Pid, State};
use crate::virtio::IoBuffer;
use crate::virtio::vsock::{Owner, RX_BUFFER_SIZE, RX_BUFFERS};

/// `write`: through the virtio console if there is one, else the debug
/// console.
pub(super) fn write(k: &mut Kernel, pid: Pid, buf: Span) -> Result<Done, Error> {
    if k.devices.console.is_some() {
        return transfer(k, pid, Io::ConsoleWrite, buf);
    }
    let range = readable(k, buf, abi::MAX_WRITE_LEN as u64)?;
    k.mark_user_output();
    let Kernel { mem, procs, .. } = k;
    let space = procs.get(&pid).and_then(|p| p.space.as_ref()).ok_or(Error::NoSuchProcess)?;
    // Each piece lies in one page; the console device reads it in place.
    for (phys, piece) in range.physical_pieces(mem, space) {
        console_write_phys(phys, piece);
    }
    Ok(Done::Value(buf.len))
}

#[cfg(not(test))]
fn console_write_phys(phys: u64, len: u64) {
    let reg = crate::addr::phys_to_virt(debug_console::BASE + REG_WRITE) as *mut u64;
    // SAFETY: the console register is mapped in the direct map; the store
    // makes the VMM read `len` (<= one page) bytes at guest-physical `phys`.
    unsafe { core::ptr::write_volatile(reg, write_request(phys, low_u16(len))) };
}

#[cfg(test)]
fn console_write_phys(_phys: u64, _len: u64) {
    let _ = (debug_console::BASE, REG_WRITE, write_request(0, 0), low_u16(0));
}

/// The transfers [`transfer`] starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Io {
    /// Console output from the program's buffer.
    ConsoleWrite,
    /// Console input into the program's buffer.
    ConsoleRead,
    /// Entropy into the program's buffer.
    Random,
}

/// [`user_buffers`] for a request the device must take whole (in at most
/// `max_pieces` pieces): a range it would cut short is a bad argument.
fn whole_user_buffer(k: &mut Kernel, buf: Span, device_writes: bool, max_pieces: usize) -> Result<(), Error> {
    match user_buffers(k, buf, device_writes, max_pieces, 1)? {
        got if got == buf.len => Ok(()),
        _ => Err(Error::BadArgument),
    }
}

/// Checks the running process's `buf` for a device and resolves it into
/// `k.devices.io` (at most `max_pieces` pieces, whole `granule`s); returns
/// the bytes covered.
fn user_buffers(k: &mut Kernel, buf: Span, device_writes: bool, max_pieces: usize, granule: u64) -> Result<u64, Error> {
    let access = if device_writes { Access::Write } else { Access::Read };
    let pid = k.current.ok_or(Error::NoSuchProcess)?;
    let Kernel { mem, procs, devices, .. } = &mut *k;
    let space = procs.get(&pid).and_then(|p| p.space.as_ref()).ok_or(Error::NoSuchProcess)?;
    let want = Want { addr: buf.addr, len: buf.len, max_len: abi::MAX_IO_LEN as u64, access, max_pieces, granule };
    user::resolve_into(mem, space, &want, &mut devices.io)?;
    Ok(devices.io.len)
}

/// The buffer [`user_buffers`] resolved last.
fn resolved(io: &crate::mem::user::Resolved, device_writes: bool) -> IoBuffer<'_> {
    IoBuffer { pieces: &io.pieces, len: io.len, device_writes }
}

/// Blocks the caller until the device finishes, or fails the call at once.
fn wait_for_device(k: &mut Kernel, queued: Result<(), Error>) -> Result<Done, Error> {
    queued?;
    k.block_current(State::Io);
    Ok(Done::Blocked)
}

/// Console output, console input and entropy: one buffer each, in place.
pub(super) fn transfer(k: &mut Kernel, pid: Pid, io: Io, buf: Span) -> Result<Done, Error> {
    let max_pieces = match io {
        Io::ConsoleWrite | Io::ConsoleRead => k.devices.console.as_ref().map(|c| c.max_pieces()),
        Io::Random => k.devices.rng.as_ref().map(|r| r.max_pieces()),
    };
    let max_pieces = max_pieces.ok_or(Error::NoSuchDevice)?;
    if buf.len == 0 {
        return Ok(Done::Value(0));
    }
    // A write is at most what the console device takes in one buffer, as
    // with the debug console: more would be cut short by the device.
    if io == Io::ConsoleWrite && buf.len > abi::MAX_WRITE_LEN as u64 {
        return Err(Error::BadArgument);
    }
    let device_writes = io != Io::ConsoleWrite;
    user_buffers(k, buf, device_writes, max_pieces, 1)?;
    if io == Io::ConsoleWrite {
        k.mark_user_output();
    }
    let crate::virtio::Devices { console, rng, io: resolved_io, .. } = &mut k.devices;
    let data = resolved(resolved_io, device_writes);
    let queued = match io {
        Io::ConsoleWrite => console.as_mut().map(|c| c.write(pid, data)),
        Io::ConsoleRead => console.as_mut().map(|c| c.read(pid, data)),
        Io::Random => rng.as_mut().map(|r| r.fill(pid, data)),
    };
    wait_for_device(k, queued.unwrap_or(Err(Error::NoSuchDevice)))
}

/// The index of block device `dev`, if there is one.
fn block_device(k: &Kernel, dev: u64) -> Result<usize, Error> {
    usize::try_from(dev).ok().filter(|&d| d < k.devices.blocks.len()).ok_or(Error::NoSuchDevice)
}

pub(super) fn blk_info(k: &mut Kernel, dev: u64, buf: u64) -> Result<Done, Error> {
    let info = k.devices.blocks[block_device(k, dev)?].info();
    let size = core::mem::size_of::<abi::BlockInfo>() as u64;
    let range = writable(k, Span { addr: buf, len: size }, size)?;
    // SAFETY: checked writable in the current address space.
    unsafe { range.as_mut_slice() }.copy_from_slice(info.as_bytes());
    Ok(Done::Value(0))
}

/// `blk_read` and `blk_write`: whole sectors, the program's pages in place.
pub(super) fn blk_transfer(
    k: &mut Kernel,
    pid: Pid,
    write: bool,
    dev: u64,
    sector: u64,
    buf: Span,
) -> Result<Done, Error> {
    let sector_size = blk::SECTOR_SIZE;
    let d = block_device(k, dev)?;
    let b = &k.devices.blocks[d];
    if write && b.read_only {
        return Err(Error::ReadOnly);
    }
    if buf.len == 0 || !buf.len.is_multiple_of(sector_size) {
        return Err(Error::BadArgument);
    }
    if sector.checked_add(buf.len / sector_size).is_none_or(|end| end > b.sectors) {
        return Err(Error::BadArgument);
    }
    let max_pieces = b.max_pieces();
    let done = match user_buffers(k, buf, !write, max_pieces, sector_size)? {
        0 => return Err(Error::BadArgument),
        done => done,
    };
    let kind = if write { blk::T_OUT } else { blk::T_IN };
    let crate::virtio::Devices { blocks, io, .. } = &mut k.devices;
    let queued = blocks[d].submit(pid, kind, sector, resolved(io, !write), done);
    wait_for_device(k, queued)
}

/// `blk_flush` (no data) and `blk_id` (`buf.len` bytes into the program).
pub(super) fn blk_simple(k: &mut Kernel, pid: Pid, dev: u64, kind: u32, buf: Span) -> Result<Done, Error> {
    let d = block_device(k, dev)?;
    if buf.len > 0 {
        whole_user_buffer(k, buf, true, 2)?;
    }
    let crate::virtio::Devices { blocks, io, .. } = &mut k.devices;
    let data = if buf.len == 0 { IoBuffer::default() } else { resolved(io, true) };
    let queued = blocks[d].submit(pid, kind, 0, data, buf.len);
    wait_for_device(k, queued)
}

/// `vsock_attach`: the caller becomes the device's owner and gets the
/// receive area mapped read-only (as device frames: they stay the device's
/// when the owner's address space goes, and `share` refuses them).
pub(super) fn vsock_attach(k: &mut Kernel, pid: Pid, info_addr: u64) -> Result<Done, Error> {
    let size = core::mem::size_of::<VsockInfo>() as u64;
    // Checked before anything is mapped, so a bad pointer changes nothing.
    let range = writable(k, Span { addr: info_addr, len: size }, size)?;
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
            let end = base + u64_from(pages.len()) * PAGE_SIZE;
            if end > USER_STACK_TOP - abi::MAX_MAP_PAGES * PAGE_SIZE {
                return Err(Error::NoMemory);
            }
            let space = p.space.as_mut().ok_or(Error::NoSuchProcess)?;
            for (i, &phys) in (0u64..).zip(pages.iter()) {
                let virt = base + i * PAGE_SIZE;
                // The frames stay the device's (as boot modules' stay the
                // kernel's): the owner's exit or unmap leaves them, and
                // `share` refuses them, so no other process keeps a view of
                // the next owner's packets.
                let mapped = space.map(mem, frames, virt, phys, NO_EXECUTE | paging::MODULE_FRAME);
                if mapped.is_err() {
                    for j in 0..i {
                        space.unmap(mem, frames, base + j * PAGE_SIZE);
                    }
                    return Err(Error::NoMemory);
                }
            }
            // Share addresses only grow: the area's range is never reused.
            p.share_next = end;
            v.owner = Some(Owner { pid, area: base });
            base
        }
    };
    let guest_cid = k.devices.vsock.as_ref().map_or(0, |v| v.guest_cid);
    let info =
        VsockInfo { guest_cid, area, buffers: low_u32(u64_from(RX_BUFFERS)), buffer_size: low_u32(RX_BUFFER_SIZE) };
    // SAFETY: checked writable in the current address space above; mapping
    // the area added pages elsewhere and removed none.
    unsafe { range.as_mut_slice() }.copy_from_slice(info.as_bytes());
    Ok(Done::Value(0))
}

/// The vsock device, if `pid` owns it.
fn owned_vsock(k: &mut Kernel, pid: Pid) -> Result<&mut crate::virtio::vsock::Vsock, Error> {
    k.devices.vsock.as_mut().filter(|v| v.owner_pid() == Some(pid)).ok_or(Error::NoSuchDevice)
}

/// `vsock_recv`: gives a buffer back, then returns the next filled one or
/// blocks for it.
pub(super) fn vsock_recv(k: &mut Kernel, pid: Pid, done: u64, timeout: Timeout) -> Result<Done, Error> {
    let v = owned_vsock(k, pid)?;
    if done != NO_BUFFER {
        v.give_back(done)?;
    }
    if let Some(result) = v.next_ready() {
        return Ok(Done::Value(result));
    }
    if timeout == 0 {
        return Err(Error::TimedOut);
    }
    let deadline = (timeout != abi::WAIT_FOREVER).then(|| k.deadline_in(timeout));
    k.block_current(State::VsockRecv { deadline });
    Ok(Done::Blocked)
}

/// `vsock_send`: one packet from the owner's memory, in place.
pub(super) fn vsock_send(k: &mut Kernel, pid: Pid, packet: Span) -> Result<Done, Error> {
    let max_pieces = owned_vsock(k, pid)?.rings.max_tx_pieces();
    if packet.len < HEADER_SIZE as u64 || packet.len > (HEADER_SIZE + MAX_PAYLOAD) as u64 {
        return Err(Error::BadArgument);
    }
    whole_user_buffer(k, packet, false, max_pieces)?;
    let crate::virtio::Devices { vsock, io, .. } = &mut k.devices;
    let queued = vsock.as_mut().map_or(Err(Error::NoSuchDevice), |v| v.send(pid, resolved(io, false)));
    wait_for_device(k, queued)
}
