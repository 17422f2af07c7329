//! The kernel binary: the entry stub and nothing else. Everything the
//! kernel does is in the `ward_kernel` library.

#![no_std]
#![no_main]

use ward_abi::{debug_console, layout};

// The VMM enters here in 64-bit mode, paging on, interrupts off, with the
// boot info's guest-physical address in rdi. The first store tells the host
// we are running (it times guest entry with it); then we switch to our boot
// stack and call `kmain`, which never returns.
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
    ".section .bss.boot_stack, \"aw\", @nobits",
    ".p2align 12",
    "ward_boot_stack:",
    "    .space {stack_size}",
    "ward_boot_stack_top:",
    mark_reg = const layout::PHYS_MAP_BASE + debug_console::BASE + debug_console::REG_MARK,
    mark = const debug_console::MARK_FIRST_INSTRUCTION,
    kmain = sym ward_kernel::kmain,
    stack_size = const 64 * 1024,
);
