//! The freestanding runtime of a guest program: `_start`, the panic
//! handler, the global allocator and the memory intrinsics.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::{asm, global_asm};
use core::panic::PanicInfo;
use ward_abi::width::usize_from;

use linked_list_allocator::LockedHeap;

use crate::{EXIT_PANIC, println, sys};

// The kernel enters with rdi = argument bytes, rsi = their length, and a
// 16-byte aligned stack.
global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "    xor ebp, ebp",
    "    and rsp, -16",
    "    call {start}",
    "    ud2",
    start = sym start,
);

unsafe extern "Rust" {
    /// The program's main, declared with `ward_rt::entry!`.
    fn ward_main(args: &[u8]) -> i32;
}

extern "C" fn start(args: *const u8, len: usize) -> ! {
    // SAFETY: the kernel copied `len` argument bytes to `args`, on our
    // stack, where they stay for the life of the process.
    let args = unsafe { core::slice::from_raw_parts(args, len) };
    // SAFETY: `ward_main` is defined by the program through `entry!` with
    // exactly this signature.
    let code = unsafe { ward_main(args) };
    sys::exit(code)
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    println!("panic in process {}: {}", sys::getpid(), info);
    sys::exit(EXIT_PANIC)
}

/// The heap: `linked_list_allocator` over pages from the `map` system call,
/// grown a chunk at a time (the kernel hands out `map`s contiguously).
struct Heap(LockedHeap);

/// Pages the heap grows by, at least.
const GROW_PAGES: u64 = 64;

#[global_allocator]
static HEAP: Heap = Heap(LockedHeap::empty());

// SAFETY: `LockedHeap` is a sound allocator; growing only adds memory that
// `map` just gave us, contiguous with what the heap has.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut heap = self.0.lock();
        if let Ok(ptr) = heap.allocate_first_fit(layout) {
            return ptr.as_ptr();
        }
        let need = (layout.size() + layout.align()).div_ceil(4096) as u64;
        let pages = need.max(GROW_PAGES);
        let Ok(addr) = sys::map(pages) else { return core::ptr::null_mut() };
        if heap.size() == 0 {
            // SAFETY: fresh, mapped, writable memory nobody else uses.
            unsafe { heap.init(addr as *mut u8, usize_from(pages * 4096)) };
        } else if addr == heap.top() as u64 {
            // SAFETY: the new pages start where the heap ends.
            unsafe { heap.extend(usize_from(pages * 4096)) };
        } else {
            return core::ptr::null_mut();
        }
        heap.allocate_first_fit(layout).map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(ptr) = core::ptr::NonNull::new(ptr) {
            // SAFETY: `ptr` came from `alloc` with this layout.
            unsafe { self.0.lock().deallocate(ptr, layout) };
        }
    }
}

/// # Safety
/// As C's `memcpy`.
#[unsafe(no_mangle)]
unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; DF is clear per the ABI.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _, options(nostack, preserves_flags))
    };
    dest
}

/// # Safety
/// As C's `memmove`.
#[unsafe(no_mangle)]
unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // SAFETY: forward copy never reads a byte it wrote here.
        unsafe { memcpy(dest, src, n) }
    } else {
        // SAFETY: backwards copy for `dest` above an overlapping `src`.
        unsafe {
            asm!("std", "rep movsb", "cld", inout("rcx") n => _, inout("rdi") dest.add(n - 1) => _,
                 inout("rsi") src.add(n - 1) => _, options(nostack));
        }
        dest
    }
}

/// # Safety
/// As C's `memset`.
#[unsafe(no_mangle)]
unsafe extern "C" fn memset(dest: *mut u8, value: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") value.to_le_bytes()[0], options(nostack, preserves_flags))
    };
    dest
}

/// # Safety
/// As C's `memcmp`.
#[unsafe(no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    let (pa, pb): (*const u8, *const u8);
    // SAFETY: the caller guarantees both ranges; `repe cmpsb` stops after
    // the first difference (an explicit loop could be turned back into a
    // call to this very function).
    unsafe {
        asm!("repe cmpsb", inout("rcx") n => _, inout("rsi") a => pa, inout("rdi") b => pb, options(nostack, readonly))
    };
    // SAFETY: both pointers are one past the last compared byte.
    let (x, y) = unsafe { (*pa.sub(1), *pb.sub(1)) };
    i32::from(x) - i32::from(y)
}

/// # Safety
/// As C's `bcmp`.
#[unsafe(no_mangle)]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract.
    unsafe { memcmp(a, b, n) }
}

/// Referenced by the precompiled `alloc`; never called with `panic = "abort"`.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

/// Referenced by the precompiled `alloc`; never called with `panic = "abort"`.
#[unsafe(no_mangle)]
extern "C" fn _Unwind_Resume() -> ! {
    sys::exit(EXIT_PANIC)
}
