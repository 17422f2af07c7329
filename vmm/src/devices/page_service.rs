//! The page service: zeroes and copies guest memory for the guest kernel,
//! natively, in one MMIO exit per batch (see `ward_abi::pages` for why).
//!
//! Every operation is checked against guest RAM before it is done; a bad
//! one is counted, logged once, and skipped: the guest can only hurt its
//! own memory.

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use zerocopy::FromBytes;

use ward_abi::pages::{MAX_OPS, OP_COPY, OP_ZERO, PageOp, REG_FAILED, REG_SUBMIT, decode_submit};

use super::{BusDevice, WarnOnce};

/// The page service device.
#[derive(Debug)]
pub struct PageService {
    mem: GuestMemoryMmap,
    /// Guest memory is a shared memfd mapping (a vhost-user backend maps
    /// it too): freeing pages takes `MADV_REMOVE`, since `MADV_DONTNEED`
    /// would only drop this process's view of the file's pages.
    shared: bool,
    failed: u64,
    warned: WarnOnce,
    compartment: String,
}

const PAGE: u64 = 4096;

impl PageService {
    /// A page service over `mem`.
    pub fn new(compartment: &str, mem: GuestMemoryMmap) -> Self {
        Self {
            shared: crate::memory::is_shared(&mem),
            mem,
            failed: 0,
            warned: WarnOnce::default(),
            compartment: compartment.to_owned(),
        }
    }

    fn submit(&mut self, value: u64) {
        let (addr, count) = decode_submit(value);
        self.failed = 0;
        if count > MAX_OPS {
            self.failed = count;
            let name = self.compartment.clone();
            self.warned
                .warn("too-many-ops", || format!("compartment {name}: page service batch of {count} ops; refused"));
            return;
        }
        for i in 0..count {
            let op = GuestAddress(addr).checked_add(i * 32).and_then(|at| {
                let mut raw = [0u8; 32];
                self.mem.read_slice(&mut raw, at).ok()?;
                PageOp::read_from_bytes(&raw).ok()
            });
            let done = op.is_some_and(|op| self.execute(&op));
            if !done {
                self.failed += 1;
                let name = self.compartment.clone();
                self.warned.warn("bad-op", || {
                    format!("compartment {name}: page service refused an operation outside guest memory")
                });
            }
        }
    }

    fn execute(&self, op: &PageOp) -> bool {
        match op.kind {
            OP_ZERO => self.in_ram(op.dst, op.len) && self.zero(op.dst, op.len),
            OP_COPY => {
                let overlap = op.dst < op.src.saturating_add(op.len) && op.src < op.dst.saturating_add(op.len);
                self.in_ram(op.dst, op.len)
                    && self.in_ram(op.src, op.len)
                    && !overlap
                    && self.copy(op.dst, op.src, op.len)
            }
            _ => false,
        }
    }

    fn in_ram(&self, addr: u64, len: u64) -> bool {
        addr.checked_add(len).is_some_and(|end| self.mem.address_in_range(GuestAddress(end.saturating_sub(1))))
            && self.mem.address_in_range(GuestAddress(addr))
            && len <= self.mem.last_addr().0
    }

    fn zero(&self, addr: u64, len: u64) -> bool {
        if addr.is_multiple_of(PAGE) && len.is_multiple_of(PAGE) && self.discard(addr, len) {
            return true;
        }
        // Not whole pages: write the zeros.
        let zeros = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.mem.write_slice(&zeros, GuestAddress(addr)).is_ok()
    }

    /// Drops whole pages from guest memory: they read as zero again and
    /// cost the host no memory until touched.
    fn discard(&self, addr: u64, len: u64) -> bool {
        let Ok(host) = self.mem.get_host_address(GuestAddress(addr)) else { return false };
        let Ok(len) = usize::try_from(len) else { return false };
        // The range must lie in one region for a single host mapping.
        let end = self.mem.get_host_address(GuestAddress(addr + len as u64 - 1)).map(|end| end as usize);
        if end.ok() != Some(host as usize + len - 1) {
            return false;
        }
        let advice = if self.shared { libc::MADV_REMOVE } else { libc::MADV_DONTNEED };
        // SAFETY: `host..host + len` is page aligned and inside the guest
        // memory mapping (checked above). For private anonymous memory
        // MADV_DONTNEED, for the shared memfd MADV_REMOVE (which frees the
        // file's pages), only make those pages read as zero; nothing in the
        // VMM holds references into guest memory across this call.
        unsafe { libc::madvise(host.cast(), len, advice) == 0 }
    }

    fn copy(&self, dst: u64, src: u64, len: u64) -> bool {
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.mem.read_slice(&mut buf, GuestAddress(src)).is_ok()
            && self.mem.write_slice(&buf, GuestAddress(dst)).is_ok()
    }
}

impl BusDevice for PageService {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = if offset == REG_FAILED { self.failed } else { 0 };
        let bytes = value.to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == REG_SUBMIT && data.len() == 8 {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(data);
            self.submit(u64::from_le_bytes(raw));
        } else {
            let name = self.compartment.clone();
            self.warned.warn("bad-register", || {
                format!("compartment {name}: page service write to register {offset:#x}; ignored")
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ward_abi::pages::submit_request;
    use zerocopy::IntoBytes;

    fn service() -> (PageService, GuestMemoryMmap) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        (PageService::new("test", mem.clone()), mem)
    }

    fn submit(dev: &mut PageService, mem: &GuestMemoryMmap, ops: &[PageOp]) -> u64 {
        for (i, op) in ops.iter().enumerate() {
            mem.write_slice(op.as_bytes(), GuestAddress(0x1000 + 32 * i as u64)).unwrap();
        }
        dev.write(REG_SUBMIT, &submit_request(0x1000, u16::try_from(ops.len()).unwrap()).to_le_bytes());
        let mut failed = [0u8; 8];
        dev.read(REG_FAILED, &mut failed);
        u64::from_le_bytes(failed)
    }

    #[test]
    fn zero_and_copy_change_guest_memory() {
        let (mut dev, mem) = service();
        mem.write_slice(&[0xaa; 8192], GuestAddress(0x4000)).unwrap();
        mem.write_slice(b"hello", GuestAddress(0x8000)).unwrap();
        let ops = [
            PageOp { kind: OP_ZERO, dst: 0x4000, len: 0x1000, ..PageOp::default() },
            PageOp { kind: OP_ZERO, dst: 0x5800, len: 0x10, ..PageOp::default() },
            PageOp { kind: OP_COPY, dst: 0x9000, src: 0x8000, len: 5, ..PageOp::default() },
        ];
        assert_eq!(submit(&mut dev, &mem, &ops), 0);
        assert_eq!(mem.read_obj::<u64>(GuestAddress(0x4ff8)).unwrap(), 0);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x5000)).unwrap(), 0xaa);
        assert_eq!(mem.read_obj::<u64>(GuestAddress(0x5808)).unwrap(), 0);
        assert_eq!(mem.read_obj::<[u8; 5]>(GuestAddress(0x9000)).unwrap(), *b"hello");
    }

    #[test]
    fn zeroing_shared_memory_frees_the_pages_of_the_file() {
        // A zero on memfd-backed memory must reach the file: with
        // MADV_DONTNEED the old bytes would come back from it.
        let mem = crate::memory::create_shared("page-service", 16).unwrap();
        let mut dev = PageService::new("test", mem.clone());
        mem.write_slice(&[0xaa; 8192], GuestAddress(0x4000)).unwrap();
        let ops = [PageOp { kind: OP_ZERO, dst: 0x4000, len: 0x2000, ..PageOp::default() }];
        assert_eq!(submit(&mut dev, &mem, &ops), 0);
        assert_eq!(mem.read_obj::<u64>(GuestAddress(0x4000)).unwrap(), 0);
        assert_eq!(mem.read_obj::<u64>(GuestAddress(0x5ff8)).unwrap(), 0);
    }

    #[test]
    fn hostile_operations_are_refused_and_counted() {
        let (mut dev, mem) = service();
        let ops = [
            PageOp { kind: OP_ZERO, dst: 0xf_f000, len: 0x2000, ..PageOp::default() },
            PageOp { kind: OP_COPY, dst: 0x1_0000, src: u64::MAX - 4, len: 8, ..PageOp::default() },
            PageOp { kind: OP_COPY, dst: 0x1_0000, src: 0x1_0800, len: 0x1000, ..PageOp::default() },
            PageOp { kind: 77, dst: 0x1_0000, len: 8, ..PageOp::default() },
        ];
        assert_eq!(submit(&mut dev, &mem, &ops), 4);
        // A batch naming memory outside the guest, or too large, is refused.
        dev.write(REG_SUBMIT, &submit_request(0x2_0000_0000, 1).to_le_bytes());
        dev.write(REG_SUBMIT, &(u64::MAX).to_le_bytes());
        let mut failed = [0u8; 8];
        dev.read(REG_FAILED, &mut failed);
        assert_eq!(u64::from_le_bytes(failed), u64::MAX >> 48);
    }
}
