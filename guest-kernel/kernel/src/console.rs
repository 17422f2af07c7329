//! Kernel console output without `core::fmt` and without copying.
//!
//! `core::fmt` in the precompiled `core` uses SSE, which crashes ring-0 code
//! on our hosts, so the kernel formats by hand: each argument of
//! [`kprintln!`](crate::kprintln) implements [`Emit`].
//!
//! On our hosts an MMIO exit is far cheaper than copying a line byte by
//! byte in emulated ring 0 (docs/PLATFORM.md), so nothing is buffered
//! in the guest: each fragment leaves in one store naming where it already
//! lies (`ward_abi::debug_console::REG_WRITE`), and the host's device joins
//! fragments into lines. Only numbers are formatted, into a small stack
//! buffer that is never zeroed.

use core::mem::MaybeUninit;

use ward_abi::debug_console::{self, MAX_WRITE_LEN, REG_WRITE, write_request};

use crate::addr::{phys_to_virt, virt_to_phys};

/// Sends `bytes` to the debug console, in pieces of at most
/// `MAX_WRITE_LEN` bytes.
pub fn write_bytes(bytes: &[u8]) {
    for chunk in bytes.chunks(MAX_WRITE_LEN as usize) {
        write_to_device(chunk);
    }
}

#[cfg(not(test))]
fn write_to_device(bytes: &[u8]) {
    let Some(phys) = virt_to_phys(bytes.as_ptr() as u64) else {
        return;
    };
    let len = u16::try_from(bytes.len()).unwrap_or(0);
    let reg = phys_to_virt(debug_console::BASE + REG_WRITE) as *mut u64;
    // The VMM reads the bytes during the store below; the compiler does not
    // know that, so make every byte written so far reach memory first.
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    // SAFETY: the debug console's register window is mapped in the direct
    // map; the store is an MMIO exit the VMM serves while `bytes` is alive.
    unsafe { core::ptr::write_volatile(reg, write_request(phys, len)) };
}

#[cfg(test)]
fn write_to_device(bytes: &[u8]) {
    // Host tests see the output that would have left the guest.
    let _ = (virt_to_phys, phys_to_virt, REG_WRITE, write_request, debug_console::BASE);
    tests::CAPTURED.with(|c| c.borrow_mut().extend_from_slice(bytes));
}

/// Something [`kprintln!`](crate::kprintln) can print.
pub trait Emit {
    /// Sends `self` to the console.
    fn emit(&self);
}

impl Emit for str {
    fn emit(&self) {
        write_bytes(self.as_bytes());
    }
}

impl<T: Emit + ?Sized> Emit for &T {
    fn emit(&self) {
        (**self).emit();
    }
}

/// Numbers are formatted into this buffer in the kernel image: the device
/// needs a guest-physical address, and kernel stacks live outside the
/// windows [`virt_to_phys`] translates. One vCPU, interrupts off in the
/// kernel, and no printing while formatting: one user at a time.
struct Scratch(core::cell::UnsafeCell<[MaybeUninit<u8>; 20]>);

// SAFETY: see above: the kernel's single-CPU, interrupts-off rule means the
// buffer is never used by two callers at once.
unsafe impl Sync for Scratch {}

static SCRATCH: Scratch = Scratch(core::cell::UnsafeCell::new([MaybeUninit::uninit(); 20]));

fn with_scratch(f: impl FnOnce(&mut [MaybeUninit<u8>; 20])) {
    // SAFETY: the kernel's single-CPU, interrupts-off rule (see `Scratch`).
    f(unsafe { &mut *SCRATCH.0.get() });
}

impl Emit for u64 {
    fn emit(&self) {
        with_scratch(|digits| write_bytes(format_decimal(*self, digits)));
    }
}

impl Emit for u32 {
    fn emit(&self) {
        u64::from(*self).emit();
    }
}

impl Emit for u8 {
    fn emit(&self) {
        u64::from(*self).emit();
    }
}

impl Emit for usize {
    fn emit(&self) {
        (*self as u64).emit();
    }
}

impl Emit for i64 {
    fn emit(&self) {
        if *self < 0 {
            "-".emit();
        }
        self.unsigned_abs().emit();
    }
}

/// Prints a number as `0x` and sixteen hex digits.
#[derive(Clone, Copy, Debug)]
pub struct Hex(pub u64);

impl Emit for Hex {
    fn emit(&self) {
        with_scratch(|buf| {
            let (out, _) = buf.split_at_mut(18);
            if let Ok(out) = <&mut [MaybeUninit<u8>; 18]>::try_from(out) {
                write_bytes(format_hex(self.0, out));
            }
        });
    }
}

/// Prints untrusted bytes (e.g. the command line). The host's console
/// device makes control characters harmless before they reach a terminal.
#[derive(Clone, Copy, Debug)]
pub struct Bytes<'a>(pub &'a [u8]);

impl Emit for Bytes<'_> {
    fn emit(&self) {
        write_bytes(self.0);
    }
}

/// Writes `value` in decimal into the end of `out` and returns the digits.
pub fn format_decimal(mut value: u64, out: &mut [MaybeUninit<u8>; 20]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = MaybeUninit::new(b'0' + (value % 10) as u8);
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // SAFETY: bytes `i..` were each written above.
    unsafe { assume_init(&out[i..]) }
}

/// Writes `value` as `0x` and sixteen hex digits into `out`.
pub fn format_hex(value: u64, out: &mut [MaybeUninit<u8>; 18]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out[0] = MaybeUninit::new(b'0');
    out[1] = MaybeUninit::new(b'x');
    for (i, slot) in out[2..].iter_mut().enumerate() {
        let shift = 60 - 4 * i;
        *slot = MaybeUninit::new(DIGITS[((value >> shift) & 0xf) as usize]);
    }
    // SAFETY: all 18 bytes were written above.
    unsafe { assume_init(&out[..]) }
}

/// # Safety
/// Every byte of `bytes` is initialised.
unsafe fn assume_init(bytes: &[MaybeUninit<u8>]) -> &[u8] {
    // SAFETY: the caller guarantees initialisation; `MaybeUninit<u8>` has
    // the layout of `u8`.
    unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<u8>(), bytes.len()) }
}

/// Prints its arguments (each an [`Emit`]) and a newline to the console.
#[macro_export]
macro_rules! kprintln {
    ($($arg:expr),* $(,)?) => {{
        $( $crate::console::Emit::emit(&$arg); )*
        $crate::console::Emit::emit("\n");
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
        let mut buf = [MaybeUninit::uninit(); 20];
        assert_eq!(format_decimal(0, &mut buf), b"0");
        assert_eq!(format_decimal(u64::MAX, &mut buf), b"18446744073709551615");
    }

    #[test]
    fn hex_is_zero_padded_to_sixteen_digits() {
        let mut buf = [MaybeUninit::uninit(); 18];
        assert_eq!(format_hex(0xdead_beef, &mut buf), b"0x00000000deadbeef");
    }

    #[test]
    fn kprintln_joins_arguments_and_ends_the_line() {
        crate::kprintln!("a=", 42u64, " b=", Hex(255), " c=", -7i64, " d=", Bytes(b"xy"));
        assert_eq!(captured(), "a=42 b=0x00000000000000ff c=-7 d=xy\n");
    }

    #[test]
    fn long_output_is_sent_whole_in_device_sized_pieces() {
        let long = "x".repeat(MAX_WRITE_LEN as usize * 2 + 3);
        crate::kprintln!(long.as_str());
        assert_eq!(captured(), std::format!("{long}\n"));
    }
}
