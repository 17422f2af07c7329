//! `virtio_mmio_registers`: the virtio-mmio transport's register state
//! machine, with a device behind it. The input is a sequence of register
//! accesses (any offset, width and value, reads and writes, notifies,
//! resets, feature and queue set-up in any order) interleaved with runs of
//! the device thread's work, over guest memory the input also fills.
//! Whatever the sequence, nothing may panic, the identity registers must
//! keep their values, a reset must bring Status back to 0, and
//! DEVICE_NEEDS_RESET may only go away through a reset.
//!
//! Input layout:
//! - byte 0: bits 0-1 pick the device ([`RNG`], [`CONSOLE`], [`BLOCK`],
//!   [`BLOCK_READ_ONLY`]; the block device's disk is a fresh memfd for
//!   every input, the console's input a fresh memfd holding
//!   [`CONSOLE_INPUT`]); [`HANDSHAKE`]: the target itself does the driver's
//!   handshake first (ACKNOWLEDGE, DRIVER, features, FEATURES_OK, every
//!   queue set up as [`crate::image`] lays them out, DRIVER_OK), so the
//!   operations start on a live device; [`ALL_FEATURES`]: that handshake
//!   accepts every feature the device offers (else only VERSION_1);
//! - bytes 1-2 (le16): how many of the following bytes are guest memory
//!   (copied to guest-physical 0, where queue rings and buffers may point);
//! - the rest: 8-byte operations `[op, width, offset_lo, offset_hi, value
//!   (le32)]`, see [`Op`].

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use ward_abi::virtio::{MAGIC, feature, reg, status};
use ward_vmm::devices::BusDevice;
use ward_vmm::devices::virtio::VirtioDevice;
use ward_vmm::devices::virtio::block::Block;
use ward_vmm::devices::virtio::console::{Console, ConsoleInput, SharedSink};
use ward_vmm::devices::virtio::rng::Rng;
use ward_vmm::devices::virtio::transport::MmioTransport;

use crate::image::{QUEUE_SIZE, avail_ring, desc_table, used_ring};

/// Guest memory.
pub const MEMORY: usize = 0x4_0000;
/// The block device's disk, in sectors.
pub const SECTORS: u64 = 8;
/// Byte 0, bits 0-1: the entropy device.
pub const RNG: u8 = 0;
/// Byte 0, bits 0-1: the console.
pub const CONSOLE: u8 = 1;
/// Byte 0, bits 0-1: a block device.
pub const BLOCK: u8 = 2;
/// Byte 0, bits 0-1: a read-only block device.
pub const BLOCK_READ_ONLY: u8 = 3;
/// Byte 0: the target does the driver handshake before the operations.
pub const HANDSHAKE: u8 = 4;
/// Byte 0: that handshake accepts every offered feature.
pub const ALL_FEATURES: u8 = 8;
/// What the console reads from the host.
pub const CONSOLE_INPUT: &[u8] = b"ward console input\n";
/// Most console output kept for the outcome.
const CAPTURE_LIMIT: usize = 64 * 1024;
/// Most queues the handshake sets up.
const MAX_QUEUES: u32 = 8;

/// The operations, by `op % 4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// A read of `width` (1, 2, 4 or 8 bytes, by `width % 4`) at `offset`
    /// (`% 0x1000`).
    Read = 0,
    /// A write of `width` bytes of `value` at `offset`.
    Write = 1,
    /// A register write the way a driver makes it: 32-bit, at `offset`
    /// rounded down to 4.
    Register = 2,
    /// The device thread's turn: every queue is processed, and the
    /// console reads host input into posted receive buffers.
    DeviceThread = 3,
}

/// What an input did.
#[derive(Debug)]
pub struct Outcome {
    /// Guest memory after the last operation.
    pub mem: GuestMemoryMmap,
    /// Status had DRIVER_OK at some point.
    pub driver_ok: bool,
    /// Status had DEVICE_NEEDS_RESET at some point.
    pub needs_reset: bool,
    /// The block device's disk (duplicated), if the device was one.
    pub disk: Option<File>,
    /// What the console wrote (its first 64 KiB).
    pub console: Vec<u8>,
}

/// Console output, kept.
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let room = CAPTURE_LIMIT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..buf.len().min(room)]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn device(choice: u8, console: &Arc<Mutex<Vec<u8>>>) -> (Box<dyn VirtioDevice>, Option<File>) {
    match choice & 3 {
        RNG => (Box::new(Rng::new("fuzz")), None),
        CONSOLE => {
            let input = ConsoleInput::from(OwnedFd::from(crate::memory_file(CONSOLE_INPUT)));
            let sink = SharedSink::new(Box::new(Capture(console.clone())));
            (Box::new(Console::new("fuzz", sink, Some(input))), None)
        }
        kind => {
            let disk = crate::fresh_disk(SECTORS);
            let kept = disk.try_clone().expect("duplicating the disk");
            let read_only = kind == BLOCK_READ_ONLY;
            (Box::new(Block::new("fuzz", 0, disk, SECTORS, read_only, Path::new("fuzz.img"))), Some(kept))
        }
    }
}

fn read(transport: &mut MmioTransport, offset: u64) -> u32 {
    let mut data = [0u8; 4];
    transport.read(offset, &mut data);
    u32::from_le_bytes(data)
}

fn write(transport: &mut MmioTransport, offset: u64, value: u32) {
    transport.write(offset, &value.to_le_bytes());
}

/// What a driver does before it uses a device (virtio 1.x, 3.1.1 and
/// 4.2.3), with queues laid out as [`crate::image`] says; asserts that the
/// device goes along, as it must with a fresh transport.
fn handshake(transport: &mut MmioTransport, all_features: bool) {
    use status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK};
    write(transport, reg::STATUS, ACKNOWLEDGE);
    write(transport, reg::STATUS, ACKNOWLEDGE | DRIVER);
    write(transport, reg::DEVICE_FEATURES_SEL, 0);
    let low = read(transport, reg::DEVICE_FEATURES);
    write(transport, reg::DEVICE_FEATURES_SEL, 1);
    let high = read(transport, reg::DEVICE_FEATURES);
    let offered = u64::from(low) | u64::from(high) << 32;
    assert_ne!(offered & feature::VERSION_1, 0, "VERSION_1 not offered: {offered:#x}");
    let taken = if all_features { offered } else { feature::VERSION_1 };
    write(transport, reg::DRIVER_FEATURES_SEL, 0);
    write(transport, reg::DRIVER_FEATURES, taken as u32);
    write(transport, reg::DRIVER_FEATURES_SEL, 1);
    write(transport, reg::DRIVER_FEATURES, (taken >> 32) as u32);
    write(transport, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_ne!(read(transport, reg::STATUS) & FEATURES_OK, 0, "features {taken:#x} of {offered:#x} refused");
    for q in 0..MAX_QUEUES {
        write(transport, reg::QUEUE_SEL, q);
        let max = read(transport, reg::QUEUE_NUM_MAX);
        if max == 0 {
            break;
        }
        assert!(max >= u32::from(QUEUE_SIZE), "queue {q} is only {max} long");
        let q_index = q as usize;
        write(transport, reg::QUEUE_NUM, u32::from(QUEUE_SIZE));
        for (low_reg, address) in [
            (reg::QUEUE_DESC_LOW, desc_table(q_index)),
            (reg::QUEUE_AVAIL_LOW, avail_ring(q_index)),
            (reg::QUEUE_USED_LOW, used_ring(q_index)),
        ] {
            write(transport, low_reg, address as u32);
            write(transport, low_reg + 4, (address >> 32) as u32);
        }
        write(transport, reg::QUEUE_READY, 1);
        assert_eq!(read(transport, reg::QUEUE_READY), 1, "queue {q} refused");
    }
    write(transport, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(read(transport, reg::STATUS), ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK, "handshake refused");
}

/// Runs one input; `None` if it is shorter than its 3-byte header.
pub fn run(data: &[u8]) -> Option<Outcome> {
    let [choice, len_lo, len_hi, rest @ ..] = data else { return None };
    let image_len = usize::from(u16::from_le_bytes([*len_lo, *len_hi])).min(rest.len()).min(MEMORY);
    let (image, ops) = rest.split_at(image_len);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY)]).expect("guest memory");
    mem.write_slice(image, GuestAddress(0)).expect("copying the image");
    let irqfd = EventFd::new(libc::EFD_NONBLOCK).expect("irqfd");
    let console = Arc::new(Mutex::new(Vec::new()));
    let (device, disk) = device(*choice, &console);
    let (mut transport, channels) = MmioTransport::new("fuzz", "dev", device, mem.clone(), irqfd).expect("transport");
    let device_thread = || {
        let mut state = channels.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.process_all_queues();
        // As the event loop does while the guest has receive buffers
        // posted and the input is readable (a memfd always is).
        for _ in 0..64 {
            if !state.wants_host_input() || !state.process_host_input() {
                break;
            }
        }
    };

    let mut driver_ok = false;
    let mut needs_reset = false;
    if choice & HANDSHAKE != 0 {
        handshake(&mut transport, choice & ALL_FEATURES != 0);
        driver_ok = true;
    }
    for op in ops.chunks_exact(8) {
        let [kind, width, lo, hi, v0, v1, v2, v3] = <[u8; 8]>::try_from(op).expect("8 bytes");
        let offset = u64::from(u16::from_le_bytes([lo, hi]) % 0x1000);
        let value = u32::from_le_bytes([v0, v1, v2, v3]);
        let len = [1usize, 2, 4, 8][usize::from(width % 4)];
        let needs_reset_before = read(&mut transport, reg::STATUS) & status::DEVICE_NEEDS_RESET != 0;
        let reset = match kind % 4 {
            0 => {
                let mut out = [0u8; 8];
                transport.read(offset, &mut out[..len]);
                false
            }
            1 => {
                let bytes = u64::from(value).to_le_bytes();
                transport.write(offset, &bytes[..len]);
                len == 4 && offset == reg::STATUS && value == 0
            }
            2 => {
                transport.write(offset & !3, &value.to_le_bytes());
                offset & !3 == reg::STATUS && value == 0
            }
            _ => {
                device_thread();
                false
            }
        };
        assert_eq!(read(&mut transport, reg::MAGIC_VALUE), MAGIC);
        assert_eq!(read(&mut transport, reg::VERSION), 2);
        let status_now = read(&mut transport, reg::STATUS);
        if reset {
            assert_eq!(status_now, 0, "a reset leaves status 0");
        } else if needs_reset_before {
            assert_ne!(status_now & status::DEVICE_NEEDS_RESET, 0, "DEVICE_NEEDS_RESET cleared without a reset");
        }
        driver_ok |= status_now & status::DRIVER_OK != 0;
        needs_reset |= status_now & status::DEVICE_NEEDS_RESET != 0;
    }
    device_thread();
    drop(transport);
    drop(channels);
    let console = std::mem::take(&mut *console.lock().unwrap_or_else(PoisonError::into_inner));
    Some(Outcome { mem, driver_ok, needs_reset, disk, console })
}
