//! The virtio entropy device: fills a program's buffer with the host's
//! randomness, in place.

use alloc::vec::Vec;

use ward_abi::syscall::Error;

use super::queue::Virtqueue;
use super::{DirectRings, Done, InFlight, InFlightTable, InitError, IoBuffer, Transport};
use crate::mem::frame::FrameAllocator;
use crate::mem::phys::PhysMemory;
use crate::proc::Pid;

/// The entropy device.
#[derive(Debug)]
pub struct Rng {
    /// Its registers.
    pub transport: Transport,
    queue: Virtqueue,
    wait: InFlightTable,
}

impl Rng {
    /// Starts the device.
    pub fn start(
        transport: Transport,
        mem: &mut impl PhysMemory,
        frames: &mut FrameAllocator,
    ) -> Result<Self, InitError> {
        transport.negotiate(0)?;
        let queue = transport.setup_queue(mem, frames, 0)?;
        transport.driver_ok();
        let wait = InFlightTable::new(queue.size());
        Ok(Self { transport, queue, wait })
    }

    /// Most descriptors one request may use.
    pub fn max_pieces(&self) -> usize {
        usize::from(self.queue.size())
    }

    /// Asks for `buf` to be filled on behalf of `pid`.
    pub fn fill(&mut self, pid: Pid, buf: IoBuffer<'_>) -> Result<(), Error> {
        let head =
            self.queue.push_chain(&mut DirectRings, buf.pieces.len(), buf.descriptors()).map_err(|_| Error::Busy)?;
        self.wait.insert(head, InFlight { pid, len: buf.len });
        self.transport.notify(0);
        Ok(())
    }

    /// Collects filled buffers: the result is the bytes written.
    pub fn interrupt(&mut self, done: &mut Vec<Done>) {
        self.transport.ack_interrupt();
        while let Some(c) = self.queue.pop_used(&mut DirectRings) {
            if let Some(f) = self.wait.take(c.head) {
                done.push(Done { pid: f.pid, result: u64::from(c.written).min(f.len) });
            }
        }
    }
}
