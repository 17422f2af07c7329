//! The MMIO bus: which device answers an address.

use std::sync::{Arc, Mutex, PoisonError};

/// A device on the MMIO bus. Offsets are relative to its base; `data` is
/// 1, 2, 4 or 8 bytes, little-endian, as the guest accessed it.
pub trait BusDevice: Send {
    /// The guest reads; fill `data`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device could not be placed on the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// Its window overlaps another's.
    #[error("MMIO window {base:#x}+{size:#x} overlaps another device")]
    Overlap {
        /// Base address.
        base: u64,
        /// Size.
        size: u64,
    },
    /// Empty or wrapping window.
    #[error("MMIO window {base:#x}+{size:#x} is empty or wraps around")]
    BadWindow {
        /// Base address.
        base: u64,
        /// Size.
        size: u64,
    },
}

struct Slot {
    base: u64,
    size: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// Devices by address window, sorted by base.
#[derive(Default)]
pub struct MmioBus {
    slots: Vec<Slot>,
}

impl std::fmt::Debug for MmioBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.slots.iter().map(|s| (s.base, s.size))).finish()
    }
}

impl MmioBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `device` at `base..base + size`.
    pub fn insert(&mut self, base: u64, size: u64, device: Arc<Mutex<dyn BusDevice>>) -> Result<(), BusError> {
        let end = base.checked_add(size).filter(|_| size > 0).ok_or(BusError::BadWindow { base, size })?;
        if self.slots.iter().any(|s| base < s.base + s.size && s.base < end) {
            return Err(BusError::Overlap { base, size });
        }
        let at = self.slots.partition_point(|s| s.base < base);
        self.slots.insert(at, Slot { base, size, device });
        Ok(())
    }

    fn find(&self, addr: u64, len: usize) -> Option<(&Slot, u64)> {
        let i = self.slots.partition_point(|s| s.base <= addr).checked_sub(1)?;
        let slot = &self.slots[i];
        let offset = addr - slot.base;
        // The whole access must fall inside the window.
        (offset.checked_add(len as u64)? <= slot.size).then_some((slot, offset))
    }

    /// Dispatches a guest read; `false` if no device owns the address.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((slot, offset)) => {
                slot.device.lock().unwrap_or_else(PoisonError::into_inner).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a guest write; `false` if no device owns the address.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((slot, offset)) => {
                slot.device.lock().unwrap_or_else(PoisonError::into_inner).write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(u8::try_from(offset & 0xff).unwrap());
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn accesses_reach_the_owner_with_relative_offsets() {
        let mut bus = MmioBus::new();
        let a = Arc::new(Mutex::new(Recorder::default()));
        let b = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x2000, 0x1000, b.clone()).unwrap();
        bus.insert(0x1000, 0x1000, a.clone()).unwrap();
        assert!(bus.write(0x1008, &[1, 2]));
        assert!(bus.write(0x2ff8, &[3; 8]));
        let mut data = [0u8; 4];
        assert!(bus.read(0x2010, &mut data));
        assert_eq!(data, [0x10; 4]);
        assert_eq!(a.lock().unwrap().writes, [(8, vec![1, 2])]);
        assert_eq!(b.lock().unwrap().writes, [(0xff8, vec![3; 8])]);
    }

    #[test]
    fn unowned_or_straddling_accesses_are_not_dispatched() {
        let mut bus = MmioBus::new();
        bus.insert(0x1000, 0x1000, Arc::new(Mutex::new(Recorder::default()))).unwrap();
        assert!(!bus.write(0xfff, &[0]));
        assert!(!bus.write(0x1ffc, &[0; 8]));
        assert!(!bus.read(0x3000, &mut [0; 4]));
    }

    #[test]
    fn overlapping_windows_are_refused() {
        let mut bus = MmioBus::new();
        let dev = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x1000, 0x1000, dev.clone()).unwrap();
        assert_eq!(bus.insert(0x1800, 0x1000, dev.clone()), Err(BusError::Overlap { base: 0x1800, size: 0x1000 }));
        assert_eq!(bus.insert(u64::MAX, 2, dev), Err(BusError::BadWindow { base: u64::MAX, size: 2 }));
    }
}
