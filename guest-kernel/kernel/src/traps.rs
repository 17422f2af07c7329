//! CPU exceptions: the IDT, the entry stubs and the report a fault gives.
//!
//! Every vector has a small assembly stub that pushes a uniform
//! [`TrapFrame`] and calls [`trap_dispatch`]. An exception in the kernel is
//! fatal: it prints which exception, the error code, RIP and (for a page
//! fault) the faulting address, then powers off with
//! `EXIT_EXCEPTION`.

use ward_abi::debug_console::EXIT_EXCEPTION;

use crate::console::Hex;
use crate::kprintln;

/// Vectors 0..32 are CPU exceptions.
pub const EXCEPTION_VECTORS: usize = 32;

/// Kernel code segment selector (the VMM's boot GDT and ours agree).
pub const KERNEL_CS: u16 = 0x08;

/// What an entry stub pushes, lowest address first.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Interrupt vector.
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Page fault vector.
pub const VECTOR_PAGE_FAULT: u64 = 14;

/// The name of an exception vector.
pub fn exception_name(vector: u64) -> &'static str {
    match vector {
        0 => "divide error (#DE)",
        1 => "debug (#DB)",
        2 => "non-maskable interrupt",
        3 => "breakpoint (#BP)",
        4 => "overflow (#OF)",
        5 => "bound range exceeded (#BR)",
        6 => "invalid opcode (#UD)",
        7 => "device not available (#NM)",
        8 => "double fault (#DF)",
        10 => "invalid TSS (#TS)",
        11 => "segment not present (#NP)",
        12 => "stack-segment fault (#SS)",
        13 => "general protection fault (#GP)",
        14 => "page fault (#PF)",
        16 => "x87 floating-point error (#MF)",
        17 => "alignment check (#AC)",
        18 => "machine check (#MC)",
        19 => "SIMD floating-point exception (#XM)",
        20 => "virtualization exception (#VE)",
        21 => "control protection exception (#CP)",
        _ => "reserved exception",
    }
}

/// Whether the CPU pushes an error code for this vector.
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// One 16-byte IDT gate descriptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct IdtEntry {
    low: u64,
    high: u64,
}

impl IdtEntry {
    /// A present 64-bit interrupt gate (interrupts disabled on entry) to
    /// `handler`, reachable by `int n` from privilege level `dpl`, switching
    /// to interrupt stack `ist` (0 for none).
    pub const fn interrupt_gate(handler: u64, selector: u16, ist: u8, dpl: u8) -> Self {
        let low = (handler & 0xffff)
            | ((selector as u64) << 16)
            | (((ist & 0x7) as u64) << 32)
            | ((0x8e | ((dpl as u64 & 3) << 5)) << 40)
            | (((handler >> 16) & 0xffff) << 48);
        Self { low, high: handler >> 32 }
    }

    /// The raw descriptor words.
    pub const fn raw(&self) -> [u64; 2] {
        [self.low, self.high]
    }
}

/// Called by the entry stubs with the frame they pushed.
#[cfg_attr(not(feature = "guest"), allow(dead_code))]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    fatal_exception(frame);
}

fn fatal_exception(frame: &TrapFrame) -> ! {
    kprintln!(
        "kernel panic: ",
        exception_name(frame.vector),
        " (vector ",
        frame.vector,
        ", error code ",
        Hex(frame.error_code),
        ") at rip ",
        Hex(frame.rip)
    );
    if frame.vector == VECTOR_PAGE_FAULT {
        kprintln!("  faulting address ", Hex(crate::arch::read_cr2()));
    }
    kprintln!("  rsp ", Hex(frame.rsp), " rflags ", Hex(frame.rflags), " cs ", Hex(frame.cs));
    crate::power::power_off(EXIT_EXCEPTION)
}

#[cfg(feature = "guest")]
mod idt {
    use core::cell::UnsafeCell;

    use super::{EXCEPTION_VECTORS, IdtEntry, KERNEL_CS};

    struct Idt(UnsafeCell<[IdtEntry; 256]>);

    // SAFETY: the IDT is written only by `init`, once, on the boot CPU before
    // interrupts are enabled; afterwards only the CPU reads it.
    unsafe impl Sync for Idt {}

    static IDT: Idt = Idt(UnsafeCell::new([IdtEntry { low: 0, high: 0 }; 256]));

    unsafe extern "C" {
        static ward_trap_stubs: [u64; EXCEPTION_VECTORS];
    }

    /// Size of the IDT minus one, as `lidt` wants it.
    const IDT_LIMIT: u16 = 256 * 16 - 1;
    const _: () = assert!(core::mem::size_of::<[IdtEntry; 256]>() - 1 == IDT_LIMIT as usize);

    #[repr(C, packed)]
    struct DescriptorPointer {
        limit: u16,
        base: u64,
    }

    pub(super) fn init() {
        // SAFETY: single-threaded boot, interrupts off: nobody else touches
        // the IDT; the stub table is filled in by the assembler.
        unsafe {
            let idt = &mut *IDT.0.get();
            for (entry, &stub) in idt.iter_mut().zip(ward_trap_stubs.iter()) {
                *entry = IdtEntry::interrupt_gate(stub, KERNEL_CS, 0, 0);
            }
            let ptr = DescriptorPointer { limit: IDT_LIMIT, base: idt.as_ptr() as u64 };
            core::arch::asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags));
        }
    }

    // Entry stubs. Each pushes a dummy error code when the CPU does not,
    // then its vector, so every frame has the same shape.
    core::arch::global_asm!(
        r#"
        .macro TRAP_STUB n, err
        .p2align 4
        ward_trap_stub_\n:
        .if \err == 0
            push 0
        .endif
            push \n
            jmp ward_trap_common
        .endm

        .section .text.traps, "ax"
        .irp n, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
            TRAP_STUB \n, 0
        .endr
        .irp n, 8,10,11,12,13,14,17,21,29,30
            TRAP_STUB \n, 1
        .endr

        ward_trap_common:
            push rax
            push rbx
            push rcx
            push rdx
            push rsi
            push rdi
            push rbp
            push r8
            push r9
            push r10
            push r11
            push r12
            push r13
            push r14
            push r15
            mov rdi, rsp
            cld
            call {dispatch}
            pop r15
            pop r14
            pop r13
            pop r12
            pop r11
            pop r10
            pop r9
            pop r8
            pop rbp
            pop rdi
            pop rsi
            pop rdx
            pop rcx
            pop rbx
            pop rax
            add rsp, 16
            iretq

        .section .rodata.traps, "a"
        .p2align 3
        .global ward_trap_stubs
        ward_trap_stubs:
        .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
            .quad ward_trap_stub_\n
        .endr
        "#,
        dispatch = sym super::trap_dispatch,
    );
}

/// Loads the IDT with a gate for every exception vector.
pub fn init() {
    #[cfg(feature = "guest")]
    idt::init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupt_gate_matches_hand_encoded_descriptor() {
        // handler 0xffffffff_80101234, selector 0x08, IST 0, DPL 0:
        // offset[15:0]=0x1234, selector=0x0008, ist=0, type=0x8e,
        // offset[31:16]=0x8010, offset[63:32]=0xffffffff.
        let gate = IdtEntry::interrupt_gate(0xffff_ffff_8010_1234, 0x08, 0, 0);
        assert_eq!(gate.raw(), [0x8010_8e00_0008_1234, 0x0000_0000_ffff_ffff]);
    }

    #[test]
    fn user_callable_gate_sets_dpl_3_and_ist() {
        let gate = IdtEntry::interrupt_gate(0x1000, 0x08, 1, 3);
        assert_eq!(gate.raw()[0], 0x0000_ee01_0008_1000);
    }

    #[test]
    fn error_code_vectors_are_the_architectural_ones() {
        let with: std::vec::Vec<u8> = (0..32).filter(|&v| has_error_code(v)).collect();
        assert_eq!(with, [8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
    }

    #[test]
    fn trap_frame_is_22_words() {
        assert_eq!(core::mem::size_of::<TrapFrame>(), 22 * 8);
    }
}
