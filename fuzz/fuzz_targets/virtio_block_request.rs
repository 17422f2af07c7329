//! Fuzzes the virtio-blk device with a guest-written queue: the input is
//! the guest's memory (descriptor table, available ring and buffers), so
//! every chain shape, header, length and address the guest could write is
//! tried. Whatever the input, the device must not panic, must only touch
//! guest memory through checked ranges, and must keep answering (the used
//! ring index never runs past what the driver made available).
//!
//! Input layout: byte 0 picks read-only and whether FLUSH was negotiated;
//! the rest is copied to guest-physical 0 of 64 KiB of guest memory, where
//! the queue's rings sit: descriptor table at 0x0 (16 entries), available
//! ring at 0x100, used ring at 0x200. Buffers may point anywhere, inside
//! memory or not. The disk is a 16-sector in-memory file (memfd).
//!
//! Run (stable toolchain, cargo-fuzz installed):
//!
//! ```sh
//! cargo build --manifest-path fuzz/Cargo.toml      # build check, as CI
//! cargo fuzz run --sanitizer none virtio_block_request -- -max_len=65536 -max_total_time=600
//! # with AddressSanitizer (the device has unsafe preadv/pwritev):
//! RUSTC_BOOTSTRAP=1 cargo fuzz run virtio_block_request -- -max_len=65536
//! ```

#![no_main]

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use ward_abi::virtio::feature;
use ward_vmm::devices::virtio::block::Block;
use ward_vmm::devices::virtio::{ActiveQueues, Interrupt, VirtioDevice};

const MEMORY: usize = 0x1_0000;
const QUEUE_SIZE: u16 = 16;
const SECTORS: u64 = 16;

#[derive(Debug)]
struct NoInterrupt;

impl Interrupt for NoInterrupt {
    fn used_buffers(&self) {}
    fn needs_reset(&self) {}
}

/// A 16-sector in-memory disk, made once; each run gets a duplicate.
fn disk() -> File {
    static DISK: OnceLock<File> = OnceLock::new();
    let disk = DISK.get_or_init(|| {
        // SAFETY: a constant NUL-terminated name and no flags; the result is
        // checked before it is owned.
        let fd = unsafe { libc::memfd_create(c"ward-fuzz-disk".as_ptr(), 0) };
        assert!(fd >= 0, "memfd_create failed");
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(SECTORS * 512).expect("sizing the disk");
        file
    });
    disk.try_clone().expect("duplicating the disk")
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, memory_image)) = data.split_first() else { return };
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY)]).expect("guest memory");
    let image = &memory_image[..memory_image.len().min(MEMORY)];
    mem.write_slice(image, GuestAddress(0)).expect("copying the image");

    let mut queue = Queue::new(256).expect("queue");
    queue.try_set_size(QUEUE_SIZE).expect("size");
    queue.try_set_desc_table_address(GuestAddress(0)).expect("desc");
    queue.try_set_avail_ring_address(GuestAddress(0x100)).expect("avail");
    queue.try_set_used_ring_address(GuestAddress(0x200)).expect("used");
    queue.set_ready(true);

    let read_only = flags & 1 != 0;
    let features = feature::VERSION_1 | if flags & 2 != 0 { feature::BLK_FLUSH } else { 0 };
    let mut device = Block::new("fuzz", 0, disk(), SECTORS, read_only, Path::new("fuzz.img"));
    device.activate(features);
    // The used ring starts empty, as a driver leaves it.
    mem.write_slice(&[0u8; 4 + 8 * QUEUE_SIZE as usize], GuestAddress(0x200)).expect("used ring");
    let mut queues = ActiveQueues::new(mem.clone(), vec![queue], features, Arc::new(NoInterrupt));
    device.process_queue(0, &mut queues);
    let used_first: u16 = mem.read_obj(GuestAddress(0x202)).expect("used idx");
    assert!(used_first <= QUEUE_SIZE, "more chains used than were made available: {used_first}");
    // Nothing new was made available: a second pass must use nothing.
    device.process_queue(0, &mut queues);
    let used_second: u16 = mem.read_obj(GuestAddress(0x202)).expect("used idx");
    assert_eq!(used_first, used_second, "a chain was used twice");
});
