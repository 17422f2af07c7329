//! Kernel console output without `core::fmt`.
//!
//! `core::fmt` in the precompiled `core` uses SSE, which crashes ring-0 code
//! on our hosts, so the kernel formats by hand: each argument of
//! [`kprintln!`](crate::kprintln) implements [`Emit`], which appends it to a
//! stack line buffer, and a full line leaves the guest in one MMIO store to
//! the debug console (`ward_abi::debug_console::REG_WRITE`).
//!
//! The line buffer is not zeroed (zeroing costs ring-0 instructions), and a
//! line longer than the buffer is flushed in pieces.

use core::mem::MaybeUninit;

use ward_abi::debug_console::{self, REG_WRITE, write_request};

use crate::addr::{phys_to_virt, virt_to_phys};

/// Bytes a line buffer holds before it flushes.
const LINE_CAPACITY: usize = 256;

/// A line being built on the stack.
pub struct Line {
    buf: [MaybeUninit<u8>; LINE_CAPACITY],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Line {
    /// An empty line.
    #[inline]
    pub const fn new() -> Self {
        Self {
            buf: [MaybeUninit::uninit(); LINE_CAPACITY],
            len: 0,
        }
    }

    /// Appends bytes, flushing whenever the buffer fills.
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.len == LINE_CAPACITY {
                self.flush();
            }
            self.buf[self.len] = MaybeUninit::new(b);
            self.len += 1;
        }
    }

    /// The bytes written so far and not yet flushed.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: the first `len` bytes were each written by `push_bytes`;
        // `MaybeUninit<u8>` has the layout of `u8`.
        unsafe { core::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), self.len) }
    }

    /// Ends the line with `\n` and sends it.
    pub fn finish(mut self) {
        self.push_bytes(b"\n");
        self.flush();
    }

    /// Sends what the buffer holds to the debug console.
    pub fn flush(&mut self) {
        if self.len == 0 {
            return;
        }
        write_to_device(self.as_bytes());
        self.len = 0;
    }
}

#[cfg(not(test))]
fn write_to_device(bytes: &[u8]) {
    let Some(phys) = virt_to_phys(bytes.as_ptr() as u64) else {
        return;
    };
    let len = u16::try_from(bytes.len()).unwrap_or(0);
    let reg = phys_to_virt(debug_console::BASE + REG_WRITE) as *mut u64;
    // The VMM reads the buffer during the store below; the compiler does not
    // know that, so make every byte written so far reach memory first.
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    // SAFETY: the debug console's register window is mapped in the direct
    // map; the store is an MMIO exit the VMM serves while this line buffer,
    // on our stack, is alive and unchanged.
    unsafe { core::ptr::write_volatile(reg, write_request(phys, len)) };
}

#[cfg(test)]
fn write_to_device(bytes: &[u8]) {
    // Host tests see the output that would have left the guest.
    let _ = (
        virt_to_phys,
        phys_to_virt,
        REG_WRITE,
        write_request,
        debug_console::BASE,
    );
    tests::CAPTURED.with(|c| c.borrow_mut().extend_from_slice(bytes));
}

/// Something [`kprintln!`](crate::kprintln) can print.
pub trait Emit {
    /// Appends `self` to the line.
    fn emit(&self, line: &mut Line);
}

impl Emit for str {
    fn emit(&self, line: &mut Line) {
        line.push_bytes(self.as_bytes());
    }
}

impl<T: Emit + ?Sized> Emit for &T {
    fn emit(&self, line: &mut Line) {
        (**self).emit(line);
    }
}

impl Emit for u64 {
    fn emit(&self, line: &mut Line) {
        let mut digits = [0u8; 20];
        line.push_bytes(format_decimal(*self, &mut digits));
    }
}

impl Emit for u32 {
    fn emit(&self, line: &mut Line) {
        u64::from(*self).emit(line);
    }
}

impl Emit for u8 {
    fn emit(&self, line: &mut Line) {
        u64::from(*self).emit(line);
    }
}

impl Emit for usize {
    fn emit(&self, line: &mut Line) {
        (*self as u64).emit(line);
    }
}

impl Emit for i64 {
    fn emit(&self, line: &mut Line) {
        if *self < 0 {
            line.push_bytes(b"-");
        }
        self.unsigned_abs().emit(line);
    }
}

/// Prints a number as `0x` and sixteen hex digits.
#[derive(Clone, Copy, Debug)]
pub struct Hex(pub u64);

impl Emit for Hex {
    fn emit(&self, line: &mut Line) {
        let mut out = [0u8; 18];
        line.push_bytes(format_hex(self.0, &mut out));
    }
}

/// Prints raw bytes (e.g. the command line), replacing control characters
/// and non-ASCII bytes with `?` so a guest's console cannot emit escapes.
#[derive(Clone, Copy, Debug)]
pub struct Bytes<'a>(pub &'a [u8]);

impl Emit for Bytes<'_> {
    fn emit(&self, line: &mut Line) {
        for &b in self.0 {
            let b = if (0x20..0x7f).contains(&b) { b } else { b'?' };
            line.push_bytes(&[b]);
        }
    }
}

/// Writes `value` in decimal into `out` and returns the digits.
pub fn format_decimal(mut value: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    &out[i..]
}

/// Writes `value` as `0x` and sixteen hex digits into `out`.
pub fn format_hex(value: u64, out: &mut [u8; 18]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out[0] = b'0';
    out[1] = b'x';
    for (i, slot) in out[2..].iter_mut().enumerate() {
        let shift = 60 - 4 * i;
        *slot = DIGITS[((value >> shift) & 0xf) as usize];
    }
    &out[..]
}

/// Prints its arguments (each an [`Emit`]) and a newline to the console.
#[macro_export]
macro_rules! kprintln {
    ($($arg:expr),* $(,)?) => {{
        let mut line = $crate::console::Line::new();
        $( $crate::console::Emit::emit(&$arg, &mut line); )*
        line.finish();
    }};
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::vec::Vec;

    std::thread_local! {
        pub(crate) static CAPTURED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    fn captured() -> std::string::String {
        CAPTURED.with(|c| std::string::String::from_utf8(c.borrow_mut().split_off(0)).unwrap())
    }

    #[test]
    fn decimal_formats_zero_and_max() {
        let mut buf = [0; 20];
        assert_eq!(format_decimal(0, &mut buf), b"0");
        assert_eq!(format_decimal(u64::MAX, &mut buf), b"18446744073709551615");
    }

    #[test]
    fn hex_is_zero_padded_to_sixteen_digits() {
        let mut buf = [0; 18];
        assert_eq!(format_hex(0xdead_beef, &mut buf), b"0x00000000deadbeef");
    }

    #[test]
    fn kprintln_joins_arguments_and_ends_the_line() {
        crate::kprintln!("a=", 42u64, " b=", Hex(255), " c=", -7i64);
        assert_eq!(captured(), "a=42 b=0x00000000000000ff c=-7\n");
    }

    #[test]
    fn long_lines_are_flushed_in_pieces_without_loss() {
        let long = "x".repeat(LINE_CAPACITY * 2 + 3);
        crate::kprintln!(long.as_str());
        assert_eq!(captured(), std::format!("{long}\n"));
    }

    #[test]
    fn bytes_replace_control_characters() {
        crate::kprintln!(Bytes(b"ok\x1b[2J\xff"));
        assert_eq!(captured(), "ok?[2J?\n");
    }
}
