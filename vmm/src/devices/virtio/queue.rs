//! Descriptor chains, checked once where they enter the VMM.
//!
//! The guest writes the descriptor table, so a chain may loop, run past the
//! queue, name memory the guest does not have, or put device-readable
//! buffers after device-writable ones. [`GuestChain::walk`] turns a chain
//! into two lists of guest ranges (what the device reads, what it writes) or
//! says what is wrong; [`GuestChain::check_memory`] checks every range
//! against guest memory. Devices only ever touch guest memory through
//! ranges that passed both.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

/// A buffer of guest memory a descriptor names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestRange {
    /// Guest-physical start.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

impl GuestRange {
    /// Length as a `usize` (lossless on the 64-bit hosts Ward runs on).
    pub fn len_usize(&self) -> usize {
        usize::try_from(self.len).unwrap_or(usize::MAX)
    }

    /// Whether the range lies wholly inside guest memory.
    pub fn is_in(&self, mem: &GuestMemoryMmap) -> bool {
        self.addr.0.checked_add(u64::from(self.len)).is_some()
            && (self.len == 0 || GuestMemoryBackend::check_range(mem, self.addr, self.len_usize()))
    }

    /// The host view of the range; `None` if it is not in guest memory.
    pub fn slice<'m>(&self, mem: &'m GuestMemoryMmap) -> Option<VolatileSlice<'m>> {
        if !self.is_in(mem) {
            return None;
        }
        GuestMemoryBackend::get_slice(mem, self.addr, self.len_usize()).ok()
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

/// A descriptor chain in the shape the virtio specification requires:
/// device-readable buffers, then device-writable ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestChain {
    /// Index of the head descriptor (what goes back in the used ring).
    pub head: u16,
    /// Buffers the device reads, in order.
    pub readable: Vec<GuestRange>,
    /// Buffers the device writes, in order.
    pub writable: Vec<GuestRange>,
}

impl GuestChain {
    /// Walks `chain` from a queue of `queue_size` descriptors.
    pub fn walk<M>(chain: DescriptorChain<M>, queue_size: u16) -> Result<Self, ChainError>
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
        for descriptor in chain {
            let range = GuestRange { addr: descriptor.addr(), len: descriptor.len() };
            if descriptor.is_write_only() {
                walked.writable.push(range);
            } else if walked.writable.is_empty() {
                walked.readable.push(range);
            } else {
                return Err(ChainError::ReadableAfterWritable { head });
            }
            terminated = !descriptor.has_next();
        }
        if terminated { Ok(walked) } else { Err(ChainError::Unterminated { head }) }
    }

    /// Checks that every buffer lies inside guest memory.
    pub fn check_memory(&self, mem: &GuestMemoryMmap) -> Result<(), ChainError> {
        match self.readable.iter().chain(&self.writable).find(|range| !range.is_in(mem)) {
            Some(range) => Err(ChainError::OutsideMemory { head: self.head, addr: range.addr.0, len: range.len }),
            None => Ok(()),
        }
    }

    /// Total bytes of the device-writable buffers.
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|range| u64::from(range.len)).sum()
    }
}

/// Splits the first `count` bytes off `ranges`: (those bytes, the rest).
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
            let first = u32::try_from(left).ok()?;
            head.push(GuestRange { addr: range.addr, len: first });
            tail.push(GuestRange { addr: GuestAddress(range.addr.0.checked_add(left)?), len: range.len - first });
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
    use crate::devices::virtio::testing::*;
    use ward_abi::virtio::desc::{NEXT, WRITE};

    fn pop(mem: &GuestMemoryMmap) -> Result<GuestChain, ChainError> {
        let (mut queues, _) = active_queues(mem, 1, 0);
        queues.pop(0).unwrap()
    }

    #[test]
    fn well_formed_chain_splits_into_readable_and_writable() {
        let mem = memory();
        offer(&mem, 0, 0, &[(0x8_0000, 16, false), (0x8_1000, 512, true), (0x8_2000, 1, true)]);
        let chain = pop(&mem).unwrap();
        assert_eq!(chain.head, 0);
        assert_eq!(chain.readable, [GuestRange { addr: GuestAddress(0x8_0000), len: 16 }]);
        assert_eq!(chain.writable.len(), 2);
        assert_eq!(chain.writable_len(), 513);
        chain.check_memory(&mem).unwrap();
    }

    #[test]
    fn looping_chain_is_unterminated() {
        let mem = memory();
        write_desc(&mem, 0, 0, raw_desc(0x8_0000, 16, NEXT, 1));
        write_desc(&mem, 0, 1, raw_desc(0x8_1000, 16, NEXT, 0));
        make_available(&mem, 0, 0);
        assert_eq!(pop(&mem), Err(ChainError::Unterminated { head: 0 }));
    }

    #[test]
    fn chain_longer_than_the_queue_is_unterminated() {
        let mem = memory();
        for slot in 0..TEST_QUEUE_SIZE {
            write_desc(&mem, 0, slot, raw_desc(0x8_0000, 16, NEXT, (slot + 1) % TEST_QUEUE_SIZE));
        }
        make_available(&mem, 0, 3);
        assert_eq!(pop(&mem), Err(ChainError::Unterminated { head: 3 }));
    }

    #[test]
    fn next_past_the_table_is_unterminated() {
        let mem = memory();
        write_desc(&mem, 0, 0, raw_desc(0x8_0000, 16, NEXT, TEST_QUEUE_SIZE + 5));
        make_available(&mem, 0, 0);
        assert_eq!(pop(&mem), Err(ChainError::Unterminated { head: 0 }));
    }

    #[test]
    fn lengths_adding_past_four_gib_are_unterminated() {
        let mem = memory();
        write_desc(&mem, 0, 0, raw_desc(0x8_0000, u32::MAX, NEXT, 1));
        write_desc(&mem, 0, 1, raw_desc(0x8_0000, 2, WRITE, 0));
        make_available(&mem, 0, 0);
        assert_eq!(pop(&mem), Err(ChainError::Unterminated { head: 0 }));
    }

    #[test]
    fn head_past_the_table_is_refused() {
        let mem = memory();
        make_available(&mem, 0, 200);
        assert_eq!(pop(&mem), Err(ChainError::HeadOutOfRange { head: 200, size: TEST_QUEUE_SIZE }));
    }

    #[test]
    fn readable_after_writable_is_refused() {
        let mem = memory();
        offer(&mem, 0, 0, &[(0x8_0000, 16, true), (0x8_1000, 16, false)]);
        assert_eq!(pop(&mem), Err(ChainError::ReadableAfterWritable { head: 0 }));
    }

    #[test]
    fn buffers_outside_memory_or_wrapping_are_found() {
        let mem = memory();
        for (addr, len) in [(0xf_ff00, 0x200), (u64::MAX - 4, 16), (0x2000_0000, 1)] {
            let chain =
                GuestChain { head: 1, readable: vec![GuestRange { addr: GuestAddress(addr), len }], writable: vec![] };
            assert_eq!(chain.check_memory(&mem), Err(ChainError::OutsideMemory { head: 1, addr, len }));
        }
    }

    #[test]
    fn available_index_jumping_past_the_queue_is_refused() {
        let mem = memory();
        let (mut queues, _) = active_queues(&mem, 1, 0);
        set_avail_idx(&mem, 0, TEST_QUEUE_SIZE + 1);
        assert_eq!(queues.pop(0), Some(Err(ChainError::AvailableRing)));
    }

    #[test]
    fn chains_built_by_the_mock_driver_walk_the_same() {
        use virtio_queue::mock::MockSplitQueue;
        let mem = memory();
        let mock = MockSplitQueue::new(&mem, TEST_QUEUE_SIZE);
        let chain = mock.build_desc_chain(&[raw_desc(0x8_0000, 16, 0, 0), raw_desc(0x9_0000, 32, WRITE, 0)]).unwrap();
        let walked = GuestChain::walk(chain, TEST_QUEUE_SIZE).unwrap();
        assert_eq!(walked.readable.len(), 1);
        assert_eq!(walked.writable_len(), 32);
        // A two-descriptor loop written as is.
        let mock = MockSplitQueue::new(&mem, TEST_QUEUE_SIZE);
        let chain = mock
            .build_multiple_desc_chains(&[raw_desc(0x8_0000, 16, NEXT, 1), raw_desc(0x8_0000, 16, NEXT, 0)])
            .unwrap();
        assert_eq!(GuestChain::walk(chain, TEST_QUEUE_SIZE), Err(ChainError::Unterminated { head: 0 }));
    }

    #[test]
    fn split_ranges_cuts_inside_a_range() {
        let r = |addr, len| GuestRange { addr: GuestAddress(addr), len };
        let (head, tail) = split_ranges(&[r(0x100, 10), r(0x200, 10)], 15).unwrap();
        assert_eq!(head, [r(0x100, 10), r(0x200, 5)]);
        assert_eq!(tail, [r(0x205, 5)]);
        assert_eq!(split_ranges(&[r(0x100, 10)], 11), None);
        assert_eq!(split_ranges(&[r(0x100, 10)], 10), Some((vec![r(0x100, 10)], vec![])));
    }
}
