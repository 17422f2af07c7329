//! virtio-rng (device type 4): entropy from the host's `getrandom(2)`,
//! written straight into the buffers the guest posts on its one queue.

use ward_abi::virtio::device_id;

use super::queue::GuestRange;
use super::{ActiveQueues, VirtioDevice, refuse_chain};
use crate::devices::WarnOnce;

/// The request queue.
pub const REQUESTQ: usize = 0;

/// Most bytes filled per chain: bounds what one guest request costs the
/// device thread (the guest asks again for more; virtio-rng allows short
/// fills).
pub const MAX_FILL: u64 = 1 << 20;

/// The entropy device.
#[derive(Debug)]
pub struct Rng {
    who: String,
    warned: WarnOnce,
}

impl Rng {
    /// An entropy device for `compartment`.
    pub fn new(compartment: &str) -> Self {
        Self { who: format!("compartment {compartment}: virtio rng"), warned: WarnOnce::default() }
    }
}

/// Fills the first `len` bytes of `range` from the host's entropy pool;
/// how many it filled.
fn fill(queues: &ActiveQueues, range: &GuestRange, len: usize) -> usize {
    let Some(slice) = range.slice(queues.mem()) else { return 0 };
    let len = len.min(slice.len());
    let guard = slice.ptr_guard_mut();
    let mut filled = 0;
    while filled < len {
        // SAFETY: `guard` points at `slice.len()` bytes of mapped guest
        // memory (a checked `VolatileSlice`) and `filled < len <=
        // slice.len()`, so the kernel writes only inside it; guest memory
        // holds no Rust references the write could invalidate.
        let got = unsafe { libc::getrandom(guard.as_ptr().add(filled).cast(), len - filled, 0) };
        match usize::try_from(got) {
            Ok(0) => break,
            Ok(got) => filled += got,
            Err(_) if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    filled
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_id::RNG
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_count(&self) -> usize {
        1
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) -> bool {
        // virtio-rng has no configuration space.
        data.fill(0);
        false
    }

    fn process_queue(&mut self, index: usize, queues: &mut ActiveQueues) {
        if index != REQUESTQ {
            return;
        }
        while let Some(popped) = queues.pop(REQUESTQ) {
            let chain = match popped {
                Ok(chain) => chain,
                Err(error) => {
                    refuse_chain(queues, &mut self.warned, &self.who, REQUESTQ, error.returnable_head(), &error);
                    return;
                }
            };
            let mut left = usize::try_from(chain.writable_len().min(MAX_FILL)).unwrap_or(0);
            let mut filled = 0usize;
            for range in chain.writable() {
                if left == 0 {
                    break;
                }
                let got = fill(queues, range, left);
                filled += got;
                left -= got;
                if got < range.len_usize() {
                    break;
                }
            }
            queues.complete(REQUESTQ, chain.head(), u32::try_from(filled).unwrap_or(u32::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::*;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn posted_buffers_are_filled_with_entropy() {
        let mem = memory();
        let (mut queues, irq) = active_queues(&mem, 1, 0);
        offer(&mem, REQUESTQ, 0, &[(0x8_0000, 64, true), (0x9_0000, 64, true)]);
        let mut dev = Rng::new("test");
        dev.process_queue(REQUESTQ, &mut queues);
        queues.signal_used();
        assert_eq!(used_entry(&mem, REQUESTQ, 0), (0, 128));
        let mut bytes = [0u8; 64];
        mem.read_slice(&mut bytes, GuestAddress(0x9_0000)).unwrap();
        assert!(bytes.iter().any(|&b| b != 0), "64 random bytes are not all zero");
        assert_eq!(irq.used(), 1);
    }

    #[test]
    fn request_without_writable_buffer_is_answered_empty() {
        let mem = memory();
        let (mut queues, irq) = active_queues(&mem, 1, 0);
        offer(&mem, REQUESTQ, 0, &[(0x8_0000, 64, false)]);
        Rng::new("test").process_queue(REQUESTQ, &mut queues);
        assert_eq!(used_entry(&mem, REQUESTQ, 0), (0, 0));
        assert_eq!(irq.resets(), 0);
    }

    #[test]
    fn buffer_outside_memory_needs_reset() {
        let mem = memory();
        let (mut queues, irq) = active_queues(&mem, 1, 0);
        offer(&mem, REQUESTQ, 0, &[(0x4000_0000, 64, true)]);
        Rng::new("test").process_queue(REQUESTQ, &mut queues);
        assert_eq!(irq.resets(), 1);
        assert!(queues.is_broken());
    }

    #[test]
    fn huge_request_is_filled_only_up_to_the_cap() {
        let mem = vm_memory::GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let (mut queues, _) = active_queues(&mem, 1, 0);
        offer(&mem, REQUESTQ, 0, &[(0x10_0000, 3 << 20, true)]);
        Rng::new("test").process_queue(REQUESTQ, &mut queues);
        assert_eq!(used_entry(&mem, REQUESTQ, 0), (0, u32::try_from(MAX_FILL).unwrap()));
    }
}
