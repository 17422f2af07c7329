//! The page service client: zeroing and copying memory by asking the host
//! (see `ward_abi::pages`). One MMIO exit per batch instead of a byte-wise
//! copy in emulated ring 0, which costs milliseconds a page on our hosts.

use core::cell::UnsafeCell;
use ward_abi::width::{low_u16, u64_from, usize_from};

use ward_abi::pages::{self, MAX_OPS, OP_COPY, OP_ZERO, PageOp, REG_FAILED, REG_SUBMIT, submit_request};

use crate::addr::{phys_to_virt, virt_to_phys};

/// Operations in one batch.
const BATCH_LEN: usize = usize_from(MAX_OPS);

/// The batch being built, in the kernel image (so the host can find it by
/// physical address).
struct Batch(UnsafeCell<([PageOp; BATCH_LEN], usize)>);

// SAFETY: used only by kernel code, which runs on one vCPU with interrupts
// off and never re-enters this module.
unsafe impl Sync for Batch {}

static BATCH: Batch = Batch(UnsafeCell::new(([PageOp { kind: 0, reserved: 0, dst: 0, src: 0, len: 0 }; 256], 0)));

fn with_batch<R>(f: impl FnOnce(&mut [PageOp; BATCH_LEN], &mut usize) -> R) -> R {
    // SAFETY: see `Batch`.
    let (ops, len) = unsafe { &mut *BATCH.0.get() };
    f(ops, len)
}

/// Queues an operation, submitting first if the batch is full.
fn push(op: PageOp) {
    if with_batch(|_, len| *len == BATCH_LEN) {
        submit();
    }
    with_batch(|ops, len| {
        ops[*len] = op;
        *len += 1;
    });
}

/// Queues zeroing `len` bytes at `phys`.
pub fn zero(phys: u64, len: u64) {
    push(PageOp { kind: OP_ZERO, reserved: 0, dst: phys, src: 0, len });
}

/// Queues copying `len` bytes from `src` to `dst`.
pub fn copy(dst: u64, src: u64, len: u64) {
    push(PageOp { kind: OP_COPY, reserved: 0, dst, src, len });
}

/// Has the host do every queued operation; returns how many it refused
/// (a kernel bug if not zero: the kernel only names its own RAM).
pub fn submit() -> u64 {
    with_batch(|ops, len| {
        if *len == 0 {
            return 0;
        }
        let count = low_u16(u64_from(*len)); // at most BATCH_LEN
        *len = 0;
        let Some(addr) = virt_to_phys(ops.as_ptr() as u64) else { return u64::from(count) };
        let reg = phys_to_virt(pages::BASE + REG_SUBMIT) as *mut u64;
        let failed = phys_to_virt(pages::BASE + REG_FAILED) as *const u64;
        // The host reads the batch during the store.
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        let request = submit_request(addr, count);
        #[cfg(not(test))]
        // SAFETY: the page service's registers are mapped in the direct map;
        // the store is one MMIO exit in which the host does the batch.
        return unsafe {
            core::ptr::write_volatile(reg, request);
            core::ptr::read_volatile(failed)
        };
        #[cfg(test)]
        {
            let _ = (reg, failed, request);
            0
        }
    })
}
