//! The debug console: early-boot and panic output, boot marks, power-off.
//!
//! Register map in `ward_abi::debug_console`. Everything the guest writes
//! here is untrusted: a write request naming memory outside the guest, a
//! length over the limit or an unknown register is logged once and ignored.
//! Output is filtered so the guest cannot send terminal escape sequences to
//! the user's terminal.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use ward_abi::debug_console::{
    MARK_FIRST_INSTRUCTION, MAX_WRITE_LEN, REG_BYTE, REG_MARK, REG_POWER_OFF, REG_WRITE,
    decode_write_request,
};

use super::{BusDevice, WarnOnce};

/// A request, from the guest, to power the VM off with an exit code.
#[derive(Debug, Default)]
pub struct PowerControl {
    /// Bit 32 set when requested; the exit code in the low 32 bits.
    state: AtomicU64,
}

impl PowerControl {
    const REQUESTED: u64 = 1 << 32;

    /// Records a power-off with `code`. The first request wins.
    pub fn request(&self, code: u32) {
        let _ = self.state.compare_exchange(
            0,
            Self::REQUESTED | u64::from(code),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// The exit code, once power-off was requested.
    pub fn requested(&self) -> Option<u32> {
        let state = self.state.load(Ordering::Acquire);
        (state & Self::REQUESTED != 0).then_some((state & 0xffff_ffff) as u32)
    }
}

/// Host-side instants of boot milestones the guest reports.
#[derive(Debug, Default)]
pub struct BootClock {
    /// The kernel's first instruction ran (its first boot mark arrived).
    pub first_instruction: OnceLock<Instant>,
    /// The first complete console line arrived.
    pub first_console_line: OnceLock<Instant>,
    /// Power-off was requested.
    pub power_off: OnceLock<Instant>,
}

/// The debug console device.
pub struct DebugConsole {
    mem: GuestMemoryMmap,
    out: Box<dyn Write + Send>,
    power: Arc<PowerControl>,
    clock: Arc<BootClock>,
    warned: WarnOnce,
    compartment: String,
}

impl std::fmt::Debug for DebugConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugConsole")
            .field("compartment", &self.compartment)
            .finish_non_exhaustive()
    }
}

impl DebugConsole {
    /// A console for `compartment` that writes to `out`.
    pub fn new(
        compartment: &str,
        mem: GuestMemoryMmap,
        out: Box<dyn Write + Send>,
        power: Arc<PowerControl>,
        clock: Arc<BootClock>,
    ) -> Self {
        Self {
            mem,
            out,
            power,
            clock,
            warned: WarnOnce::default(),
            compartment: compartment.to_owned(),
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        if bytes.contains(&b'\n') {
            let _ = self.clock.first_console_line.set(Instant::now());
        }
        let clean = sanitize(bytes);
        // The user's terminal going away must not stop the guest.
        let _ = self.out.write_all(&clean).and_then(|()| self.out.flush());
    }

    fn write_request(&mut self, value: u64) {
        let (addr, len) = decode_write_request(value);
        if len > u64::from(MAX_WRITE_LEN) {
            let name = self.compartment.clone();
            self.warned.warn("write-too-long", || {
                format!("compartment {name}: debug console write of {len} bytes exceeds {MAX_WRITE_LEN}; ignored")
            });
            return;
        }
        let mut buf = vec![0u8; len as usize];
        if self.mem.read_slice(&mut buf, GuestAddress(addr)).is_err() {
            let name = self.compartment.clone();
            self.warned.warn("write-outside-memory", || {
                format!("compartment {name}: debug console write names {addr:#x}+{len:#x}, outside guest memory; ignored")
            });
            return;
        }
        self.emit(&buf);
    }
}

impl BusDevice for DebugConsole {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Write-only registers.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut raw = [0u8; 8];
        let n = data.len().min(8);
        raw[..n].copy_from_slice(&data[..n]);
        let value = u64::from_le_bytes(raw);
        match offset {
            REG_BYTE => self.emit(&[raw[0]]),
            REG_WRITE if data.len() == 8 => self.write_request(value),
            REG_MARK => {
                if value == u64::from(MARK_FIRST_INSTRUCTION) {
                    let _ = self.clock.first_instruction.set(Instant::now());
                }
            }
            REG_POWER_OFF => {
                let _ = self.clock.power_off.set(Instant::now());
                self.power.request(value as u32);
            }
            _ => {
                let name = self.compartment.clone();
                let len = data.len();
                self.warned.warn("bad-register", || {
                    format!("compartment {name}: debug console write of {len} bytes to unknown register {offset:#x}; ignored")
                });
            }
        }
    }
}

/// Console bytes made safe for a terminal: printable ASCII, newline, tab and
/// UTF-8 pass; other control characters (escape above all) become `?`.
pub fn sanitize(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|&b| match b {
            b'\n' | b'\t' => b,
            0x00..=0x1f | 0x7f => b'?',
            _ => b,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use ward_abi::debug_console::write_request;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn console() -> (DebugConsole, Sink, Arc<PowerControl>, GuestMemoryMmap) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let sink = Sink::default();
        let power = Arc::new(PowerControl::default());
        let dev = DebugConsole::new(
            "test",
            mem.clone(),
            Box::new(sink.clone()),
            power.clone(),
            Arc::default(),
        );
        (dev, sink, power, mem)
    }

    #[test]
    fn write_request_prints_guest_buffer() {
        let (mut dev, sink, _, mem) = console();
        mem.write_slice(b"hello\n", GuestAddress(0x2000)).unwrap();
        dev.write(REG_WRITE, &write_request(0x2000, 6).to_le_bytes());
        dev.write(REG_BYTE, b"!");
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\n!");
    }

    #[test]
    fn hostile_requests_are_ignored() {
        let (mut dev, sink, power, _) = console();
        // Outside guest memory, too long, unknown register, short write.
        dev.write(REG_WRITE, &write_request(0xfff0, 0x100).to_le_bytes());
        dev.write(REG_WRITE, &write_request(0, 0xffff).to_le_bytes());
        dev.write(0x800, &[1, 2, 3, 4]);
        dev.write(REG_WRITE, &[1]);
        assert!(sink.0.lock().unwrap().is_empty());
        assert_eq!(power.requested(), None);
    }

    #[test]
    fn power_off_records_the_first_exit_code() {
        let (mut dev, _, power, _) = console();
        dev.write(REG_POWER_OFF, &7u32.to_le_bytes());
        dev.write(REG_POWER_OFF, &9u32.to_le_bytes());
        assert_eq!(power.requested(), Some(7));
    }

    #[test]
    fn escape_sequences_are_defused() {
        assert_eq!(sanitize(b"a\x1b[31mb\r\n\x07"), b"a?[31mb?\n?");
        assert_eq!(sanitize("é".as_bytes()), "é".as_bytes());
    }
}
