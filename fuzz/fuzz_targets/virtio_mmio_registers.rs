//! Fuzzes the virtio-mmio transport's register state machine, with a
//! device behind it: the input is a sequence of register accesses (any
//! offset, width and value, reads and writes, notifies, resets, feature
//! and queue set-up in any order) interleaved with runs of the device
//! thread's work, over guest memory the input also fills. Whatever the
//! sequence, nothing may panic, the identity registers must keep their
//! values, a reset must bring Status back to 0, and DEVICE_NEEDS_RESET may
//! only go away through a reset.
//!
//! Input layout: byte 0 picks the device (rng, console, block on a memfd);
//! bytes 1-2 (le16) say how many of the following bytes are guest memory
//! (copied to guest-physical 0, where queue rings and buffers may point);
//! the rest are 8-byte operations `[op, width, offset_lo, offset_hi, value
//! (le32)]`.
//!
//! Run (stable toolchain, cargo-fuzz installed):
//!
//! ```sh
//! cargo build --manifest-path fuzz/Cargo.toml      # build check, as CI
//! cargo fuzz run --sanitizer none virtio_mmio_registers -- -max_len=8192 -max_total_time=600
//! RUSTC_BOOTSTRAP=1 cargo fuzz run virtio_mmio_registers -- -max_len=8192   # with AddressSanitizer
//! ```

#![no_main]

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use ward_abi::virtio::{MAGIC, reg, status};
use ward_vmm::devices::BusDevice;
use ward_vmm::devices::virtio::VirtioDevice;
use ward_vmm::devices::virtio::block::Block;
use ward_vmm::devices::virtio::console::{Console, SharedSink};
use ward_vmm::devices::virtio::rng::Rng;
use ward_vmm::devices::virtio::transport::MmioTransport;

const MEMORY: usize = 0x4_0000;

fn device(choice: u8) -> Box<dyn VirtioDevice> {
    match choice % 3 {
        0 => Box::new(Rng::new("fuzz")),
        1 => Box::new(Console::new("fuzz", SharedSink::new(Box::new(std::io::sink())), None)),
        _ => {
            // SAFETY: a constant NUL-terminated name and no flags; the result
            // is checked before it is owned.
            let fd = unsafe { libc::memfd_create(c"ward-fuzz-disk".as_ptr(), 0) };
            assert!(fd >= 0, "memfd_create failed");
            // SAFETY: `fd` is a fresh descriptor nothing else owns.
            let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            file.set_len(8 * 512).expect("sizing the disk");
            Box::new(Block::new("fuzz", 0, file, 8, choice & 4 != 0, Path::new("fuzz.img")))
        }
    }
}

fn read(transport: &mut MmioTransport, offset: u64) -> u32 {
    let mut data = [0u8; 4];
    transport.read(offset, &mut data);
    u32::from_le_bytes(data)
}

fuzz_target!(|data: &[u8]| {
    let [choice, len_lo, len_hi, rest @ ..] = data else { return };
    let image_len = usize::from(u16::from_le_bytes([*len_lo, *len_hi])).min(rest.len()).min(MEMORY);
    let (image, ops) = rest.split_at(image_len);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY)]).expect("guest memory");
    mem.write_slice(image, GuestAddress(0)).expect("copying the image");
    let irqfd = EventFd::new(libc::EFD_NONBLOCK).expect("irqfd");
    let (mut transport, channels) =
        MmioTransport::new("fuzz", "dev", device(*choice), mem.clone(), irqfd).expect("transport");

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
                // A register write the way a driver makes it: 32-bit, aligned.
                transport.write(offset & !3, &value.to_le_bytes());
                offset & !3 == reg::STATUS && value == 0
            }
            _ => {
                // The device thread's turn.
                channels.state.lock().unwrap_or_else(|e| e.into_inner()).process_all_queues();
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
    }
    channels.state.lock().unwrap_or_else(|e| e.into_inner()).process_all_queues();
});
