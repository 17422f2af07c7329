//! Every way into the kernel: CPU exceptions, the timer interrupt and the
//! `syscall` instruction, and the one way out (`iretq`).
//!
//! Each entry pushes a uniform [`TrapFrame`] and calls [`trap_dispatch`],
//! which returns the frame to resume: the same one, another process's (a
//! context switch is resuming a different frame, on a different kernel
//! stack), or the idle frame. A process's frame lives at the top of its
//! kernel stack, where ring-3 entries put it, so a blocked process is just
//! its saved frame. The kernel never blocks inside itself.
//!
//! An exception in ring 3 kills only that process, with a report naming the
//! process, the exception, the faulting address and RIP; an exception in
//! ring 0 is a kernel panic with the same detail. A user page fault in the
//! stack area grows the stack instead.

use ward_abi::debug_console::{EXIT_EXCEPTION, POWER_BUTTON_VECTOR};
use ward_abi::fault::{Fault, VECTOR_PAGE_FAULT as VECTOR_PAGE_FAULT_U8};
use ward_abi::layout::{USER_STACK_MAX, USER_STACK_TOP};
use ward_abi::virtio::{FIRST_VECTOR, MAX_DEVICES};
use ward_abi::width::low_u8;

use crate::arch::gdt::{KERNEL_CS, KERNEL_DS};
use crate::console::Hex;
use crate::kprintln;

/// Vectors 0..32 are CPU exceptions.
pub const EXCEPTION_VECTORS: usize = 32;
/// Pseudo-vector of frames pushed by the `syscall` entry.
pub const SYSCALL_VECTOR: u64 = 0x80;
/// Page fault vector.
pub const VECTOR_PAGE_FAULT: u64 = 14;

/// What an entry pushes, lowest address first.
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
    /// Interrupt vector, or [`SYSCALL_VECTOR`].
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// Whether the trap came from ring 3.
    pub fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

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

/// What a trap means for the kernel, decided from the frame alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapKind {
    /// A system call.
    Syscall,
    /// A system call whose `syscall` instruction did not leave ring 3 (on
    /// our hosts): the entry stub's first store faulted, from ring 3, at
    /// the stub. The user RIP and RFLAGS are in rcx and r11.
    SyscallViaFault,
    /// The LAPIC timer.
    Timer,
    /// A spurious interrupt: nothing to do.
    Spurious,
    /// A device's interrupt line.
    Device(u8),
    /// The power button: the host asks the compartment to stop.
    PowerButton,
    /// A page fault in ring 3 inside the stack area, on a missing page.
    StackGrowth,
    /// An exception in ring 3: the process dies.
    UserFault,
    /// An exception (or anything unexpected) in ring 0: a kernel panic.
    KernelFault,
}

/// Classifies a trap. `fault_addr` is CR2 for page faults; `syscall_entry`
/// is the address of the `syscall` entry stub.
pub fn classify(frame: &TrapFrame, fault_addr: u64, syscall_entry: u64) -> TrapKind {
    match frame.vector {
        SYSCALL_VECTOR => TrapKind::Syscall,
        VECTOR_PAGE_FAULT if frame.from_user() && frame.rip == syscall_entry => TrapKind::SyscallViaFault,
        v if v == u64::from(crate::arch::lapic::TIMER_VECTOR) => TrapKind::Timer,
        v if v == u64::from(crate::arch::lapic::SPURIOUS_VECTOR) => TrapKind::Spurious,
        v if v == u64::from(POWER_BUTTON_VECTOR) => TrapKind::PowerButton,
        v if (u64::from(FIRST_VECTOR)..u64::from(FIRST_VECTOR) + MAX_DEVICES as u64).contains(&v) => {
            TrapKind::Device(low_u8(v)) // below FIRST_VECTOR + MAX_DEVICES
        }
        _ if !frame.from_user() => TrapKind::KernelFault,
        VECTOR_PAGE_FAULT
            if frame.error_code & 1 == 0 && (USER_STACK_TOP - USER_STACK_MAX..USER_STACK_TOP).contains(&fault_addr) =>
        {
            TrapKind::StackGrowth
        }
        _ => TrapKind::UserFault,
    }
}

/// Called by every entry stub with the frame it pushed; returns the frame
/// to resume.
#[cfg_attr(not(feature = "guest"), allow(dead_code))]
extern "C" fn trap_dispatch(frame: *mut TrapFrame) -> *mut TrapFrame {
    // SAFETY: the stub passes the frame it just pushed on this stack; it
    // stays valid until we return.
    let frame = unsafe { &mut *frame };
    let fault_addr = if frame.vector == VECTOR_PAGE_FAULT { crate::arch::read_cr2() } else { 0 };
    let kind = classify(frame, fault_addr, syscall_entry_addr());
    // SAFETY: one reference per trap; traps never nest (interrupts are off
    // in the kernel) and the reference dies before we return.
    let Some(k) = (unsafe { crate::kernel::KERNEL.get() }) else {
        fatal(frame, fault_addr);
    };
    if !k.dead_kstacks.is_empty() {
        k.free_dead_kstacks();
    }
    match kind {
        TrapKind::Syscall | TrapKind::SyscallViaFault => {
            if kind == TrapKind::SyscallViaFault && !complete_syscall_frame(frame) {
                let fault = Fault::BadSyscall { rip: frame.rcx };
                k.kill_current(frame, fault, "system call with a non-user return address");
            } else {
                crate::syscall::dispatch(k, frame);
                // Most calls change nothing about who runs: straight back.
                if !k.sched_dirty {
                    return core::ptr::from_mut(frame);
                }
            }
        }
        TrapKind::Timer => {
            crate::arch::lapic::eoi();
            k.timer();
        }
        TrapKind::Spurious => {}
        TrapKind::Device(vector) => {
            crate::arch::lapic::eoi();
            k.device_interrupt(vector);
        }
        TrapKind::PowerButton => {
            crate::arch::lapic::eoi();
            k.request_stop();
        }
        TrapKind::StackGrowth => {
            let page = fault_addr & !0xfff;
            let grown = k.current.and_then(|pid| {
                let crate::kernel::Kernel { mem, frames, procs, .. } = &mut *k;
                let space = procs.get_mut(&pid)?.space.as_mut()?;
                let flags = crate::mem::paging::WRITABLE | crate::mem::paging::NO_EXECUTE;
                space.map_zeroed(mem, frames, page, flags).ok()
            });
            if grown.is_none() {
                let fault = Fault::from_exception(VECTOR_PAGE_FAULT_U8, frame.error_code, frame.rip, fault_addr);
                k.kill_current(frame, fault, "page fault (#PF) growing the stack, out of memory");
            }
        }
        TrapKind::UserFault => {
            let fault = Fault::from_exception(low_u8(frame.vector), frame.error_code, frame.rip, fault_addr);
            k.kill_current(frame, fault, exception_name(frame.vector));
        }
        TrapKind::KernelFault => fatal(frame, fault_addr),
    }
    k.schedule(idle_frame())
}

/// RFLAGS bits a program may set for itself: CF, PF, AF, ZF, SF, DF, OF,
/// AC, ID. Never IOPL, never TF (single-stepping would kill it), and IF is
/// always on.
const USER_RFLAGS_MASK: u64 = 0x0024_0cd5;

/// Turns the frame of a [`TrapKind::SyscallViaFault`] into the frame a
/// working `syscall` would have produced: resume at rcx with the RFLAGS
/// from r11 (made safe: a program can also jump to the stub directly).
/// `false` if rcx is not a user address.
pub fn complete_syscall_frame(frame: &mut TrapFrame) -> bool {
    if frame.rcx >= ward_abi::layout::USER_END {
        return false;
    }
    frame.rip = frame.rcx;
    frame.rflags = (frame.r11 & USER_RFLAGS_MASK) | 0x202;
    frame.cs = u64::from(crate::arch::gdt::USER_CS);
    frame.ss = u64::from(crate::arch::gdt::USER_DS);
    frame.vector = SYSCALL_VECTOR;
    frame.error_code = 0;
    true
}

/// A fault the kernel cannot survive: report and power off.
fn fatal(frame: &TrapFrame, fault_addr: u64) -> ! {
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
        kprintln!("  faulting address ", Hex(fault_addr));
    }
    kprintln!("  rsp ", Hex(frame.rsp), " rflags ", Hex(frame.rflags), " cs ", Hex(frame.cs));
    crate::power::power_off(EXIT_EXCEPTION)
}

/// A fresh frame that resumes the idle loop on the idle stack, in ring 0
/// with interrupts on.
fn idle_frame() -> *mut TrapFrame {
    let top = idle_stack_top();
    let frame = (top - core::mem::size_of::<TrapFrame>() as u64) as *mut TrapFrame;
    let idle = TrapFrame {
        rip: idle_loop_addr(),
        cs: u64::from(KERNEL_CS),
        rflags: 0x202,
        rsp: top,
        ss: u64::from(KERNEL_DS),
        ..TrapFrame::default()
    };
    // SAFETY: the idle stack is ours alone; if we are on it now, our own
    // stack frames lie below this one (the entry pushed it at the top).
    unsafe { frame.write(idle) };
    frame
}

#[cfg(all(feature = "guest", not(test)))]
mod entry {
    use core::cell::UnsafeCell;

    use super::{EXCEPTION_VECTORS, IdtEntry, SYSCALL_VECTOR};
    use crate::arch::gdt::{DOUBLE_FAULT_IST, KERNEL_CS, USER_CS, USER_DS};
    use crate::arch::lapic::{SPURIOUS_VECTOR, TIMER_VECTOR};

    struct Idt(UnsafeCell<[IdtEntry; 256]>);

    // SAFETY: the IDT is written only by `init`, once, on the boot CPU before
    // interrupts are enabled; afterwards only the CPU reads it.
    unsafe impl Sync for Idt {}

    static IDT: Idt = Idt(UnsafeCell::new([IdtEntry { low: 0, high: 0 }; 256]));

    /// Kernel stack for `syscall` entries: the running process's (the same
    /// value as TSS.RSP0). Read by the entry stub.
    #[unsafe(no_mangle)]
    static mut ward_syscall_kernel_rsp: u64 = 0;
    /// The user RSP while the `syscall` stub switches stacks.
    #[unsafe(no_mangle)]
    static mut ward_syscall_user_rsp: u64 = 0;

    unsafe extern "C" {
        static ward_trap_stubs: [u64; EXCEPTION_VECTORS];
        static ward_device_stubs: [u64; ward_abi::virtio::MAX_DEVICES];
        fn ward_timer_stub();
        fn ward_spurious_stub();
        fn ward_power_button_stub();
        fn ward_syscall_entry();
        fn ward_syscall_entry_end();
        fn ward_idle_loop();
        static ward_idle_stack_top: u8;
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
        // the IDT; the stub addresses are filled in by the assembler.
        unsafe {
            let idt = &mut *IDT.0.get();
            for (vector, (entry, &stub)) in idt.iter_mut().zip(ward_trap_stubs.iter()).enumerate() {
                let ist = if vector == 8 { DOUBLE_FAULT_IST } else { 0 };
                *entry = IdtEntry::interrupt_gate(stub, KERNEL_CS, ist, 0);
            }
            idt[usize::from(TIMER_VECTOR)] =
                IdtEntry::interrupt_gate(ward_timer_stub as *const () as u64, KERNEL_CS, 0, 0);
            for (i, &stub) in ward_device_stubs.iter().enumerate() {
                idt[usize::from(ward_abi::virtio::FIRST_VECTOR) + i] = IdtEntry::interrupt_gate(stub, KERNEL_CS, 0, 0);
            }
            idt[usize::from(SPURIOUS_VECTOR)] =
                IdtEntry::interrupt_gate(ward_spurious_stub as *const () as u64, KERNEL_CS, 0, 0);
            idt[usize::from(ward_abi::debug_console::POWER_BUTTON_VECTOR)] =
                IdtEntry::interrupt_gate(ward_power_button_stub as *const () as u64, KERNEL_CS, 0, 0);
            let ptr = DescriptorPointer { limit: IDT_LIMIT, base: idt.as_ptr() as u64 };
            core::arch::asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags));
        }
    }

    pub fn syscall_entry_addr() -> u64 {
        ward_syscall_entry as *const () as u64
    }

    /// The page holding the `syscall` entry stub, which ring 3 may execute
    /// (see [`super::TrapKind::SyscallViaFault`]).
    pub fn syscall_entry_page() -> (u64, u64) {
        (ward_syscall_entry as *const () as u64, ward_syscall_entry_end as *const () as u64)
    }

    pub(super) fn idle_loop_addr() -> u64 {
        ward_idle_loop as *const () as u64
    }

    pub(super) fn idle_stack_top() -> u64 {
        // Only the symbol's address is taken.
        core::ptr::addr_of!(ward_idle_stack_top) as u64
    }

    pub fn set_syscall_stack(top: u64) {
        // SAFETY: kernel state rule (one CPU, interrupts off); the stub reads
        // it only on the next `syscall`.
        unsafe { ward_syscall_kernel_rsp = top };
    }

    /// Resumes `frame` (a process or the idle loop) and never returns.
    pub fn enter(frame: *mut super::TrapFrame) -> ! {
        // SAFETY: `frame` is a complete frame at the top of its stack,
        // prepared by the scheduler; the exit path pops it and `iretq`s.
        unsafe { core::arch::asm!("mov rsp, {}", "jmp ward_trap_exit", in(reg) frame, options(noreturn)) }
    }

    // Entry stubs. Each pushes a dummy error code when the CPU does not,
    // then its vector, so every frame has the same shape. The `syscall`
    // entry builds the same frame by hand: it switches to the running
    // process's kernel stack (interrupts are masked by SFMASK) and pushes
    // what an interrupt from ring 3 would have.
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
        .irp n, 48,49,50,51,52,53,54,55
            TRAP_STUB \n, 0
        .endr

        .global ward_timer_stub
        ward_timer_stub:
            push 0
            push {timer}
            jmp ward_trap_common

        .global ward_power_button_stub
        ward_power_button_stub:
            push 0
            push {power_button}
            jmp ward_trap_common

        .global ward_spurious_stub
        ward_spurious_stub:
            push 0
            push {spurious}
            jmp ward_trap_common

        .section .text.syscall_entry, "ax"
        .p2align 12
        .global ward_syscall_entry
        ward_syscall_entry:
            mov [rip + ward_syscall_user_rsp], rsp
            mov rsp, [rip + ward_syscall_kernel_rsp]
            push {user_ds}
            push [rip + ward_syscall_user_rsp]
            push r11
            push {user_cs}
            push rcx
            push 0
            push {syscall}
            jmp ward_trap_common

        .p2align 12
        .global ward_syscall_entry_end
        ward_syscall_entry_end:

        .section .text.traps, "ax"
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
            mov rsp, rax
        .global ward_trap_exit
        ward_trap_exit:
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

        .global ward_idle_loop
        ward_idle_loop:
            hlt
            jmp ward_idle_loop

        .section .rodata.traps, "a"
        .p2align 3
        .global ward_trap_stubs
        ward_trap_stubs:
        .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
            .quad ward_trap_stub_\n
        .endr
        .global ward_device_stubs
        ward_device_stubs:
        .irp n, 48,49,50,51,52,53,54,55
            .quad ward_trap_stub_\n
        .endr
        "#,
        dispatch = sym super::trap_dispatch,
        timer = const TIMER_VECTOR as u64,
        spurious = const SPURIOUS_VECTOR as u64,
        power_button = const ward_abi::debug_console::POWER_BUTTON_VECTOR as u64,
        syscall = const SYSCALL_VECTOR,
        user_ds = const USER_DS as u64,
        user_cs = const USER_CS as u64,
    );
}

#[cfg(all(feature = "guest", not(test)))]
use entry::{idle_loop_addr, idle_stack_top};

#[cfg(all(feature = "guest", not(test)))]
pub use entry::{enter, set_syscall_stack, syscall_entry_addr, syscall_entry_page};

/// The `syscall` entry stub (not in host builds).
#[cfg(not(all(feature = "guest", not(test))))]
pub fn syscall_entry_addr() -> u64 {
    u64::MAX
}

#[cfg(not(all(feature = "guest", not(test))))]
fn idle_loop_addr() -> u64 {
    0
}

#[cfg(not(all(feature = "guest", not(test))))]
fn idle_stack_top() -> u64 {
    0
}

/// Sets the kernel stack of `syscall` entries (no-op on the host).
#[cfg(not(all(feature = "guest", not(test))))]
pub fn set_syscall_stack(_top: u64) {}

/// Loads the IDT: every exception vector, the timer and spurious vectors.
pub fn init() {
    #[cfg(all(feature = "guest", not(test)))]
    entry::init();
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
    fn trap_frame_is_22_words_and_keeps_the_stack_aligned() {
        assert_eq!(core::mem::size_of::<TrapFrame>(), 22 * 8);
        assert_eq!(core::mem::size_of::<TrapFrame>() % 16, 0);
    }

    fn user(vector: u64, error_code: u64) -> TrapFrame {
        TrapFrame { vector, error_code, cs: 0x2b, ..TrapFrame::default() }
    }

    #[test]
    fn traps_are_classified_by_vector_ring_and_address() {
        let stack_page = USER_STACK_TOP - 0x3000;
        let entry = 0xffff_ffff_8010_1000;
        assert_eq!(classify(&user(SYSCALL_VECTOR, 0), 0, entry), TrapKind::Syscall);
        assert_eq!(classify(&user(32, 0), 0, entry), TrapKind::Timer);
        assert_eq!(classify(&user(49, 0), 0, entry), TrapKind::Device(49));
        let idle = TrapFrame { vector: 48, cs: 0x08, ..TrapFrame::default() };
        assert_eq!(classify(&idle, 0, entry), TrapKind::Device(48), "device interrupts arrive in the idle loop too");
        assert_eq!(classify(&user(14, 0b110), stack_page, entry), TrapKind::StackGrowth);
        // Below the stack's limit is the guard: the process dies.
        assert_eq!(classify(&user(14, 0b110), USER_STACK_TOP - USER_STACK_MAX - 8, entry), TrapKind::UserFault);
        // A protection fault (present page) in the stack area is not growth.
        assert_eq!(classify(&user(14, 0b111), stack_page, entry), TrapKind::UserFault);
        assert_eq!(classify(&user(13, 0), 0, entry), TrapKind::UserFault);
        let kernel = TrapFrame { vector: 14, cs: 0x08, ..TrapFrame::default() };
        assert_eq!(classify(&kernel, stack_page, entry), TrapKind::KernelFault);
    }

    #[test]
    fn syscall_that_stayed_in_ring_3_is_recognised_and_completed() {
        let entry = 0xffff_ffff_8010_1000;
        let mut frame = TrapFrame { rip: entry, rcx: 0x40_1234, r11: 0x3247, ..user(14, 0b111) };
        assert_eq!(classify(&frame, 0xffff_ffff_8013_0060, entry), TrapKind::SyscallViaFault);
        assert!(complete_syscall_frame(&mut frame));
        assert_eq!((frame.rip, frame.vector), (0x40_1234, SYSCALL_VECTOR));
        // IOPL (0x3000) and TF (0x100) are dropped; IF is forced on.
        assert_eq!(frame.rflags, 0x247 | 0x202);
        // A program jumping to the stub with a kernel "return address" is refused.
        let mut wild = TrapFrame { rip: entry, rcx: 0xffff_ffff_8000_0000, ..user(14, 0b111) };
        assert!(!complete_syscall_frame(&mut wild));
        // The same fault from ring 0 is a kernel fault.
        let kernel = TrapFrame { rip: entry, vector: 14, cs: 0x08, ..TrapFrame::default() };
        assert_eq!(classify(&kernel, 0, entry), TrapKind::KernelFault);
    }
}
