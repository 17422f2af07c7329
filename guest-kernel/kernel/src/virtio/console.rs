//! The virtio console: programs' output and the compartment's input.
//!
//! Queue 0 receives (the device writes a program's `read` buffer), queue 1
//! transmits (the device reads a program's `write` buffer). Both in place.

use alloc::vec::Vec;

use ward_abi::syscall::Error;

use super::queue::Virtqueue;
use super::{DirectRings, Done, InFlight, InFlightTable, InitError, IoBuffer, Transport};
use crate::mem::frame::FrameAllocator;
use crate::mem::phys::PhysMemory;
use crate::proc::Pid;

const RECEIVE: u32 = 0;
const TRANSMIT: u32 = 1;

/// The console device.
#[derive(Debug)]
pub struct Console {
    /// Its registers.
    pub transport: Transport,
    rx: Virtqueue,
    tx: Virtqueue,
    rx_wait: InFlightTable,
    tx_wait: InFlightTable,
}

impl Console {
    /// Starts the device.
    pub fn start(
        transport: Transport,
        mem: &mut impl PhysMemory,
        frames: &mut FrameAllocator,
    ) -> Result<Self, InitError> {
        transport.negotiate(0)?;
        let rx = transport.setup_queue(mem, frames, RECEIVE)?;
        let tx = transport.setup_queue(mem, frames, TRANSMIT)?;
        transport.driver_ok();
        let (rx_wait, tx_wait) = (InFlightTable::new(rx.size()), InFlightTable::new(tx.size()));
        Ok(Self { transport, rx, tx, rx_wait, tx_wait })
    }

    /// Most descriptors one request may use.
    pub fn max_pieces(&self) -> usize {
        usize::from(self.tx.size().min(self.rx.size()))
    }

    /// Queues `buf` (device reads it) for output on behalf of `pid`.
    pub fn write(&mut self, pid: Pid, buf: IoBuffer<'_>) -> Result<(), Error> {
        submit(&mut self.tx, &mut self.tx_wait, &self.transport, TRANSMIT, pid, buf)
    }

    /// Queues `buf` (device writes it) for input on behalf of `pid`.
    pub fn read(&mut self, pid: Pid, buf: IoBuffer<'_>) -> Result<(), Error> {
        submit(&mut self.rx, &mut self.rx_wait, &self.transport, RECEIVE, pid, buf)
    }

    /// Collects finished transfers: output returns its length, input the
    /// bytes the device wrote.
    pub fn interrupt(&mut self, done: &mut Vec<Done>) {
        self.transport.ack_interrupt();
        while let Some(c) = self.tx.pop_used(&mut DirectRings) {
            if let Some(f) = self.tx_wait.take(c.head) {
                done.push(Done { pid: f.pid, result: f.len });
            }
        }
        while let Some(c) = self.rx.pop_used(&mut DirectRings) {
            if let Some(f) = self.rx_wait.take(c.head) {
                done.push(Done { pid: f.pid, result: u64::from(c.written).min(f.len) });
            }
        }
    }
}

/// Pushes a program's buffer on `queue` and notifies the device.
fn submit(
    queue: &mut Virtqueue,
    wait: &mut InFlightTable,
    transport: &Transport,
    index: u32,
    pid: Pid,
    buf: IoBuffer<'_>,
) -> Result<(), Error> {
    let head = queue.push_chain(&mut DirectRings, buf.pieces.len(), buf.descriptors()).map_err(|_| Error::Busy)?;
    wait.insert(head, InFlight { pid, len: buf.len });
    transport.notify(index);
    Ok(())
}
