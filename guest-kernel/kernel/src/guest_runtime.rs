//! What a freestanding binary needs from its own crate: the panic handler
//! and the memory intrinsics the compiler calls (`memcpy` and friends), plus
//! the two unwinding symbols the precompiled `alloc` references but never
//! calls under `panic = "abort"`.
//!
//! The intrinsics use string instructions: no loop the compiler could turn
//! back into a call to themselves. On our hosts a ring-0 `rep movs`/`rep
//! stos` costs about the same per iteration whatever the width, so bulk
//! moves go eight bytes at a time (`movsq`/`stosq`) with a byte tail.

use core::arch::asm;
use core::panic::PanicInfo;

use ward_abi::debug_console::EXIT_PANIC;

use crate::kprintln;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    // Only a literal message can be printed without `core::fmt`.
    let message = info.message().as_str().unwrap_or("(formatted message not printed: no core::fmt in ring 0)");
    match info.location() {
        Some(loc) => kprintln!("kernel panic: ", message, " at ", loc.file(), ":", loc.line(), ":", loc.column()),
        None => kprintln!("kernel panic: ", message),
    }
    crate::power::power_off(EXIT_PANIC)
}

/// # Safety
/// As C's `memcpy`: `n` bytes readable at `src`, writable at `dest`, no overlap.
#[unsafe(no_mangle)]
unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; `n / 8` quadwords then
    // `n % 8` bytes cover exactly `n` bytes; the direction flag is clear
    // (the ABI requires it at every call).
    unsafe { crate::arch::copy_bytes(dest, src, n) };
    dest
}

/// # Safety
/// As C's `memmove`: `n` bytes readable at `src`, writable at `dest`.
#[unsafe(no_mangle)]
unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // No overlap, or `dest` below `src`: a forward copy is safe.
        // SAFETY: as for `memcpy`; forward copying never reads a byte it wrote.
        unsafe { memcpy(dest, src, n) }
    } else {
        // `dest` overlaps the end of `src`: copy backwards.
        // SAFETY: the caller guarantees both ranges; we set the direction
        // flag for this one instruction and clear it again.
        unsafe {
            asm!(
                "std",
                "rep movsb",
                "cld",
                inout("rcx") n => _,
                inout("rdi") dest.add(n - 1) => _,
                inout("rsi") src.add(n - 1) => _,
                options(nostack)
            );
        }
        dest
    }
}

/// # Safety
/// As C's `memset`: `n` bytes writable at `dest`.
///
/// `rep stosq` then `rep stosb` for the tail: on our hosts `rep stosb` is
/// emulated a byte at a time (~0.5 µs a byte), `rep stosq` eight times faster.
#[unsafe(no_mangle)]
unsafe extern "C" fn memset(dest: *mut u8, value: i32, n: usize) -> *mut u8 {
    let byte = u64::from(value.to_le_bytes()[0]);
    // SAFETY: the caller guarantees the range: `n / 8` quadwords then
    // `n % 8` bytes cover exactly `n` bytes from `dest`; the direction flag
    // is clear.
    unsafe {
        asm!(
            "rep stosq",
            "mov rcx, {tail}",
            "rep stosb",
            tail = in(reg) n % 8,
            inout("rcx") n / 8 => _,
            inout("rdi") dest => _,
            in("rax") byte * 0x0101_0101_0101_0101,
            options(nostack, preserves_flags)
        );
    }
    dest
}

/// # Safety
/// As C's `memcmp`: `n` bytes readable at `a` and at `b`.
#[unsafe(no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    let rest: usize;
    let pa: *const u8;
    let pb: *const u8;
    // SAFETY: the caller guarantees both ranges; `repe cmpsb` reads at most
    // `n` bytes of each and stops after the first difference.
    unsafe {
        asm!("repe cmpsb", inout("rcx") n => rest, inout("rsi") a => pa, inout("rdi") b => pb, options(nostack, readonly));
    }
    let _ = rest;
    // Both pointers are one past the last compared byte.
    // SAFETY: the last compared byte lies inside both ranges.
    let (x, y) = unsafe { (*pa.sub(1), *pb.sub(1)) };
    i32::from(x) - i32::from(y)
}

/// # Safety
/// As `memcmp`.
#[unsafe(no_mangle)]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as `memcmp`.
    unsafe { memcmp(a, b, n) }
}

/// Referenced by the precompiled `alloc`; never called with `panic = "abort"`.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

/// Referenced by the precompiled `alloc`; never called with `panic = "abort"`.
#[unsafe(no_mangle)]
extern "C" fn _Unwind_Resume() -> ! {
    crate::arch::halt_forever()
}

/// Every `core::fmt` function of the precompiled `core` and `alloc` is
/// linked to this (see `build.rs`): formatting uses SSE, which ring 0 must
/// never run. It reports and powers off without formatting or panicking.
#[unsafe(no_mangle)]
extern "C" fn ward_fmt_unreachable() -> ! {
    kprintln!("kernel panic: core::fmt was called in ring 0 (it is linked out; see build.rs)");
    crate::power::power_off(EXIT_PANIC)
}
