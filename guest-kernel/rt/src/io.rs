//! Console output: [`print!`](crate::print) and [`println!`](crate::println).
//!
//! Text is formatted (ring 3 may use `core::fmt`) into a line buffer on the
//! stack and written with one system call per line, or per buffer-full.

use core::fmt::{self, Write};

const LINE: usize = 512;

/// A line being formatted.
#[derive(Debug)]
pub struct LineWriter {
    buf: [u8; LINE],
    len: usize,
}

impl Default for LineWriter {
    fn default() -> Self {
        Self { buf: [0; LINE], len: 0 }
    }
}

impl LineWriter {
    /// Writes what is buffered.
    pub fn flush(&mut self) {
        if self.len > 0 {
            let _ = crate::sys::write(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Write for LineWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == LINE {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
            if b == b'\n' {
                self.flush();
            }
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let mut w = LineWriter::default();
    let _ = w.write_fmt(args);
    w.flush();
}

/// Prints to the compartment's console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::io::_print(format_args!($($arg)*)) };
}

/// Prints a line to the compartment's console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::io::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
