//! The kernel binary: the entry stub and the boot-time stacks. Everything
//! the kernel does is in the `ward_kernel` library.

#![no_std]
#![no_main]

use ward_abi::{debug_console, layout};

// The VMM enters here in 64-bit mode, paging on, interrupts off, with the
// boot info's guest-physical address in rdi. The first store tells the host
// we are running (it times guest entry with it); then we switch to our boot
// stack and call `kmain`, which never returns.
//
// The stacks live in .bss, each above a guard page the kernel leaves
// unmapped: overflowing one faults instead of corrupting what lies below.
core::arch::global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "    movabs rax, {mark_reg}",
    "    mov dword ptr [rax], {mark}",
    "    lea rsp, [rip + ward_boot_stack_top]",
    "    xor ebp, ebp",
    "    call {kmain}",
    "    ud2",
    ".section .bss.stacks, \"aw\", @nobits",
    ".p2align 12",
    ".global ward_boot_stack_guard",
    "ward_boot_stack_guard: .space 4096",
    "ward_boot_stack: .space {boot_stack}",
    "ward_boot_stack_top:",
    ".global ward_df_stack_guard",
    "ward_df_stack_guard: .space 4096",
    "ward_df_stack: .space {df_stack}",
    ".global ward_df_stack_top",
    "ward_df_stack_top:",
    "ward_idle_stack: .space {idle_stack}",
    ".global ward_idle_stack_top",
    "ward_idle_stack_top:",
    mark_reg = const layout::PHYS_MAP_BASE + debug_console::BASE + debug_console::REG_MARK,
    mark = const debug_console::MARK_FIRST_INSTRUCTION,
    kmain = sym ward_kernel::kmain,
    boot_stack = const 64 * 1024,
    df_stack = const 16 * 1024,
    idle_stack = const 8 * 1024,
);
