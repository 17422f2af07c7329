//! The virtio block device: sectors read into and written from a program's
//! own pages.
//!
//! A request is three parts: a 16-byte header the device reads (type,
//! sector), the data (the program's pages), and a status byte the device
//! writes. Headers and status bytes live in two kernel frames, one slot per
//! descriptor head, filled in before the chain is pushed.

use alloc::vec::Vec;

use ward_abi::syscall::{BlockInfo, Error};
use ward_abi::virtio::{blk, feature};

use super::queue::{Buffer, RingMemory, Virtqueue};
use super::{DirectRings, Done, InFlight, InFlightTable, InitError, IoBuffer, Transport};
use crate::mem::frame::FrameAllocator;
use crate::mem::phys::PhysMemory;
use crate::proc::Pid;

/// Bytes of a request-header slot (and of a status slot).
const SLOT: u64 = 16;

/// A block device.
#[derive(Debug)]
pub struct Block {
    /// Its registers.
    pub transport: Transport,
    queue: Virtqueue,
    wait: InFlightTable,
    /// Request type of each in-flight head.
    kinds: Vec<u32>,
    headers: u64,
    statuses: u64,
    /// Capacity in sectors.
    pub sectors: u64,
    /// Read-only.
    pub read_only: bool,
}

/// The result of a finished request.
pub fn result(kind: u32, status: u8, len: u64) -> u64 {
    match status {
        blk::S_OK => len,
        blk::S_UNSUPP if kind == blk::T_OUT => Error::ReadOnly.to_return(),
        blk::S_UNSUPP => Error::BadArgument.to_return(),
        _ => Error::IoError.to_return(),
    }
}

impl Block {
    /// Starts the device.
    pub fn start(
        transport: Transport,
        mem: &mut impl PhysMemory,
        frames: &mut FrameAllocator,
    ) -> Result<Self, InitError> {
        let features = transport.negotiate(feature::BLK_RO | feature::BLK_FLUSH)?;
        let queue = transport.setup_queue(mem, frames, 0)?;
        let headers = frames.alloc_zeroed(mem).ok_or(InitError::NoMemory)?;
        let statuses = frames.alloc_zeroed(mem).ok_or(InitError::NoMemory)?;
        let sectors = u64::from(transport.config32(0)) | (u64::from(transport.config32(4)) << 32);
        transport.driver_ok();
        let size = queue.size();
        Ok(Self {
            transport,
            queue,
            wait: InFlightTable::new(size),
            kinds: alloc::vec![0; usize::from(size)],
            headers,
            statuses,
            sectors,
            read_only: features & feature::BLK_RO != 0,
        })
    }

    /// What `blk_info` reports.
    pub fn info(&self) -> BlockInfo {
        BlockInfo { sectors: self.sectors, read_only: u32::from(self.read_only), reserved: 0 }
    }

    /// Descriptors left for data in one request (header and status take two).
    pub fn max_pieces(&self) -> usize {
        usize::from(self.queue.size()).saturating_sub(2)
    }

    /// Queues a request of `kind` at `sector` with `data` on behalf of
    /// `pid`; `len` is what a successful request returns.
    pub fn submit(&mut self, pid: Pid, kind: u32, sector: u64, data: IoBuffer<'_>, len: u64) -> Result<(), Error> {
        let head = self.queue.next_head();
        let header = self.headers + SLOT * u64::from(head);
        let status = self.statuses + SLOT * u64::from(head);
        let mut mem = DirectRings;
        mem.write32(header, kind);
        mem.write32(header + 4, 0);
        mem.write64(header + 8, sector);
        mem.write32(status, 0xff);
        let chain = core::iter::once(Buffer { phys: header, len: 16, device_writes: false })
            .chain(data.descriptors())
            .chain(core::iter::once(Buffer { phys: status, len: 1, device_writes: true }));
        let head = self.queue.push_chain(&mut mem, data.pieces.len() + 2, chain).map_err(|_| Error::Busy)?;
        self.kinds[usize::from(head)] = kind;
        self.wait.insert(head, InFlight { pid, len });
        self.transport.notify(0);
        Ok(())
    }

    /// Collects finished requests.
    pub fn interrupt(&mut self, done: &mut Vec<Done>) {
        self.transport.ack_interrupt();
        let mut mem = DirectRings;
        while let Some(c) = self.queue.pop_used(&mut mem) {
            if let Some(f) = self.wait.take(c.head) {
                let status = (mem.read32(self.statuses + SLOT * u64::from(c.head)) & 0xff) as u8;
                let kind = self.kinds[usize::from(c.head)];
                done.push(Done { pid: f.pid, result: result(kind, status, f.len) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_maps_to_the_system_call_result() {
        assert_eq!(result(blk::T_IN, blk::S_OK, 4096), 4096);
        assert_eq!(result(blk::T_OUT, blk::S_UNSUPP, 4096), Error::ReadOnly.to_return());
        assert_eq!(result(blk::T_GET_ID, blk::S_UNSUPP, 20), Error::BadArgument.to_return());
        assert_eq!(result(blk::T_IN, blk::S_IOERR, 512), Error::IoError.to_return());
        assert_eq!(result(blk::T_IN, 0xff, 512), Error::IoError.to_return(), "a status the device never wrote");
    }
}
