//! The debug console: early-boot and panic output, boot marks, power-off.
//!
//! Register map in `ward_abi::debug_console`. The guest sends fragments
//! (one MMIO store each, naming bytes where they lie in guest memory) and
//! the device joins them into lines, so lines reach the host's output whole.
//!
//! Everything the guest writes
//! here is untrusted: a write request naming memory outside the guest, a
//! length over the limit or an unknown register is logged once and ignored.
//! Output is filtered so the guest cannot send terminal escape sequences to
//! the user's terminal.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use ward_abi::debug_console::{
    MARK_FIRST_INSTRUCTION, MARK_FIRST_USER_OUTPUT, MAX_WRITE_LEN, REG_BYTE, REG_MARK, REG_POWER_OFF,
    REG_STOP_REQUESTED, REG_WRITE, decode_write_request,
};

use super::{BusDevice, WarnOnce};

/// A request, from the guest, to power the VM off with an exit code; and
/// one from the host, to the guest, to stop.
#[derive(Debug, Default)]
pub struct PowerControl {
    /// Bit 32 set when requested; the exit code in the low 32 bits.
    state: AtomicU64,
    /// The host asked the guest to stop ([`PowerButton::press`]).
    stop: AtomicBool,
}

impl PowerControl {
    const REQUESTED: u64 = 1 << 32;

    /// Records a power-off with `code`. The first request wins.
    pub fn request(&self, code: u32) {
        let _ = self.state.compare_exchange(0, Self::REQUESTED | u64::from(code), Ordering::AcqRel, Ordering::Acquire);
    }

    /// The exit code, once power-off was requested.
    pub fn requested(&self) -> Option<u32> {
        let state = self.state.load(Ordering::Acquire);
        let [a, b, c, d, ..] = state.to_le_bytes();
        (state & Self::REQUESTED != 0).then_some(u32::from_le_bytes([a, b, c, d]))
    }

    /// Whether the host asked the guest to stop.
    pub fn stop_asked(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// The compartment's power button (`ward_abi::debug_console`): pressing
/// it asks the guest to stop. The guest sees an interrupt on
/// `ward_abi::debug_console::POWER_BUTTON_GSI`, and `REG_STOP_REQUESTED` reads 1 from then on;
/// it powers off when its programs have ended. Nothing forces it: whoever
/// pressed the button decides how long to wait before killing the VMM.
#[derive(Debug)]
pub struct PowerButton {
    power: Arc<PowerControl>,
    /// The irqfd of the button's line.
    line: EventFd,
}

impl PowerButton {
    /// A button for the VM whose power is `power`, with `line` as the
    /// irqfd of the button's line.
    pub fn new(power: Arc<PowerControl>, line: EventFd) -> Self {
        Self { power, line }
    }

    /// Presses the button. Async-signal-safe (an atomic store and one
    /// `write`), so a signal handler may press it; pressing again is
    /// harmless.
    pub fn press(&self) {
        self.power.stop.store(true, Ordering::Release);
        // Only a counter overflow could fail; the flag is set regardless.
        let _ = self.line.write(1);
    }
}

/// Host-side instants of boot milestones the guest reports.
#[derive(Debug, Default)]
pub struct BootClock {
    /// The kernel's first instruction ran (its first boot mark arrived).
    pub first_instruction: OnceLock<Instant>,
    /// The first complete console line arrived.
    pub first_console_line: OnceLock<Instant>,
    /// A guest program's first output is on its way (the kernel marks it).
    pub first_user_output: OnceLock<Instant>,
    /// Power-off was requested.
    pub power_off: OnceLock<Instant>,
}

/// Longest line the device holds before it passes it on unfinished.
pub const MAX_LINE: usize = 16 * 1024;

/// The debug console device.
pub struct DebugConsole {
    mem: GuestMemoryMmap,
    line: Vec<u8>,
    out: Box<dyn Write + Send>,
    power: Arc<PowerControl>,
    clock: Arc<BootClock>,
    warned: WarnOnce,
    compartment: String,
}

impl std::fmt::Debug for DebugConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugConsole").field("compartment", &self.compartment).finish_non_exhaustive()
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
            line: Vec::new(),
            out,
            power,
            clock,
            warned: WarnOnce::default(),
            compartment: compartment.to_owned(),
        }
    }

    /// Adds guest bytes; passes on every completed line.
    fn emit(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let _ = self.clock.first_console_line.set(Instant::now());
            self.line.extend_from_slice(&rest[..=end]);
            self.flush_line();
            rest = &rest[end + 1..];
        }
        self.line.extend_from_slice(rest);
        if self.line.len() >= MAX_LINE {
            self.flush_line();
        }
    }

    /// Passes on what the line buffer holds, finished or not (the guest
    /// stopped, or the line is too long).
    pub fn flush_line(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let clean = sanitize(&self.line);
        self.line.clear();
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
        let mut buf = vec![0u8; usize::from(u16::try_from(len).unwrap_or(0))];
        if self.mem.read_slice(&mut buf, GuestAddress(addr)).is_err() {
            let name = self.compartment.clone();
            self.warned.warn("write-outside-memory", || {
                format!(
                    "compartment {name}: debug console write names {addr:#x}+{len:#x}, outside guest memory; ignored"
                )
            });
            return;
        }
        self.emit(&buf);
    }
}

impl BusDevice for DebugConsole {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Write-only registers, but the power button's state.
        data.fill(0);
        if offset == REG_STOP_REQUESTED
            && let Some(low) = data.first_mut()
        {
            *low = u8::from(self.power.stop_asked());
        }
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
                } else if value == u64::from(MARK_FIRST_USER_OUTPUT) {
                    let _ = self.clock.first_user_output.set(Instant::now());
                }
            }
            REG_POWER_OFF => {
                self.flush_line();
                let _ = self.clock.power_off.set(Instant::now());
                // A 32-bit register: the low half of a wider store.
                self.power.request(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]));
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
        let dev = DebugConsole::new("test", mem.clone(), Box::new(sink.clone()), power.clone(), Arc::default());
        (dev, sink, power, mem)
    }

    #[test]
    fn the_power_button_raises_its_line_and_the_stop_register_reads_1_after() {
        let (mut dev, _, power, _) = console();
        let line = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let button = PowerButton::new(power, line.try_clone().unwrap());
        let mut value = [0xffu8; 4];
        dev.read(REG_STOP_REQUESTED, &mut value);
        assert_eq!(value, [0; 4], "not pressed");
        button.press();
        button.press();
        dev.read(REG_STOP_REQUESTED, &mut value);
        assert_eq!(u32::from_le_bytes(value), 1);
        assert_eq!(line.read().unwrap(), 2, "each press is an edge on the line");
    }

    #[test]
    fn write_request_prints_guest_buffer() {
        let (mut dev, sink, _, mem) = console();
        mem.write_slice(b"hello\n", GuestAddress(0x2000)).unwrap();
        dev.write(REG_WRITE, &write_request(0x2000, 6).to_le_bytes());
        dev.write(REG_BYTE, b"!");
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\n");
        dev.flush_line();
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\n!");
    }

    #[test]
    fn fragments_are_joined_into_whole_lines() {
        let (mut dev, sink, _, mem) = console();
        mem.write_slice(b"ab\ncd", GuestAddress(0x100)).unwrap();
        dev.write(REG_WRITE, &write_request(0x100, 1).to_le_bytes());
        assert!(sink.0.lock().unwrap().is_empty(), "a partial line was passed on");
        dev.write(REG_WRITE, &write_request(0x101, 4).to_le_bytes());
        assert_eq!(&*sink.0.lock().unwrap(), b"ab\n");
        dev.write(REG_POWER_OFF, &0u32.to_le_bytes());
        assert_eq!(&*sink.0.lock().unwrap(), b"ab\ncd", "power-off must flush the last line");
    }

    #[test]
    fn endless_line_is_passed_on_at_the_cap() {
        let (mut dev, sink, _, _) = console();
        for _ in 0..MAX_LINE {
            dev.write(REG_BYTE, b"x");
        }
        assert_eq!(sink.0.lock().unwrap().len(), MAX_LINE);
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
