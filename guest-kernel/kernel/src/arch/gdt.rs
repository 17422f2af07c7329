//! The kernel's GDT and TSS.
//!
//! Segments for ring 0 and ring 3, laid out so `syscall` (STAR) finds them,
//! and a TSS whose RSP0 is the kernel stack of the running process (the CPU
//! switches to it on any entry from ring 3) and whose IST1 is a stack of
//! its own for double faults.

/// Kernel code selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x10;
/// User data selector (RPL 3).
pub const USER_DS: u16 = 0x20 | 3;
/// User 64-bit code selector (RPL 3).
pub const USER_CS: u16 = 0x28 | 3;
/// TSS selector.
pub const TSS_SELECTOR: u16 = 0x30;
/// Interrupt stack table slot of the double-fault stack.
pub const DOUBLE_FAULT_IST: u8 = 1;

/// The STAR MSR value: `syscall` loads CS = 0x08, SS = 0x10; the user base
/// 0x18 (for `sysret`, which we never use) makes CS 0x28 and SS 0x20.
pub const STAR: u64 = (0x18u64 << 48) | ((KERNEL_CS as u64) << 32);

/// Encodes a code or data segment descriptor (base 0, limit 4 GiB).
pub const fn segment(access: u8, flags: u8) -> u64 {
    0x0000_0000_0000_ffff | (0xf << 48) | ((access as u64) << 40) | (((flags & 0xf) as u64) << 52)
}

/// Access byte: present, DPL 0, code, execute/read.
const KERNEL_CODE: u8 = 0x9a;
/// Access byte: present, DPL 0, data, read/write.
const KERNEL_DATA: u8 = 0x92;
/// Access byte: present, DPL 3, data, read/write.
const USER_DATA: u8 = 0xf2;
/// Access byte: present, DPL 3, code, execute/read.
const USER_CODE: u8 = 0xfa;
/// Flags: granularity 4 KiB, 64-bit code.
const LONG_MODE: u8 = 0xa;
/// Flags: granularity 4 KiB, 32-bit (data).
const DEFAULT_32: u8 = 0xc;

/// The two descriptor words of a 64-bit available TSS at `base`.
pub const fn tss_descriptor(base: u64, limit: u32) -> [u64; 2] {
    let low = (limit as u64 & 0xffff)
        | ((base & 0x00ff_ffff) << 16)
        | (0x89 << 40)
        | (((limit as u64 >> 16) & 0xf) << 48)
        | ((base & 0xff00_0000) << 32);
    [low, base >> 32]
}

/// The GDT, without its TSS descriptor (filled at runtime from the TSS's
/// address).
pub const fn gdt_entries() -> [u64; 8] {
    [
        0,
        segment(KERNEL_CODE, LONG_MODE),
        segment(KERNEL_DATA, DEFAULT_32),
        0, // 0x18: the 32-bit user code segment `sysret` would need; unused.
        segment(USER_DATA, DEFAULT_32),
        segment(USER_CODE, LONG_MODE),
        0, // TSS, low word
        0, // TSS, high word
    ]
}

/// The 64-bit task state segment.
#[derive(Debug, Default, Clone, Copy)]
#[repr(C, packed(4))]
pub struct Tss {
    reserved0: u32,
    /// Stack for entries from ring 3.
    pub rsp0: u64,
    rsp1: u64,
    rsp2: u64,
    reserved1: u64,
    /// Interrupt stacks 1..=7.
    pub ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    /// Offset of the I/O permission bitmap: past the end (no port access).
    pub iomap_base: u16,
}

#[cfg(all(feature = "guest", not(test)))]
mod load {
    use core::cell::UnsafeCell;

    use super::*;

    #[repr(C, align(16))]
    struct Tables {
        gdt: [u64; 8],
        tss: Tss,
    }

    struct Cell(UnsafeCell<Tables>);
    // SAFETY: written by `init` once on the boot CPU with interrupts off, and
    // then only `set_rsp0` writes, under the same single-CPU, interrupts-off
    // rule as all kernel state.
    unsafe impl Sync for Cell {}

    /// The TSS's size (104 bytes), which its I/O map base and its descriptor's
    /// limit need as 16 and 32 bits.
    const TSS_SIZE: u16 = {
        let size = core::mem::size_of::<Tss>();
        assert!(size <= u16::MAX as usize);
        ward_abi::width::low_u16(size as u64)
    };

    static TABLES: Cell = Cell(UnsafeCell::new(Tables {
        gdt: gdt_entries(),
        tss: Tss {
            reserved0: 0,
            rsp0: 0,
            rsp1: 0,
            rsp2: 0,
            reserved1: 0,
            ist: [0; 7],
            reserved2: 0,
            reserved3: 0,
            iomap_base: 0,
        },
    }));

    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }

    /// Loads the GDT and TSS and reloads every segment register.
    pub(crate) fn init(double_fault_stack_top: u64) {
        // SAFETY: boot, one CPU, interrupts off: nothing else uses TABLES.
        unsafe {
            let t = &mut *TABLES.0.get();
            t.tss.ist[usize::from(DOUBLE_FAULT_IST) - 1] = double_fault_stack_top;
            t.tss.iomap_base = TSS_SIZE;
            let tss_base = core::ptr::addr_of!(t.tss) as u64;
            let [low, high] = tss_descriptor(tss_base, u32::from(TSS_SIZE) - 1);
            t.gdt[6] = low;
            t.gdt[7] = high;
            let ptr = Pointer { limit: 8 * 8 - 1, base: t.gdt.as_ptr() as u64 };
            core::arch::asm!(
                "lgdt [{ptr}]",
                // Reload CS with a far return to the next instruction.
                "push {cs}",
                "lea {tmp}, [rip + 2f]",
                "push {tmp}",
                "retfq",
                "2:",
                "mov {tmp:e}, {ds}",
                "mov ds, {tmp:e}",
                "mov es, {tmp:e}",
                "mov ss, {tmp:e}",
                "xor {tmp:e}, {tmp:e}",
                "mov fs, {tmp:e}",
                "mov gs, {tmp:e}",
                "mov {tmp:e}, {tss}",
                "ltr {tmp:x}",
                ptr = in(reg) &ptr,
                cs = const KERNEL_CS as u64,
                ds = const KERNEL_DS as u32,
                tss = const TSS_SELECTOR as u32,
                tmp = out(reg) _,
            );
        }
    }

    /// Sets the stack the CPU switches to on entry from ring 3.
    pub(crate) fn set_rsp0(top: u64) {
        // SAFETY: single CPU, interrupts off (kernel state rule); the CPU
        // reads RSP0 only on the next ring-3 entry.
        unsafe { (*TABLES.0.get()).tss.rsp0 = top };
    }
}

#[cfg(all(feature = "guest", not(test)))]
pub(crate) use load::{init, set_rsp0};

/// Sets the stack the CPU switches to on entry from ring 3 (no-op on the host).
#[cfg(not(all(feature = "guest", not(test))))]
pub(crate) fn set_rsp0(_top: u64) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_match_hand_encoding() {
        let gdt = gdt_entries();
        assert_eq!(gdt[1], 0x00af_9a00_0000_ffff); // kernel code, L=1
        assert_eq!(gdt[2], 0x00cf_9200_0000_ffff); // kernel data
        assert_eq!(gdt[4], 0x00cf_f200_0000_ffff); // user data, DPL 3
        assert_eq!(gdt[5], 0x00af_fa00_0000_ffff); // user code, DPL 3, L=1
    }

    #[test]
    fn selectors_follow_the_star_layout() {
        // syscall: CS = STAR[47:32], SS = +8. sysret: SS = STAR[63:48] + 8,
        // CS = +16; both | 3.
        assert_eq!((STAR >> 32) & 0xffff, u64::from(KERNEL_CS));
        assert_eq!(((STAR >> 48) + 8) | 3, u64::from(USER_DS));
        assert_eq!(((STAR >> 48) + 16) | 3, u64::from(USER_CS));
        assert_eq!(KERNEL_DS, KERNEL_CS + 8);
    }

    #[test]
    fn tss_descriptor_splits_its_base() {
        let [low, high] = tss_descriptor(0xffff_ffff_8012_3450, 103);
        assert_eq!(low, 0x8000_8912_3450_0067);
        assert_eq!(high, 0xffff_ffff);
    }

    #[test]
    fn tss_is_104_bytes() {
        assert_eq!(core::mem::size_of::<Tss>(), 104);
    }
}
