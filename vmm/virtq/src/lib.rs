//! Descriptor chains, checked once where they enter a device.
//!
//! The guest writes the descriptor table, so a chain may loop, run past the
//! queue, name memory the guest does not have, or put device-readable
//! buffers after device-writable ones. A [`GuestChain`] exists only once
//! its shape was checked and every buffer found inside guest memory
//! ([`GuestChain::new`]); its fields are private, and a [`GuestRange`] can
//! only be made by checking it ([`GuestRange::new`]) or by cutting one that
//! was ([`split_ranges`]). Devices (the VMM's and the vhost-user backends')
//! touch guest memory only through such ranges, the way Firecracker's
//! `IoVecBuffer` does.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

/// A buffer of guest memory that lies wholly inside it (checked when it
/// was made).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestRange {
    addr: GuestAddress,
    len: u32,
}

impl GuestRange {
    /// `len` bytes at `addr`, if they lie wholly inside `mem` and do not
    /// wrap.
    pub fn new(mem: &GuestMemoryMmap, addr: GuestAddress, len: u32) -> Option<Self> {
        let range = Self { addr, len };
        let inside = addr.0.checked_add(u64::from(len)).is_some()
            && (len == 0 || GuestMemoryBackend::check_range(mem, addr, range.len_usize()));
        inside.then_some(range)
    }

    /// Guest-physical start.
    pub fn addr(&self) -> GuestAddress {
        self.addr
    }

    /// Length in bytes.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Length as a `usize` (lossless on the 64-bit hosts Ward runs on).
    pub fn len_usize(&self) -> usize {
        usize::try_from(self.len).unwrap_or(usize::MAX)
    }

    /// The host view of the range in `mem` (the memory it was checked
    /// against); `None` only if it spans two memory regions.
    pub fn slice<'m>(&self, mem: &'m GuestMemoryMmap) -> Option<VolatileSlice<'m>> {
        GuestMemoryBackend::get_slice(mem, self.addr, self.len_usize()).ok()
    }

    /// The range's first `at` bytes and the rest (both still inside the
    /// memory it was checked against); `None` if `at` is past its end.
    pub fn split_at(&self, at: u32) -> Option<(Self, Self)> {
        let rest = self.len.checked_sub(at)?;
        let second = GuestAddress(self.addr.0.checked_add(u64::from(at))?);
        Some((Self { addr: self.addr, len: at }, Self { addr: second, len: rest }))
    }
}

/// What is wrong with a chain the guest made available.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The available ring's index moved by more than the queue size, or the
    /// ring cannot be read.
    #[error("the available ring index moved by more than the queue size")]
    AvailableRing,
    /// The available ring names a descriptor past the table.
    #[error("the available ring names descriptor {head}, past the queue's {size} descriptors")]
    HeadOutOfRange {
        /// The head index.
        head: u16,
        /// The queue size.
        size: u16,
    },
    /// The chain does not end: it loops, runs longer than the queue, names a
    /// descriptor past the table or adds up to more than 4 GiB.
    #[error(
        "the descriptor chain from {head} loops, is longer than the queue, names a descriptor past the table \
         or adds up to more than 4 GiB"
    )]
    Unterminated {
        /// The head index.
        head: u16,
    },
    /// A device-readable buffer follows a device-writable one.
    #[error("the descriptor chain from {head} has a device-readable buffer after a device-writable one")]
    ReadableAfterWritable {
        /// The head index.
        head: u16,
    },
    /// A buffer lies (partly) outside guest memory.
    #[error("the descriptor chain from {head} names {addr:#x}+{len:#x}, outside guest memory")]
    OutsideMemory {
        /// The head index.
        head: u16,
        /// Start of the buffer.
        addr: u64,
        /// Its length.
        len: u32,
    },
}

impl ChainError {
    /// A short name per kind, for logging each kind once.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AvailableRing => "available-ring",
            Self::HeadOutOfRange { .. } => "head-out-of-range",
            Self::Unterminated { .. } => "unterminated-chain",
            Self::ReadableAfterWritable { .. } => "readable-after-writable",
            Self::OutsideMemory { .. } => "outside-memory",
        }
    }

    /// The chain's head, when it is one the device may return to the driver.
    pub fn returnable_head(&self) -> Option<u16> {
        match self {
            Self::AvailableRing | Self::HeadOutOfRange { .. } => None,
            Self::Unterminated { head } | Self::ReadableAfterWritable { head } | Self::OutsideMemory { head, .. } => {
                Some(*head)
            }
        }
    }
}

/// A descriptor chain in the shape the virtio specification requires
/// (device-readable buffers, then device-writable ones), every buffer
/// inside guest memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestChain {
    head: u16,
    readable: Vec<GuestRange>,
    writable: Vec<GuestRange>,
}

impl GuestChain {
    /// Walks `chain` from a queue of `queue_size` descriptors and checks
    /// every buffer against `mem`.
    pub fn new<M>(chain: DescriptorChain<M>, queue_size: u16, mem: &GuestMemoryMmap) -> Result<Self, ChainError>
    where
        M: Deref,
        M::Target: GuestMemory,
    {
        let head = chain.head_index();
        if head >= queue_size {
            return Err(ChainError::HeadOutOfRange { head, size: queue_size });
        }
        let mut walked = Self { head, readable: Vec::new(), writable: Vec::new() };
        // virtio-queue's iterator stops quietly on a loop (after `queue_size`
        // descriptors), a next index past the table, an unreadable
        // descriptor or a length overflow; a chain ends properly only on a
        // descriptor without NEXT.
        let mut terminated = false;
        let mut outside = None;
        for descriptor in chain {
            let (addr, len) = (descriptor.addr(), descriptor.len());
            let range = GuestRange::new(mem, addr, len);
            if range.is_none() && outside.is_none() {
                outside = Some(ChainError::OutsideMemory { head, addr: addr.0, len });
            }
            let range = range.unwrap_or(GuestRange { addr, len: 0 });
            if descriptor.is_write_only() {
                walked.writable.push(range);
            } else if walked.writable.is_empty() {
                walked.readable.push(range);
            } else {
                return Err(ChainError::ReadableAfterWritable { head });
            }
            terminated = !descriptor.has_next();
        }
        if !terminated {
            return Err(ChainError::Unterminated { head });
        }
        outside.map_or(Ok(walked), Err)
    }

    /// A chain of ranges already checked (each [`GuestRange`] was), for
    /// devices' tests and for a backend that took a chain apart: the shape
    /// (readable, then writable) is the two lists'.
    pub fn from_ranges(head: u16, readable: Vec<GuestRange>, writable: Vec<GuestRange>) -> Self {
        Self { head, readable, writable }
    }

    /// Index of the head descriptor (what goes back in the used ring).
    pub fn head(&self) -> u16 {
        self.head
    }

    /// Buffers the device reads, in order.
    pub fn readable(&self) -> &[GuestRange] {
        &self.readable
    }

    /// Buffers the device writes, in order.
    pub fn writable(&self) -> &[GuestRange] {
        &self.writable
    }

    /// Total bytes of the device-readable buffers.
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|range| u64::from(range.len)).sum()
    }

    /// Total bytes of the device-writable buffers.
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|range| u64::from(range.len)).sum()
    }

    /// Copies the device-readable bytes into `buf`, from the start, until
    /// either ends; returns how many.
    pub fn read_into(&self, mem: &GuestMemoryMmap, buf: &mut [u8]) -> usize {
        self.read_at(mem, 0, buf)
    }

    /// Copies the device-readable bytes from byte `offset` on into `buf`,
    /// until either ends; returns how many.
    pub fn read_at(&self, mem: &GuestMemoryMmap, offset: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        for range in skip(&self.readable, offset) {
            let n = range.len_usize().min(buf.len() - done);
            if n == 0 || mem.read_slice(&mut buf[done..done + n], range.addr).is_err() {
                break;
            }
            done += n;
        }
        done
    }

    /// Copies `data` into the device-writable buffers, from the start,
    /// until either ends; returns how many bytes.
    pub fn write_from(&self, mem: &GuestMemoryMmap, data: &[u8]) -> usize {
        self.write_at(mem, 0, data)
    }

    /// Copies `data` into the device-writable buffers from byte `offset`
    /// on, until either ends; returns how many bytes.
    pub fn write_at(&self, mem: &GuestMemoryMmap, offset: u64, data: &[u8]) -> usize {
        let mut done = 0;
        for range in skip(&self.writable, offset) {
            let n = range.len_usize().min(data.len() - done);
            if n == 0 || mem.write_slice(&data[done..done + n], range.addr).is_err() {
                break;
            }
            done += n;
        }
        done
    }
}

/// `ranges` without their first `offset` bytes (a range cut in two keeps
/// its tail, still checked).
fn skip(ranges: &[GuestRange], offset: u64) -> impl Iterator<Item = GuestRange> + '_ {
    let mut left = offset;
    ranges.iter().filter_map(move |range| {
        let len = u64::from(range.len);
        if left >= len {
            left -= len;
            return None;
        }
        let cut = u32::try_from(left).unwrap_or(u32::MAX);
        left = 0;
        range.split_at(cut).map(|(_, rest)| rest)
    })
}

/// Copies from `ranges` into `buf` until either ends; returns how many bytes.
pub fn gather(ranges: &[GuestRange], mem: &GuestMemoryMmap, buf: &mut [u8]) -> usize {
    let mut done = 0;
    for range in ranges {
        let n = range.len_usize().min(buf.len() - done);
        if n == 0 || mem.read_slice(&mut buf[done..done + n], range.addr).is_err() {
            break;
        }
        done += n;
    }
    done
}

/// Splits the first `count` bytes off `ranges`: (those bytes, the rest).
/// Cut pieces are still checked ranges.
pub fn split_ranges(ranges: &[GuestRange], count: u64) -> Option<(Vec<GuestRange>, Vec<GuestRange>)> {
    let mut head = Vec::new();
    let mut tail = Vec::new();
    let mut left = count;
    for range in ranges {
        let len = u64::from(range.len);
        if left >= len {
            head.push(*range);
            left -= len;
        } else if left > 0 {
            let (first, rest) = range.split_at(u32::try_from(left).ok()?)?;
            head.push(first);
            tail.push(rest);
            left = 0;
        } else {
            tail.push(*range);
        }
    }
    (left == 0).then_some((head, tail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{RawDescriptor, split::Descriptor};
    use virtio_queue::mock::MockSplitQueue;

    const QUEUE_SIZE: u16 = 16;
    const NEXT: u16 = 1;
    const WRITE: u16 = 2;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags, next))
    }

    fn walk(mem: &GuestMemoryMmap, descriptors: &[RawDescriptor]) -> Result<GuestChain, ChainError> {
        let mock = MockSplitQueue::new(mem, QUEUE_SIZE);
        let chain = mock.build_multiple_desc_chains(descriptors).unwrap();
        GuestChain::new(chain, QUEUE_SIZE, mem)
    }

    #[test]
    fn a_well_formed_chain_splits_into_readable_and_writable() {
        let mem = memory();
        let chain = walk(&mem, &[desc(0x8_0000, 16, NEXT, 1), desc(0x9_0000, 32, WRITE, 0)]).unwrap();
        assert_eq!(chain.head(), 0);
        assert_eq!(chain.readable(), [GuestRange::new(&mem, GuestAddress(0x8_0000), 16).unwrap()]);
        assert_eq!(chain.writable_len(), 32);
    }

    #[test]
    fn a_chain_naming_memory_the_guest_does_not_have_never_exists() {
        let mem = memory();
        for (addr, len) in [(0xf_ff00, 0x200), (u64::MAX - 4, 16), (0x2000_0000, 1)] {
            let got = walk(&mem, &[desc(0x8_0000, 16, NEXT, 1), desc(addr, len, WRITE, 0)]);
            assert_eq!(got, Err(ChainError::OutsideMemory { head: 0, addr, len }));
            assert_eq!(GuestRange::new(&mem, GuestAddress(addr), len), None);
        }
    }

    #[test]
    fn loops_and_bad_order_are_refused() {
        let mem = memory();
        assert_eq!(
            walk(&mem, &[desc(0x8_0000, 16, NEXT, 1), desc(0x8_0000, 16, NEXT, 0)]),
            Err(ChainError::Unterminated { head: 0 })
        );
        assert_eq!(
            walk(&mem, &[desc(0x8_0000, 16, NEXT | WRITE, 1), desc(0x8_1000, 16, 0, 0)]),
            Err(ChainError::ReadableAfterWritable { head: 0 })
        );
    }

    #[test]
    fn bytes_are_gathered_and_scattered_across_buffers() {
        let mem = memory();
        mem.write_slice(b"hello", GuestAddress(0x8_0000)).unwrap();
        mem.write_slice(b" world", GuestAddress(0x8_1000)).unwrap();
        let chain = walk(
            &mem,
            &[
                desc(0x8_0000, 5, NEXT, 1),
                desc(0x8_1000, 6, NEXT, 2),
                desc(0x9_0000, 4, NEXT | WRITE, 3),
                desc(0x9_1000, 4, WRITE, 0),
            ],
        )
        .unwrap();
        let mut buf = [0u8; 32];
        assert_eq!(chain.read_into(&mem, &mut buf), 11);
        assert_eq!(&buf[..11], b"hello world");
        assert_eq!(chain.read_at(&mem, 3, &mut buf), 8);
        assert_eq!(&buf[..8], b"lo world");
        assert_eq!(chain.read_at(&mem, 11, &mut buf), 0);
        assert_eq!(chain.write_from(&mem, b"0123456789"), 8);
        let mut out = [0u8; 4];
        mem.read_slice(&mut out, GuestAddress(0x9_1000)).unwrap();
        assert_eq!(&out, b"4567");
        assert_eq!(chain.write_at(&mem, 6, b"xy!"), 2);
        mem.read_slice(&mut out, GuestAddress(0x9_1000)).unwrap();
        assert_eq!(&out, b"45xy");
    }

    #[test]
    fn split_ranges_cuts_inside_a_range() {
        let mem = memory();
        let r = |addr, len| GuestRange::new(&mem, GuestAddress(addr), len).unwrap();
        let (head, tail) = split_ranges(&[r(0x100, 10), r(0x200, 10)], 15).unwrap();
        assert_eq!(head, [r(0x100, 10), r(0x200, 5)]);
        assert_eq!(tail, [r(0x205, 5)]);
        assert_eq!(split_ranges(&[r(0x100, 10)], 11), None);
        assert_eq!(split_ranges(&[r(0x100, 10)], 10), Some((vec![r(0x100, 10)], vec![])));
    }
}
