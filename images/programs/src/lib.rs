//! Helpers shared by Ward's guest programs (the programs are the binaries
//! in `src/bin/`). Host-testable: no system calls here.

#![no_std]
// Guest programs run only on x86_64; narrowing casts are deliberate.
#![allow(clippy::cast_possible_truncation)]

/// Parses a decimal number, or `None`.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter()
        .try_fold(0u64, |acc, &b| acc.checked_mul(10)?.checked_add(u64::from(b.checked_sub(b'0').filter(|d| *d < 10)?)))
}

/// The `i`-th space-separated word of `args`.
pub fn arg(args: &[u8], i: usize) -> Option<&[u8]> {
    args.split(|&b| b == b' ').filter(|w| !w.is_empty()).nth(i)
}

/// Busy work in ring 3 that the optimizer cannot remove: `rounds` of an
/// LCG step, returning the state.
#[inline(never)]
pub fn burn(rounds: u64) -> u64 {
    let mut x = 1u64;
    for _ in 0..rounds {
        x = core::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407));
    }
    x
}

/// FNV-1a over `bytes`: the checksum programs use to prove data intact.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_words_parse() {
        assert_eq!(parse_u64(b"1234"), Some(1234));
        assert_eq!(parse_u64(b"12a"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"99999999999999999999"), None);
        assert_eq!(arg(b"  a bb  c", 1), Some(&b"bb"[..]));
        assert_eq!(arg(b"a", 3), None);
    }

    #[test]
    fn checksum_is_fnv1a() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
