//! Guest memory images holding split virtqueues, the way a driver lays
//! them out: what the virtio seeds are made of, and how the tests read
//! back what the device did.
//!
//! Both virtio targets put queue `q`'s rings at fixed places: the
//! descriptor table at `q * 0x1000` ([`QUEUE_SIZE`] entries), the
//! available ring at `+0x100`, the used ring at `+0x200`. Buffers go
//! anywhere else.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use ward_abi::virtio::desc;

/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 16;

/// Guest-physical address of queue `q`'s descriptor table.
pub fn desc_table(q: usize) -> u64 {
    q as u64 * 0x1000
}

/// Guest-physical address of queue `q`'s available ring.
pub fn avail_ring(q: usize) -> u64 {
    desc_table(q) + 0x100
}

/// Guest-physical address of queue `q`'s used ring.
pub fn used_ring(q: usize) -> u64 {
    desc_table(q) + 0x200
}

/// One buffer of a descriptor chain.
#[derive(Clone, Copy, Debug)]
pub struct Buffer {
    /// Guest-physical address.
    pub addr: u64,
    /// Length.
    pub len: u32,
    /// The device writes it (else reads it).
    pub writable: bool,
}

impl Buffer {
    /// A buffer the device reads.
    pub fn readable(addr: u64, len: u32) -> Self {
        Self { addr, len, writable: false }
    }

    /// A buffer the device writes.
    pub fn writable(addr: u64, len: u32) -> Self {
        Self { addr, len, writable: true }
    }
}

/// A guest memory image under construction: bytes from guest-physical 0.
#[derive(Clone, Debug, Default)]
pub struct Image {
    bytes: Vec<u8>,
    /// Next free descriptor and next available-ring slot, per queue.
    next_desc: Vec<u16>,
    available: Vec<u16>,
}

impl Image {
    /// An empty image.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `bytes` at `addr`, growing the image as needed.
    pub fn put(&mut self, addr: u64, bytes: &[u8]) {
        let start = usize::try_from(addr).expect("address");
        let end = start + bytes.len();
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        self.bytes[start..end].copy_from_slice(bytes);
    }

    fn slot(list: &mut Vec<u16>, q: usize) -> &mut u16 {
        if list.len() <= q {
            list.resize(q + 1, 0);
        }
        &mut list[q]
    }

    /// Makes a chain of `buffers` available on queue `q` (descriptors
    /// taken in order from the next free one); returns its head.
    pub fn chain(&mut self, q: usize, buffers: &[Buffer]) -> u16 {
        let head = *Self::slot(&mut self.next_desc, q);
        assert!(usize::from(head) + buffers.len() <= usize::from(QUEUE_SIZE), "queue {q} has no more descriptors");
        for (i, buffer) in buffers.iter().enumerate() {
            let index = head + i as u16;
            let last = i + 1 == buffers.len();
            let flags = if buffer.writable { desc::WRITE } else { 0 } | if last { 0 } else { desc::NEXT };
            let mut entry = [0u8; 16];
            entry[..8].copy_from_slice(&buffer.addr.to_le_bytes());
            entry[8..12].copy_from_slice(&buffer.len.to_le_bytes());
            entry[12..14].copy_from_slice(&flags.to_le_bytes());
            entry[14..].copy_from_slice(&(if last { 0 } else { index + 1 }).to_le_bytes());
            self.put(desc_table(q) + 16 * u64::from(index), &entry);
        }
        *Self::slot(&mut self.next_desc, q) = head + buffers.len() as u16;
        let slot = *Self::slot(&mut self.available, q);
        self.put(avail_ring(q) + 4 + 2 * u64::from(slot % QUEUE_SIZE), &head.to_le_bytes());
        *Self::slot(&mut self.available, q) = slot + 1;
        // Available ring: flags 0, idx.
        self.put(avail_ring(q), &0u16.to_le_bytes());
        self.put(avail_ring(q) + 2, &(slot + 1).to_le_bytes());
        head
    }

    /// The image's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Its length so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// The used ring's index of queue `q` in `mem`: how many chains the device
/// returned.
pub fn used_idx(mem: &GuestMemoryMmap, q: usize) -> u16 {
    mem.read_obj(GuestAddress(used_ring(q) + 2)).unwrap_or(0)
}

/// Used element `i` of queue `q`: (head, bytes written).
pub fn used_elem(mem: &GuestMemoryMmap, q: usize, i: u16) -> (u32, u32) {
    let at = used_ring(q) + 4 + 8 * u64::from(i % QUEUE_SIZE);
    let id = mem.read_obj(GuestAddress(at)).unwrap_or(u32::MAX);
    let len = mem.read_obj(GuestAddress(at + 4)).unwrap_or(u32::MAX);
    (id, len)
}

/// `len` bytes of `mem` at `addr`.
pub fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    mem.read_slice(&mut out, GuestAddress(addr)).expect("reading guest memory");
    out
}
