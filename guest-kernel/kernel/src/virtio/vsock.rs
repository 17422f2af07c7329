//! The virtio-vsock device: the compartment's only way to other
//! compartments (through the `ward-ipc` router, see docs/IPC.md).
//!
//! The kernel only moves packets; the connection protocol runs in ring 3
//! (`ward_rt::ipc`) in the one process that owns the device
//! (`VSOCK_ATTACH`). Three queues: 0 receive, 1 transmit, 2 events.
//!
//! - **Receive**: at probe the kernel takes [`RX_BUFFERS`] buffers of
//!   [`RX_BUFFER_SIZE`] bytes (a header and up to 128 KiB of payload each,
//!   in one buffer) from fresh frames, which the host gave us zeroed, and
//!   posts them all. The owner gets the whole area mapped read-only; a
//!   filled buffer is handed to it by index (`VSOCK_RECV`) and stays its
//!   until it gives the index back, when the kernel posts it again. Ring 0
//!   never reads or copies packet bytes.
//! - **Transmit**: the owner's own packet, header and payload, resolved
//!   into physical pieces in place (as block writes are) and waited for.
//! - **Events**: [`EVENTS`] 8-byte buffers in one kernel frame; a transport
//!   reset is remembered and reported once by the next `VSOCK_RECV`.
//!
//! The device is the host's but not trusted with the kernel's integrity:
//! heads it invents, buffers it returns twice and lengths beyond a buffer
//! are ignored or clamped, never indexed with. The bookkeeping is written
//! against [`RingMemory`] so host tests drive it with a fake device.

use alloc::vec::Vec;
use ward_abi::width::{low_u8, low_u16, low_u32, u64_from, usize_from};

use ward_abi::syscall::Error;
use ward_abi::vsock::{self as abi, EVENT_TRANSPORT_RESET, RECV_TRANSPORT_RESET};

use super::queue::{Buffer, RingMemory, Virtqueue};
use super::{DirectRings, Done, InFlight, InFlightTable, InitError, IoBuffer, Transport};
use crate::mem::frame::FrameAllocator;
use crate::mem::phys::{PAGE_SIZE, PhysMemory};
use crate::proc::Pid;

const RECEIVE: u32 = 0;
const TRANSMIT: u32 = 1;
const EVENT: u32 = 2;

/// Receive buffers.
pub const RX_BUFFERS: usize = 4;
/// Bytes of each receive buffer: the largest payload plus a page for the
/// header, so every packet the router sends fits in one buffer.
pub const RX_BUFFER_SIZE: u64 = abi::MAX_PAYLOAD as u64 + PAGE_SIZE;
/// Pages of each receive buffer.
pub const RX_BUFFER_PAGES: u64 = RX_BUFFER_SIZE / PAGE_SIZE;
/// Event buffers.
pub const EVENTS: usize = 4;
/// Bytes of an event buffer (`le32 id` and padding).
const EVENT_SIZE: u64 = 8;
/// A page's length as a descriptor holds it.
const PAGE_LEN: u32 = low_u32(PAGE_SIZE);
/// "No buffer" in the head-to-buffer tables.
const NONE: u8 = u8::MAX;

/// Where a receive buffer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// With the device, empty.
    Posted,
    /// Filled by the device, waiting for `VSOCK_RECV` (in `ready`).
    Ready,
    /// Handed to the owner, which reads it until it gives it back.
    Held,
    /// Not with the device: posting it failed (the queue had no room).
    Unposted,
}

/// The owner of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Its pid.
    pub pid: Pid,
    /// Where the receive area is mapped in it.
    pub area: u64,
}

/// The device's queues and buffers, without its registers: the part host
/// tests can drive. Methods that made buffers available return whether the
/// device must be told.
#[derive(Debug)]
pub struct Rings {
    rx: Virtqueue,
    tx: Virtqueue,
    event: Virtqueue,
    /// Receive buffer of each rx head ([`NONE`]: no buffer).
    rx_heads: Vec<u8>,
    /// Event buffer of each event head.
    event_heads: Vec<u8>,
    tx_wait: InFlightTable,
    /// The receive area's frames, in order (buffer `i` is pages
    /// `i * RX_BUFFER_PAGES ..`).
    pages: Vec<u64>,
    /// Descriptors of every buffer, contiguous frames merged: buffer `i`'s
    /// are `pieces[spans[i].0 ..][.. spans[i].1]`.
    pieces: Vec<Buffer>,
    spans: [(u16, u16); RX_BUFFERS],
    slots: [Slot; RX_BUFFERS],
    /// Filled buffers in arrival order: (index, bytes), a ring of
    /// `RX_BUFFERS` (every buffer is in it at most once).
    ready: [(u8, u32); RX_BUFFERS],
    ready_head: usize,
    ready_len: usize,
    /// The event buffers' frame.
    events: u64,
    /// A transport reset not yet reported.
    reset_pending: bool,
    unposted: usize,
}

impl Rings {
    /// Bookkeeping for queues `rx`, `tx`, `event`, receive frames `pages`
    /// (`RX_BUFFERS * RX_BUFFER_PAGES`) and the event frame `events`; posts
    /// every buffer. Returns it and whether anything was posted.
    pub fn new(
        mem: &mut impl RingMemory,
        rx: Virtqueue,
        tx: Virtqueue,
        event: Virtqueue,
        pages: Vec<u64>,
        events: u64,
    ) -> Self {
        let mut pieces: Vec<Buffer> = Vec::with_capacity(pages.len());
        let mut spans = [(0u16, 0u16); RX_BUFFERS];
        for (i, span) in spans.iter_mut().enumerate() {
            let start = pieces.len();
            let first = i * usize_from(RX_BUFFER_PAGES);
            for &phys in pages.iter().skip(first).take(usize_from(RX_BUFFER_PAGES)) {
                let in_this_buffer = pieces.len() > start;
                match pieces.last_mut() {
                    Some(last) if in_this_buffer && last.phys + u64::from(last.len) == phys => {
                        last.len += PAGE_LEN;
                    }
                    _ => pieces.push(Buffer { phys, len: PAGE_LEN, device_writes: true }),
                }
            }
            // At most RX_BUFFERS * RX_BUFFER_PAGES pieces, far below 2^16.
            *span = (low_u16(u64_from(start)), low_u16(u64_from(pieces.len() - start)));
        }
        let (rx_size, event_size, tx_size) = (rx.size(), event.size(), tx.size());
        let mut rings = Self {
            rx,
            tx,
            event,
            rx_heads: alloc::vec![NONE; usize::from(rx_size)],
            event_heads: alloc::vec![NONE; usize::from(event_size)],
            tx_wait: InFlightTable::new(tx_size),
            pages,
            pieces,
            spans,
            slots: [Slot::Unposted; RX_BUFFERS],
            ready: [(0, 0); RX_BUFFERS],
            ready_head: 0,
            ready_len: 0,
            events,
            reset_pending: false,
            unposted: RX_BUFFERS,
        };
        for i in 0..RX_BUFFERS {
            rings.post(mem, i);
        }
        for e in 0..EVENTS {
            rings.post_event(mem, e);
        }
        rings
    }

    /// The receive area's frames.
    pub fn pages(&self) -> &[u64] {
        &self.pages
    }

    /// Gives receive buffer `i` to the device.
    fn post(&mut self, mem: &mut impl RingMemory, i: usize) {
        let (start, count) = self.spans[i];
        let chain = self.pieces.iter().skip(usize::from(start)).take(usize::from(count)).copied();
        let was_unposted = self.slots[i] == Slot::Unposted;
        match self.rx.push_chain(mem, usize::from(count), chain) {
            Ok(head) => {
                if let Some(h) = self.rx_heads.get_mut(usize::from(head)) {
                    *h = low_u8(u64_from(i)); // below RX_BUFFERS
                }
                self.slots[i] = Slot::Posted;
                if was_unposted {
                    self.unposted -= 1;
                }
            }
            Err(_) => {
                if !was_unposted {
                    self.unposted += 1;
                }
                self.slots[i] = Slot::Unposted;
            }
        }
    }

    /// Gives event buffer `e` to the device, marked so a buffer the device
    /// returns without writing reads as no event.
    fn post_event(&mut self, mem: &mut impl RingMemory, e: usize) {
        let at = self.events + EVENT_SIZE * e as u64;
        mem.write32(at, u32::MAX);
        let buf = Buffer { phys: at, len: low_u32(EVENT_SIZE), device_writes: true };
        if let Ok(head) = self.event.push(mem, &[buf])
            && let Some(h) = self.event_heads.get_mut(usize::from(head))
        {
            *h = low_u8(u64_from(e)); // below the event queue's size
        }
    }

    /// Collects what the device finished: sends (into `done`), filled
    /// buffers (queued for `VSOCK_RECV`) and events. Returns whether event
    /// buffers were posted again (the device must be told).
    pub fn collect(&mut self, mem: &mut impl RingMemory, done: &mut Vec<Done>) -> bool {
        while let Some(c) = self.tx.pop_used(mem) {
            if let Some(f) = self.tx_wait.take(c.head) {
                done.push(Done { pid: f.pid, result: f.len });
            }
        }
        while let Some(c) = self.rx.pop_used(mem) {
            let Some(slot) = self.rx_heads.get_mut(usize::from(c.head)) else { continue };
            let i = core::mem::replace(slot, NONE);
            if usize::from(i) >= RX_BUFFERS || self.slots[usize::from(i)] != Slot::Posted {
                continue;
            }
            // More than the buffer is a lie; ring 3 checks the header's
            // length against what is left.
            let len = c.written.min(low_u32(RX_BUFFER_SIZE));
            self.slots[usize::from(i)] = Slot::Ready;
            self.ready[(self.ready_head + self.ready_len) % RX_BUFFERS] = (i, len);
            self.ready_len += 1;
        }
        let mut reposted = false;
        while let Some(c) = self.event.pop_used(mem) {
            let Some(slot) = self.event_heads.get_mut(usize::from(c.head)) else { continue };
            let e = core::mem::replace(slot, NONE);
            if usize::from(e) >= EVENTS {
                continue;
            }
            if mem.read32(self.events + EVENT_SIZE * u64::from(e)) == EVENT_TRANSPORT_RESET {
                self.reset_pending = true;
            }
            self.post_event(mem, usize::from(e));
            reposted = true;
        }
        reposted
    }

    /// What `VSOCK_RECV` returns next, if anything is there: a transport
    /// reset first, else the oldest filled buffer (now held by the owner).
    pub fn next_ready(&mut self) -> Option<u64> {
        if self.reset_pending {
            self.reset_pending = false;
            return Some(RECV_TRANSPORT_RESET);
        }
        if self.ready_len == 0 {
            return None;
        }
        let (i, len) = self.ready[self.ready_head];
        self.ready_head = (self.ready_head + 1) % RX_BUFFERS;
        self.ready_len -= 1;
        self.slots[usize::from(i)] = Slot::Held;
        let more = if self.ready_len > 0 { abi::RECV_MORE } else { 0 };
        Some((u64::from(i) << 32) | u64::from(len) | more)
    }

    /// The owner gives buffer `index` back; the device gets it again.
    /// Returns whether buffers were posted.
    pub fn give_back(&mut self, mem: &mut impl RingMemory, index: u64) -> Result<bool, Error> {
        let i = usize::try_from(index).ok().filter(|&i| i < RX_BUFFERS).ok_or(Error::BadArgument)?;
        if self.slots[i] != Slot::Held {
            return Err(Error::BadArgument);
        }
        self.post(mem, i);
        Ok(self.retry_unposted(mem) || self.slots[i] == Slot::Posted)
    }

    /// Tries again to post buffers that found the queue full.
    fn retry_unposted(&mut self, mem: &mut impl RingMemory) -> bool {
        if self.unposted == 0 {
            return false;
        }
        let mut posted = false;
        for i in 0..RX_BUFFERS {
            if self.slots[i] == Slot::Unposted {
                self.post(mem, i);
                posted |= self.slots[i] == Slot::Posted;
            }
        }
        posted
    }

    /// The owner is gone: what it held goes back to the device. Filled
    /// buffers not yet received stay for the next owner, which answers
    /// packets of connections it does not know with `RST`. Returns whether
    /// buffers were posted.
    pub fn owner_gone(&mut self, mem: &mut impl RingMemory) -> bool {
        let mut posted = false;
        for i in 0..RX_BUFFERS {
            if self.slots[i] == Slot::Held {
                self.post(mem, i);
                posted = true;
            }
        }
        self.reset_pending = false;
        posted | self.retry_unposted(mem)
    }

    /// Descriptors one send may use.
    pub fn max_tx_pieces(&self) -> usize {
        usize::from(self.tx.size())
    }

    /// Queues a packet (device reads it) on behalf of `pid`.
    pub fn send(&mut self, mem: &mut impl RingMemory, pid: Pid, buf: IoBuffer<'_>) -> Result<(), Error> {
        let head = self.tx.push_chain(mem, buf.pieces.len(), buf.descriptors()).map_err(|_| Error::Busy)?;
        self.tx_wait.insert(head, InFlight { pid, len: buf.len });
        Ok(())
    }
}

/// The vsock device.
#[derive(Debug)]
pub struct Vsock {
    /// Its registers.
    pub transport: Transport,
    /// The compartment's CID.
    pub guest_cid: u64,
    /// Queues and buffers.
    pub rings: Rings,
    /// The process that owns it, if any.
    pub owner: Option<Owner>,
}

impl Vsock {
    /// Starts the device: queues, the receive area and the event buffers,
    /// all posted.
    pub fn start(
        transport: Transport,
        mem: &mut impl PhysMemory,
        frames: &mut FrameAllocator,
    ) -> Result<Self, InitError> {
        transport.negotiate(abi::F_STREAM)?;
        let rx = transport.setup_queue(mem, frames, RECEIVE)?;
        let tx = transport.setup_queue(mem, frames, TRANSMIT)?;
        let event = transport.setup_queue(mem, frames, EVENT)?;
        let events = frames.alloc_zeroed(mem).ok_or(InitError::NoMemory)?;
        // Fresh frames straight after one another are contiguous, so each
        // buffer is usually one descriptor. They are zero already (never
        // zeroed here: ring 0 is emulated).
        let count = RX_BUFFERS * usize_from(RX_BUFFER_PAGES);
        let mut pages = Vec::with_capacity(count);
        for _ in 0..count {
            pages.push(frames.alloc_zeroed(mem).ok_or(InitError::NoMemory)?);
        }
        let guest_cid = u64::from(transport.config32(0)) | (u64::from(transport.config32(4)) << 32);
        transport.driver_ok();
        let rings = Rings::new(&mut DirectRings, rx, tx, event, pages, events);
        transport.notify(RECEIVE);
        transport.notify(EVENT);
        Ok(Self { transport, guest_cid, rings, owner: None })
    }

    /// The owner's pid.
    pub fn owner_pid(&self) -> Option<Pid> {
        self.owner.map(|o| o.pid)
    }

    /// See [`Rings::next_ready`].
    pub fn next_ready(&mut self) -> Option<u64> {
        self.rings.next_ready()
    }

    /// Collects finished transfers and events.
    pub fn interrupt(&mut self, done: &mut Vec<Done>) {
        self.transport.ack_interrupt();
        if self.rings.collect(&mut DirectRings, done) {
            self.transport.notify(EVENT);
        }
    }

    /// See [`Rings::give_back`].
    pub fn give_back(&mut self, index: u64) -> Result<(), Error> {
        if self.rings.give_back(&mut DirectRings, index)? {
            self.transport.notify(RECEIVE);
        }
        Ok(())
    }

    /// Queues a packet and tells the device.
    pub fn send(&mut self, pid: Pid, buf: IoBuffer<'_>) -> Result<(), Error> {
        self.rings.send(&mut DirectRings, pid, buf)?;
        self.transport.notify(TRANSMIT);
        Ok(())
    }

    /// Ends `pid`'s ownership, if it owns the device (its address space,
    /// with the area, is gone already; the frames stay the device's).
    pub fn release(&mut self, pid: Pid) {
        if self.owner_pid() == Some(pid) {
            self.owner = None;
            if self.rings.owner_gone(&mut DirectRings) {
                self.transport.notify(RECEIVE);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test values are small")]
mod tests {
    use super::super::queue::tests::Bytes;
    use super::*;

    const RX: (u64, u64, u64) = (0x1_0000, 0x1_1000, 0x1_2000);
    const TX: (u64, u64, u64) = (0x2_0000, 0x2_1000, 0x2_2000);
    const EV: (u64, u64, u64) = (0x3_0000, 0x3_1000, 0x3_2000);
    const EVENT_FRAME: u64 = 0x4_0000;
    const AREA: u64 = 0x100_0000;

    fn rings(mem: &mut Bytes, pages: Vec<u64>) -> Rings {
        let q = |mem: &mut Bytes, (d, a, u): (u64, u64, u64)| Virtqueue::new(mem, 16, d, a, u);
        let (rx, tx, ev) = (q(mem, RX), q(mem, TX), q(mem, EV));
        Rings::new(mem, rx, tx, ev, pages, EVENT_FRAME)
    }

    fn contiguous() -> Vec<u64> {
        (0..RX_BUFFERS as u64 * RX_BUFFER_PAGES).map(|p| AREA + p * PAGE_SIZE).collect()
    }

    /// The device fills used slot `slot` of a queue.
    fn use_buffer(mem: &mut Bytes, used: u64, slot: u16, head: u32, written: u32) {
        let elem = used + 4 + 8 * u64::from(slot % 16);
        mem.write32(elem, head);
        mem.write32(elem + 4, written);
        mem.write16(used + 2, slot.wrapping_add(1));
    }

    /// The head of the `n`th chain the driver made available on a queue.
    fn avail_head(mem: &Bytes, avail: u64, n: u16) -> u32 {
        u32::from(mem.read16(avail + 4 + 2 * u64::from(n % 16)))
    }

    #[test]
    fn every_buffer_is_posted_as_one_descriptor_when_contiguous() {
        let mut mem = Bytes::default();
        let r = rings(&mut mem, contiguous());
        assert_eq!(mem.read16(RX.1 + 2), RX_BUFFERS as u16);
        assert_eq!(mem.read16(EV.1 + 2), EVENTS as u16);
        assert_eq!(r.pieces.len(), RX_BUFFERS);
        assert!(r.pieces.iter().all(|p| u64::from(p.len) == RX_BUFFER_SIZE && p.device_writes));
        assert_eq!(r.pieces[3].phys, AREA + 3 * RX_BUFFER_SIZE);
    }

    #[test]
    fn scattered_frames_become_chains_and_never_join_across_buffers() {
        let mut mem = Bytes::default();
        // Every other frame: no two contiguous.
        let pages: Vec<u64> = (0..RX_BUFFERS as u64 * RX_BUFFER_PAGES).map(|p| AREA + 2 * p * PAGE_SIZE).collect();
        let r = rings(&mut mem, pages);
        // 16 descriptors hold no more than 16 pages: no buffer fits whole.
        assert_eq!(r.unposted, RX_BUFFERS);
        let mut mem = Bytes::default();
        let r = rings(&mut mem, contiguous());
        assert!(r.spans.iter().all(|&(_, n)| n == 1), "one run per buffer even though all are contiguous");
    }

    #[test]
    fn filled_buffers_are_handed_out_in_order_and_given_back() {
        let mut mem = Bytes::default();
        let mut r = rings(&mut mem, contiguous());
        let mut done = Vec::new();
        assert_eq!(r.next_ready(), None);
        let (h0, h1) = (avail_head(&mem, RX.1, 0), avail_head(&mem, RX.1, 1));
        use_buffer(&mut mem, RX.2, 0, h1, 100);
        use_buffer(&mut mem, RX.2, 1, h0, 44);
        assert!(!r.collect(&mut mem, &mut done));
        assert_eq!(r.next_ready(), Some((1 << 32) | 100 | abi::RECV_MORE), "one more waits");
        assert_eq!(r.next_ready(), Some(44));
        assert_eq!(r.next_ready(), None);
        // Only held buffers come back, once each.
        assert_eq!(r.give_back(&mut mem, 1), Ok(true));
        assert_eq!(r.give_back(&mut mem, 1), Err(Error::BadArgument));
        assert_eq!(r.give_back(&mut mem, 2), Err(Error::BadArgument), "never held");
        assert_eq!(r.give_back(&mut mem, 99), Err(Error::BadArgument));
        assert_eq!(r.give_back(&mut mem, u64::MAX - 1), Err(Error::BadArgument));
        assert_eq!(mem.read16(RX.1 + 2), RX_BUFFERS as u16 + 1);
        // The owner leaves holding buffer 0: it goes back to the device.
        assert!(r.owner_gone(&mut mem));
        assert_eq!(mem.read16(RX.1 + 2), RX_BUFFERS as u16 + 2);
        assert!(r.slots.iter().all(|&s| s == Slot::Posted));
    }

    #[test]
    fn a_lying_device_cannot_corrupt_the_bookkeeping() {
        let mut mem = Bytes::default();
        let mut r = rings(&mut mem, contiguous());
        let mut done = Vec::new();
        let h0 = avail_head(&mem, RX.1, 0);
        use_buffer(&mut mem, RX.2, 0, h0, u32::MAX); // longer than the buffer
        use_buffer(&mut mem, RX.2, 1, h0, 10); // the same buffer again
        use_buffer(&mut mem, RX.2, 2, 9999, 10); // a head that does not exist
        r.collect(&mut mem, &mut done);
        assert_eq!(r.next_ready(), Some(RX_BUFFER_SIZE));
        assert_eq!(r.next_ready(), None);
        // A send completion nobody waits for is ignored too.
        use_buffer(&mut mem, TX.2, 0, 3, 0);
        r.collect(&mut mem, &mut done);
        assert!(done.is_empty());
    }

    #[test]
    fn a_send_completes_with_its_length() {
        let mut mem = Bytes::default();
        let mut r = rings(&mut mem, contiguous());
        let pieces = [(0x9000, 44), (0xa000, 100)];
        let buf = IoBuffer { pieces: &pieces, len: 144, device_writes: false };
        r.send(&mut mem, 7, buf).unwrap();
        let head = avail_head(&mem, TX.1, 0);
        use_buffer(&mut mem, TX.2, 0, head, 0);
        let mut done = Vec::new();
        r.collect(&mut mem, &mut done);
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].pid, done[0].result), (7, 144));
    }

    #[test]
    fn a_transport_reset_is_reported_once_and_the_event_buffer_reposted() {
        let mut mem = Bytes::default();
        let mut r = rings(&mut mem, contiguous());
        let mut done = Vec::new();
        let head = avail_head(&mem, EV.1, 2);
        mem.write32(EVENT_FRAME + 16, EVENT_TRANSPORT_RESET);
        use_buffer(&mut mem, EV.2, 0, head, 4);
        // An event buffer returned unwritten is no event.
        let other = avail_head(&mem, EV.1, 0);
        use_buffer(&mut mem, EV.2, 1, other, 0);
        assert!(r.collect(&mut mem, &mut done));
        assert_eq!(mem.read16(EV.1 + 2), EVENTS as u16 + 2);
        assert_eq!(r.next_ready(), Some(RECV_TRANSPORT_RESET));
        assert_eq!(r.next_ready(), None);
    }
}
