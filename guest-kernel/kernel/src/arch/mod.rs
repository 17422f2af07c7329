//! x86_64 instructions the kernel needs, as small safe or documented-unsafe
//! functions. Only instructions docs/PLATFORM.md found working in ring 0 on our
//! hosts: no SSE, no `cmpxchg16b`, no `xsave`.

pub mod gdt;
pub mod ioapic;
pub mod lapic;

use core::arch::asm;
use ward_abi::width::{high_u32, low_u32};

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: `rdtsc` reads a counter; it has no memory effects.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Reads CR2, the address of the last page fault.
#[inline]
pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effects; we run in ring 0.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR3, the current page-table root.
#[inline]
pub fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effects; we run in ring 0.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Switches to the page tables at `root`.
///
/// # Safety
/// `root` is a valid PML4 that maps the kernel (code, stack, direct map)
/// exactly as the current one does.
#[inline]
pub unsafe fn write_cr3(root: u64) {
    // SAFETY: the caller guarantees the kernel stays mapped.
    unsafe { asm!("mov cr3, {}", in(reg) root, options(nostack, preserves_flags)) };
}

/// Drops the TLB entry of the page at `virt`.
#[inline]
pub fn invlpg(virt: u64) {
    // SAFETY: flushing a TLB entry only makes the next access walk the
    // tables again.
    unsafe { asm!("invlpg [{}]", in(reg) virt, options(nostack, preserves_flags)) };
}

/// Writes a model-specific register.
///
/// # Safety
/// `msr` exists and `value` is valid for it; the caller knows what the
/// write changes.
#[inline]
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR and value.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") low_u32(value), in("edx") high_u32(value), options(nostack, preserves_flags));
    }
}

/// Copies `len` bytes: `rep movsq`, then `rep movsb` for the tail. On our
/// hosts each iteration of a ring-0 string instruction is emulated (about
/// 0.8 µs), so eight bytes an iteration beat one. Bulk page copies go to the
/// host's page service instead.
///
/// # Safety
/// `src` is readable and `dst` writable for `len` bytes; they do not overlap.
#[inline]
pub unsafe fn copy_bytes(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: the caller guarantees both ranges; `len / 8` quadwords then
    // `len % 8` bytes cover exactly `len`; the direction flag is clear in
    // the kernel.
    unsafe {
        asm!(
            "rep movsq",
            "mov rcx, {tail}",
            "rep movsb",
            tail = in(reg) len % 8,
            inout("rcx") len / 8 => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
}

/// Saves the FPU/SSE state into a new area (`fxsave64`), written in
/// place: no 512-byte initialisation or copy in ring 0.
pub fn fxsave_new() -> alloc::boxed::Box<FpuArea> {
    let mut area = alloc::boxed::Box::<FpuArea>::new_uninit();
    // SAFETY: the area is 512 bytes and 16-byte aligned (`FpuArea`'s
    // layout); `fxsave64` writes all of it.
    unsafe {
        asm!("fxsave64 [{}]", in(reg) area.as_mut_ptr(), options(nostack, preserves_flags));
        area.assume_init()
    }
}

/// Saves the FPU/SSE state into `area` (`fxsave64`).
#[inline]
pub fn fxsave(area: &mut FpuArea) {
    // SAFETY: `area` is 512 bytes, 16-byte aligned, and ours to write.
    unsafe { asm!("fxsave64 [{}]", in(reg) area.0.as_mut_ptr(), options(nostack, preserves_flags)) };
}

/// Loads the FPU/SSE state from `area` (`fxrstor64`).
#[inline]
pub fn fxrstor(area: &FpuArea) {
    // SAFETY: `area` holds a state written by `fxsave` or `FpuArea::initial`
    // (reserved MXCSR bits clear), so `fxrstor64` cannot fault.
    unsafe { asm!("fxrstor64 [{}]", in(reg) area.0.as_ptr(), options(nostack, preserves_flags, readonly)) };
}

/// The 512-byte `fxsave` area of a user process.
#[derive(Clone)]
#[repr(C, align(16))]
pub struct FpuArea(pub [u8; 512]);

impl core::fmt::Debug for FpuArea {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FpuArea")
    }
}

/// The state a new process starts with: x87 control word 0x37f, all SSE
/// exceptions masked (MXCSR 0x1f80), registers zero. A static, so a new
/// process's area is one `rep movsb` copy, not a ring-0 fill.
pub static INITIAL_FPU: FpuArea = FpuArea({
    let mut area = [0u8; 512];
    area[0] = 0x7f; // FCW
    area[1] = 0x03;
    area[24] = 0x80; // MXCSR
    area[25] = 0x1f;
    area
});

/// Disables interrupts and halts forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` stops this vCPU; nothing is left to run.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Reads an address no page table maps, to test the page-fault path.
pub fn touch_unmapped() {
    // The top of the lower half is never mapped by the kernel.
    let addr: u64 = 0x0000_7fff_ffff_f000;
    // SAFETY: not sound by design: this faults, and the fault handler
    // reports it and powers off. Used only when `ward.fault` is given.
    unsafe { asm!("mov {tmp}, qword ptr [{addr}]", addr = in(reg) addr, tmp = out(reg) _, options(nostack, readonly)) };
}
