//! Descriptor chains, checked once where they enter the VMM: the types
//! are `ward-virtq`'s, which the vhost-user backends share
//! ([`ward_virtq`]); [`crate::devices::virtio::ActiveQueues::pop`] hands
//! devices only chains whose shape and memory were checked.

pub use ward_virtq::{ChainError, GuestChain, GuestRange, gather, split_ranges};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::*;
    use vm_memory::{GuestAddress, GuestMemoryMmap};
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
        assert_eq!(chain.head(), 0);
        assert_eq!(chain.readable(), [GuestRange::new(&mem, GuestAddress(0x8_0000), 16).unwrap()]);
        assert_eq!(chain.writable().len(), 2);
        assert_eq!(chain.writable_len(), 513);
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
    fn a_popped_chain_never_names_memory_outside_the_guest() {
        for (addr, len) in [(0xf_ff00, 0x200), (u64::MAX - 4, 16), (0x2000_0000, 1)] {
            let mem = memory();
            offer(&mem, 0, 0, &[(0x8_0000, 16, false), (addr, len, true)]);
            assert_eq!(pop(&mem), Err(ChainError::OutsideMemory { head: 0, addr, len }));
        }
    }

    #[test]
    fn available_index_jumping_past_the_queue_is_refused() {
        let mem = memory();
        let (mut queues, _) = active_queues(&mem, 1, 0);
        set_avail_idx(&mem, 0, TEST_QUEUE_SIZE + 1);
        assert_eq!(queues.pop(0), Some(Err(ChainError::AvailableRing)));
    }
}
