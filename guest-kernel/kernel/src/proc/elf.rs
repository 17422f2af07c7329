//! Parsing guest program ELFs (boot modules) for the program loader.
//!
//! The same rules as the VMM's kernel loader, for ring 3: a whole, static,
//! little-endian x86_64 executable whose `PT_LOAD` segments lie inside the
//! file, inside the program image area of the lower half, do not overlap,
//! are never both writable and executable, and keep file offset and address
//! congruent modulo the page size (so read-only pages can be mapped from the
//! module in place); the entry point is in an executable segment.

use ward_abi::layout::{USER_HEAP_BASE, USER_IMAGE_BASE};

use crate::mem::phys::PAGE_SIZE;

/// Most `PT_LOAD` segments a program may have.
pub const MAX_SEGMENTS: usize = 8;

/// Why a program image was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Too short, or a table runs past the end.
    Truncated,
    /// Not a 64-bit little-endian x86_64 static executable.
    NotX86_64Executable,
    /// A segment is outside the file or the image area, or misaligned.
    BadSegment,
    /// A segment is both writable and executable.
    WritableCode,
    /// Two segments overlap.
    Overlap,
    /// No entry point in an executable segment.
    BadEntry,
    /// More than [`MAX_SEGMENTS`] loadable segments.
    TooManySegments,
}

/// Segment permission bits (`p_flags`).
pub const PF_X: u32 = 1;
/// Writable.
pub const PF_W: u32 = 2;
/// Readable.
pub const PF_R: u32 = 4;

/// One loadable segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// `p_offset`.
    pub offset: u64,
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_filesz`.
    pub file_size: u64,
    /// `p_memsz`.
    pub mem_size: u64,
    /// `p_flags`.
    pub flags: u32,
}

impl Segment {
    /// Page-aligned start address.
    pub fn page_start(&self) -> u64 {
        self.vaddr & !(PAGE_SIZE - 1)
    }

    /// Page-aligned end address.
    pub fn page_end(&self) -> u64 {
        (self.vaddr + self.mem_size).next_multiple_of(PAGE_SIZE)
    }
}

/// A checked program image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program {
    /// Entry point.
    pub entry: u64,
    /// Segments, `count` of them valid.
    pub segments: [Segment; MAX_SEGMENTS],
    /// Valid segments.
    pub count: usize,
}

fn read<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at + N)?.try_into().ok()
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    read(b, at).map(u16::from_le_bytes)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    read(b, at).map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    read(b, at).map(u64::from_le_bytes)
}

/// Parses and checks a program image.
pub fn parse(image: &[u8]) -> Result<Program, ElfError> {
    if image.len() < 64 {
        return Err(ElfError::Truncated);
    }
    let ident_ok = image.get(..6) == Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]);
    let e_type = u16_at(image, 16).ok_or(ElfError::Truncated)?;
    let machine = u16_at(image, 18).ok_or(ElfError::Truncated)?;
    if !ident_ok || e_type != 2 || machine != 62 {
        return Err(ElfError::NotX86_64Executable);
    }
    let entry = u64_at(image, 24).ok_or(ElfError::Truncated)?;
    let phoff = usize::try_from(u64_at(image, 32).ok_or(ElfError::Truncated)?).map_err(|_| ElfError::Truncated)?;
    let phentsize = usize::from(u16_at(image, 54).ok_or(ElfError::Truncated)?);
    let phnum = usize::from(u16_at(image, 56).ok_or(ElfError::Truncated)?);
    if phentsize != 56 {
        return Err(ElfError::NotX86_64Executable);
    }
    let mut program = Program { entry, segments: [Segment::default(); MAX_SEGMENTS], count: 0 };
    for i in 0..phnum {
        let ph = phoff.checked_add(i * 56).ok_or(ElfError::Truncated)?;
        if u32_at(image, ph).ok_or(ElfError::Truncated)? != 1 {
            continue; // not PT_LOAD
        }
        let seg = Segment {
            flags: u32_at(image, ph + 4).ok_or(ElfError::Truncated)?,
            offset: u64_at(image, ph + 8).ok_or(ElfError::Truncated)?,
            vaddr: u64_at(image, ph + 16).ok_or(ElfError::Truncated)?,
            file_size: u64_at(image, ph + 32).ok_or(ElfError::Truncated)?,
            mem_size: u64_at(image, ph + 40).ok_or(ElfError::Truncated)?,
        };
        check_segment(&seg, image.len() as u64)?;
        if program.count == MAX_SEGMENTS {
            return Err(ElfError::TooManySegments);
        }
        for other in &program.segments[..program.count] {
            if seg.page_start() < other.page_end() && other.page_start() < seg.page_end() {
                return Err(ElfError::Overlap);
            }
        }
        program.segments[program.count] = seg;
        program.count += 1;
    }
    let in_code = program.segments[..program.count]
        .iter()
        .any(|s| s.flags & PF_X != 0 && entry >= s.vaddr && entry - s.vaddr < s.mem_size);
    if !in_code {
        return Err(ElfError::BadEntry);
    }
    Ok(program)
}

fn check_segment(seg: &Segment, file_len: u64) -> Result<(), ElfError> {
    let file_end = seg.offset.checked_add(seg.file_size).ok_or(ElfError::BadSegment)?;
    let mem_end = seg.vaddr.checked_add(seg.mem_size).ok_or(ElfError::BadSegment)?;
    if file_end > file_len
        || seg.file_size > seg.mem_size
        || seg.vaddr < USER_IMAGE_BASE
        || mem_end > USER_HEAP_BASE
        || seg.offset % PAGE_SIZE != seg.vaddr % PAGE_SIZE
    {
        return Err(ElfError::BadSegment);
    }
    if seg.flags & PF_W != 0 && seg.flags & PF_X != 0 {
        return Err(ElfError::WritableCode);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test values are small")]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// (vaddr, offset, flags, file_size, mem_size)
    fn build(entry: u64, segs: &[(u64, u64, u32, u64, u64)]) -> Vec<u8> {
        let mut out = std::vec![0u8; 0x3000];
        out[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        out[16..18].copy_from_slice(&2u16.to_le_bytes());
        out[18..20].copy_from_slice(&62u16.to_le_bytes());
        out[24..32].copy_from_slice(&entry.to_le_bytes());
        out[32..40].copy_from_slice(&64u64.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        for (i, &(vaddr, offset, flags, file_size, mem_size)) in segs.iter().enumerate() {
            let ph = 64 + i * 56;
            out[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
            out[ph + 4..ph + 8].copy_from_slice(&flags.to_le_bytes());
            out[ph + 8..ph + 16].copy_from_slice(&offset.to_le_bytes());
            out[ph + 16..ph + 24].copy_from_slice(&vaddr.to_le_bytes());
            out[ph + 32..ph + 40].copy_from_slice(&file_size.to_le_bytes());
            out[ph + 40..ph + 48].copy_from_slice(&mem_size.to_le_bytes());
        }
        out
    }

    fn good() -> Vec<u8> {
        build(
            0x40_1000,
            &[(0x40_1000, 0x1000, PF_R | PF_X, 0x800, 0x800), (0x40_2000, 0x2000, PF_R | PF_W, 0x100, 0x5000)],
        )
    }

    #[test]
    fn good_program_parses() {
        let p = parse(&good()).unwrap();
        assert_eq!((p.entry, p.count), (0x40_1000, 2));
        assert_eq!(p.segments[1].page_end(), 0x40_7000);
    }

    #[test]
    fn writable_code_is_refused() {
        let image = build(0x40_1000, &[(0x40_1000, 0x1000, PF_R | PF_W | PF_X, 0x10, 0x10)]);
        assert_eq!(parse(&image), Err(ElfError::WritableCode));
    }

    #[test]
    fn kernel_half_or_low_addresses_are_refused() {
        let kernel = build(0xffff_ffff_8000_0000, &[(0xffff_ffff_8000_0000, 0x1000, PF_R | PF_X, 0x10, 0x10)]);
        assert_eq!(parse(&kernel), Err(ElfError::BadSegment));
        let null = build(0x1000, &[(0x1000, 0x1000, PF_R | PF_X, 0x10, 0x10)]);
        assert_eq!(parse(&null), Err(ElfError::BadSegment));
    }

    #[test]
    fn segment_outside_file_or_misaligned_is_refused() {
        let past = build(0x40_1000, &[(0x40_1000, 0x2f00, PF_R | PF_X, 0x200, 0x200)]);
        assert_eq!(parse(&past), Err(ElfError::BadSegment));
        let skew = build(0x40_1000, &[(0x40_1000, 0x1010, PF_R | PF_X, 0x10, 0x10)]);
        assert_eq!(parse(&skew), Err(ElfError::BadSegment));
    }

    #[test]
    fn overlapping_segments_are_refused() {
        let image =
            build(0x40_1000, &[(0x40_1000, 0x1000, PF_R | PF_X, 0x10, 0x10), (0x40_1800, 0x1800, PF_R, 0x10, 0x10)]);
        assert_eq!(parse(&image), Err(ElfError::Overlap));
    }

    #[test]
    fn entry_outside_code_is_refused() {
        let image = build(0x40_2000, &[(0x40_1000, 0x1000, PF_R | PF_X, 0x10, 0x10), (0x40_2000, 0x2000, PF_R, 1, 1)]);
        assert_eq!(parse(&image), Err(ElfError::BadEntry));
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert_eq!(parse(b"hello"), Err(ElfError::Truncated));
        let mut image = good();
        image[56..58].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(parse(&image), Err(ElfError::Truncated));
        let mut image = good();
        image[18] = 3;
        assert_eq!(parse(&image), Err(ElfError::NotX86_64Executable));
        for len in 0..200 {
            let _ = parse(&good()[..len]);
        }
    }
}
