//! `virtio_block_request`: the virtio-blk device against a guest-written
//! queue. The input is the guest's memory (descriptor table, available
//! ring and buffers), so every chain shape, header, length and address the
//! guest could write is tried. Whatever the input, the device must not
//! panic, must only touch guest memory through checked ranges, and must
//! keep answering (the used ring index never runs past what the driver made
//! available, and nothing is used twice).
//!
//! Input layout: byte 0 holds flags ([`READ_ONLY`], [`FLUSH`]: the disk
//! is read-only, the driver negotiated FLUSH); the rest is copied to
//! guest-physical 0 of [`MEMORY`] bytes of guest memory, where queue 0's
//! rings sit as [`crate::image`] lays them out (descriptor table at 0x0,
//! 16 entries; available ring at 0x100; used ring at 0x200). Buffers may
//! point anywhere, inside memory or not. The disk is a fresh
//! [`SECTORS`]-sector memfd for every input ([`crate::fresh_disk`]).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use ward_abi::virtio::feature;
use ward_vmm::devices::virtio::block::Block;
use ward_vmm::devices::virtio::{ActiveQueues, Interrupt, VirtioDevice};

use crate::image::{QUEUE_SIZE, avail_ring, desc_table, used_idx, used_ring};

/// Guest memory.
pub const MEMORY: usize = 0x1_0000;
/// The disk's size in sectors.
pub const SECTORS: u64 = 16;
/// Flag (byte 0): the disk is read-only.
pub const READ_ONLY: u8 = 1;
/// Flag (byte 0): the driver negotiated VIRTIO_BLK_F_FLUSH.
pub const FLUSH: u8 = 2;

#[derive(Debug)]
struct NoInterrupt;

impl Interrupt for NoInterrupt {
    fn used_buffers(&self) {}
    fn needs_reset(&self) {}
}

/// What an input did.
#[derive(Debug)]
pub struct Outcome {
    /// Guest memory after the device ran.
    pub mem: GuestMemoryMmap,
    /// The disk (the device's file, duplicated).
    pub disk: File,
    /// Chains the device returned.
    pub used: u16,
}

/// Runs one input; `None` if it is empty.
pub fn run(data: &[u8]) -> Option<Outcome> {
    let (&flags, memory_image) = data.split_first()?;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY)]).expect("guest memory");
    let image = &memory_image[..memory_image.len().min(MEMORY)];
    mem.write_slice(image, GuestAddress(0)).expect("copying the image");

    let mut queue = Queue::new(256).expect("queue");
    queue.try_set_size(QUEUE_SIZE).expect("size");
    queue.try_set_desc_table_address(GuestAddress(desc_table(0))).expect("desc");
    queue.try_set_avail_ring_address(GuestAddress(avail_ring(0))).expect("avail");
    queue.try_set_used_ring_address(GuestAddress(used_ring(0))).expect("used");
    queue.set_ready(true);

    let read_only = flags & READ_ONLY != 0;
    let features = feature::VERSION_1 | if flags & FLUSH != 0 { feature::BLK_FLUSH } else { 0 };
    let disk = crate::fresh_disk(SECTORS);
    let kept = disk.try_clone().expect("duplicating the disk");
    let mut device = Block::new("fuzz", 0, disk, SECTORS, read_only, Path::new("fuzz.img"));
    // The used ring starts empty, as a driver leaves it.
    mem.write_slice(&[0u8; 4 + 8 * QUEUE_SIZE as usize], GuestAddress(used_ring(0))).expect("used ring");
    let mut queues = ActiveQueues::new(mem.clone(), vec![queue], features, Arc::new(NoInterrupt));
    device.activate(&queues);
    device.process_queue(0, &mut queues);
    let used_first = used_idx(&mem, 0);
    assert!(used_first <= QUEUE_SIZE, "more chains used than were made available: {used_first}");
    // Nothing new was made available: a second pass must use nothing.
    device.process_queue(0, &mut queues);
    let used_second = used_idx(&mem, 0);
    assert_eq!(used_first, used_second, "a chain was used twice");
    Some(Outcome { mem, disk: kept, used: used_first })
}
