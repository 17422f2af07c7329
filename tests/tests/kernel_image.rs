//! The guest kernel image obeys docs/PLATFORM.md: no SSE/AVX and no
//! `cmpxchg16b` anywhere in its code (both are KVM emulation failures in
//! ring 0 on our hosts), and no `core::fmt` code linked in.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, Register};
use object::{Object, ObjectSegment, ObjectSymbol, SegmentFlags, SymbolKind};

const PF_X: u32 = 1;

/// The kernel image, copied to the heap: the ELF parser needs the
/// alignment `include_bytes!` does not give.
fn kernel() -> Vec<u8> {
    ward_images::KERNEL.to_vec()
}

/// Executable code of the kernel image, as (virtual address, bytes).
fn code_segments(elf: &object::File<'_>) -> Vec<(u64, Vec<u8>)> {
    elf.segments()
        .filter(|s| matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0))
        .map(|s| (s.address(), s.data().unwrap().to_vec()))
        .collect()
}

/// The function containing `addr`, for the failure message.
fn symbol_at(elf: &object::File<'_>, addr: u64) -> String {
    elf.symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.address() <= addr)
        .max_by_key(|s| s.address())
        .map(|s| format!("{:#}", rustc_demangle::demangle(s.name().unwrap_or("?"))))
        .unwrap_or_else(|| "?".into())
}

fn uses_vector_register(instr: &Instruction) -> bool {
    let vector = |r: Register| r.is_xmm() || r.is_ymm() || r.is_zmm() || r.is_k();
    (0..instr.op_count()).any(|i| vector(instr.op_register(i)))
        || vector(instr.memory_base())
        || vector(instr.memory_index())
}

fn forbidden(instr: &Instruction) -> bool {
    uses_vector_register(instr)
        || matches!(instr.mnemonic(), Mnemonic::Cmpxchg16b | Mnemonic::Xsave | Mnemonic::Xsave64 | Mnemonic::Xrstor)
        || matches!(instr.mnemonic(), Mnemonic::Ldmxcsr | Mnemonic::Stmxcsr)
}

#[test]
fn kernel_has_no_sse_avx_or_cmpxchg16b() {
    let image = kernel();
    let elf = object::File::parse(&*image).unwrap();
    let segments = code_segments(&elf);
    assert!(!segments.is_empty(), "the kernel has no executable segment");
    let mut decoded = 0usize;
    let mut bad = Vec::new();
    for (base, bytes) in &segments {
        let mut decoder = Decoder::with_ip(64, bytes, *base, DecoderOptions::NONE);
        let mut instr = Instruction::default();
        while decoder.can_decode() {
            decoder.decode_out(&mut instr);
            decoded += 1;
            if forbidden(&instr) {
                bad.push(format!("{:#x} in {}: {instr}", instr.ip(), symbol_at(&elf, instr.ip())));
            }
        }
    }
    assert!(decoded > 1000, "decoded only {decoded} instructions; is this the kernel?");
    assert!(bad.is_empty(), "{} forbidden ring-0 instructions:\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn precompiled_core_fmt_is_linked_out() {
    let image = kernel();
    let elf = object::File::parse(&*image).unwrap();
    let trap = elf
        .symbols()
        .find(|s| s.name() == Ok("ward_fmt_unreachable"))
        .map(|s| s.address())
        .expect("ward_fmt_unreachable is in the kernel");
    // The formatting machinery only the precompiled `core` defines (not
    // generic code instantiated in our crates, which is built without SSE):
    // `Formatter` methods, `fmt::write`, and the integer formatters the
    // panic paths name. Each must be an alias of the trap.
    const PRIMITIVES: [&str; 16] = [
        "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "f32", "f64", "str",
        "char",
    ];
    let precompiled = |name: &str| {
        name.contains("core::fmt::Formatter")
            || name.contains("core::fmt::write")
            || name.contains("core::str::count::")
            || PRIMITIVES.iter().any(|p| name.starts_with(&format!("<{p} as core::fmt::")))
    };
    let linked: Vec<String> = elf
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.address() != trap)
        .filter_map(|s| s.name().ok().map(|n| format!("{:#}", rustc_demangle::demangle(n))))
        .filter(|n| precompiled(n))
        .collect();
    assert!(linked.is_empty(), "precompiled core::fmt code is linked into the kernel: {linked:?}");
    let aliased = elf.symbols().filter(|s| s.address() == trap).count();
    assert!(aliased > 10, "only {aliased} symbols alias the trap: is the no-fmt linker script applied?");
}

#[test]
fn the_sse_check_catches_sse() {
    // movd xmm0, eax; ret — the instruction docs/PLATFORM.md saw crash a guest.
    let code = [0x66, 0x0f, 0x6e, 0xc0, 0xc3];
    let mut decoder = Decoder::with_ip(64, &code, 0, DecoderOptions::NONE);
    let first = decoder.decode();
    assert!(forbidden(&first), "{first}");
    assert!(!forbidden(&decoder.decode()));
}
