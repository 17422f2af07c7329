//! A split virtqueue, driver side (virtio 1.x, section 2.7).
//!
//! The rings live in three frames the kernel gives the device: the
//! descriptor table, the available ring and the used ring. The kernel
//! writes descriptors and the available ring; the device writes the used
//! ring. Buffers are guest-physical ranges: the kernel hands the device the
//! pages a program's buffer already occupies, so data never crosses ring 0
//! by copying.
//!
//! Written against [`RingMemory`], so the same logic runs in host tests.

use ward_abi::virtio::desc;

/// Reading and writing the rings, little-endian, by physical address.
pub trait RingMemory {
    /// Reads a `u16`.
    fn read16(&self, phys: u64) -> u16;
    /// Reads a `u32`.
    fn read32(&self, phys: u64) -> u32;
    /// Writes a `u16`.
    fn write16(&mut self, phys: u64, value: u16);
    /// Writes a `u32`.
    fn write32(&mut self, phys: u64, value: u32);
    /// Writes a `u64`.
    fn write64(&mut self, phys: u64, value: u64);
    /// Orders the writes before it before the writes after it, as the
    /// device sees them (a compiler fence: x86 keeps store order).
    fn fence(&mut self) {
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    }
}

/// Most descriptors a queue of ours has (one frame of descriptor table).
pub const MAX_QUEUE_SIZE: u16 = 256;

/// A buffer in a chain: guest-physical range, and whether the device
/// writes it (else reads it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// Start.
    pub phys: u64,
    /// Length.
    pub len: u32,
    /// The device writes it.
    pub device_writes: bool,
}

/// Why a chain could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// Not enough free descriptors now.
    Full,
    /// An empty chain, or one longer than the queue.
    BadChain,
}

/// A finished chain: its first descriptor and the bytes the device wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Head descriptor index (as returned by [`Virtqueue::push`]).
    pub head: u16,
    /// Bytes written by the device.
    pub written: u32,
}

/// The driver's view of one split virtqueue.
#[derive(Debug)]
pub struct Virtqueue {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    /// Free descriptors, chained through `next`.
    free_head: u16,
    free_count: u16,
    /// Next available-ring slot (free-running index).
    avail_idx: u16,
    /// Used entries consumed so far (free-running index).
    last_used: u16,
    /// Length of the chain each head starts, for freeing.
    chain_len: [u16; MAX_QUEUE_SIZE as usize],
}

impl Virtqueue {
    /// A queue of `size` descriptors over zeroed rings at `desc`, `avail`
    /// and `used` (guest-physical).
    pub fn new(mem: &mut impl RingMemory, size: u16, desc: u64, avail: u64, used: u64) -> Self {
        let size = size.clamp(1, MAX_QUEUE_SIZE);
        for i in 0..size {
            // Free list: each descriptor's `next` is the following one.
            mem.write16(desc + 16 * u64::from(i) + 14, i.wrapping_add(1));
        }
        Self {
            size,
            desc,
            avail,
            used,
            free_head: 0,
            free_count: size,
            avail_idx: 0,
            last_used: 0,
            chain_len: [0; MAX_QUEUE_SIZE as usize],
        }
    }

    /// Descriptors in the queue.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Free descriptors.
    pub fn free(&self) -> u16 {
        self.free_count
    }

    /// The head the next [`Self::push`] will return (for request memory
    /// indexed by head, filled in before the push).
    pub fn next_head(&self) -> u16 {
        self.free_head
    }

    /// Makes `chain` available to the device; returns its head. The caller
    /// then notifies the device.
    pub fn push(&mut self, mem: &mut impl RingMemory, chain: &[Buffer]) -> Result<u16, QueueError> {
        self.push_chain(mem, chain.len(), chain.iter().copied())
    }

    /// [`Self::push`] for a chain of `len` buffers given as an iterator
    /// (header, the program's pieces, status), so a request needs no
    /// allocation. Fewer than `len` buffers is an error and publishes
    /// nothing.
    pub fn push_chain(
        &mut self,
        mem: &mut impl RingMemory,
        len: usize,
        chain: impl IntoIterator<Item = Buffer>,
    ) -> Result<u16, QueueError> {
        let n = u16::try_from(len).map_err(|_| QueueError::BadChain)?;
        if n == 0 || n > self.size {
            return Err(QueueError::BadChain);
        }
        if n > self.free_count {
            return Err(QueueError::Full);
        }
        let head = self.free_head;
        let mut index = head;
        let mut written = 0;
        let mut after = head;
        let mut chain = chain.into_iter();
        for (i, buf) in chain.by_ref().take(len).enumerate() {
            written += 1;
            let at = self.desc + 16 * u64::from(index);
            let next_free = mem.read16(at + 14);
            let last = i + 1 == len;
            let mut flags = if buf.device_writes { desc::WRITE } else { 0 };
            if !last {
                flags |= desc::NEXT;
            }
            mem.write64(at, buf.phys);
            mem.write32(at + 8, buf.len);
            mem.write16(at + 12, flags);
            if last {
                after = next_free;
            } else {
                // `next` already names the following free descriptor.
                index = next_free;
            }
        }
        if written != len || chain.next().is_some() {
            // Nothing is taken from the free list (its `next` links are
            // intact) until the chain is exactly as long as it says.
            return Err(QueueError::BadChain);
        }
        self.free_head = after;
        self.free_count -= n;
        self.chain_len[usize::from(head)] = n;
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        mem.write16(slot, head);
        mem.fence();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write16(self.avail + 2, self.avail_idx);
        mem.fence();
        Ok(head)
    }

    /// Takes the next chain the device finished, if any, and frees its
    /// descriptors. A head the device invents (out of range, or not one we
    /// made available) is skipped: the device is the host's, but the queue
    /// must not corrupt itself on a bad answer.
    pub fn pop_used(&mut self, mem: &mut impl RingMemory) -> Option<Completion> {
        loop {
            let device_idx = mem.read16(self.used + 2);
            if device_idx == self.last_used {
                return None;
            }
            let elem = self.used + 4 + 8 * u64::from(self.last_used % self.size);
            let id = mem.read32(elem);
            let written = mem.read32(elem + 4);
            self.last_used = self.last_used.wrapping_add(1);
            let Ok(head) = u16::try_from(id) else { continue };
            if head >= self.size || self.chain_len[usize::from(head)] == 0 {
                continue;
            }
            self.release(mem, head);
            return Some(Completion { head, written });
        }
    }

    /// Returns a chain's descriptors to the free list.
    fn release(&mut self, mem: &mut impl RingMemory, head: u16) {
        let n = self.chain_len[usize::from(head)];
        self.chain_len[usize::from(head)] = 0;
        let mut last = head;
        for _ in 1..n {
            last = mem.read16(self.desc + 16 * u64::from(last) + 14);
        }
        mem.write16(self.desc + 16 * u64::from(last) + 14, self.free_head);
        self.free_head = head;
        self.free_count += n;
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test values are small")]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::vec::Vec;

    #[derive(Default)]
    pub(crate) struct Bytes(pub(crate) HashMap<u64, u8>);

    impl Bytes {
        fn read(&self, at: u64, n: usize) -> u64 {
            (0..n).rev().fold(0, |v, i| (v << 8) | u64::from(*self.0.get(&(at + i as u64)).unwrap_or(&0)))
        }
        fn write(&mut self, at: u64, n: usize, v: u64) {
            for i in 0..n {
                self.0.insert(at + i as u64, (v >> (8 * i)) as u8);
            }
        }
    }

    impl RingMemory for Bytes {
        fn read16(&self, phys: u64) -> u16 {
            self.read(phys, 2) as u16
        }
        fn read32(&self, phys: u64) -> u32 {
            self.read(phys, 4) as u32
        }
        fn write16(&mut self, phys: u64, value: u16) {
            self.write(phys, 2, value.into());
        }
        fn write32(&mut self, phys: u64, value: u32) {
            self.write(phys, 4, value.into());
        }
        fn write64(&mut self, phys: u64, value: u64) {
            self.write(phys, 8, value);
        }
    }

    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;

    fn queue(size: u16) -> (Virtqueue, Bytes) {
        let mut mem = Bytes::default();
        let q = Virtqueue::new(&mut mem, size, DESC, AVAIL, USED);
        (q, mem)
    }

    /// What the device would see: the chain from the available ring.
    fn device_chain(mem: &Bytes, slot: u16, size: u16) -> Vec<(u64, u32, u16)> {
        let mut index = mem.read16(AVAIL + 4 + 2 * u64::from(slot % size));
        let mut out = Vec::new();
        loop {
            let at = DESC + 16 * u64::from(index);
            let flags = mem.read16(at + 12);
            out.push((mem.read(at, 8), mem.read32(at + 8), flags));
            if flags & desc::NEXT == 0 {
                return out;
            }
            index = mem.read16(at + 14);
        }
    }

    fn device_uses(mem: &mut Bytes, slot: u16, size: u16, head: u16, written: u32) {
        let elem = USED + 4 + 8 * u64::from(slot % size);
        mem.write32(elem, head.into());
        mem.write32(elem + 4, written);
        mem.write16(USED + 2, slot.wrapping_add(1));
    }

    #[test]
    fn a_chain_is_laid_out_as_the_device_expects() {
        let (mut q, mut mem) = queue(8);
        let chain = [
            Buffer { phys: 0x9000, len: 16, device_writes: false },
            Buffer { phys: 0xa000, len: 4096, device_writes: true },
            Buffer { phys: 0xb000, len: 1, device_writes: true },
        ];
        let head = q.push(&mut mem, &chain).unwrap();
        assert_eq!(mem.read16(AVAIL + 2), 1, "available index");
        assert_eq!(
            device_chain(&mem, 0, 8),
            [(0x9000, 16, desc::NEXT), (0xa000, 4096, desc::NEXT | desc::WRITE), (0xb000, 1, desc::WRITE)]
        );
        assert_eq!(q.free(), 5);
        device_uses(&mut mem, 0, 8, head, 4097);
        assert_eq!(q.pop_used(&mut mem), Some(Completion { head, written: 4097 }));
        assert_eq!(q.free(), 8);
        assert_eq!(q.pop_used(&mut mem), None);
    }

    #[test]
    fn descriptors_are_recycled_across_many_rounds() {
        let (mut q, mut mem) = queue(4);
        for round in 0..100u16 {
            let bufs = [Buffer { phys: 0x9000, len: 8, device_writes: false }; 3];
            let head = q.push(&mut mem, &bufs).unwrap();
            device_uses(&mut mem, round, 4, head, 0);
            assert_eq!(q.pop_used(&mut mem).map(|c| c.head), Some(head));
        }
        assert_eq!(q.free(), 4);
    }

    #[test]
    fn full_and_bad_chains_are_refused() {
        let (mut q, mut mem) = queue(4);
        let buf = Buffer { phys: 0x9000, len: 8, device_writes: false };
        assert_eq!(q.push(&mut mem, &[]), Err(QueueError::BadChain));
        assert_eq!(q.push(&mut mem, &[buf; 5]), Err(QueueError::BadChain));
        // A chain shorter than it claims publishes nothing and frees all.
        assert_eq!(q.push_chain(&mut mem, 3, [buf; 2]), Err(QueueError::BadChain));
        assert_eq!(q.push_chain(&mut mem, 2, [buf; 3]), Err(QueueError::BadChain));
        assert_eq!(q.free(), 4);
        q.push(&mut mem, &[buf; 3]).unwrap();
        assert_eq!(q.push(&mut mem, &[buf; 2]), Err(QueueError::Full));
    }

    #[test]
    fn a_device_answering_with_a_bogus_head_does_not_corrupt_the_queue() {
        let (mut q, mut mem) = queue(4);
        let buf = Buffer { phys: 0x9000, len: 8, device_writes: false };
        let head = q.push(&mut mem, &[buf]).unwrap();
        device_uses(&mut mem, 0, 4, 99, 0); // out of range
        device_uses(&mut mem, 1, 4, 3, 0); // never made available
        device_uses(&mut mem, 2, 4, head, 5);
        assert_eq!(q.pop_used(&mut mem), Some(Completion { head, written: 5 }));
        assert_eq!(q.free(), 4);
    }
}
