//! Integer widths, converted on purpose.
//!
//! Ward's guest side runs only on x86_64, where `usize` is 64 bits (checked
//! below, at compile time): `usize_from` and `u64_from` are then lossless.
//! The narrowing ones take the low bits of a register on purpose (the ABI
//! says which half a field lives in) and say so by name, so that every
//! other narrowing `as` cast is caught by `clippy::cast_possible_truncation`,
//! which the guest crates keep on.

const _: () = assert!(usize::BITS == 64, "Ward's guest side is 64-bit only");

/// `x` as a `usize` (lossless on the 64-bit targets Ward builds for).
#[allow(clippy::cast_possible_truncation, reason = "usize is 64 bits: checked at compile time above")]
pub const fn usize_from(x: u64) -> usize {
    x as usize
}

/// `x` as a `u64` (lossless on the 64-bit targets Ward builds for).
pub const fn u64_from(x: usize) -> u64 {
    x as u64
}

/// The low 32 bits of `x`.
#[allow(clippy::cast_possible_truncation, reason = "the low half, by name")]
pub const fn low_u32(x: u64) -> u32 {
    x as u32
}

/// The high 32 bits of `x`.
#[allow(clippy::cast_possible_truncation, reason = "the high half, shifted down first")]
pub const fn high_u32(x: u64) -> u32 {
    (x >> 32) as u32
}

/// The low 16 bits of `x`.
#[allow(clippy::cast_possible_truncation, reason = "the low bits, by name")]
pub const fn low_u16(x: u64) -> u16 {
    x as u16
}

/// The low 8 bits of `x`.
#[allow(clippy::cast_possible_truncation, reason = "the low bits, by name")]
pub const fn low_u8(x: u64) -> u8 {
    x as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_and_low_bits() {
        let x = 0x1122_3344_5566_7788;
        assert_eq!((high_u32(x), low_u32(x)), (0x1122_3344, 0x5566_7788));
        assert_eq!((low_u16(x), low_u8(x)), (0x7788, 0x88));
        assert_eq!(usize_from(u64::MAX), usize::MAX);
        assert_eq!(u64_from(usize::MAX), u64::MAX);
    }
}
