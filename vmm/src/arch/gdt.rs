//! The boot GDT: a null descriptor, a 64-bit code segment and a data segment.

use kvm_bindings::kvm_segment;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use ward_abi::layout::BOOT_GDT_ADDR;

/// Selector of the kernel code segment.
pub const CODE_SELECTOR: u16 = 0x08;
/// Selector of the kernel data segment.
pub const DATA_SELECTOR: u16 = 0x10;

/// Flags (access byte in bits 0..8, flags nibble in bits 12..16) of a 64-bit
/// ring-0 code segment: present, DPL 0, code, execute/read, accessed; L=1, G=1.
const CODE64_FLAGS: u16 = 0xa09b;
/// Flags of a ring-0 data segment: present, DPL 0, data, read/write,
/// accessed; D/B=1, G=1.
const DATA_FLAGS: u16 = 0xc093;

/// The boot GDT, in table order.
pub const BOOT_GDT: [u64; 3] = [0, gdt_entry(CODE64_FLAGS, 0, 0xfffff), gdt_entry(DATA_FLAGS, 0, 0xfffff)];

/// Encodes a segment descriptor from flags, base and 20-bit limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    let flags = flags as u64;
    ((base & 0xff00_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
        | ((limit & 0x000f_0000) << 32)
        | ((flags & 0x0000_f0ff) << 40)
}

/// The KVM view of the segment a descriptor describes, loaded with `selector`.
#[allow(clippy::cast_possible_truncation, reason = "every field is masked to its width first")]
pub fn segment_from_entry(entry: u64, selector: u16) -> kvm_segment {
    let granular = (entry >> 55) & 1 == 1;
    let raw_limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if granular { (raw_limit << 12) | 0xfff } else { raw_limit },
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granular as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from((entry >> 47) & 1 == 0),
        padding: 0,
    }
}

/// Writes [`BOOT_GDT`] at [`BOOT_GDT_ADDR`].
pub fn write_boot_gdt<M: GuestMemory>(mem: &M) -> Result<(), vm_memory::GuestMemoryError> {
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_ADDR + 8 * i as u64))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_and_data_entries_match_hand_encoding() {
        // The flat 64-bit code and data descriptors every x86_64 kernel uses.
        assert_eq!(BOOT_GDT[1], 0x00af_9b00_0000_ffff);
        assert_eq!(BOOT_GDT[2], 0x00cf_9300_0000_ffff);
    }

    #[test]
    fn base_and_limit_are_split_across_the_descriptor() {
        assert_eq!(gdt_entry(0x0093, 0x1234_5678, 0xa_bcde), 0x120a_9334_5678_bcde);
    }

    #[test]
    fn code_segment_decodes_as_long_mode_ring_0() {
        let seg = segment_from_entry(BOOT_GDT[1], CODE_SELECTOR);
        assert_eq!((seg.base, seg.limit, seg.selector), (0, 0xffff_ffff, 0x08));
        assert_eq!((seg.type_, seg.present, seg.dpl, seg.s, seg.l, seg.db, seg.g), (0xb, 1, 0, 1, 1, 0, 1));
        assert_eq!(seg.unusable, 0);
    }

    #[test]
    fn data_segment_decodes_as_flat_read_write() {
        let seg = segment_from_entry(BOOT_GDT[2], DATA_SELECTOR);
        assert_eq!((seg.type_, seg.l, seg.db, seg.limit), (0x3, 0, 1, 0xffff_ffff));
    }

    #[test]
    fn null_descriptor_is_unusable() {
        assert_eq!(segment_from_entry(0, 0).unusable, 1);
    }
}
