//! Program counters to names for libFuzzer (`--features symbolize`).
//!
//! libFuzzer names functions (its `NEW_FUNC` lines, and the per-function
//! report of `-print_coverage=1`) only through the sanitizer runtime's
//! `__sanitizer_symbolize_pc` and `__sanitizer_get_module_and_offset_for_pc`,
//! which a build without a sanitizer lacks. [`crate::symbolizer!`] defines both
//! in a fuzz target, answered from the binary's own debug information
//! (the `backtrace` crate), so a stable, sanitizer-free build reports
//! which functions its inputs reached (`fuzz/fuzz.sh funcs`).

use std::ffi::{CStr, c_char, c_void};
use std::fmt::Write;

/// Function, file, line and column of `pc` (the outermost of its inlined
/// frames: the function libFuzzer counts the edge in).
fn locate(pc: usize) -> (Option<String>, Option<String>, Option<u32>, Option<u32>) {
    let mut found = (None, None, None, None);
    backtrace::resolve(pc as *mut c_void, |symbol| {
        found = (
            symbol.name().map(|name| format!("{name:#}")),
            symbol.filename().map(|file| file.display().to_string()),
            symbol.lineno(),
            symbol.colno(),
        );
    });
    found
}

/// `pc` described by a sanitizer format: `%p` pc, `%m` module, `%o`
/// offset, `%f` function, `%F` "in function", `%s` file, `%l` line, `%c`
/// column, `%L` and `%S` file:line:column.
pub fn describe(pc: usize, format: &str) -> String {
    let (function, file, line, column) = locate(pc);
    let (module, offset) = module_and_offset(pc).unwrap_or_default();
    let function = function.unwrap_or_else(|| "<unknown>".to_owned());
    let file = file.unwrap_or_else(|| "<unknown>".to_owned());
    let (line, column) = (line.unwrap_or(0), column.unwrap_or(0));
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let _ = match chars.next() {
            Some('p') => write!(out, "{pc:#x}"),
            Some('m') => write!(out, "{module}"),
            Some('o') => write!(out, "{offset:#x}"),
            Some('f') => write!(out, "{function}"),
            Some('F') => write!(out, "in {function}"),
            Some('s') => write!(out, "{file}"),
            Some('l') => write!(out, "{line}"),
            Some('c') => write!(out, "{column}"),
            Some('L' | 'S') => write!(out, "{file}:{line}:{column}"),
            Some(other) => write!(out, "%{other}"),
            None => write!(out, "%"),
        };
    }
    out
}

/// The file of the module holding `pc`, and `pc`'s offset in it.
pub fn module_and_offset(pc: usize) -> Option<(String, usize)> {
    // SAFETY: `Dl_info` is plain data (pointers and integers); all zeros
    // is a valid value, which `dladdr` overwrites.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: `dladdr` only reads the address (it need not point to
    // anything) and writes `info`, which lives across the call.
    if unsafe { libc::dladdr(pc as *const c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: on success `dli_fname` is a NUL-terminated string owned by
    // the dynamic loader, valid while the module stays loaded (the
    // executable: for good).
    let module = unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned();
    Some((module, pc.wrapping_sub(info.dli_fbase as usize)))
}

/// Copies `text` into the C buffer `out` of `size` bytes, NUL-terminated
/// and cut to fit.
///
/// # Safety
///
/// `out` must point to `size` writable bytes (or `size` must be 0).
pub unsafe fn write_c(text: &str, out: *mut c_char, size: usize) {
    if out.is_null() || size == 0 {
        return;
    }
    let len = text.len().min(size - 1);
    // SAFETY: the caller gives `size` writable bytes at `out`, and
    // `len + 1 <= size`; `text` is a separate Rust string.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), out, len);
        *out.add(len) = 0;
    }
}
